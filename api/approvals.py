"""`POST /api/agents/{name}/threads/{thread_id}/turns/{turn_id}/approvals/{call_id}`: a person
decides a tool call that waits for approval, with `{"approved": bool, "reason": "..."}`.

200 with the decision once the turn has recorded it; 404 for an unknown turn or call; 409 when
the call was already decided or timed out (or the turn ended); 400 for a malformed body. The
decision travels as the durable event `approval:<call_id>` carrying a fresh decision id; the
turn records the first decision it receives in its custom status, and we answer 200 only if
that one is ours, so two people deciding at once get one 200 and one 409.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import azure.durable_functions as df
import azure.functions as func

from orchestrators.agent_turn import APPROVAL_EVENT

from .common import json_response, problem_response, runtime_status, waiting_for_approval
from .run import named_turn, turn_status_or_404
from .turn_request import Problem
from .web import fastapi_route

bp = df.Blueprint()
RECORD_WAIT_SECONDS = 10.0
MAX_REASON = 2000


def parse_decision(body: bytes) -> dict:
    try:
        data = json.loads(body or b"")
    except (ValueError, RecursionError):
        raise Problem(400, "invalid_json", "the body must be JSON like "
                      '{"approved": true, "reason": "..."}') from None
    if not isinstance(data, dict) or not isinstance(data.get("approved"), bool):
        raise Problem(400, "invalid_body", "'approved' is required and must be true or false")
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise Problem(400, "invalid_body", f"'reason' must be a string of at most {MAX_REASON} "
                      "characters")
    unknown = set(data) - {"approved", "reason", "by"}
    if unknown:
        raise Problem(400, "invalid_body", f"unknown fields {sorted(unknown)}")
    by = data.get("by", "")
    if not isinstance(by, str) or len(by) > 200:
        raise Problem(400, "invalid_body", "'by' must be a short string")
    return {"approved": data["approved"], "reason": reason, "by": by}


def custom_of(status) -> dict:
    custom = getattr(status, "custom_status", None)
    if isinstance(custom, str):
        try:
            custom = json.loads(custom)
        except ValueError:
            custom = None
    return custom if isinstance(custom, dict) else {}


def recorded(status, call_id: str) -> dict | None:
    """The decision the turn recorded for this call (running or finished turn), or None."""
    for decision in custom_of(status).get("decided") or []:
        if decision.get("id") == call_id:
            return decision
    output = status.output if runtime_status(status) == "Completed" else None
    for call in (output or {}).get("tool_calls") or [] if isinstance(output, dict) else []:
        if call.get("id") == call_id and call.get("approval"):
            return {"id": call_id, **call["approval"]}
    return None


def conflict(decision: dict) -> Problem:
    if decision.get("timed_out"):
        return Problem(409, "approval_timed_out", "the approval timed out (counted as denied)")
    verdict = "approved" if decision.get("approved") else "denied"
    return Problem(409, "already_decided", f"this call was already {verdict} by "
                   f"{decision.get('by')} at {decision.get('at')}")


@bp.route(route="agents/{name}/threads/{thread_id}/turns/{turn_id}/approvals/{call_id}",
          methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@fastapi_route
async def http_decide(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    try:
        agent, key, turn_id, instance_id = named_turn(req)
        call_id = req.route_params["call_id"]
        decision = parse_decision(req.get_body())
        decision["by"] = req.headers.get("x-ms-client-principal-name") or decision["by"] \
            or "anonymous"
        status = await turn_status_or_404(client, instance_id, turn_id)
        earlier = recorded(status, call_id)
        if earlier:
            raise conflict(earlier)
        waiting = waiting_for_approval(status)
        if not waiting or all(p["id"] != call_id for p in waiting.get("pending", [])):
            raise Problem(404, "call_not_found", f"turn '{turn_id}' has no call '{call_id}' "
                          "waiting for approval")
        decision_id = uuid.uuid4().hex
        await client.raise_event(instance_id, APPROVAL_EVENT.format(call_id=call_id),
                                 {**decision, "decision_id": decision_id})
        taken = await wait_for_record(client, instance_id, call_id)
        if taken is None:
            return json_response({"call_id": call_id, "status": "sent", **decision}, 202)
        if taken.get("decision_id") != decision_id:
            raise conflict(taken)
        return json_response({"call_id": call_id, "turn_id": turn_id, "status": "decided",
                              **{k: taken.get(k) for k in ("approved", "reason", "by", "at")}})
    except Problem as problem:
        return problem_response(problem)


async def wait_for_record(client, instance_id: str, call_id: str) -> dict | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT_SECONDS
    delay = 0.005
    while loop.time() < deadline:
        status = await client.get_status(instance_id)
        taken = recorded(status, call_id)
        if taken or runtime_status(status) in ("Failed", "Terminated", "Canceled"):
            return taken
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.05)
    return None
