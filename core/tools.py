"""Tools are plain Python functions: `@tool` turns one into a schema the model sees and a spec
the app runs as its own Durable activity (activities/tools.py).

    from core.tools import tool

    @tool
    def lookup_order(order_id: str, include_items: bool = False) -> dict:
        '''Find an order by its id.

        Args:
            order_id: the order number, e.g. "A1001".
            include_items: also list the order's items.
        '''

The function name is the tool name; the docstring's first paragraph is the description and its
`Args:` (Google) or `Parameters` (NumPy) entries describe the parameters; type hints give the
JSON schema (str, int, float, bool, list[...], dict[str, ...], Literal, Optional, Enum,
TypedDict, dataclass, Annotated[..., "description"]). `schema=` replaces the generated
parameters schema where hints cannot say it. A parameter named `idempotency_key` receives the
tool call's id (stable across retries and replays) and is not shown to the model.

Every module of the top-level `tools/` package is imported by `load_tools()` (the agent
catalogue and the tool activities call it at start), so a tool exists once its module does.
This module is pure Python: the orchestrator may import it.
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import json
import pkgutil
import re
import threading
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import jsonschema

TOOLS_PACKAGE = "tools"
IDEMPOTENCY_PARAMETER = "idempotency_key"
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # a Python name the model accepts
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_FIRST_RETRY_MS = 1000
APPROVAL = "approval"  # @tool(requires="approval"): every agent must get a person's yes first


class ToolDefinitionError(TypeError):
    """A tool's signature or options cannot be turned into a schema (raised at import)."""


