"""One chat turn = one orchestration: take the thread's turn lease (which returns the context
window), run the turn's steps, write the completed turn back (which hands the lease to the next
queued turn), return the result document.

A turn is a loop of durable steps: a model step (the LLM activity, given the agent's tool
schemas) → the tool calls of that step, each its own activity named after the tool, in parallel
→ their results back to the model → … until the model answers in text. Calls to tools in the
agent's `require_approval` wait for a person (a durable external event `approval:<call_id>`
raced by a durable timer; timing out is a denial). Bounded by the agent's `max_steps` and
`max_tool_calls`: past a bound the turn fails and nothing is written.

Its input is small (agent, thread, message, turn id), never the transcript, and a failed turn
is never written to the thread: the orchestration fails with a classified reason instead.
Turns on one thread run one at a time, in arrival order, each seeing every earlier exchange.
Once the exchange is stored the turn succeeds, whatever happens to the hand-off after it.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import azure.durable_functions as df

from activities.errors import parse_error_text
from activities.stream import PUBLISH_ACTIVITY
from activities.turns import TURN_GRANTED_EVENT
from core import conversation
from core.agents import find_agent
from entities.thread import THREAD_ARCHIVE_ENTITY, archive_key
from entities.thread_index import index_entity

bp = df.Blueprint()
TURN_ORCHESTRATOR = "agent_turn"
LLM_ACTIVITY = "call_llm"
# Durable retries around the activity (which retries transient errors itself first): a crash
# or a persistent outage gets two more tries, 2 s apart.
LLM_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)
# Handing the lease on is retried; if it still fails the waiting turn's re-check heals it.
NOTIFY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)
DEFAULT_OUTPUT_TOKENS = 256
RECHECK_FIRST, RECHECK_MAX = 5.0, 60.0   # a queued turn re-asks this often if not notified
RECHECKS_PER_EXECUTION = 20              # then ContinueAsNew, so a long wait stays short
APPROVAL_EVENT = "approval:{call_id}"
DEFAULTS = {"tools": (), "require_approval": (), "max_steps": 8, "max_tool_calls": 16,
            "approval_timeout_seconds": 86400, "response_format": None}


class TurnFailed(Exception):
    """Carries `[kind:status] message`, the form the HTTP trigger reads back."""


def setting(agent, name: str):
    """An agent setting, with the documented default for catalogues that predate it."""
    return getattr(agent, name, DEFAULTS[name])


def context_budget(agent, message: str) -> int:
    """Tokens left for history once the system prompt, the new message and the answer fit."""
    fixed = conversation.estimate_tokens({"role": "system", "content": agent.instructions}) \
        + conversation.estimate_tokens({"role": "user", "content": message}) \
        + (agent.max_output_tokens or DEFAULT_OUTPUT_TOKENS)
    return max(0, agent.context_tokens - fixed)


def elapsed_ms(start, end) -> float:
    return round((end - start).total_seconds() * 1000, 1)


def approval_path(agent, turn: dict, call_id: str) -> str:
    return (f"/api/agents/{agent.name}/threads/{turn['thread_id']}/turns/{turn['turn_id']}"
            f"/approvals/{call_id}")


# -- the lease -------------------------------------------------------------------------------

def take_turn(context: df.DurableOrchestrationContext, thread, request: dict):
    """Acquire the thread's lease, queueing behind earlier turns. Returns the grant
    ({granted, history} or {done}), or None when this execution should ContinueAsNew."""
    notified = True
    delay = RECHECK_FIRST
    for _ in range(RECHECKS_PER_EXECUTION):
        now = context.current_utc_datetime
        grant = yield context.call_entity(thread, "acquire", {**request, "now": now.isoformat()})
        if grant.get("missing"):
            raise TurnFailed("[thread_not_found:404] the thread was deleted")
        if grant.get("granted") or grant.get("done"):
            return grant
        timer = context.create_timer(now + timedelta(seconds=delay))
        if notified:  # a stale notification must not spin this loop: wait on it only once
            event = context.wait_for_external_event(TURN_GRANTED_EVENT)
            winner = yield context.task_any([event, timer])
            if winner == event:
                timer.cancel()
                notified = False
                continue
        else:
            yield timer
        delay = min(delay * 2, RECHECK_MAX)
        holder = grant.get("holder")
        # A lease is only ever taken from a holder that is no longer running.
        if holder and not (yield context.call_activity("turn_is_active", holder["instanceId"])):
            yield from hand_off(context, thread, holder["turnId"], "release")
    return None


def hand_off(context: df.DurableOrchestrationContext, thread, turn_id: str, operation: str,
             record: dict | None = None):
    """Give up the lease (with `append_turn`, `trim_archive` or `release`) and wake the next
    running turn. A failed notification is not the turn's failure: the waiting turn re-checks."""
    result = yield context.call_entity(thread, operation, {
        **(record or {}), "turn_id": turn_id, "now": context.current_utc_datetime.isoformat()})
    following = result.get("next")
    while following:
        try:
            delivered = yield context.call_activity_with_retry("notify_turn", NOTIFY_RETRY,
                                                               following)
        except Exception:  # noqa: BLE001 - the waiting turn's re-check will find its grant
            break
        if delivered:
            break
        skipped = yield context.call_entity(thread, "release", {
            "turn_id": following["turnId"], "now": context.current_utc_datetime.isoformat()})
        following = skipped.get("next")
    return result


