"""Error vocabulary of the LLM and tool activities, shared with the orchestrator.

Pure Python on purpose (no Azure Functions / openai imports) so orchestrator
code can import it cheaply and deterministically.

Why the text format matters: when an activity raises, Durable Functions
hands the orchestrator only the exception *text*, e.g.
``Activity function 'call_llm' failed: LLMTransientError: [rate_limited:503]
upstream answered 429 after 3 attempts``. Every error's ``str()`` therefore
starts with ``[<kind>:<status>] `` and ``parse_error_text`` recovers
``(kind, status, message)`` from such a text.
"""

from __future__ import annotations

import re

# Failures worth retrying (inside the activity, then by Durable's retry policy).
TRANSIENT_KINDS = frozenset(
    {"rate_limited", "server_error", "timeout", "connection", "invalid_response"}
)
# Failures that retrying cannot fix: the activity returns ``ok: False``.
PERMANENT_KINDS = frozenset(
    {"bad_request", "auth", "not_found", "content_filter", "context_length", "config",
     "invalid_structured_output"}
)
# Failures of a tool activity (raised, so the tool's Durable retry policy applies; after the
# last attempt the orchestrator gives the model an error result, the turn goes on).
TOOL_KINDS = frozenset({"invalid_arguments", "tool_timeout", "tool_failed", "invalid_tool_result"})
KINDS = TRANSIENT_KINDS | PERMANENT_KINDS | TOOL_KINDS

# HTTP status to answer the *end user* with, per kind (not the upstream status).
_DEFAULT_STATUS = {
    "rate_limited": 503,
    "server_error": 502,
    "timeout": 504,
    "connection": 503,
    "invalid_response": 502,
    "bad_request": 502,
    "auth": 502,
    "not_found": 502,
    "content_filter": 502,
    "context_length": 502,
    "config": 500,
    "invalid_structured_output": 502,  # the reply did not fit response_format, even repaired
    "invalid_arguments": 400,
    "tool_timeout": 504,
    "tool_failed": 500,
    "invalid_tool_result": 500,
}

# Returned by parse_error_text for a text that carries no ``[kind:status]`` tag
# (e.g. an unexpected bug surfaced as a raw exception).
UNKNOWN_KIND = "unknown"
UNKNOWN_STATUS = 500

_TAG = re.compile(r"\[([a-z_]+):(\d{3})\][ \t]*([^\r\n]*)")


def status_for(kind: str) -> int:
    """End-user HTTP status for an error kind (500 for unknown kinds)."""
    return _DEFAULT_STATUS.get(kind, UNKNOWN_STATUS)


def one_line(text: object, limit: int = 500) -> str:
    """Collapse whitespace/newlines and cap length: messages must stay one line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class LLMError(Exception):
    """Base class. ``str(err)`` is ``[kind:status] message``.

    ``upstream_status`` is the HTTP status the model endpoint answered (if any);
    ``retry_after`` is the wait in seconds the endpoint asked for (if any).
    """

    transient = False

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        upstream_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind
        self.status = int(status if status is not None else status_for(kind))
        self.message = one_line(message)
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        super().__init__(f"[{self.kind}:{self.status}] {self.message}")

    def to_dict(self) -> dict:
        """The ``error`` object of an ``{"ok": False, "error": ...}`` result."""
        return {
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "upstream_status": self.upstream_status,
        }

    def __reduce__(self):  # keep pickling (multiprocessing, logging) working
        return (
            _rebuild,
            (type(self), self.kind, self.message, self.status, self.upstream_status, self.retry_after),
        )


def _rebuild(cls, kind, message, status, upstream_status, retry_after):
    return cls(kind, message, status=status, upstream_status=upstream_status, retry_after=retry_after)


class LLMTransientError(LLMError):
    """Retryable failure: raised out of the activity so Durable retries it."""

    transient = True


class LLMPermanentError(LLMError):
    """Non-retryable failure: turned into ``{"ok": False, "error": ...}``."""


class ToolError(Exception):
    """A tool activity failed; ``str(err)`` is ``[kind:status] message`` like ``LLMError``."""

    def __init__(self, kind: str, message: str, *, status: int | None = None) -> None:
        self.kind = kind
        self.status = int(status if status is not None else status_for(kind))
        self.message = one_line(message)
        super().__init__(f"[{self.kind}:{self.status}] {self.message}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "status": self.status, "message": self.message}

    def __reduce__(self):
        return (_rebuild_tool_error, (self.kind, self.message, self.status))


def _rebuild_tool_error(kind, message, status):
    return ToolError(kind, message, status=status)


def parse_error_text(text: str | None) -> tuple[str, int, str]:
    """Recover ``(kind, status, message)`` from an exception text.

    Accepts a bare ``str(err)`` or the orchestrator's wrapped text
    (``Activity function 'call_llm' failed: LLMTransientError: [timeout:504] ...``,
    possibly followed by a stack trace). Without a tag it returns
    ``("unknown", 500, <first non-empty line>)``.
    """
    text = text or ""
    match = _TAG.search(text)
    if match:
        return match.group(1), int(match.group(2)), match.group(3).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return UNKNOWN_KIND, UNKNOWN_STATUS, one_line(first) or "unknown error"
