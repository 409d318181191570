"""Run agent turns from your own orchestrator: each turn is a sub-orchestration of the same
`agent_turn` orchestrator an HTTP `POST /run` starts, with the same input, so a workflow's
threads are ordinary threads (thread API, dashboard, ordering, history).

    from orchestrators.agent_call import run_agent, run_agents

    @bp.orchestration_trigger(context_name="context")
    def my_workflow(context):
        label = yield from run_agent(context, "triage", text, response_format=LABEL_SCHEMA)
        answer = yield from run_agent(context, label["output"]["label"], text)
        drafts = yield from run_agents(context, [("poet", text), ("engineer", text)])
        return answer["reply"]

`run_agent` returns the turn's result document (README: `thread_id`, `turn_id`, `reply`,
`usage`, ... and `output` with a `response_format`); `run_agents` fans out and returns the
documents in the order asked. A failed turn raises AgentTurnFailed naming the agent.

Ids come from `context.new_uuid()` (replay-safe), so a replayed workflow schedules the very same
sub-orchestration ids and Durable never starts a second turn.
"""
from __future__ import annotations

from dataclasses import dataclass

import azure.durable_functions as df

from activities.errors import parse_error_text
from core.agents import find_agent
from core.threads import ThreadIdError, format_thread_id, parse_thread_id
from orchestrators.agent_turn import TURN_ORCHESTRATOR


class AgentTurnFailed(Exception):
    """A turn run by a workflow failed: which agent, and the turn's classified reason.

    Its text is `agent '<name>' failed: [kind:status] message`, which the workflow API reads
    back to name the failing step."""

    def __init__(self, agent: str, kind: str, status: int, message: str):
        super().__init__(f"agent '{agent}' failed: [{kind}:{status}] {message}")
        self.agent, self.kind, self.status, self.reason = agent, kind, status, message


@dataclass(frozen=True)
class AgentCall:
    """One planned turn: the sub-orchestration's id and input (the HTTP turn's shape)."""
    agent: str
    instance_id: str
    input: dict


def plan_turn(context: df.DurableOrchestrationContext, agent_name: str, message: str,
              thread_id: str | None = None, response_format: dict | None = None) -> AgentCall:
    """Validate the call and derive deterministic ids; raises AgentTurnFailed on bad input
    (an unknown agent, an empty message, a malformed or foreign thread id)."""
    agent = find_agent(agent_name) if isinstance(agent_name, str) else None
    if agent is None:
        raise AgentTurnFailed(str(agent_name), "agent_not_found", 404,
                              f"no agent named '{agent_name}'")
    if not isinstance(message, str) or not message.strip():
        raise AgentTurnFailed(agent.name, "invalid_message", 400,
                              "the message must be a non-empty string")
    if thread_id:
        try:
            thread_key = parse_thread_id(thread_id, agent.name)
        except ThreadIdError as exc:
            raise AgentTurnFailed(agent.name, "invalid_thread_id" if exc.status == 400
                                  else "thread_not_found", exc.status, str(exc)) from None
        new_thread = False
    else:
        thread_key, new_thread = context.new_uuid(), True
    turn_id = context.new_uuid().replace("-", "")
    turn = {"agent": agent.name, "thread_key": thread_key,
            "thread_id": format_thread_id(agent.name, thread_key), "message": message,
            "turn_id": turn_id, "new_thread": new_thread}
    if response_format is not None:
        turn["response_format"] = response_format
    return AgentCall(agent.name, f"turn-{thread_key}-{turn_id}", turn)


def _turn_task(context: df.DurableOrchestrationContext, call: AgentCall):
    return context.call_sub_orchestrator(TURN_ORCHESTRATOR, call.input, call.instance_id)


def _failure(call: AgentCall, exc: BaseException) -> AgentTurnFailed:
    kind, status, message = parse_error_text(str(exc))
    return AgentTurnFailed(call.agent, kind, status, message)


def run_agent(context: df.DurableOrchestrationContext, agent: str, message: str,
              thread_id: str | None = None, response_format: dict | None = None):
    """One agent turn as a sub-orchestration (use with `yield from`); its result document."""
    call = plan_turn(context, agent, message, thread_id, response_format)
    try:
        return (yield _turn_task(context, call))
    except AgentTurnFailed:
        raise
    except Exception as exc:  # the sub-orchestration failed: name the agent and the reason
        raise _failure(call, exc) from None


def run_agents(context: df.DurableOrchestrationContext, calls: list):
    """Fan out several turns at once (use with `yield from`): `calls` holds `(agent, message)`
    pairs or dicts of run_agent's keyword arguments; the result documents, in order. The first
    failed turn raises AgentTurnFailed naming its agent."""
    planned = []
    for call in calls:
        kwargs = call if isinstance(call, dict) else {"agent": call[0], "message": call[1]}
        planned.append(plan_turn(context, kwargs["agent"], kwargs["message"],
                                 kwargs.get("thread_id"), kwargs.get("response_format")))
    tasks = [_turn_task(context, call) for call in planned]
    try:
        return (yield context.task_all(tasks))
    except Exception as exc:
        failed = next((call for call, task in zip(planned, tasks)
                       if getattr(task, "result", None) is exc), None)
        if failed is None:  # which child failed is not recorded: fall back to the first failed
            failed = next((call for call, task in zip(planned, tasks)
                           if isinstance(getattr(task, "result", None), Exception)), planned[0])
        raise _failure(failed, exc) from None