def index_thread(context, agent, turn: dict, when, messages: int) -> None:
    """Keep the agent's thread list current (a fire-and-forget signal to its shard)."""
    context.signal_entity(index_entity(agent.name, turn["thread_key"]), "touch", {
        "key": turn["thread_key"], "thread_id": turn["thread_id"],
        "updated_at": when.isoformat(), "messages": messages})


# -- tools -------------------------------------------------------------------------------------

def tool_registry() -> dict:
    from core import tools  # the tools package is imported only by apps that have tools
    return tools.registry()


def tool_schemas(agent) -> list | None:
    names = list(setting(agent, "tools"))
    if not names:
        return None
    from core import tools
    return tools.openai_schemas(names)


def tool_retry(spec) -> df.RetryOptions:
    from core import tools
    return tools.retry_options(spec)


def error_message(exc: Exception) -> str:
    """The readable part of an activity failure (Durable prefixes the function name)."""
    text = str(exc)
    if "failed: " in text:
        text = text.split("failed: ", 1)[1]
    return text.strip().splitlines()[0][:2000] if text.strip() else type(exc).__name__


def approvals(context: df.DurableOrchestrationContext, agent, turn: dict, calls: list[dict],
              decided: list[dict]):
    """Wait until a person decides each call (or the timer runs out: denied). Returns
    {call_id: decision}; `decided` (the turn's custom status list) grows as decisions come."""
    if not calls:
        return {}
    timeout = float(setting(agent, "approval_timeout_seconds"))
    deadline = context.current_utc_datetime + timedelta(seconds=timeout)
    events = {c["id"]: context.wait_for_external_event(APPROVAL_EVENT.format(call_id=c["id"]))
              for c in calls}
    timer = context.create_timer(deadline)
    decisions: dict[str, dict] = {}

    def publish():
        context.set_custom_status({
            "state": "waiting_for_approval", "expires_at": deadline.isoformat(),
            "pending": [{"id": c["id"], "tool": c["name"], "arguments": c["parsed"],
                         "approve_url": approval_path(agent, turn, c["id"])}
                        for c in calls if c["id"] not in decisions],
            "decided": decided})

    publish()
    # the live stream hears of the calls once the turn accepts decisions for them
    if turn.get("stream"):
        yield context.call_activity(PUBLISH_ACTIVITY, {"turn_id": turn["turn_id"], "events": [
            {"kind": "approval_pending", "data": {
                "id": c["id"], "tool": c["name"], "arguments": c["parsed"],
                "approve_url": approval_path(agent, turn, c["id"])}}
            for c in calls]})
    while len(decisions) < len(calls):
        waiting = [events[c["id"]] for c in calls if c["id"] not in decisions]
        winner = yield context.task_any(waiting + [timer])
        now = context.current_utc_datetime.isoformat()
        if winner == timer:
            for c in calls:
                if c["id"] not in decisions:
                    decisions[c["id"]] = {"approved": False, "reason": "approval timed out",
                                          "by": "timeout", "at": now, "timed_out": True}
                    decided.append({"id": c["id"], **decisions[c["id"]]})
            break
        call_id = next(i for i, task in events.items() if task == winner)
        data = winner.result
        if isinstance(data, str):  # the client may send the event data as JSON text
            try:
                data = json.loads(data)
            except ValueError:
                data = {}
        data = data if isinstance(data, dict) else {}
        decisions[call_id] = {"approved": data.get("approved") is True,
                              "reason": str(data.get("reason") or ""),
                              "by": str(data.get("by") or "anonymous"), "at": now,
                              "decision_id": data.get("decision_id")}
        decided.append({"id": call_id, **decisions[call_id]})
        publish()
    if not timer.is_completed:
        timer.cancel()
    context.set_custom_status({"state": "running", "decided": decided})
    return decisions