@dataclass(frozen=True)
class ToolSpec:
    """One registered tool. `parameters` is the JSON schema of its arguments object."""
    name: str
    description: str
    parameters: dict
    fn: Callable = field(repr=False, compare=False)
    is_async: bool = False
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    first_retry_ms: int = DEFAULT_FIRST_RETRY_MS
    requires: tuple[str, ...] = ()
    module: str = ""
    hints: dict = field(default_factory=dict, repr=False, compare=False)
    takes_idempotency_key: bool = False

    @property
    def requires_approval(self) -> bool:
        return APPROVAL in self.requires

    def openai_schema(self) -> dict:
        """The entry of the chat completion's `tools` list."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


_registry: dict[str, ToolSpec] = {}
_lock = threading.Lock()
_loaded = False


# --------------------------------------------------------------------------- the decorator


def tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None,
         schema: dict | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
         max_attempts: int = DEFAULT_MAX_ATTEMPTS, first_retry_ms: int = DEFAULT_FIRST_RETRY_MS,
         requires: str | tuple[str, ...] | list[str] = ()):
    """Register `fn` as a tool; usable bare (`@tool`) or with options (`@tool(timeout_seconds=5)`).

    Options: `schema` (the parameters object schema, instead of the generated one),
    `timeout_seconds` (per attempt, default 30), `max_attempts` (Durable attempts, default 3),
    `first_retry_ms` (wait before the first retry, default 1000, doubling), `requires="approval"`
    (a person approves every call, whatever the agent says), `name`/`description` overrides.
    The function is returned unchanged, so it stays directly callable in tests.
    """
    def register(func: Callable) -> Callable:
        spec = build_spec(func, name=name, description=description, schema=schema,
                          timeout_seconds=timeout_seconds, max_attempts=max_attempts,
                          first_retry_ms=first_retry_ms, requires=requires)
        with _lock:
            existing = _registry.get(spec.name)
            if existing and (existing.module, existing.fn.__qualname__) != (spec.module, func.__qualname__):
                raise ToolDefinitionError(
                    f"tool '{spec.name}' is defined twice: in {existing.module} and {spec.module}")
            _registry[spec.name] = spec
        return func

    return register(fn) if fn is not None else register


def build_spec(func: Callable, *, name: str | None = None, description: str | None = None,
               schema: dict | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
               max_attempts: int = DEFAULT_MAX_ATTEMPTS,
               first_retry_ms: int = DEFAULT_FIRST_RETRY_MS,
               requires: str | tuple[str, ...] | list[str] = ()) -> ToolSpec:
    """The ToolSpec of `func` without registering it (schema generation, pure)."""
    if not callable(func) or not hasattr(func, "__name__"):
        raise ToolDefinitionError(f"@tool needs a function, got {func!r}")
    tool_name = name or func.__name__
    if not NAME_PATTERN.match(tool_name):
        raise ToolDefinitionError(f"tool name {tool_name!r} must be 1-64 letters, digits or '_'")
    if not isinstance(timeout_seconds, (int, float)) or isinstance(timeout_seconds, bool) \
            or timeout_seconds <= 0:
        raise ToolDefinitionError(f"tool '{tool_name}': timeout_seconds must be a positive number")
    for option, value in (("max_attempts", max_attempts), ("first_retry_ms", first_retry_ms)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ToolDefinitionError(f"tool '{tool_name}': {option} must be a positive integer")
    requires = (requires,) if isinstance(requires, str) else tuple(requires)
    if set(requires) - {APPROVAL}:
        raise ToolDefinitionError(f"tool '{tool_name}': requires may only be '{APPROVAL}'")
    summary, documented = parse_docstring(inspect.getdoc(func) or "")
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # a hint that names something undefined
        raise ToolDefinitionError(f"tool '{tool_name}': cannot read its type hints: {exc}") from exc
    properties: dict[str, dict] = {}
    required: list[str] = []
    takes_key = False
    for param in signature.parameters.values():
        if param.name == IDEMPOTENCY_PARAMETER:
            takes_key = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolDefinitionError(
                f"tool '{tool_name}': parameter '{param.name}' must be a plain named parameter "
                "(no *args, **kwargs or positional-only)")
        if schema is None:
            try:
                prop = json_schema_for(hints.get(param.name, Any))
            except ToolDefinitionError as exc:
                raise ToolDefinitionError(
                    f"tool '{tool_name}', parameter '{param.name}': {exc}; "
                    "pass schema= to @tool to describe it by hand") from None
            if param.name in documented and "description" not in prop:
                prop = {**prop, "description": documented[param.name]}
            if param.default is not param.empty:
                try:
                    json.dumps(_plain(param.default))
                    if param.default is not None:
                        prop = {**prop, "default": _plain(param.default)}
                except (TypeError, ValueError):
                    pass
            properties[param.name] = prop
        if param.default is param.empty:
            required.append(param.name)
    if schema is not None:
        parameters = dict(schema)
        try:
            jsonschema.validators.validator_for(parameters).check_schema(parameters)
        except jsonschema.SchemaError as exc:
            raise ToolDefinitionError(f"tool '{tool_name}': schema= is not a valid JSON schema: "
                                      f"{exc.message}") from None
        if parameters.get("type") != "object":
            raise ToolDefinitionError(f"tool '{tool_name}': schema= must describe an object "
                                      "(the arguments), with \"type\": \"object\"")
    else:
        parameters = {"type": "object", "properties": properties, "required": required,
                      "additionalProperties": False}
    return ToolSpec(
        name=tool_name, description=description if description is not None else summary,
        parameters=parameters, fn=func, is_async=inspect.iscoroutinefunction(func),
        timeout_seconds=float(timeout_seconds), max_attempts=max_attempts,
        first_retry_ms=first_retry_ms, requires=requires, module=func.__module__,
        hints={k: v for k, v in hints.items() if k != "return"}, takes_idempotency_key=takes_key)


# --------------------------------------------------------------------------- hints -> schema


_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_schema_for(hint: Any) -> dict:
    """JSON schema of one type hint (raises ToolDefinitionError when it has no JSON form)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return {}
    if hint is type(None) or hint is None:
        return {"type": "null"}
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        base = json_schema_for(args[0])
        notes = [a for a in args[1:] if isinstance(a, str)]
        return {**base, "description": " ".join(notes)} if notes else base
    if origin is typing.Literal:
        values = [_plain(a) for a in args]
        kinds = {_json_type(v) for v in values}
        return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        nullable = len(members) < len(args)
        if len(members) == 1:
            inner = json_schema_for(members[0])
            if not nullable:
                return inner
            if isinstance(inner.get("type"), str) and "enum" not in inner:
                return {**inner, "type": [inner["type"], "null"]}
            return {"anyOf": [inner, {"type": "null"}]}
        options = [json_schema_for(m) for m in members] + ([{"type": "null"}] if nullable else [])
        return {"anyOf": options}
    if hint in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset,
                                                             typing.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [json_schema_for(a) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        items = json_schema_for(args[0]) if args else {}
        out = {"type": "array", "items": items} if items else {"type": "array"}
        if (origin or hint) in (set, frozenset):
            out["uniqueItems"] = True
        return out
    if hint is dict or origin in (dict, typing.Mapping):
        if args and args[0] is not str:
            raise ToolDefinitionError(f"{hint} has non-string keys, which JSON objects cannot have")
        values = json_schema_for(args[1]) if args else {}
        return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [_plain(m.value) for m in hint]
        kinds = {_json_type(v) for v in values}
        return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
    if isinstance(hint, type) and typing.is_typeddict(hint):
        inner = typing.get_type_hints(hint, include_extras=True)
        return {"type": "object",
                "properties": {k: json_schema_for(v) for k, v in inner.items()},
                "required": sorted(hint.__required_keys__), "additionalProperties": False}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        inner = typing.get_type_hints(hint, include_extras=True)
        fields = dataclasses.fields(hint)
        return {"type": "object",
                "properties": {f.name: json_schema_for(inner.get(f.name, Any)) for f in fields},
                "required": [f.name for f in fields if f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING],
                "additionalProperties": False}
    raise ToolDefinitionError(f"type {getattr(hint, '__name__', hint)!s} has no JSON schema form")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return "string"


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


# --------------------------------------------------------------------------- docstrings

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Returns|Return|Raises|"
                      r"Yields|Examples?|Notes?|See Also)\s*:?\s*$")
