"""`POST /api/agents/{name}/run`: validate, start one turn orchestration, wait for it briefly.

The wait is our own short back-off over the durable client's status (milliseconds, not the
SDK's one-second polling), because turn latency is a headline figure. A turn that outlasts
TURN_WAIT_SECONDS answers 202 with the standard status URLs; its output is the same document.
"""
from __future__ import annotations

import asyncio
import json
import os
import uuid

import azure.durable_functions as df
import azure.functions as func

from activities.errors import parse_error_text
from core.agents import find_agent
from core.threads import ThreadIdError, format_thread_id, new_thread_key, parse_thread_id
from orchestrators.agent_turn import TURN_ORCHESTRATOR

from .turn_request import Problem, TurnRequest, parse_run_request

bp = df.Blueprint()
DEFAULT_WAIT_SECONDS = 30.0
FIRST_POLL_SECONDS, MAX_POLL_SECONDS = 0.002, 0.05
FAILURE_PREFIX = f"Orchestrator function '{TURN_ORCHESTRATOR}' failed: "


def problem_response(problem: Problem, extra_headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(problem.to_json()), status_code=problem.status,
                             mimetype="application/json",
                             headers={**problem.headers, **(extra_headers or {})})


def turn_wait_seconds() -> float:
    raw = os.environ.get("TURN_WAIT_SECONDS")
    try:
        return float(raw) if raw else DEFAULT_WAIT_SECONDS
    except ValueError:
        return DEFAULT_WAIT_SECONDS


async def wait_for_turn(client: df.DurableOrchestrationClient, instance_id: str,
                        timeout: float):
    """Poll status with a back-off from 2 ms to 50 ms; the last status seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = FIRST_POLL_SECONDS
    while True:
        status = await client.get_status(instance_id)
        runtime = status.runtime_status.value if status and status.runtime_status else None
        if runtime in ("Completed", "Failed", "Terminated", "Canceled"):
            return status
        if loop.time() + delay > deadline:
            return status
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_POLL_SECONDS)


async def resolve_thread(client, agent, turn: TurnRequest) -> tuple[str, bool]:
    """(thread uuid key, is new); a named thread must exist: nobody creates one by naming it."""
    if not turn.thread_id:
        return new_thread_key(), True
    try:
        key = parse_thread_id(turn.thread_id, agent.name)
    except ThreadIdError as exc:
        raise Problem(exc.status, "invalid_thread_id" if exc.status == 400
                      else "thread_not_found", str(exc)) from None
    state = await client.read_entity_state(df.EntityId(agent.entity_name, key))
    if not state.entity_exists:
        raise Problem(404, "thread_not_found",
                      f"thread '{format_thread_id(agent.name, key)}' does not exist")
    return key, False


def completed_response(result: dict, turn: TurnRequest, headers: dict) -> func.HttpResponse:
    if turn.wants_json:
        return func.HttpResponse(json.dumps(result), status_code=200,
                                 mimetype="application/json", headers=headers)
    return func.HttpResponse(result["reply"], status_code=200, mimetype="text/plain",
                             headers=headers)


def failed_response(output: object, headers: dict) -> func.HttpResponse:
    text = str(output or "")
    kind, status, message = parse_error_text(text.removeprefix(FAILURE_PREFIX))
    return problem_response(Problem(status, kind, message), headers)


def accepted_response(client, req: func.HttpRequest, instance_id: str,
                      headers: dict) -> func.HttpResponse:
    check = client.create_check_status_response(req, instance_id)
    merged = {k: v for k, v in check.headers.items()}
    merged.update(headers)
    return func.HttpResponse(check.get_body(), status_code=202, mimetype="application/json",
                             headers=merged)


@bp.route(route="agents/{name}/run", methods=None, auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def http_run_agent(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    try:
        agent = find_agent(req.route_params.get("name", ""))
        if agent is None:
            raise Problem(404, "agent_not_found",
                          f"no agent named '{req.route_params.get('name', '')}'")
        turn = parse_run_request(req.method, dict(req.headers), dict(req.params), req.get_body())
        thread_key, is_new = await resolve_thread(client, agent, turn)
    except Problem as problem:
        return problem_response(problem)

    thread_id = format_thread_id(agent.name, thread_key)
    turn_id = uuid.uuid4().hex
    instance_id = f"turn-{thread_key}-{turn_id}"
    headers = {"x-ms-thread-id": thread_id, "x-ms-turn-id": turn_id}
    await client.start_new(TURN_ORCHESTRATOR, instance_id, {
        "agent": agent.name, "thread_key": thread_key, "thread_id": thread_id,
        "message": turn.message, "turn_id": turn_id, "new_thread": is_new})
    if not turn.wait:
        return accepted_response(client, req, instance_id, headers)
    status = await wait_for_turn(client, instance_id, turn_wait_seconds())
    runtime = status.runtime_status.value if status and status.runtime_status else None
    if runtime == "Completed":
        return completed_response(status.output, turn, headers)
    if runtime == "Failed":
        return failed_response(status.output, headers)
    if runtime in ("Terminated", "Canceled"):
        return problem_response(Problem(409, "turn_terminated",
                                        f"the turn was {runtime.lower()}: {status.output}"),
                                headers)
    return accepted_response(client, req, instance_id, headers)
