"""The orchestrator's door into the stream journal (it cannot do I/O itself):
`stream_publish({"turn_id", "events": [{"kind", "data"}]})` appends live events only the
orchestrator knows about (tool calls now waiting for approval). Journal failures are swallowed
(core.journal.publish's rule): the durable result is the truth, the journal only its live view.

The closing `done` / `error` event is not written here: the SSE readers write it from the
turn's durable status (api/stream.py), so a turn costs no extra activity when nobody streams.
"""
from __future__ import annotations

import azure.durable_functions as df

from core import journal

bp = df.Blueprint()
PUBLISH_ACTIVITY = "stream_publish"


@bp.activity_trigger(input_name="request")
def stream_publish(request: dict) -> int:
    """Append the events; returns how many were written."""
    written = 0
    for event in request.get("events") or []:
        if journal.publish(request["turn_id"], event["kind"], event.get("data")) is not None:
            written += 1
    return written
