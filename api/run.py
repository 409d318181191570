"""`POST /api/agents/{name}/run`: validate, start one turn orchestration, wait for it briefly.

A new turn is started and awaited in one call to the Durable host (its start webhook with
`timeout`, woken when the turn ends; api.common.start_and_wait), because turn latency is a
headline figure; an idempotent repeat of a started turn polls its status with a millisecond
back-off (not the SDK's one-second polling). A turn that outlasts
TURN_WAIT_SECONDS answers 202 with the standard status URLs; its output is the same document.
An `Idempotency-Key` header makes a repeated POST return the first one's turn.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

import azure.durable_functions as df
import azure.functions as func

from activities.errors import parse_error_text
from core import settings
from core.journal import publish
from core.threads import format_thread_id, new_thread_key
from orchestrators.agent_turn import TURN_ORCHESTRATOR
from orchestrators.housekeeping import ensure_housekeeping

from .common import (TERMINAL, absolute, agent_or_404, json_response, problem_response,
                     read_thread, runtime_status, start_and_wait, thread_key_or_error,
                     wait_for_instance, waiting_for_approval)
from .turn_request import Problem, TurnRequest, parse_idempotency_key, parse_run_request
from .web import check_status_response, fastapi_route

bp = df.Blueprint()
DEFAULT_WAIT_SECONDS = 30.0
# one start-and-wait call stays well inside the SDK client's 240 s request timeout
MAX_HOST_WAIT_SECONDS = 200.0
FAILURE_PREFIX = f"Orchestrator function '{TURN_ORCHESTRATOR}' failed: "
IDEMPOTENCY_NAMESPACE = uuid.UUID("6a1d3c52-4e0e-4a43-9a55-6b1d2b0c7a11")


def wants_event_stream(req: func.HttpRequest) -> bool:
    return "text/event-stream" in (req.headers.get("Accept") or "").lower()


def event_stream(*args):
    from .stream import event_stream as respond  # api.stream builds on this module
    return respond(*args)


def turn_wait_seconds() -> float:
    return settings.number("TURN_WAIT_SECONDS", DEFAULT_WAIT_SECONDS)


def turn_instance_id(thread_key: str, turn_id: str) -> str:
    """Turn orchestrations are named after their thread, so a thread's turns share a prefix."""
    return f"turn-{thread_key}-{turn_id}"


def named_turn(req: func.HttpRequest):
    """(agent, thread key, turn id, instance id) of a `…/threads/{thread_id}/turns/{turn_id}`
    route; 404 for an unknown agent or another agent's thread, 400 for a malformed id."""
    agent = agent_or_404(req)
    key = thread_key_or_error(agent, req.route_params["thread_id"])
    turn_id = req.route_params["turn_id"]
    return agent, key, turn_id, turn_instance_id(key, turn_id)


async def turn_status_or_404(client, instance_id: str, turn_id: str):
    status = await client.get_status(instance_id)
    if not runtime_status(status):
        raise Problem(404, "turn_not_found", f"no turn '{turn_id}' on this thread")
    return status


def idempotency_key(req: func.HttpRequest) -> str | None:
    return parse_idempotency_key(req.headers.get("Idempotency-Key"))


async def resolve_thread(client, agent, turn: TurnRequest, key: str | None) -> tuple[str, bool]:
    """(thread uuid key, is new). A named thread must exist: nobody creates one by naming it.
    Without a thread, an idempotency key names the thread its first POST created."""
    if turn.thread_id:
        thread_key = thread_key_or_error(agent, turn.thread_id)
        await read_thread(client, agent, thread_key)
        return thread_key, False
    if key is None:
        return new_thread_key(), True
    thread_key = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{agent.name.lower()}\n{key}"))
    try:
        await read_thread(client, agent, thread_key)
        return thread_key, False
    except Problem:
        return thread_key, True


def completed_response(result: dict, turn: TurnRequest, headers: dict) -> func.HttpResponse:
    if turn.wants_json:
        return json_response(result, 200, headers)
    return func.HttpResponse(result["reply"], status_code=200, mimetype="text/plain",
                             headers=headers)


def failure(output: object) -> Problem:
    kind, status, message = parse_error_text(str(output or "").removeprefix(FAILURE_PREFIX))
    return Problem(status, kind, message)


def ended_problem(status) -> Problem | None:
    """The error a failed, terminated or canceled turn answers with; None otherwise."""
    runtime = runtime_status(status)
    if runtime == "Failed":
        return failure(status.output)
    if runtime in ("Terminated", "Canceled"):
        return Problem(409, "turn_terminated", f"the turn was {runtime.lower()}: {status.output}")
    return None


