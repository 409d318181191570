"""A turn as Server-Sent Events, read from the stream journal (core.journal).

- `POST /api/agents/{name}/run` with `Accept: text/event-stream` (api/run.py calls
  `event_stream` once the turn is started): the turn's events live.
- `GET /api/agents/{name}/threads/{thread_id}/turns/{turn_id}/stream` with `Last-Event-ID` or
  `?after=N`: every event after N, then live; after the turn ended, up to its closing event.

Events: `turn` (ids), `attempt` (a model attempt starts: discard that step's text so far),
`delta` (text), `tool_call`, `tool_result`, `approval_pending`, then one `done` (the result
document) or `error` (the error document, as the plain call answers it). The closing event comes
from the durable status, the truth: the reader that sees the turn end writes it, once
(`finish()` is idempotent); a turn whose journal has expired answers its closing event alone.
"""
from __future__ import annotations

import asyncio

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.http.fastapi import StreamingResponse

from core import journal, settings

from .common import problem_response, runtime_status
from .run import ended_problem, named_turn, turn_status_or_404
from .turn_request import Problem
from .web import fastapi_route

bp = df.Blueprint()
DEFAULT_HEARTBEAT_SECONDS = 15.0
FIRST_POLL_SECONDS, MAX_POLL_SECONDS = 0.02, 1.0


def closing_event(status) -> tuple[str, dict] | None:
    """The closing event a finished turn's durable status implies; None while it runs."""
    if runtime_status(status) == "Completed":
        return "done", status.output
    problem = ended_problem(status)
    return ("error", problem.to_json()) if problem else None


async def turn_events(client, turn_id: str, instance_id: str, after):
    """The SSE frames of one turn: replay after `after`, follow live, end after the closing
    event. Whenever the journal is idle the reader asks the durable status whether the turn has
    ended (every 20 ms at first, backing off to 1 s); the first reader to see it writes the
    closing event with the idempotent finish(), so every reader gets exactly one. A comment
    heartbeat goes out after STREAM_HEARTBEAT_SECONDS without a frame."""
    j = journal.journal()
    loop = asyncio.get_running_loop()
    heartbeat = settings.number("STREAM_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS, 0.05)
    after = 0 if after is None else int(after)
    closing = closing_event(await client.get_status(instance_id))
    if closing and not await asyncio.to_thread(j.finished, turn_id) \
            and not await asyncio.to_thread(j.read, turn_id):
        # expired after retention (or never journaled): the durable result alone
        yield journal.HEARTBEAT
        yield journal.sse_event(journal.Event(1, *closing))
        return
    yield journal.HEARTBEAT  # at once: the response head reaches the client
    quiet_since, delay = loop.time(), FIRST_POLL_SECONDS
    while True:
        events = await j.wait_async(turn_id, after, delay)
        for event in events:
            yield journal.sse_event(event)
            after = event.id
        if events:
            quiet_since, delay = loop.time(), FIRST_POLL_SECONDS
            continue
        if await asyncio.to_thread(j.finished, turn_id):
            # another reader may have written the closing event since this one last read
            for event in await asyncio.to_thread(j.read, turn_id, after):
                yield journal.sse_event(event)
            return
        if closing is None:
            closing = closing_event(await client.get_status(instance_id))
        if closing:
            await asyncio.to_thread(j.finish, turn_id, *closing)  # idempotent
            continue
        if loop.time() - quiet_since >= heartbeat:
            yield journal.HEARTBEAT
            quiet_since = loop.time()
        delay = min(delay * 1.5, MAX_POLL_SECONDS)


def event_stream(client, turn_id: str, instance_id: str, after, headers: dict):
    return StreamingResponse(turn_events(client, turn_id, instance_id, after),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                      **headers})


def parse_after(req: func.HttpRequest) -> int | None:
    raw = req.headers.get("Last-Event-ID")
    if raw is None:
        raw = req.params.get("after")
    if raw is None or not raw.strip():
        return None
    if not raw.strip().isdigit():
        raise Problem(400, "invalid_after", "Last-Event-ID / after must be an event id "
                      "(a non-negative integer)")
    return int(raw.strip())


@bp.route(route="agents/{name}/threads/{thread_id}/turns/{turn_id}/stream", methods=["GET"],
          auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@fastapi_route
async def http_turn_stream(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    try:
        agent, key, turn_id, instance_id = named_turn(req)
        after = parse_after(req)
        await turn_status_or_404(client, instance_id, turn_id)
    except Problem as problem:
        return problem_response(problem)
    return event_stream(client, turn_id, instance_id, after,
                        {"x-ms-thread-id": req.route_params["thread_id"], "x-ms-turn-id": turn_id})
