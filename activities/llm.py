"""The ``call_llm`` activity: one chat completion with a two-level retry policy.

Why two levels: short hiccups (a 429 with a small Retry-After, a 502, a
dropped connection) are cheapest to absorb right here with ``tenacity``; if
they outlast ``LLM_MAX_ATTEMPTS`` the activity RAISES ``LLMTransientError``
so Durable's ``call_activity_with_retry`` (and crash recovery) tries again
later. Failures that no retry can fix (bad request, auth, unknown
deployment, content filter, context too long, misconfiguration) are
RETURNED as ``{"ok": False, "error": {...}}``: Durable retries every raised
exception, so raising them would only waste time and quota.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable

import azure.durable_functions as df
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from . import providers
from .errors import LLMError, LLMPermanentError, LLMTransientError

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_BASE_SECONDS = 0.5
DEFAULT_RETRY_MAX_WAIT_SECONDS = 4.0
DEFAULT_RETRY_AFTER_MAX_SECONDS = 30.0
ROLES = ("system", "user", "assistant")

# Indirection so tests can make waits instant; tenacity calls it with seconds.
sleep: Callable[[float], None] = time.sleep

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


def run_with_retries(attempt: Callable[[], dict], *, turn_id: str = "") -> tuple[dict, int]:
    """Run ``attempt`` with bounded retries of ``LLMTransientError``.

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
        log.warning(
            "call_llm turn %s attempt %d failed, retrying in %.2fs: %s",
            turn_id, state.attempt_number, state.next_action.sleep if state.next_action else 0,
            state.outcome.exception(),
        )

    def counted() -> dict:
        nonlocal made
        made += 1
        return attempt()

    retrying = Retrying(
        stop=stop_after_attempt(cfg["attempts"]),
        wait=wait,
        retry=retry_if_exception(retryable),
        before_sleep=log_retry,
        sleep=lambda seconds: sleep(seconds),
        reraise=True,
    )
    try:
        return retrying(counted), made
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


def _validate(request) -> tuple[dict, list[dict], str]:
    """Check the activity input; a malformed call is our bug, so answer 500."""
    if isinstance(request, (str, bytes)):
        try:
            request = json.loads(request)
        except ValueError:
            request = None
    if not isinstance(request, dict):
        raise LLMPermanentError("bad_request", "call_llm input must be an object", status=500)
    agent = request.get("agent") or {}
    messages = request.get("messages")
    if not isinstance(agent, dict):
        raise LLMPermanentError("bad_request", "call_llm input 'agent' must be an object", status=500)
    if not isinstance(messages, list) or not messages:
        raise LLMPermanentError("bad_request", "call_llm input 'messages' must be a non-empty list", status=500)
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise LLMPermanentError(
                "bad_request", f"call_llm message {i} needs a role in {ROLES}", status=500
            )
        content = m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise LLMPermanentError("bad_request", f"call_llm message {i} content must be text", status=500)
        clean.append({"role": m["role"], "content": content})
    return agent, clean, str(request.get("turn_id") or "")


def call_llm_impl(request: dict) -> dict:
    """Plain-function body of the activity (importable and testable without the host).

    Success: ``{"ok": True, "reply", "usage": {"prompt_tokens", "completion_tokens",
    "total_tokens"}, "model", "finish_reason", "latency_ms", "provider", "attempts"}``.
    Non-retryable failure: ``{"ok": False, "error": {"kind", "status", "message",
    "upstream_status"}}``. Retryable failure that outlasted the in-activity
    retries: raises ``LLMTransientError`` (``str()`` = ``[kind:status] message``).
    """
    started = time.perf_counter()
    turn_id = ""
    try:
        agent, messages, turn_id = _validate(request)
        result, attempts = run_with_retries(lambda: providers.complete(agent, messages), turn_id=turn_id)
    except LLMPermanentError as exc:
        log.warning("call_llm turn %s failed (not retried): %s", turn_id, exc)
        return {"ok": False, "error": exc.to_dict()}
    except LLMTransientError as exc:
        log.error("call_llm turn %s failed, leaving it to Durable's retry: %s", turn_id, exc)
        raise
    latency_ms = round((time.perf_counter() - started) * 1000.0, 1)
    log.info(
        "call_llm turn %s ok: provider=%s model=%s attempts=%d latency_ms=%.0f tokens=%d",
        turn_id, result["provider"], result["model"], attempts, latency_ms, result["usage"]["total_tokens"],
    )
    return {
        "ok": True,
        "reply": result["reply"],
        "usage": result["usage"],
        "model": result["model"],
        "finish_reason": result["finish_reason"],
        "latency_ms": latency_ms,
        "provider": result["provider"],
        "attempts": attempts,
    }


@bp.activity_trigger(input_name="request")
def call_llm(request: dict) -> dict:
    """Durable activity ``call_llm`` (see ``call_llm_impl`` for the contract)."""
    return call_llm_impl(request)


__all__ = ["bp", "call_llm", "call_llm_impl", "run_with_retries", "retry_settings"]