def pending_list(req: func.HttpRequest, waiting: dict) -> list[dict]:
    return [{**call, "approve_url": absolute(req, call["approve_url"])}
            for call in waiting.get("pending", [])]


def accepted_response(client, req: func.HttpRequest, instance_id: str, headers: dict,
                      waiting: dict | None = None):
    """202 with the standard status URLs; a turn waiting for approval also lists its
    pending calls and the URL to decide each."""
    extra = None
    if waiting:
        extra = {"status": "waiting_for_approval", "thread_id": headers["x-ms-thread-id"],
                 "turn_id": headers["x-ms-turn-id"], "pending": pending_list(req, waiting),
                 "expires_at": waiting.get("expires_at")}
    return check_status_response(client, req, instance_id, headers, extra)


def stored_input(status) -> dict:
    """A started orchestration's input (Python-started inputs come back as JSON text)."""
    value = status.input_
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


async def start_turn(client, instance_id: str, turn_input: dict, replayable: bool,
                     wait: float | None = None, may_need_approval: bool = False):
    """Start the turn, unless an idempotent repeat finds it already started. With `wait`,
    wait up to that long for it to end (or to stop for an approval) and return the last
    status; a fresh turn is started and awaited in one call to the host."""
    if replayable:
        existing = await client.get_status(instance_id)
        if runtime_status(existing):
            if stored_input(existing).get("message") != turn_input["message"]:
                raise Problem(422, "idempotency_key_reused", "this Idempotency-Key was used "
                              "for another message on this thread")
            return await waited(client, instance_id, wait)
    try:
        if wait is not None:
            loop = asyncio.get_running_loop()
            began = loop.time()
            status = await start_and_wait(client, TURN_ORCHESTRATOR, instance_id, turn_input,
                                          min(wait, MAX_HOST_WAIT_SECONDS),
                                          watch_for_approval=may_need_approval)
            left = wait - (loop.time() - began)
            if runtime_status(status) in TERMINAL or waiting_for_approval(status) or left <= 0:
                return status
            return await waited(client, instance_id, left)  # beyond one host call's wait
        await client.start_new(TURN_ORCHESTRATOR, instance_id, turn_input)
    except Exception:
        if not replayable or not runtime_status(await client.get_status(instance_id)):
            raise  # a concurrent repeat may have started it first; anything else is real
    return await waited(client, instance_id, wait)


async def waited(client, instance_id: str, wait: float | None):
    if wait is None:
        return None
    return await wait_for_instance(client, instance_id, wait, stop_when_waiting=True)


@bp.route(route="agents/{name}/run", methods=None, auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@fastapi_route
async def http_run_agent(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    try:
        agent = agent_or_404(req)
        turn = parse_run_request(req.method, dict(req.headers), dict(req.params), req.get_body())
        key = idempotency_key(req)
        thread_key, is_new = await resolve_thread(client, agent, turn, key)
        turn_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{thread_key}\n{key}").hex if key \
            else uuid.uuid4().hex
        instance_id = turn_instance_id(thread_key, turn_id)
        thread_id = format_thread_id(agent.name, thread_key)
        headers = {"x-ms-thread-id": thread_id, "x-ms-turn-id": turn_id}
        turn_input = {"agent": agent.name, "thread_key": thread_key, "thread_id": thread_id,
                      "message": turn.message, "turn_id": turn_id, "new_thread": is_new}
        if turn.response_format is not None:
            turn_input["response_format"] = turn.response_format
        streamed = wants_event_stream(req)
        if streamed:  # only a streamed turn writes its live events to the journal
            turn_input["stream"] = True
        if streamed and not (key and runtime_status(await client.get_status(instance_id))):
            # event 1 of the stream, ahead of anything the turn itself publishes
            await asyncio.to_thread(publish, turn_id, "turn", {
                "thread_id": thread_id, "turn_id": turn_id, "instance_id": instance_id,
                "agent": agent.name})
        try:
            await ensure_housekeeping(client)
        except Exception:  # the clean-up must never cost a user their turn; retried next request
            logging.getLogger(__name__).exception("could not start the thread clean-up")
        wait = turn_wait_seconds() if turn.wait and not streamed else None
        status = await start_turn(client, instance_id, turn_input, key is not None, wait,
                                  bool(agent.require_approval))
    except Problem as problem:
        return problem_response(problem)

    if streamed:
        return event_stream(client, turn_id, instance_id, None, headers)
    if not turn.wait:
        return accepted_response(client, req, instance_id, headers)
    if runtime_status(status) == "Completed":
        return completed_response(status.output, turn, headers)
    ended = ended_problem(status)
    if ended:
        return problem_response(ended, headers)
    return accepted_response(client, req, instance_id, headers, waiting_for_approval(status))
