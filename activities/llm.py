"""The ``call_llm`` activity: one chat completion with a two-level retry policy.

Why two levels: short hiccups (a 429 with a small Retry-After, a 502, a
dropped connection) are cheapest to absorb right here with ``tenacity``; if
they outlast ``LLM_MAX_ATTEMPTS`` the activity RAISES ``LLMTransientError``
so Durable's ``call_activity_with_retry`` (and crash recovery) tries again
later. Failures that no retry can fix (bad request, auth, unknown
deployment, content filter, context too long, misconfiguration) are
RETURNED as ``{"ok": False, "error": {...}}``: Durable retries every raised
exception, so raising them would only waste time and quota.

Input ``{"agent", "messages", "turn_id", "tools"?, "response_format"?}``: ``messages`` may
hold assistant messages with ``tool_calls`` and ``tool`` messages (``tool_call_id``,
``content``); ``tools`` is the OpenAI tool schema list (``core.tools.openai_schemas``);
``response_format`` is checked by ``core.structured``. With a response_format, a final text
reply that does not parse or validate gets ONE repair attempt (the model is told what was
wrong); still invalid → ``ok: False`` kind ``invalid_structured_output`` (502).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from typing import Awaitable, Callable

import azure.durable_functions as df
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from core import structured

from . import providers
from .errors import LLMError, LLMPermanentError, LLMTransientError

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_BASE_SECONDS = 0.5
DEFAULT_RETRY_MAX_WAIT_SECONDS = 4.0
DEFAULT_RETRY_AFTER_MAX_SECONDS = 30.0
ROLES = ("system", "user", "assistant", "tool")

# Indirection so tests can make waits instant; tenacity awaits it with seconds.
sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

bp = df.Blueprint()
providers.announce_startup()


def _env_number(name: str, raw: str | None, default: float, minimum: float) -> float:
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise LLMPermanentError("config", f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise LLMPermanentError("config", f"{name}={raw!r} must be at least {minimum:g}")
    return value


def retry_settings() -> dict:
    """Current in-activity retry settings (read from env on every call)."""
    return {
        "attempts": int(_env_number("LLM_MAX_ATTEMPTS", os.environ.get("LLM_MAX_ATTEMPTS"), DEFAULT_MAX_ATTEMPTS, 1)),
        "base": _env_number(
            "LLM_RETRY_BASE_SECONDS", os.environ.get("LLM_RETRY_BASE_SECONDS"), DEFAULT_RETRY_BASE_SECONDS, 0
        ),
        "max_wait": _env_number(
            "LLM_RETRY_MAX_WAIT_SECONDS",
            os.environ.get("LLM_RETRY_MAX_WAIT_SECONDS"),
            DEFAULT_RETRY_MAX_WAIT_SECONDS,
            0,
        ),
        "max_retry_after": _env_number(
            "LLM_RETRY_AFTER_MAX_SECONDS",
            os.environ.get("LLM_RETRY_AFTER_MAX_SECONDS"),
            DEFAULT_RETRY_AFTER_MAX_SECONDS,
            0,
        ),
    }


async def run_with_retries(attempt: Callable[[], Awaitable[dict]], *, turn_id: str = "",
                           on_retry: Callable[[int, str], None] | None = None
                           ) -> tuple[dict, int]:
    """Run ``attempt`` with bounded retries of ``LLMTransientError``.

    ``on_retry(attempt_number, reason)`` is called before each retried attempt (2, 3, ...).

    Returns ``(result, attempts_made)``. Permanent errors pass through at
    once. When retries run out (or the upstream asks to wait longer than
    ``LLM_RETRY_AFTER_MAX_SECONDS``) it raises ``LLMTransientError`` whose
    message ends with ``after N attempt(s)``.
    """
    cfg = retry_settings()
    backoff = wait_random_exponential(multiplier=cfg["base"], max=cfg["max_wait"])
    made = 0

    def retryable(exc: BaseException) -> bool:
        if not isinstance(exc, LLMTransientError):
            return False
        return exc.retry_after is None or exc.retry_after <= cfg["max_retry_after"]

    def wait(state) -> float:
        exc = state.outcome.exception()
        if isinstance(exc, LLMError) and exc.retry_after is not None:
            return exc.retry_after  # the upstream said how long; jitter would only add delay
        return backoff(state)

    def log_retry(state) -> None:
        nonlocal last_failure
        last_failure = str(state.outcome.exception())
        log.warning(
            "call_llm turn %s attempt %d failed, retrying in %.2fs: %s",
            turn_id, state.attempt_number, state.next_action.sleep if state.next_action else 0,
            state.outcome.exception(),
        )

    async def counted() -> dict:
        nonlocal made
        made += 1
        if made > 1 and on_retry is not None:
            on_retry(made, last_failure)
        return await attempt()

    last_failure = ""

    retrying = AsyncRetrying(
        stop=stop_after_attempt(cfg["attempts"]),
        wait=wait,
        retry=retry_if_exception(retryable),
        before_sleep=log_retry,
        sleep=lambda seconds: sleep(seconds),
        reraise=True,
    )
    try:
        return await retrying(counted), made
    except LLMTransientError as exc:
        plural = "attempt" if made == 1 else "attempts"
        reason = exc.message
        if exc.retry_after is not None and exc.retry_after > cfg["max_retry_after"]:
            reason += f" and asked to wait {exc.retry_after:.0f} s (more than {cfg['max_retry_after']:.0f} s)"
        raise LLMTransientError(
            exc.kind,
            f"{reason} after {made} {plural}",
            status=exc.status,
            upstream_status=exc.upstream_status,
            retry_after=exc.retry_after,
        ) from exc


def _bad(message: str) -> LLMPermanentError:
    return LLMPermanentError("bad_request", message, status=500)


def _validate(request) -> dict:
    """Check the activity input; a malformed call is our bug, so answer 500."""
    if isinstance(request, (str, bytes)):
        try:
            request = json.loads(request)
        except ValueError:
            request = None
    if not isinstance(request, dict):
        raise _bad("call_llm input must be an object")
    agent = request.get("agent") or {}
    messages = request.get("messages")
    if not isinstance(agent, dict):
        raise _bad("call_llm input 'agent' must be an object")
    if not isinstance(messages, list) or not messages:
        raise _bad("call_llm input 'messages' must be a non-empty list")
    clean = [_message(i, m) for i, m in enumerate(messages)]
    tools = request.get("tools") or None
    if tools is not None and (not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict)
            and t["function"].get("name") for t in tools)):
        raise _bad("call_llm input 'tools' must be a list of {type: function, function: {name, ...}}")
    response_format = request.get("response_format")
    if response_format is not None:
        try:
            response_format = structured.check_response_format(response_format)
        except ValueError as exc:
            raise _bad(f"call_llm input 'response_format': {exc}") from None
    return {"agent": agent, "messages": clean, "turn_id": str(request.get("turn_id") or ""),
            "tools": tools, "response_format": response_format}


def _message(i: int, m) -> dict:
    """One message in the wire shape (tool results as text, tool calls kept)."""
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise _bad(f"call_llm message {i} needs a role in {ROLES}")
    content = m.get("content")
    if content is None:
        content = ""
    if m["role"] == "tool":
        if not m.get("tool_call_id"):
            raise _bad(f"call_llm message {i} (a tool result) needs its tool_call_id")
        if not isinstance(content, str):  # a tool's JSON result: the model reads text
            content = json.dumps(content)
        return {"role": "tool", "tool_call_id": str(m["tool_call_id"]), "content": content}
    if not isinstance(content, str):
        raise _bad(f"call_llm message {i} content must be text")
    out = {"role": m["role"], "content": content}
    calls = m.get("tool_calls")
    if calls:
        if m["role"] != "assistant" or not isinstance(calls, list) or not all(
                isinstance(c, dict) and c.get("id") and (c.get("name") or isinstance(c.get("function"), dict))
                for c in calls):
            raise _bad(f"call_llm message {i}: tool_calls belong to assistant messages and need "
                       "an id and a name")
        out["tool_calls"] = calls
        if not content:
            out["content"] = None  # the API's shape for an assistant turn that only calls tools
    return out


def _add_usage(total: dict, used: dict) -> dict:
    return {k: total.get(k, 0) + used.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def call_llm_impl(request: dict, *, on_delta: Callable[[str], None] | None = None,
                  on_restart: Callable[[int, str], None] | None = None) -> dict:
    """``call_llm_async`` for callers without an event loop (tests, scripts, the streamed
    activity's thread); the loop's clients are closed with it."""
    async def call() -> dict:
        try:
            return await call_llm_async(request, on_delta=on_delta, on_restart=on_restart)
        finally:
            await providers.close_loop_clients()
    return asyncio.run(call())


async def call_llm_async(request: dict, *, on_delta: Callable[[str], None] | None = None,
                         on_restart: Callable[[int, str], None] | None = None) -> dict:
    """Body of the activity (importable and testable without the host).

    Success: ``{"ok": True, "reply", "tool_calls": [{"id", "name", "arguments"}], "usage":
    {"prompt_tokens", "completion_tokens", "total_tokens"}, "model", "finish_reason",
    "latency_ms", "provider", "attempts"}`` plus ``"output"`` (the parsed, validated value, or
    None when the model asked for tools) when the input had a response_format.
    Non-retryable failure: ``{"ok": False, "error": {"kind", "status", "message",
    "upstream_status"}}``. Retryable failure that outlasted the in-activity
    retries: raises ``LLMTransientError`` (``str()`` = ``[kind:status] message``).

    Streaming: ``on_delta(text)`` receives the reply text as it arrives (see
    ``providers.complete``). ``on_restart(attempt, reason)`` is called before every further
    model attempt of this call (a retry after a failure, or the structured-output repair):
    text received through ``on_delta`` until then is void and the new attempt's text follows.
    The result's ``reply`` is always exactly the text of the last attempt.
    """
    started = time.perf_counter()
    turn_id = ""
    try:
        checked = _validate(request)
        turn_id, messages, rf = checked["turn_id"], checked["messages"], checked["response_format"]
        attempts_total = 0

        async def model_call(conversation: list[dict]) -> dict:
            nonlocal attempts_total
            if attempts_total and on_restart is not None:  # the repair after a first reply
                on_restart(attempts_total + 1, "the reply did not fit the response_format")
            base = attempts_total

            def on_retry(number: int, reason: str) -> None:
                if on_restart is not None:
                    on_restart(base + number, reason)

            result, made = await run_with_retries(
                lambda: providers.acomplete(checked["agent"], conversation,
                                            tools=checked["tools"], response_format=rf,
                                            on_delta=on_delta),
                turn_id=turn_id, on_retry=on_retry)
            attempts_total += made
            return result

        result = await model_call(messages)
        output = None
        if rf is not None and not result["tool_calls"]:
            output, problem = structured.validate_reply(rf, result["reply"])
            if problem:
                log.warning("call_llm turn %s: reply does not fit response_format, one repair: %s",
                            turn_id, problem)
                first_usage = result["usage"]
                repair = messages + [{"role": "assistant", "content": result["reply"]},
                                     structured.repair_message(problem, rf)]
                result = await model_call(repair)
                result["usage"] = _add_usage(first_usage, result["usage"])
                if not result["tool_calls"]:
                    output, problem = structured.validate_reply(rf, result["reply"])
                    if problem:
                        raise LLMPermanentError("invalid_structured_output", problem)
    except LLMPermanentError as exc:
        log.warning("call_llm turn %s failed (not retried): %s", turn_id, exc)
        return {"ok": False, "error": exc.to_dict()}
    except LLMTransientError as exc:
        log.error("call_llm turn %s failed, leaving it to Durable's retry: %s", turn_id, exc)
        raise
    latency_ms = round((time.perf_counter() - started) * 1000.0, 1)
    log.info(
        "call_llm turn %s ok: provider=%s model=%s attempts=%d latency_ms=%.0f tokens=%d tool_calls=%d",
        turn_id, result["provider"], result["model"], attempts_total, latency_ms,
        result["usage"]["total_tokens"], len(result["tool_calls"]),
    )
    answer = {
        "ok": True,
        "reply": result["reply"],
        "tool_calls": result["tool_calls"],
        "usage": result["usage"],
        "model": result["model"],
        "finish_reason": result["finish_reason"],
        "latency_ms": latency_ms,
        "provider": result["provider"],
        "attempts": attempts_total,
    }
    if rf is not None:
        answer["output"] = output
    return answer


class StepStream:
    """The live view of one model step in the stream journal (core.journal).

    Every execution of the activity opens with an ``attempt`` event (``attempt`` 1 the first
    time; a Durable retry of the activity is a further attempt of the same step), each further
    in-activity attempt announces itself the same way, and the text arrives as ``delta`` events.
    A reader discards the step's text whenever an ``attempt`` event for it arrives, so a retried
    attempt is visible and never a garbled concatenation. One writer thread publishes in order;
    pieces that arrive while a write is in flight are merged into one ``delta``, so a slow
    journal (Table storage) never holds the model's stream back.
    """

    def __init__(self, turn_id: str, step) -> None:
        from core import journal
        self.journal, self.turn_id, self.step = journal, turn_id, step
        self.queue: list[list] = []  # [kind, data]; the last delta grows while it waits
        self.closed = False
        self.ready = threading.Condition()
        self.writer = threading.Thread(target=self._write, name=f"stream-{turn_id}", daemon=True)

    def __enter__(self) -> "StepStream":
        earlier = 0
        try:
            earlier = sum(1 for e in self.journal.journal().read(self.turn_id)
                          if e.kind == "attempt" and (e.data or {}).get("step") == self.step)
        except Exception:  # noqa: BLE001 - the journal is a live view; never fail the model call
            log.warning("stream journal: could not read turn %s", self.turn_id, exc_info=True)
        self._put("attempt", {"step": self.step, "attempt": earlier + 1,
                              "reason": "start" if not earlier else "the activity ran again"})
        self.writer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify()
        self.writer.join(30)  # every delta is written before the turn can publish `done`

    def delta(self, text: str) -> None:
        with self.ready:
            if self.queue and self.queue[-1][0] == "delta":
                self.queue[-1][1]["text"] += text
            else:
                self.queue.append(["delta", {"step": self.step, "text": text}])
            self.ready.notify()

    def restart(self, attempt: int, reason: str) -> None:
        self._put("attempt", {"step": self.step, "attempt": attempt, "reason": reason})

    def _put(self, kind: str, data: dict) -> None:
        with self.ready:
            self.queue.append([kind, data])
            self.ready.notify()

    def _write(self) -> None:
        while True:
            with self.ready:
                while not self.queue and not self.closed:
                    self.ready.wait()
                if not self.queue:
                    return
                kind, data = self.queue.pop(0)
            self.journal.publish(self.turn_id, kind, data)


@bp.activity_trigger(input_name="request")
async def call_llm(request: dict) -> dict:
    """Durable activity ``call_llm`` (see ``call_llm_async`` for the contract). A plain turn
    makes one call with the async client on the worker's event loop: no journal writes, no
    per-chunk work, no thread. A streamed turn (``stream`` and a ``turn_id``) streams from the
    provider into the turn's stream journal, in a thread (the journal's writes are blocking)."""
    turn_id = str(request.get("turn_id") or "") if isinstance(request, dict) else ""
    if not turn_id or not request.get("stream"):
        return await call_llm_async(request)
    return await asyncio.to_thread(streamed_call, turn_id, request)


def streamed_call(turn_id: str, request: dict) -> dict:
    with StepStream(turn_id, request.get("step")) as live:
        return call_llm_impl(request, on_delta=live.delta, on_restart=live.restart)


__all__ = ["bp", "call_llm", "call_llm_async", "call_llm_impl", "run_with_retries",
           "retry_settings"]
