"""The thread API: read, list and forget conversations, look up one turn, list the agents.

- GET    /api/agents                                        configured agents and their models
- GET    /api/agents/{name}/threads?limit=&offset=          the agent's threads, newest first
- GET    /api/agents/{name}/threads/{thread_id}             one conversation, with totals
- DELETE /api/agents/{name}/threads/{thread_id}             forget it (state + turn histories)
- GET    /api/agents/{name}/threads/{thread_id}/turns/{turn_id}   one turn's status and result
         (and, while it waits for a person, the calls pending approval)
"""
from __future__ import annotations

import asyncio

import azure.durable_functions as df
import azure.functions as func

from activities.providers import describe_provider
from core.agents import load_catalogue
from core.threads import format_thread_id
from entities.thread import THREAD_ARCHIVE_ENTITY, archive_key
from entities.thread_index import index_entities
from orchestrators.housekeeping import DELETE_ORCHESTRATOR

from .common import (agent_or_404, json_response, problem_response, read_thread,
                     runtime_status, thread_key_or_error, wait_for_instance,
                     waiting_for_approval)
from .run import failure, named_turn, pending_list, turn_status_or_404
from .turn_request import Problem
from .web import fastapi_route

bp = df.Blueprint()
MAX_PAGE = 100


def _int_param(req: func.HttpRequest, name: str, default: int, maximum: int) -> int:
    raw = req.params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > maximum:
        raise Problem(400, "invalid_parameter", f"'{name}' must be an integer from 0 to {maximum}")
    return int(raw)


async def full_history(client, agent, key: str, state: dict) -> list[dict]:
    """Archived pages (oldest first), then the messages still in the thread's state."""
    messages: list[dict] = []
    for page in range(state.get("archive", {}).get("pages", 0)):
        stored = await client.read_entity_state(df.EntityId(
            THREAD_ARCHIVE_ENTITY, archive_key(agent.name, key, page)))
        messages.extend(stored.entity_state or [])
    return messages + state["messages"]


def message_document(m: dict) -> dict:
    doc = {"role": m["role"], "content": m["content"], "created_at": m.get("createdAt"),
           "turn_id": m.get("turnId"), "usage": m.get("usage"), "model": m.get("model"),
           "duration_ms": m.get("durationMs")}
    for key in ("tool_calls", "tool_call_id", "name", "approval"):
        if key in m:
            doc[key] = m[key]
    if m.get("output") is not None:
        doc["output"] = m["output"]
    return doc


def thread_document(state: dict, all_messages: list[dict]) -> dict:
    messages = [message_document(m) for m in all_messages]
    return {"thread_id": state["threadId"], "agent": state["agent"],
            "created_at": state["createdAt"], "updated_at": state["updatedAt"],
            "message_count": len(messages), "totals": state["totals"], "messages": messages,
            "in_progress": (state.get("lease") or {}).get("turnId")}


@bp.route(route="agents", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@fastapi_route
def http_list_agents(req: func.HttpRequest) -> func.HttpResponse:
    agents = []
    for agent in load_catalogue().values():
        agents.append({"name": agent.name, "instructions": agent.instructions,
                       "temperature": agent.temperature,
                       "max_output_tokens": agent.max_output_tokens,
                       "context_tokens": agent.context_tokens,
                       **describe_provider(agent.to_activity())})
    return json_response({"agents": agents})


async def all_threads(client, agent) -> list[dict]:
    """Every index shard of the agent, read concurrently and merged."""
    shards = await asyncio.gather(*[client.read_entity_state(shard)
                                    for shard in index_entities(agent.name)])
    merged: dict = {}
    for shard in shards:
        if shard.entity_exists and shard.entity_state:
            merged.update(shard.entity_state)
    return [{"thread_id": format_thread_id(agent.name, key), "updated_at": entry["updated_at"],
             "created_at": entry.get("created_at"), "messages": entry.get("messages")}
            for key, entry in merged.items()]


@bp.route(route="agents/{name}/threads", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@fastapi_route
async def http_list_threads(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    try:
        agent = agent_or_404(req)
        limit = _int_param(req, "limit", 20, MAX_PAGE)
        offset = _int_param(req, "offset", 0, 10**9)
    except Problem as problem:
        return problem_response(problem)
    threads = sorted(await all_threads(client, agent), key=lambda t: t["updated_at"],
                     reverse=True)
    page = threads[offset:offset + limit]
    following = offset + limit if offset + limit < len(threads) else None
    return json_response({"threads": page, "total": len(threads), "next_offset": following})


@bp.route(route="agents/{name}/threads/{thread_id}", methods=["GET", "DELETE"],
          auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@fastapi_route
async def http_thread(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    try:
        agent = agent_or_404(req)
        key = thread_key_or_error(agent, req.route_params["thread_id"])
        state = await read_thread(client, agent, key)
        if req.method.upper() == "GET":
            messages = await full_history(client, agent, key, state)
            return json_response(thread_document(state, messages))
        return await delete_thread(client, agent, key)
    except Problem as problem:
        return problem_response(problem)


async def delete_thread(client, agent, key: str) -> func.HttpResponse:
    """Forget the thread through the delete_thread orchestration (entity state, archive pages,
    index entry, turn histories), wait for it, then purge its own history too."""
    instance_id = await client.start_new(DELETE_ORCHESTRATOR, None,
                                         {"agent": agent.name, "thread_key": key})
    status = await wait_for_instance(client, instance_id, 30)
    if runtime_status(status) != "Completed":
        raise Problem(503, "delete_pending", "the thread is being deleted; try again shortly")
    await client.purge_instance_history(instance_id)
    return json_response({"thread_id": format_thread_id(agent.name, key), "deleted": True,
                          "turn_histories_purged": status.output["turn_histories_purged"]})


@bp.route(route="agents/{name}/threads/{thread_id}/turns/{turn_id}", methods=["GET"],
          auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@fastapi_route
async def http_turn(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    try:
        agent, key, turn_id, instance_id = named_turn(req)
        status = await turn_status_or_404(client, instance_id, turn_id)
    except Problem as problem:
        return problem_response(problem)
    runtime = runtime_status(status)
    body = {"turn_id": turn_id, "thread_id": format_thread_id(agent.name, key),
            "status": runtime, "instance_id": instance_id,
            "created_at": status.created_time.isoformat() if status.created_time else None,
            "updated_at": status.last_updated_time.isoformat()
            if status.last_updated_time else None,
            "status_query_url": client.create_http_management_payload(instance_id)[
                "statusQueryGetUri"]}
    if runtime == "Completed":
        body["result"] = status.output
    elif runtime == "Failed":
        body["error"] = failure(status.output).to_json()["error"]
    waiting = waiting_for_approval(status)
    if waiting:
        body.update({"state": "waiting_for_approval", "pending": pending_list(req, waiting),
                     "expires_at": waiting.get("expires_at")})
    return json_response(body)