_GOOGLE_ARG = re.compile(r"^\s*\**([A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(:.*)?$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google- or NumPy-style docstring.

    The description is the first paragraph, joined into one line. Parameter entries come from
    an `Args:`/`Parameters` section: `name (type): text` or `name: text` (Google) or
    `name : type` followed by an indented text (NumPy); continuation lines are joined.
    """
    lines = doc.expandtabs().splitlines()
    first: list[str] = []
    for line in lines:
        stripped = line.strip()
        if _SECTION.match(stripped) or (not stripped and first):
            break
        if stripped:
            first.append(stripped)
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        header = _SECTION.match(lines[i].strip())
        i += 1
        if not header or header.group(1) not in ("Args", "Arguments", "Parameters", "Params",
                                                 "Keyword Args"):
            continue
        numpy = i < len(lines) and set(lines[i].strip()) == {"-"}
        if numpy:
            i += 1
        base = None
        current = None
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if not stripped:
                i += 1
                if numpy and i < len(lines) and lines[i].strip() and \
                        i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
                    break  # the next NumPy section starts
                continue
            indent = len(line) - len(line.lstrip())
            if base is None:
                base = indent
            if indent < base or (_SECTION.match(stripped) and indent <= base):
                break
            if numpy and set(stripped) == {"-"}:
                break
            if indent == base:
                match = (_NUMPY_ARG if numpy else _GOOGLE_ARG).match(stripped)
                if match:
                    current = match.group(1)
                    params[current] = "" if numpy else match.group(3).strip()
                else:
                    current = None
            elif current:
                params[current] = (params[current] + " " + stripped).strip()
            i += 1
    return " ".join(first), {k: v for k, v in params.items() if v}


# --------------------------------------------------------------------------- registry


def load_tools(package: str = TOOLS_PACKAGE) -> dict[str, ToolSpec]:
    """Import every module of the `tools` package (once) and return the registry.

    No `tools` package is fine (an app without tools); a module that fails to import fails the
    start with its own error, as any other import of the app would.
    """
    global _loaded
    if _loaded and package == TOOLS_PACKAGE:
        return registry()
    try:
        root = importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name != package:
            raise
        root = None
    if root is not None and hasattr(root, "__path__"):
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            importlib.import_module(info.name)
    if package == TOOLS_PACKAGE:
        _loaded = True
    return registry()


def registry() -> dict[str, ToolSpec]:
    """{name: ToolSpec} of every tool registered so far (a copy)."""
    with _lock:
        return dict(_registry)


def get_tool(name: str) -> ToolSpec:
    """The spec of one tool (loading the tools package first); KeyError names the tool."""
    specs = load_tools()
    if name not in specs:
        raise KeyError(f"unknown tool '{name}' (known: {', '.join(sorted(specs)) or 'none'})")
    return specs[name]


def openai_schemas(names) -> list[dict]:
    """The chat completion's `tools=[...]` list for these tool names, in the order given."""
    specs = load_tools()
    return [specs[name].openai_schema() for name in names]


def retry_options(spec: ToolSpec):
    """Durable RetryOptions of a tool (first retry after first_retry_ms, then doubling)."""
    import azure.durable_functions as df  # here, so the pure helpers need no Functions import

    return df.RetryOptions(first_retry_interval_in_milliseconds=spec.first_retry_ms,
                           max_number_of_attempts=spec.max_attempts)


def unregister(name: str) -> None:
    """Forget a tool (tests that define throw-away tools)."""
    with _lock:
        _registry.pop(name, None)


# --------------------------------------------------------------------------- arguments & results


def parse_arguments(text: str | dict | None) -> dict:
    """The model's `arguments` (JSON text) as a dict; ValueError says what is wrong."""
    if isinstance(text, dict):
        return text
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the arguments are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"the arguments must be a JSON object, not {type(value).__name__}")
    return value


