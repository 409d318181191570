"""Arithmetic the model cannot be trusted with, evaluated safely: the expression is parsed with
`ast` and only numbers, + - * / // % **, parentheses and a few math functions are allowed
(no eval, no names, no attributes), with bounds on size so `9**9**9` cannot hang the worker."""
from __future__ import annotations

import ast
import math
import operator

from core.tools import tool

MAX_LENGTH = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e300
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max,
              "floor": math.floor, "ceil": math.ceil, "log": math.log, "log10": math.log10,
              "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; ValueError says what is not allowed."""
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.replace("^", "**").strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponents above {MAX_EXPONENT} are not allowed")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        return _bounded(value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in _FUNCTIONS and not node.keywords:
        try:
            return _bounded(_FUNCTIONS[node.func.id](*[_eval(a) for a in node.args]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{node.func.id}(): {exc}") from None
    what = type(node).__name__
    if isinstance(node, ast.Name):
        what = f"the name '{node.id}'"
    elif isinstance(node, ast.Call):
        what = "that function call"
    raise ValueError(f"{what} is not allowed; use numbers, + - * / // % **, parentheses, "
                     f"{', '.join(sorted(_CONSTANTS))} and {', '.join(sorted(_FUNCTIONS))}()")


def _bounded(value):
    if isinstance(value, complex):
        raise ValueError("the result is not a real number")
    if abs(value) > MAX_MAGNITUDE or (isinstance(value, float) and math.isnan(value)):
        raise ValueError("the result is too large")
    return value


@tool(max_attempts=1)  # deterministic: a bad expression fails the same way every time
def calculate(expression: str) -> dict:
    """Evaluate an arithmetic expression exactly, e.g. "(17.5 * 3) / 4" or "sqrt(2) ** 10".

    Args:
        expression: numbers with + - * / // % ** (or ^), parentheses, pi, e and sqrt, abs,
            round, min, max, floor, ceil, log, log10, exp, sin, cos, tan.
    """
    value = evaluate(expression)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        value = int(value)
    return {"expression": expression, "result": value}
