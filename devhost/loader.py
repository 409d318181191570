"""Imports an unmodified Function app once and indexes its functions by trigger type.

Does what the Functions host + Python worker do before the first invocation: put
local.settings.json Values in the environment, import the script with the app folder as cwd and
on sys.path, find the single FunctionRegister, and call get_functions() exactly once (a second
call raises in the SDK).
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import azure.functions as func

from . import asgi_http
from .config import load_local_settings
from .errors import AppLoadError


@dataclass
class HttpFunction:
    name: str
    route: str
    methods: list[str] | None          # None = every method
    auth_level: str                    # anonymous | function | admin
    fn: Callable
    request_param: str
    client_param: str | None           # durableClient binding name, if any
    client_hub: str | None
    client_connection: str | None
    wants_context: bool
    is_async: bool


@dataclass
class ActivityFunction:
    name: str
    fn: Callable
    input_param: str
    wants_context: bool
    is_async: bool
    client_param: str | None = None    # a durableClient binding on the activity, if any
    client_hub: str | None = None
    client_connection: str | None = None


@dataclass
class TimerFunction:
    name: str
    schedule: str                      # NCRONTAB or TimeSpan, %SETTING% not yet expanded
    run_on_startup: bool
    fn: Callable
    timer_param: str
    wants_context: bool
    is_async: bool
    client_param: str | None = None
    client_hub: str | None = None
    client_connection: str | None = None


@dataclass
class McpToolFunction:
    """An `mcpToolTrigger` function; devhost/mcp.py serves it as the MCP extension does."""
    name: str
    binding: dict                      # the trigger's binding JSON (toolName, toolProperties...)
    fn: Callable
    context_param: str
    context_annotation: Any            # str -> the context as JSON text, dict-like -> parsed
    wants_context: bool
    is_async: bool
    client_param: str | None = None
    client_hub: str | None = None
    client_connection: str | None = None


@dataclass
class AppIndex:
    http: list[HttpFunction] = field(default_factory=list)
    orchestrators: dict[str, tuple[str, Callable]] = field(default_factory=dict)
    activities: dict[str, ActivityFunction] = field(default_factory=dict)
    entities: dict[str, tuple[str, Callable]] = field(default_factory=dict)
    # registered orchestrator/entity name (lower case) → its Functions function name, which
    # the host's console lines use ('Functions.counter' for entity 'Counter')
    function_names: dict[str, str] = field(default_factory=dict)
    timers: list[TimerFunction] = field(default_factory=list)
    mcp_tools: list[McpToolFunction] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)

    # Durable registry lookups are case-insensitive, as in the extension.
    def orchestrator(self, name: str) -> tuple[str, Callable] | None:
        return self.orchestrators.get(name.lower())

    def activity(self, name: str) -> ActivityFunction | None:
        return self.activities.get(name.lower())

    def entity(self, name: str) -> tuple[str, Callable] | None:
        return self.entities.get(name.lower())

    def function_name(self, registered: str) -> str:
        return self.function_names.get(registered.lower(), registered)


def apply_local_settings(app_dir: Path) -> dict[str, str]:
    """Put local.settings.json Values in os.environ; variables already set win, so a shell or a
    test can override a setting without editing the file."""
    values = load_local_settings(app_dir)
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return values


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _summarise_import_error(script: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    app_frames = [f for f in frames if "site-packages" not in f.filename
                  and "importlib" not in f.filename]
    where = f" ({Path(app_frames[-1].filename).name} line {app_frames[-1].lineno})" \
        if app_frames else ""
    return f"the Function app failed to import {script}: {type(exc).__name__}: {exc}{where}"


def import_app(app_dir: Path) -> func.FunctionRegister:
    script = os.environ.get("PYTHON_SCRIPT_FILE_NAME") or "function_app.py"
    if not (app_dir / script).is_file():
        raise AppLoadError(f"no {script} in {app_dir}: point --app at a Functions Python v2 app "
                           "folder (the one with host.json and function_app.py)")
    for extra in (app_dir / ".python_packages/lib/site-packages", app_dir):
        if extra.is_dir() and str(extra) not in sys.path:
            sys.path.insert(0, str(extra))
    os.chdir(app_dir)  # the SDK reads host.json relative to the working directory
    os.environ.setdefault("AzureWebJobsScriptRoot", str(app_dir))
    module_name = Path(script).stem
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's code: anything can happen
        raise AppLoadError(_summarise_import_error(script, exc)) from exc
    registers = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(registers) != 1:
        raise AppLoadError(f"{script} must define exactly one top-level function app "
                           f"(df.DFApp or func.FunctionApp); found {len(registers)}")
    return registers[0]


def index_app(app: func.FunctionRegister) -> AppIndex:
    try:
        functions = app.get_functions()
    except Exception as exc:
        raise AppLoadError(f"the Function app's functions are invalid: {exc}") from exc
    index = AppIndex()
    for f in functions:
        name = f.get_function_name()
        trigger = f.get_trigger()
        fn = f.get_user_function()
        params = list(inspect.signature(fn).parameters)
        binding_names = {b.name for b in f.get_bindings()}
        wants_context = "context" in params and "context" not in binding_names
        is_async = inspect.iscoroutinefunction(fn)
        kind = trigger.type
        client = next((b for b in f.get_bindings() if b.type == "durableClient"), None)
        if kind == "httpTrigger":
            methods = [_enum_text(m).upper() for m in trigger.methods] if trigger.methods else None
            index.http.append(HttpFunction(
                name=name, route=trigger.route or name, methods=methods,
                auth_level=_enum_text(trigger.auth_level or "function").lower(), fn=fn,
                request_param=trigger.name, client_param=client.name if client else None,
                client_hub=getattr(client, "task_hub", None) if client else None,
                client_connection=getattr(client, "connection_name", None) if client else None,
                wants_context=wants_context, is_async=is_async))
        elif kind == "orchestrationTrigger":
            registered = getattr(trigger, "orchestration", None) or name
            index.orchestrators[registered.lower()] = (registered, fn)
            index.function_names[registered.lower()] = name
        elif kind == "activityTrigger":
            registered = getattr(trigger, "activity", None) or name
            index.activities[registered.lower()] = ActivityFunction(
                registered, fn, trigger.name, wants_context, is_async,
                client.name if client else None,
                getattr(client, "task_hub", None) if client else None,
                getattr(client, "connection_name", None) if client else None)
        elif kind == "entityTrigger":
            registered = getattr(trigger, "entity_name", None) or name
            index.entities[registered.lower()] = (registered, fn)
            index.function_names[registered.lower()] = name
        elif kind == "timerTrigger":
            index.timers.append(TimerFunction(
                name, trigger.schedule, bool(getattr(trigger, "run_on_startup", False)), fn,
                trigger.name, wants_context, is_async, client.name if client else None,
                getattr(client, "task_hub", None) if client else None,
                getattr(client, "connection_name", None) if client else None))
        elif kind == "mcpToolTrigger":
            annotation = inspect.signature(fn).parameters[trigger.name].annotation \
                if trigger.name in params else str
            index.mcp_tools.append(McpToolFunction(
                name, trigger.get_dict_repr(), fn, trigger.name, annotation, wants_context,
                is_async, client.name if client else None,
                getattr(client, "task_hub", None) if client else None,
                getattr(client, "connection_name", None) if client else None))
        else:
            index.unsupported.append((name, kind))
    asgi_http.check_functions(index)  # FastAPI mode refuses func.HttpRequest, as the worker does
    return index