def run_tools(context: df.DurableOrchestrationContext, agent, turn: dict, calls: list[dict],
              decisions: dict):
    """Run one step's calls in parallel, one activity per call named after its tool. Each call
    dict gains `result` or `error` and `duration_ms`; nothing here fails the turn."""
    registry = tool_registry() if calls else {}
    started = context.current_utc_datetime
    pending = {}
    for call in calls:
        decision = decisions.get(call["id"])
        if decision is not None:
            call["approval"] = decision
            if not decision["approved"]:
                call["error"] = f"denied by {decision['by']}: {decision['reason'] or 'no reason'}"
                call["duration_ms"] = 0.0
                continue
        spec = registry.get(call["name"])
        if spec is None or call["name"] not in setting(agent, "tools"):
            call["error"] = f"there is no tool named '{call['name']}'"
        elif call["parsed"] is None:
            call["error"] = "the arguments are not a JSON object"
        if "error" in call:
            call["duration_ms"] = 0.0
            continue
        pending[call["id"]] = context.call_activity_with_retry(call["name"], tool_retry(spec), {
            "call_id": call["id"], "arguments": call["parsed"], "turn_id": turn["turn_id"],
            "thread_id": turn["thread_id"], "stream": bool(turn.get("stream"))})
    by_id = {c["id"]: c for c in calls}
    while pending:
        try:
            yield context.task_any(list(pending.values()))
        except Exception:  # noqa: BLE001 - every remaining call failed; each is read below
            pass
        now = context.current_utc_datetime
        for call_id, task in list(pending.items()):
            if not task.is_completed:
                continue
            try:
                by_id[call_id]["result"] = yield task  # already done: returns at once
            except Exception as exc:  # noqa: BLE001 - retries exhausted: the model is told
                by_id[call_id]["error"] = error_message(exc)
            by_id[call_id]["duration_ms"] = elapsed_ms(started, now)
            del pending[call_id]


def parse_calls(answer: dict) -> list[dict]:
    calls = []
    for call in answer.get("tool_calls") or []:
        try:
            parsed = json.loads(call.get("arguments") or "{}")
        except ValueError:
            parsed = None
        calls.append({"id": call["id"], "name": call["name"],
                      "arguments": call.get("arguments") or "{}",
                      "parsed": parsed if isinstance(parsed, dict) else None})
    return calls


def step_messages(answer: dict, calls: list[dict], now: str) -> list[dict]:
    """The step in OpenAI message shapes: the assistant's tool_calls, then one tool message
    per call (its result, or its error, as JSON text)."""
    assistant = {"role": "assistant", "content": answer.get("reply") or "",
                 "tool_calls": [{"id": c["id"], "type": "function",
                                 "function": {"name": c["name"], "arguments": c["arguments"]}}
                                for c in calls], "createdAt": now}
    tools = []
    for call in calls:
        body = {"error": call["error"]} if "error" in call else call.get("result")
        message = {"role": "tool", "tool_call_id": call["id"], "name": call["name"],
                   "content": json.dumps(body), "createdAt": now}
        if call.get("approval"):
            message["approval"] = call["approval"]
        tools.append(message)
    return [assistant] + tools


def add_usage(total: dict, usage: dict | None) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[key] = total.get(key, 0) + int((usage or {}).get(key) or 0)


def run_steps(context: df.DurableOrchestrationContext, agent, turn: dict, history: list[dict]):
    """The model/tool loop. Returns (final answer, messages of the tool steps, tool calls,
    steps, usage) or raises TurnFailed (nothing has been written)."""
    schemas = tool_schemas(agent)
    prompt = conversation.prompt_messages(agent.instructions, history, turn["message"])
    produced: list[dict] = []
    all_calls: list[dict] = []
    decided: list[dict] = []
    usage: dict = {}
    max_steps, max_calls = int(setting(agent, "max_steps")), int(setting(agent, "max_tool_calls"))
    for step in range(1, max_steps + 1):
        request = {"agent": agent.to_activity(), "turn_id": turn["turn_id"], "step": step,
                   "stream": bool(turn.get("stream")),
                   "messages": prompt + [conversation.wire_message(m) for m in produced]}
        if schemas:
            request["tools"] = schemas
        response_format = turn.get("response_format") or setting(agent, "response_format")
        if response_format is not None:  # the request's, else the agent's default
            request["response_format"] = response_format
        try:
            answer = yield context.call_activity_with_retry(LLM_ACTIVITY, LLM_RETRY, request)
        except Exception as exc:  # retries exhausted: a classified reason, nothing written
            kind, status, message = parse_error_text(str(exc))
            answer = {"ok": False, "error": {"kind": kind, "status": status, "message": message}}
        if not answer.get("ok"):
            error = answer["error"]
            raise TurnFailed(f"[{error['kind']}:{error['status']}] {error['message']}")
        add_usage(usage, answer.get("usage"))
        calls = parse_calls(answer)
        if not calls:
            return answer, produced, all_calls, step, usage
        if len(all_calls) + len(calls) > max_calls:
            raise TurnFailed(f"[max_tool_calls_exceeded:422] the model asked for "
                             f"{len(all_calls) + len(calls)} tool calls; agent '{agent.name}' "
                             f"allows {max_calls} per turn (max_tool_calls)")
        needing = [c for c in calls if c["name"] in setting(agent, "require_approval")]
        decisions = yield from approvals(context, agent, turn, needing, decided)
        yield from run_tools(context, agent, turn, calls, decisions)
        all_calls.extend(calls)
        produced.extend(step_messages(answer, calls, context.current_utc_datetime.isoformat()))
    raise TurnFailed(f"[max_steps_exceeded:422] the model was still calling tools after "
                     f"{max_steps} steps (agent '{agent.name}' max_steps)")


