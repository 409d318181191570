"""One chat turn = one orchestration: take the thread's turn lease (which returns the context
window), call the model through the LLM activity with durable retries, write the completed turn
back (which hands the lease to the next queued turn), return the result document.

Its input is small (agent, thread, message, turn id), never the transcript, and a failed turn
is never written to the thread: the orchestration fails with a classified reason instead.
Turns on one thread run one at a time, in arrival order, each seeing every earlier exchange.
"""
from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from activities.errors import parse_error_text
from activities.turns import TURN_GRANTED_EVENT
from core import conversation
from core.agents import find_agent, load_catalogue
from entities.thread import THREAD_ARCHIVE_ENTITY, archive_key
from entities.thread_index import THREAD_INDEX_ENTITY

bp = df.Blueprint()
TURN_ORCHESTRATOR = "agent_turn"
LLM_ACTIVITY = "call_llm"
# Durable retries around the activity (which retries transient errors itself first): a crash
# or a persistent outage gets two more tries, 2 s apart.
LLM_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)
DEFAULT_OUTPUT_TOKENS = 256
LEASE = timedelta(minutes=10)          # a turn that never releases blocks its thread this long
RECHECK = timedelta(seconds=5)         # a queued turn re-asks this often if not notified


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


def take_turn(context: df.DurableOrchestrationContext, thread, request: dict):
    """Acquire the thread's lease, queueing behind earlier turns; returns the history window."""
    notified = True
    while True:
        now = context.current_utc_datetime
        grant = yield context.call_entity(thread, "acquire", {
            **request, "now": now.isoformat(), "lease_until": (now + LEASE).isoformat()})
        if grant.get("missing"):
            raise TurnFailed("[thread_not_found:404] the thread was deleted")
        if grant["granted"]:
            return grant["history"]
        timer = context.create_timer(now + RECHECK)
        if notified:  # a stale notification must not spin this loop: wait on it only once
            event = context.wait_for_external_event(TURN_GRANTED_EVENT)
            winner = yield context.task_any([event, timer])
            if winner == event:
                timer.cancel()
                notified = False
                continue
        else:
            yield timer
        holder = grant.get("holder")
        if holder and not (yield context.call_activity("turn_is_active", holder["instanceId"])):
            yield from hand_off(context, thread, holder["turnId"], "release")


def hand_off(context: df.DurableOrchestrationContext, thread, turn_id: str, operation: str,
             record: dict | None = None):
    """Give up the lease (with `append_turn` or `release`) and wake the next running turn."""
    lease_until = (context.current_utc_datetime + LEASE).isoformat()
    result = yield context.call_entity(thread, operation, {
        **(record or {}), "turn_id": turn_id, "lease_until": lease_until})
    following = result.get("next")
    while following and not (yield context.call_activity("notify_turn", following)):
        skipped = yield context.call_entity(thread, "release", {
            "turn_id": following["turnId"], "lease_until": lease_until})
        following = skipped.get("next")
    return result


def index_thread(context, agent, turn: dict, when, messages: int) -> None:
    """Keep the agent's thread list current (a fire-and-forget signal)."""
    context.signal_entity(df.EntityId(THREAD_INDEX_ENTITY, agent.name.lower()), "touch", {
        "key": turn["thread_key"], "thread_id": turn["thread_id"],
        "updated_at": when.isoformat(), "messages": messages})


