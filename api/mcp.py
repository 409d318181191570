"""Every agent is an MCP tool: the Functions MCP extension's `mcpToolTrigger`, one function per
agent in agents.json, so the app deploys to Azure's MCP endpoint (`/runtime/webhooks/mcp`)
unchanged and devhost serves the same bindings at the same path.

Tool name = agent name; arguments `message` (required) and `thread_id` (optional: continue a
conversation). A call is exactly one HTTP turn (same orchestrator, thread entity and ordering).
The result carries the reply as text and `{reply, thread_id, turn_id, ...}` as structured
content (repeated as JSON text for clients without structured content), so the client can
pass `thread_id` back. A failed turn is an MCP tool error (`isError`) with the reason.

Results use the extension's rich-result contract (`useResultSchema`): the function returns
`{"type": "call_tool_result", "content": "<CallToolResult JSON>"}`, which the extension
deserialises as is; that is the only way to send structured content and `isError` from Python.
"""
from __future__ import annotations

import json
import logging
import uuid

import azure.durable_functions as df

from core.agents import Agent, load_catalogue
from core.threads import format_thread_id

from orchestrators.housekeeping import ensure_housekeeping

from .common import runtime_status, waiting_for_approval
from .run import failure, resolve_thread, start_turn, turn_instance_id, turn_wait_seconds
from .turn_request import Problem, TurnRequest, max_message_bytes

bp = df.Blueprint()
log = logging.getLogger(__name__)
TOOL_PROPERTIES = [
    {"propertyName": "message", "propertyType": "string", "isRequired": True,
     "description": "What to say to the agent."},
    {"propertyName": "thread_id", "propertyType": "string", "isRequired": False,
     "description": "Continue this conversation: the thread_id an earlier call returned. "
                    "Omit it to start a new conversation."},
]


def tool_result(text: str, structured: dict, is_error: bool = False) -> str:
    """The extension's McpToolResult wrapping a full CallToolResult."""
    result = {"content": [{"type": "text", "text": text},
                          {"type": "text", "text": json.dumps(structured)}],
              "structuredContent": structured, "isError": is_error}
    return json.dumps({"type": "call_tool_result", "content": json.dumps(result),
                       "structuredContent": json.dumps(structured)})


def error_result(problem: Problem, **context) -> str:
    error = problem.to_json()["error"]
    return tool_result(f"{error['code']} ({error['status']}): {error['message']}",
                       {"error": error, **context}, is_error=True)


def parse_arguments(context: str | dict) -> TurnRequest:
    """The tool call's arguments, checked as the HTTP API checks a run request."""
    data = json.loads(context) if isinstance(context, (str, bytes)) else dict(context)
    arguments = data.get("arguments") or {}
    message, thread_id = arguments.get("message"), arguments.get("thread_id")
    if not isinstance(message, str) or not message.strip():
        raise Problem(400, "invalid_message", "'message' must be a non-empty string")
    if len(message.encode()) > max_message_bytes():
        raise Problem(413, "message_too_large",
                      f"'message' is larger than {max_message_bytes()} bytes")
    if thread_id is not None and (not isinstance(thread_id, str) or not thread_id.strip()):
        raise Problem(400, "invalid_thread_id", "'thread_id' must be a non-empty string")
    return TurnRequest(message=message, thread_id=thread_id or None, wait=True,
                       wants_json=True)


async def run_tool(agent: Agent, context: str | dict, client) -> str:
    """One agent turn for one MCP tool call."""
    try:
        turn = parse_arguments(context)
        thread_key, is_new = await resolve_thread(client, agent, turn, None)
    except Problem as problem:
        return error_result(problem)
    turn_id = uuid.uuid4().hex
    instance_id = turn_instance_id(thread_key, turn_id)
    thread_id = format_thread_id(agent.name, thread_key)
    try:
        await ensure_housekeeping(client)
    except Exception:  # never costs the caller their turn; retried by the next request
        log.exception("could not start the thread clean-up")
    ids = {"thread_id": thread_id, "turn_id": turn_id}
    status = await start_turn(client, instance_id, {
        "agent": agent.name, "thread_key": thread_key, "thread_id": thread_id,
        "message": turn.message, "turn_id": turn_id, "new_thread": is_new}, False,
        turn_wait_seconds(), bool(agent.require_approval))
    runtime = runtime_status(status)
    waiting = waiting_for_approval(status)
    if waiting:  # not a failure: a person decides, then the reply lands in the thread
        pending = waiting.get("pending", [])
        calls = ", ".join(f"{c.get('tool')} ({c.get('approve_url')})" for c in pending)
        return tool_result(f"The turn is waiting for a person to approve: {calls}. The reply "
                           "will be in the thread once they decide.",
                           {"status": "waiting_for_approval", **ids, "pending": pending,
                            "expires_at": waiting.get("expires_at")})
    if runtime == "Completed":
        result = status.output
        return tool_result(result["reply"], {
            "reply": result["reply"], **ids, "model": result.get("model"),
            "usage": result.get("usage"), "thread_messages": result.get("thread_messages")})
    if runtime == "Failed":
        return error_result(failure(status.output), **ids)
    if runtime in ("Terminated", "Canceled"):
        return error_result(Problem(409, "turn_terminated", f"the turn was {runtime.lower()}"),
                            **ids)
    return error_result(Problem(504, "turn_still_running",
                                f"the turn did not finish within {turn_wait_seconds():g} s; it "
                                "goes on, and its reply will be in the thread"), **ids)


def register_agent_tool(agent: Agent) -> None:
    """One mcpToolTrigger function for this agent (function names must be unique)."""

    async def agent_tool(context: str, client: df.DurableOrchestrationClient) -> str:
        return await run_tool(agent, context, client)

    agent_tool.__name__ = agent_tool.__qualname__ = f"mcp_{agent.name}".replace("-", "_")
    description = (f"Talk to the '{agent.name}' agent. {agent.instructions}".strip()
                   + " Returns the reply and a thread_id; pass the thread_id back to continue "
                     "the conversation.")
    decorated = bp.durable_client_input(client_name="client")(agent_tool)
    decorated = bp.mcp_tool_trigger(arg_name="context", tool_name=agent.name,
                                    description=description,
                                    tool_properties=json.dumps(TOOL_PROPERTIES),
                                    use_result_schema=True)(decorated)
    bp.function_name(name=agent_tool.__name__)(decorated)


for _agent in load_catalogue().values():
    register_agent_tool(_agent)
