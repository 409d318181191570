"""The orchestrator's two doors into the stream journal (it cannot do I/O itself).

- `stream_publish({"turn_id", "events": [{"kind", "data"}]})`: live events only the orchestrator
  knows about (a tool call now waiting for approval).
- `stream_finish({"turn_id", "result"} | {"turn_id", "failure"})`: the turn's closing event,
  `done` with its result document, or `error` with the error document the HTTP API answers for
  that failure text (`[kind:status] message`, built by the same `api.run.failure`). `finish()` is
  idempotent, so a replayed or retried call, or an SSE reader settling the turn, never doubles it.

Both swallow journal failures (core.journal.publish's rule): the durable result is the truth and
the journal only its live view.
"""
from __future__ import annotations

import logging

import azure.durable_functions as df

from core import journal

log = logging.getLogger(__name__)
bp = df.Blueprint()
PUBLISH_ACTIVITY, FINISH_ACTIVITY = "stream_publish", "stream_finish"


def closing_of(request: dict) -> tuple[str, dict]:
    if "failure" in request:
        from api.run import failure  # the API's own reading of a failed turn
        return "error", failure(request["failure"]).to_json()
    return "done", request.get("result")


@bp.activity_trigger(input_name="request")
def stream_publish(request: dict) -> int:
    """Append the events; returns how many were written."""
    written = 0
    for event in request.get("events") or []:
        if journal.publish(request["turn_id"], event["kind"], event.get("data")) is not None:
            written += 1
    return written


@bp.activity_trigger(input_name="request")
def stream_finish(request: dict) -> bool:
    """Write the turn's closing event once; False when the journal could not be reached."""
    kind, data = closing_of(request)
    try:
        journal.journal().finish(request["turn_id"], kind, data)
        return True
    except Exception:  # noqa: BLE001 - a reader's settle() closes the stream from the durable status
        log.warning("stream journal: could not finish turn %s", request.get("turn_id"),
                    exc_info=True)
        return False