def check_arguments(spec: ToolSpec, arguments: Any) -> str | None:
    """None when `arguments` fit the tool's schema, else a one-line reason (pure, deterministic:
    the orchestrator may call it to skip a doomed activity)."""
    if not isinstance(arguments, dict):
        return f"the arguments must be an object, not {type(arguments).__name__}"
    validator = jsonschema.validators.validator_for(spec.parameters)(spec.parameters)
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"{where}: {first.message}" if where else first.message) + more


def python_arguments(spec: ToolSpec, arguments: dict, call_id: str) -> dict:
    """Keyword arguments for the function: Enum/dataclass values built, idempotency_key added."""
    kwargs = {k: _coerce(spec.hints.get(k, Any), v) for k, v in arguments.items()}
    if spec.takes_idempotency_key:
        kwargs[IDEMPOTENCY_PARAMETER] = call_id
    return kwargs


def _coerce(hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _coerce(args[0], value)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _coerce(members[0], value) if len(members) == 1 else value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type) and isinstance(value, dict):
        inner = typing.get_type_hints(hint)
        return hint(**{k: _coerce(inner.get(k, Any), v) for k, v in value.items()})
    if origin in (list, typing.Sequence) and args and isinstance(value, list):
        return [_coerce(args[0], v) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_result(spec: ToolSpec, value: Any) -> Any:
    """The result if JSON can carry it unchanged; TypeError naming the tool otherwise."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tool '{spec.name}' returned {type(value).__name__}, which is not "
                        f"JSON-serialisable ({exc}); return dicts, lists, strings, numbers, "
                        "booleans or None") from None
    return value


__all__ = ["tool", "ToolSpec", "ToolDefinitionError", "registry", "load_tools", "get_tool",
           "openai_schemas", "retry_options", "parse_arguments", "check_arguments",
           "python_arguments", "check_result", "json_schema_for", "parse_docstring",
           "build_spec", "APPROVAL", "IDEMPOTENCY_PARAMETER"]
