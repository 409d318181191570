"""What the HTTP functions share: JSON problems, agent and thread lookup, waiting on an
orchestration: started and awaited in one call to the host, or polled with a millisecond
back-off."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from core.agents import Agent, find_agent
from core.threads import ThreadIdError, format_thread_id, parse_thread_id

from .turn_request import Problem

FIRST_POLL_SECONDS, MAX_POLL_SECONDS = 0.002, 0.02
APPROVAL_CHECK_FIRST, APPROVAL_CHECK_MAX = 0.1, 1.0
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")
ENDED_WITHOUT_OUTPUT = ("Failed", "Terminated", "Canceled")


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


async def start_and_wait(client: df.DurableOrchestrationClient, orchestrator: str,
                         instance_id: str, value, timeout: float,
                         watch_for_approval: bool = False):
    """Start an orchestration and wait for it to end, in ONE call to the host: the Durable
    extension's start webhook with `timeout` and `pollingInterval` (the binding's
    createAndWaitOnNewInstancePostUri, on the worker's rpc base like `start_new`). The host
    answers 200 with the output once the instance has completed (a failed, terminated or
    canceled one: 200 with its status), or 202 when `timeout` passes first. A poll-free
    provider wakes the wait when the instance ends; others poll in the host, not here.

    The SDK has no method for it, so this makes `start_new`'s own request with the query added
    (the client's rpc base and request helper). Returns the status: one built from the answer
    when it ended, else a fresh `get_status`. A turn may stop for a person instead of ending:
    with `watch_for_approval` a slow status check (0.1 s, doubling to 1 s) ends the wait when
    the turn is waiting for an approval."""
    bindings = client._orchestration_bindings
    interval = min(timeout, MAX_POLL_SECONDS)
    url = (f"{bindings.rpc_base_url}orchestrators/{orchestrator}/{instance_id}"
           f"?timeout={timeout:g}&pollingInterval={interval:g}")
    call = client._post_async_request(url, client._get_json_input(value),
                                      function_invocation_id=client._function_invocation_id)
    if watch_for_approval:
        code, body = await _unless_waiting_for_approval(client, instance_id, call)
    else:
        code, body = await call
    if code == 200:
        return ended_status(instance_id, body)
    if code == 202:
        return body if isinstance(body, DurableOrchestrationStatus) \
            else await client.get_status(instance_id)
    message = body.get("ExceptionMessage") or body.get("Message") if isinstance(body, dict) \
        else body
    raise Exception(f"starting '{orchestrator}' failed with {code}: {message}")


def ended_status(instance_id: str, body) -> DurableOrchestrationStatus:
    """The status of an instance the start-and-wait call saw end: a status document for a
    failed, terminated or canceled one, the output itself for a completed one."""
    if isinstance(body, dict) and body.get("instanceId") == instance_id \
            and body.get("runtimeStatus") in ENDED_WITHOUT_OUTPUT:
        return DurableOrchestrationStatus.from_json(body)
    now = datetime.now(timezone.utc).isoformat()
    return DurableOrchestrationStatus(instanceId=instance_id, runtimeStatus="Completed",
                                      output=body, createdTime=now, lastUpdatedTime=now)


async def _unless_waiting_for_approval(client, instance_id: str, call) -> tuple[int, object]:
    """The call's answer; or, once a slow status check sees the instance waiting for an
    approval, (202, that status) and the call is cancelled. The call is awaited directly, so
    its answer reaches the caller without a detour through another waiter."""
    call = asyncio.ensure_future(call)

    async def watch():
        delay = APPROVAL_CHECK_FIRST
        while True:
            await asyncio.sleep(delay)
            status = await client.get_status(instance_id)
            if waiting_for_approval(status):
                call.cancel()
                return status
            delay = min(delay * 2, APPROVAL_CHECK_MAX)

    watcher = asyncio.ensure_future(watch())
    try:
        return await call
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
            return 202, watcher.result()  # the watcher cancelled the call: not our caller
        raise
    finally:
        watcher.cancel()
