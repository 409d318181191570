"""One chat turn = one orchestration: read the thread's context window from its entity, call the
model through the LLM activity with durable retries, write the completed turn back, return it.

Its input is small (agent, thread, message, turn id), never the transcript, and a failed turn
is never written to the thread: the orchestration fails with a classified reason instead.
"""
from __future__ import annotations

import azure.durable_functions as df

from activities.errors import parse_error_text
from core import conversation
from core.agents import find_agent

bp = df.Blueprint()
TURN_ORCHESTRATOR = "agent_turn"
LLM_ACTIVITY = "call_llm"
# Durable retries around the activity (which retries transient errors itself first): a crash
# or a persistent outage gets two more tries, 2 s apart.
LLM_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)
DEFAULT_OUTPUT_TOKENS = 256


class TurnFailed(Exception):
    """Carries `[kind:status] message`, the form the HTTP trigger reads back."""


def context_budget(agent, message: str) -> int:
    """Tokens left for history once the system prompt, the new message and the answer fit."""
    fixed = conversation.estimate_tokens({"role": "system", "content": agent.instructions}) \
        + conversation.estimate_tokens({"role": "user", "content": message}) \
        + (agent.max_output_tokens or DEFAULT_OUTPUT_TOKENS)
    return max(0, agent.context_tokens - fixed)


def elapsed_ms(start, end) -> float:
    return round((end - start).total_seconds() * 1000, 1)


@bp.orchestration_trigger(context_name="context")
def agent_turn(context: df.DurableOrchestrationContext):
    turn = context.get_input()
    agent = find_agent(turn["agent"])
    if agent is None:
        raise TurnFailed(f"[not_found:404] agent '{turn['agent']}' is no longer configured")
    started = context.current_utc_datetime
    thread = df.EntityId(agent.entity_name, turn["thread_key"])
    history = yield context.call_entity(thread, "get_context", {
        "agent": agent.name, "thread_id": turn["thread_id"], "create": turn["new_thread"],
        "budget_tokens": context_budget(agent, turn["message"])})

    request = {"agent": agent.to_activity(), "turn_id": turn["turn_id"],
               "messages": conversation.prompt_messages(agent.instructions, history,
                                                        turn["message"])}
    try:
        answer = yield context.call_activity_with_retry(LLM_ACTIVITY, LLM_RETRY, request)
    except Exception as exc:  # retries exhausted: a classified reason, nothing written
        kind, status, message = parse_error_text(str(exc))
        raise TurnFailed(f"[{kind}:{status}] {message}") from None
    if not answer.get("ok"):
        error = answer["error"]
        raise TurnFailed(f"[{error['kind']}:{error['status']}] {error['message']}")

    completed = context.current_utc_datetime
    durations = {"model": answer.get("latency_ms"), "turn": elapsed_ms(started, completed)}
    record = {"agent": agent.name, "thread_id": turn["thread_id"], "turn_id": turn["turn_id"],
              "message": turn["message"], "reply": answer["reply"], "usage": answer["usage"],
              "model": answer["model"], "durations": durations,
              "started_at": started.isoformat(), "completed_at": completed.isoformat()}
    stored = yield context.call_entity(thread, "append_turn", record)
    return {"thread_id": turn["thread_id"], "turn_id": turn["turn_id"],
            "instance_id": context.instance_id, "reply": answer["reply"],
            "usage": answer["usage"], "model": answer["model"],
            "finish_reason": answer.get("finish_reason"), "provider": answer.get("provider"),
            "durations_ms": durations, "context_messages": len(history),
            "thread_messages": stored["message_count"]}
