"""What the HTTP functions share: JSON problems, agent and thread lookup, waiting on an
orchestration with a millisecond back-off."""
from __future__ import annotations

import asyncio
import json

import azure.durable_functions as df
import azure.functions as func

from core.agents import Agent, find_agent
from core.threads import ThreadIdError, format_thread_id, parse_thread_id

from .turn_request import Problem

FIRST_POLL_SECONDS, MAX_POLL_SECONDS = 0.002, 0.02
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")


def json_response(body, status: int = 200, headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=headers or {})


def problem_response(problem: Problem, extra_headers: dict | None = None) -> func.HttpResponse:
    return json_response(problem.to_json(), problem.status,
                         {**problem.headers, **(extra_headers or {})})


def agent_or_404(req: func.HttpRequest) -> Agent:
    name = req.route_params.get("name", "")
    agent = find_agent(name)
    if agent is None:
        raise Problem(404, "agent_not_found", f"no agent named '{name}'")
    return agent


def thread_key_or_error(agent: Agent, thread_id: str) -> str:
    try:
        return parse_thread_id(thread_id, agent.name)
    except ThreadIdError as exc:
        raise Problem(exc.status, "invalid_thread_id" if exc.status == 400
                      else "thread_not_found", str(exc)) from None


async def read_thread(client: df.DurableOrchestrationClient, agent: Agent, key: str) -> dict:
    """The thread's state document; 404 when it does not exist (or was deleted)."""
    state = await client.read_entity_state(df.EntityId(agent.entity_name, key))
    if not state.entity_exists or not state.entity_state:
        raise Problem(404, "thread_not_found",
                      f"thread '{format_thread_id(agent.name, key)}' does not exist")
    return state.entity_state


def runtime_status(status) -> str | None:
    return status.runtime_status.value if status and status.runtime_status else None


def waiting_for_approval(status) -> dict | None:
    """The turn's custom status while it waits for a person, else None."""
    custom = getattr(status, "custom_status", None) if status else None
    if isinstance(custom, str):
        try:
            custom = json.loads(custom)
        except ValueError:
            return None
    if isinstance(custom, dict) and custom.get("state") == "waiting_for_approval" \
            and runtime_status(status) not in TERMINAL:
        return custom
    return None


def absolute(req: func.HttpRequest, path: str) -> str:
    """A path of this app as a URL on the host the request came to."""
    base = req.url.split("/api/", 1)[0]
    return base + path


async def wait_for_instance(client: df.DurableOrchestrationClient, instance_id: str,
                            timeout: float, stop_when_waiting: bool = False):
    """Poll status with a back-off from 2 ms to 20 ms; the last status seen. With
    `stop_when_waiting`, a turn waiting for an approval ends the wait at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = FIRST_POLL_SECONDS
    while True:
        status = await client.get_status(instance_id)
        if runtime_status(status) in TERMINAL or loop.time() + delay > deadline \
                or (stop_when_waiting and waiting_for_approval(status)):
            return status
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL_SECONDS)