@bp.orchestration_trigger(context_name="context")
def agent_turn(context: df.DurableOrchestrationContext):
    turn = context.get_input()
    agent = find_agent(turn["agent"])
    if agent is None:
        raise TurnFailed(f"[not_found:404] agent '{turn['agent']}' is no longer configured")
    started = context.current_utc_datetime
    thread = df.EntityId(agent.entity_name, turn["thread_key"])
    history = yield from take_turn(context, thread, {
        "agent": agent.name, "thread_id": turn["thread_id"], "create": turn["new_thread"],
        "budget_tokens": context_budget(agent, turn["message"]), "turn_id": turn["turn_id"],
        "instance_id": context.instance_id})

    request = {"agent": agent.to_activity(), "turn_id": turn["turn_id"],
               "messages": conversation.prompt_messages(agent.instructions, history,
                                                        turn["message"])}
    try:
        answer = yield context.call_activity_with_retry(LLM_ACTIVITY, LLM_RETRY, request)
    except Exception as exc:  # retries exhausted: a classified reason, nothing written
        kind, status, message = parse_error_text(str(exc))
        answer = {"ok": False, "error": {"kind": kind, "status": status, "message": message}}
    if not answer.get("ok"):
        if turn["new_thread"]:  # the thread exists (empty): list it, so TTL clean-up sees it.
            # Signalled before the release: actions of the episode that fails are not sent.
            index_thread(context, agent, turn, context.current_utc_datetime, 0)
        yield from hand_off(context, thread, turn["turn_id"], "release")
        error = answer["error"]
        raise TurnFailed(f"[{error['kind']}:{error['status']}] {error['message']}")

    completed = context.current_utc_datetime
    durations = {"model": answer.get("latency_ms"), "turn": elapsed_ms(started, completed)}
    record = {"agent": agent.name, "thread_id": turn["thread_id"], "message": turn["message"],
              "reply": answer["reply"], "usage": answer["usage"], "model": answer["model"],
              "durations": durations, "started_at": started.isoformat(),
              "completed_at": completed.isoformat()}
    stored = yield from hand_off(context, thread, turn["turn_id"], "append_turn", record)
    if stored.get("archive_page"):
        page = stored["archive_page"]
        yield context.call_entity(df.EntityId(THREAD_ARCHIVE_ENTITY, archive_key(
            agent.name, turn["thread_key"], page["page"])), "store", page["messages"])
    if stored["appended"]:
        index_thread(context, agent, turn, completed, stored["message_count"])
    return {"thread_id": turn["thread_id"], "turn_id": turn["turn_id"],
            "instance_id": context.instance_id, "reply": answer["reply"],
            "usage": answer["usage"], "model": answer["model"],
            "finish_reason": answer.get("finish_reason"), "provider": answer.get("provider"),
            "durations_ms": durations, "context_messages": len(history),
            "thread_messages": stored["message_count"]}


DELETE_ORCHESTRATOR = "delete_thread"


@bp.orchestration_trigger(context_name="context")
def delete_thread(context: df.DurableOrchestrationContext):
    """Forget a thread: its entity state now (so later reads are 404), then its index entry."""
    request = context.get_input()
    agent = find_agent(request["agent"])
    deleted = yield context.call_entity(df.EntityId(agent.entity_name, request["thread_key"]),
                                        "delete")
    for page in range(deleted["archive_pages"]):
        yield context.call_entity(df.EntityId(THREAD_ARCHIVE_ENTITY, archive_key(
            agent.name, request["thread_key"], page)), "delete")
    context.signal_entity(df.EntityId(THREAD_INDEX_ENTITY, agent.name.lower()), "remove",
                          {"key": request["thread_key"]})
    purged = yield context.call_activity("purge_turns", f"turn-{request['thread_key']}-")
    return {"existed": deleted["existed"], "turn_histories_purged": purged}


REAPER_ORCHESTRATOR = "thread_reaper"
REAPER_INSTANCE = "thread-reaper"


@bp.orchestration_trigger(context_name="context")
def thread_reaper(context: df.DurableOrchestrationContext):
    """Deletes threads idle longer than the TTL, then sleeps on a durable timer and starts
    over (ContinueAsNew keeps its history short). Input: {ttl_seconds, every_seconds}."""
    settings = context.get_input()
    now = context.current_utc_datetime
    cutoff = (now - timedelta(seconds=settings["ttl_seconds"])).isoformat()
    for agent in load_catalogue().values():
        index = yield context.call_entity(df.EntityId(THREAD_INDEX_ENTITY, agent.name.lower()),
                                          "get")
        for key, entry in sorted((index or {}).items()):
            if entry["updated_at"] < cutoff:
                yield context.call_sub_orchestrator(DELETE_ORCHESTRATOR, {
                    "agent": agent.name, "thread_key": key})
    yield context.create_timer(now + timedelta(seconds=settings["every_seconds"]))
    context.continue_as_new(settings)