def call_summary(calls: list[dict]) -> list[dict]:
    summary = []
    for call in calls:
        item = {"id": call["id"], "name": call["name"], "arguments": call["parsed"]
                if call["parsed"] is not None else call["arguments"],
                "approval": call.get("approval"), "duration_ms": call.get("duration_ms")}
        item.update({"error": call["error"]} if "error" in call else {"result": call.get("result")})
        summary.append(item)
    return summary


# -- the turn --------------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def agent_turn(context: df.DurableOrchestrationContext):
    turn = context.get_input()
    agent = find_agent(turn["agent"])
    if agent is None:
        raise TurnFailed(f"[not_found:404] agent '{turn['agent']}' is no longer configured")
    started = datetime.fromisoformat(turn["started_at"]) if turn.get("started_at") \
        else context.current_utc_datetime
    thread = df.EntityId(agent.entity_name, turn["thread_key"])
    grant = yield from take_turn(context, thread, {
        "agent": agent.name, "thread_id": turn["thread_id"], "create": turn["new_thread"],
        "budget_tokens": context_budget(agent, turn["message"]), "turn_id": turn["turn_id"],
        "instance_id": context.instance_id})
    if grant is None:  # still queued: start over with a fresh, short history
        context.continue_as_new({**turn, "started_at": started.isoformat()})
        return None
    if grant.get("done"):  # a late repeat of a turn already stored: never run it again
        done = grant["done"]
        return {"thread_id": turn["thread_id"], "turn_id": turn["turn_id"],
                "instance_id": context.instance_id, "reply": done["reply"],
                "usage": done["usage"], "model": done["model"], "finish_reason": None,
                "provider": None, "durations_ms": done["durations"], "context_messages": None,
                "thread_messages": done["message_count"], "tool_calls": done.get("tool_calls")
                or [], "steps": None, "output": done.get("output"), "repeated": True}
    history = grant["history"]
    try:
        answer, produced, calls, steps, usage = yield from run_steps(context, agent, turn, history)
    except TurnFailed:
        if turn["new_thread"]:  # the thread exists (empty): list it, so TTL clean-up sees it.
            # Signalled before the release: actions of the episode that fails are not sent.
            index_thread(context, agent, turn, context.current_utc_datetime, 0)
        yield from hand_off(context, thread, turn["turn_id"], "release")
        raise

    completed = context.current_utc_datetime
    durations = {"model": answer.get("latency_ms"), "turn": elapsed_ms(started, completed)}
    summary = call_summary(calls)
    record = {"agent": agent.name, "thread_id": turn["thread_id"], "message": turn["message"],
              "reply": answer["reply"], "usage": usage, "model": answer["model"],
              "durations": durations, "started_at": started.isoformat(),
              "completed_at": completed.isoformat(), "steps": produced,
              "tool_calls": summary or None, "output": answer.get("output")}
    stored = yield from store_turn(context, agent, turn, thread, record)
    if stored["appended"]:
        index_thread(context, agent, turn, completed, stored["message_count"])
    result = {"thread_id": turn["thread_id"], "turn_id": turn["turn_id"],
              "instance_id": context.instance_id, "reply": answer["reply"],
              "usage": usage, "model": answer["model"],
              "finish_reason": answer.get("finish_reason"), "provider": answer.get("provider"),
              "durations_ms": durations, "context_messages": len(history),
              "thread_messages": stored["message_count"], "tool_calls": summary,
              "steps": steps}
    if "output" in answer:
        result["output"] = answer["output"]
    return result


def store_turn(context, agent, turn: dict, thread, record: dict):
    """Append the exchange; if the thread must shed old messages, store the archive page
    before trimming them (the lease is held until then), then hand the lease on."""
    stored = yield from hand_off(context, thread, turn["turn_id"], "append_turn", record)
    page = stored.get("archive_page")
    if page:
        yield context.call_entity(df.EntityId(THREAD_ARCHIVE_ENTITY, archive_key(
            agent.name, turn["thread_key"], page["page"])), "store", page["messages"])
        yield from hand_off(context, thread, turn["turn_id"], "trim_archive",
                            {"page": page["page"], "count": page["count"]})
    return stored
