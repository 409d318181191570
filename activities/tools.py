"""One Durable activity per registered tool, named after the tool.

Why one each (not a generic runner): the orchestration history, the devhost dashboard and the
Durable Task Scheduler timeline then show `refund_order`, and each tool's retry policy and
timeout are its own. Input `{"call_id", "arguments" (dict), "turn_id", "thread_id"}`; the
activity validates the arguments against the tool's schema (jsonschema), runs the tool with a
timeout, checks the result is JSON and returns it. Every failure RAISES, with a text that starts
`[kind:status]` (see activities.errors), so Durable records it and the orchestrator's
`call_activity_with_retry(name, core.tools.retry_options(spec), input)` applies the tool's
policy; after the last attempt the orchestrator turns it into an error result for the model.

A timed-out sync tool cannot be stopped (Python threads cannot be killed): its thread finishes
in the background and its result is dropped. Tools with side effects should use their
`idempotency_key` so that such a straggler and the retry do the work once.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time

import azure.durable_functions as df

from core import journal
from core import tools as registry

from .errors import ToolError

log = logging.getLogger(__name__)
bp = df.Blueprint()


def _input(call) -> dict:
    if isinstance(call, (str, bytes)):
        try:
            call = json.loads(call)
        except ValueError:
            call = None
    if not isinstance(call, dict):
        raise ToolError("bad_request", "a tool activity's input must be an object "
                        "{call_id, arguments, turn_id, thread_id}", status=500)
    return call


async def run_tool(name: str, call) -> object:
    """Run tool `name` for one call (the body of its activity; callable without the host)."""
    spec = registry.get_tool(name)
    call = _input(call)
    call_id = str(call.get("call_id") or "")
    arguments = call.get("arguments")
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):  # tolerate the model's JSON text as well as a dict
        try:
            arguments = registry.parse_arguments(arguments)
        except ValueError as exc:
            raise ToolError("invalid_arguments", f"tool '{name}': {exc}") from None
    problem = registry.check_arguments(spec, arguments)
    if problem:
        raise ToolError("invalid_arguments", f"tool '{name}': invalid arguments: {problem}")
    kwargs = registry.python_arguments(spec, arguments, call_id)
    started = time.perf_counter()
    try:
        if spec.is_async:
            result = await asyncio.wait_for(spec.fn(**kwargs), spec.timeout_seconds)
        else:
            result = await asyncio.wait_for(
                asyncio.to_thread(functools.partial(spec.fn, **kwargs)), spec.timeout_seconds)
    except asyncio.TimeoutError:
        raise ToolError("tool_timeout", f"tool '{name}' did not finish within "
                        f"{spec.timeout_seconds:g} s") from None
    except ToolError:
        raise
    except Exception as exc:
        log.warning("tool %s (call %s, turn %s) raised %s: %s", name, call_id,
                    call.get("turn_id"), type(exc).__name__, exc)
        raise ToolError("tool_failed", f"tool '{name}' raised {type(exc).__name__}: {exc}") from exc
    try:
        registry.check_result(spec, result)
    except TypeError as exc:
        raise ToolError("invalid_tool_result", str(exc)) from None
    log.info("tool %s (call %s, turn %s) ok in %.1f ms", name, call_id, call.get("turn_id"),
             (time.perf_counter() - started) * 1000)
    return result


async def run_tool_live(name: str, call) -> object:
    """run_tool, with the call and its outcome published to the turn's stream journal
    (`tool_call`, then `tool_result`; a retried call repeats both under the same id)."""
    turn_id = str(call.get("turn_id") or "") if isinstance(call, dict) else ""
    if not turn_id or not call.get("stream"):  # only streamed turns write live events
        return await run_tool(name, call)
    call_id = str(call.get("call_id") or "")
    await asyncio.to_thread(journal.publish, turn_id, "tool_call", {
        "id": call_id, "name": name, "arguments": call.get("arguments")})
    try:
        result = await run_tool(name, call)
    except Exception as exc:
        await asyncio.to_thread(journal.publish, turn_id, "tool_result", {
            "id": call_id, "ok": False, "error": str(exc)})
        raise
    await asyncio.to_thread(journal.publish, turn_id, "tool_result", {
        "id": call_id, "ok": True, "result": result})
    return result


def _register(name: str) -> None:
    async def handler(call: dict):  # annotated like call_llm: the worker checks trigger params
        return await run_tool_live(name, call)

    handler.__name__ = handler.__qualname__ = name
    handler.__doc__ = f"Durable activity running the tool '{name}' (see activities.tools)."
    bp.function_name(name=name)(bp.activity_trigger(input_name="call")(handler))


for _name in sorted(registry.load_tools()):
    _register(_name)


__all__ = ["bp", "run_tool"]
