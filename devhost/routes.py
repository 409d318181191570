"""ASP.NET-style route templates, as Azure Functions HTTP triggers use them.

Supports `{name}`, optional `{name?}`, defaults `{name=value}`, catch-all `{*rest}` and inline
constraints `{id:int}`, `{x:alpha}`, `{x:guid}`, `{x:minlength(3)}`, `{x:regex(^a+$)}`... Literal
segments match case-insensitively. More specific templates are tried first.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

_PARAM = re.compile(r"\{([^{}]+)\}")


def _is_number(value: str, kind: type) -> bool:
    try:
        kind(value)
        return True
    except ValueError:
        return False


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
        return True
    except ValueError:
        return False


_SIMPLE = {
    "int": lambda v: re.fullmatch(r"-?\d+", v) is not None and -2**31 <= int(v) < 2**31,
    "long": lambda v: re.fullmatch(r"-?\d+", v) is not None and -2**63 <= int(v) < 2**63,
    "float": lambda v: _is_number(v, float),
    "double": lambda v: _is_number(v, float),
    "decimal": lambda v: _is_number(v, float),
    "bool": lambda v: v.lower() in ("true", "false"),
    "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
    "guid": _is_guid,
    "datetime": _is_datetime,
}


def _constraint(spec: str):
    name, _, args = spec.partition("(")
    name = name.strip().lower()
    args = args[:-1] if args.endswith(")") else args
    if name in _SIMPLE and not args:
        return _SIMPLE[name]
    numbers = [a.strip() for a in args.split(",")] if args else []
    if name == "min":
        return lambda v: _is_number(v, int) and int(v) >= int(numbers[0])
    if name == "max":
        return lambda v: _is_number(v, int) and int(v) <= int(numbers[0])
    if name == "range":
        return lambda v: _is_number(v, int) and int(numbers[0]) <= int(v) <= int(numbers[1])
    if name == "minlength":
        return lambda v: len(v) >= int(numbers[0])
    if name == "maxlength":
        return lambda v: len(v) <= int(numbers[0])
    if name == "length":
        if len(numbers) == 2:
            return lambda v: int(numbers[0]) <= len(v) <= int(numbers[1])
        return lambda v: len(v) == int(numbers[0])
    if name == "regex":
        pattern = re.compile(args, re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    raise ValueError(f"unknown route constraint '{spec}'")


@dataclass
class _Param:
    name: str
    optional: bool = False
    catch_all: bool = False
    default: str | None = None
    checks: list = field(default_factory=list)


def _parse_param(body: str) -> _Param:
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    default = None
    if "=" in body:
        body, default = body.split("=", 1)
    optional = body.endswith("?")
    body = body.rstrip("?")
    name, *constraints = _split_constraints(body)
    return _Param(name, optional or default is not None or catch_all, catch_all, default,
                  [_constraint(c) for c in constraints])


def _split_constraints(body: str) -> list[str]:
    """`id:int:min(3)` → ['id', 'int', 'min(3)'], keeping ':' inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in body:
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    parts.append(current)
    return parts


class RouteTemplate:
    def __init__(self, template: str):
        self.template = template.strip("/")
        self.params: dict[str, _Param] = {}
        pattern = ""
        literals = 0
        for segment in [s for s in self.template.split("/") if s] if self.template else []:
            whole = _PARAM.fullmatch(segment)
            if whole:
                param = _parse_param(whole.group(1))
                self.params[param.name] = param
                value = ".*" if param.catch_all else "[^/]+"
                group = f"(?P<{_group(param.name)}>{value})"
                pattern += f"(?:/{group})?" if param.optional else f"/{group}"
                continue
            literals += 1
            pattern += "/"
            position = 0
            for match in _PARAM.finditer(segment):
                pattern += re.escape(segment[position:match.start()])
                param = _parse_param(match.group(1))
                self.params[param.name] = param
                pattern += f"(?P<{_group(param.name)}>[^/]+?)"
                position = match.end()
            pattern += re.escape(segment[position:])
        self.regex = re.compile(f"^{pattern}/?$", re.IGNORECASE)
        catch_all = any(p.catch_all for p in self.params.values())
        # specificity: literal segments first, catch-alls last, then fewer parameters
        self.sort_key = (catch_all, -literals, len(self.params))

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a path relative to the route prefix, or None."""
        found = self.regex.match("/" + path.strip("/") if path.strip("/") else "")
        if not found:
            return None
        values = {}
        for name, param in self.params.items():
            value = found.group(_group(name))
            if value is None:
                if param.default is not None:
                    values[name] = param.default
                continue
            if not all(check(value) for check in param.checks):
                return None
            values[name] = value
        return values


def _group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)
