"""The thread's state document and the pure operations on it.

State (schemaVersion 1): agent, threadId, createdAt, updatedAt, messages (role, content,
createdAt, turnId; replies add usage, model, durationMs; tool steps are stored in the OpenAI
shapes: an assistant message with `tool_calls`, then `tool` messages with `tool_call_id`),
totals, lease, waiting, archive. Appending a turn whose id is
already stored changes nothing, so a retried or replayed write cannot duplicate messages.
"""
from __future__ import annotations

import json

SCHEMA_VERSION = 1
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


def new_state(agent: str, thread_id: str, now: str) -> dict:
    return {"schemaVersion": SCHEMA_VERSION, "agent": agent, "threadId": thread_id,
            "createdAt": now, "updatedAt": now, "messages": [],
            "totals": {"turns": 0, "prompt_tokens": 0, "completion_tokens": 0,
                       "total_tokens": 0},
            "lease": None, "waiting": []}


# -- turn ordering: one turn at a time per thread ---------------------------------------------
# The thread owns a lease. A turn that finds it taken queues itself (FIFO) and waits for a
# "turn_granted" event; whoever releases the lease hands it to the next queued turn. A lease
# never expires by time (a turn waiting days for an approval keeps it): a queued turn that
# finds the holder no longer running (terminated, failed) releases it for it, and waiting turns
# re-ask on a timer in case a hand-off notification was lost.

def acquire(state: dict, turn_id: str, instance_id: str, now: str) -> bool:
    """Take the lease if free or already ours; otherwise queue. True if granted."""
    lease = state.get("lease")
    if lease is None or lease["turnId"] == turn_id:
        state["lease"] = {"turnId": turn_id, "instanceId": instance_id,
                          "since": (lease or {}).get("since", now)}
        state["waiting"] = [w for w in state.get("waiting", []) if w["turnId"] != turn_id]
        return True
    waiting = state.setdefault("waiting", [])
    if all(w["turnId"] != turn_id for w in waiting):
        waiting.append({"turnId": turn_id, "instanceId": instance_id})
    return False


def release(state: dict, turn_id: str, now: str | None = None) -> dict | None:
    """Drop this turn's lease or queue place; hand the lease to the next turn (returned)."""
    state["waiting"] = [w for w in state.get("waiting", []) if w["turnId"] != turn_id]
    lease = state.get("lease")
    if lease is None or lease["turnId"] != turn_id:
        return None
    state["lease"] = None
    if not state["waiting"]:
        return None
    following = state["waiting"].pop(0)
    state["lease"] = {**following, "since": now}
    return following


def is_busy(state: dict) -> bool:
    """A turn holds the lease or waits for it: the thread is in use."""
    return bool(state.get("lease") or state.get("waiting"))


def upgrade(state: dict | None) -> dict | None:
    """Bring an older stored state to the current schema (none older exists yet)."""
    if state is None:
        return None
    version = state.get("schemaVersion", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise ValueError(f"thread state has schemaVersion {version}, newer than this app's "
                         f"{SCHEMA_VERSION}")
    return state


def message_count(state: dict) -> int:
    """Messages in the thread, archived ones included."""
    return len(state["messages"]) + state.get("archive", {}).get("messages", 0)


def has_turn(state: dict, turn_id: str) -> bool:
    return any(m.get("turnId") == turn_id for m in state["messages"])


def stored_turn(state: dict, turn_id: str) -> dict | None:
    """A stored turn's reply as a small summary (for a repeat of a finished turn), or None."""
    replies = [m for m in state["messages"] if m.get("turnId") == turn_id]
    if not replies:
        return None
    last = replies[-1]
    return {"reply": last["content"], "usage": last.get("usage"), "model": last.get("model"),
            "durations": last.get("durationMs"), "tool_calls": last.get("toolCalls"),
            "output": last.get("output"), "message_count": message_count(state)}


WIRE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def wire_message(message: dict) -> dict:
    """A stored message as the model is sent it (OpenAI shapes, our metadata dropped)."""
    wire = {k: message[k] for k in WIRE_KEYS if k in message}
    if wire["role"] != "tool":
        wire.pop("name", None)
    return wire


def append_turn(state: dict, turn: dict) -> bool:
    """Append the user message, the tool steps (assistant tool_calls + tool results) and the
    reply of a completed turn; False if already there."""
    if has_turn(state, turn["turn_id"]):
        return False
    state["messages"].append({"role": "user", "content": turn["message"],
                              "createdAt": turn["started_at"], "turnId": turn["turn_id"]})
    for step in turn.get("steps") or []:
        state["messages"].append({**step, "turnId": turn["turn_id"]})
    reply = {"role": "assistant", "content": turn["reply"], "createdAt": turn["completed_at"],
             "turnId": turn["turn_id"], "usage": turn["usage"], "model": turn["model"],
             "durationMs": turn["durations"]}
    if turn.get("tool_calls"):
        reply["toolCalls"] = turn["tool_calls"]
    if turn.get("output") is not None:
        reply["output"] = turn["output"]
    state["messages"].append(reply)
    totals = state["totals"]
    totals["turns"] += 1
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        totals[key] += int(turn["usage"].get(key) or 0)
    state["updatedAt"] = turn["completed_at"]
    return True


def archive_cut(state: dict, max_bytes: int) -> int:
    """How many of the oldest messages (whole turns) should move to an archive page: none
    while the state is under `max_bytes` (kept far below the scheduler's 1 MB payload limit),
    else about half. The caller stores that page first and trims after (`trim_archive`), so a
    turn stopped in between loses nothing and readers never see a gap."""
    messages = state["messages"]
    if len(json.dumps(state)) <= max_bytes or len(messages) < 4:
        return 0
    cut = len(messages) // 2
    while cut < len(messages) and messages[cut]["role"] != "user":
        cut += 1  # a page ends where a turn ends (tool messages included)
    return cut if cut < len(messages) else 0


def trim_archive(state: dict, page: int, count: int) -> bool:
    """Drop the `count` oldest messages now stored as archive page `page`; False (nothing
    changed) if that page was already counted."""
    archive = state.setdefault("archive", {"pages": 0, "messages": 0})
    if archive["pages"] != page:
        return False
    state["messages"] = state["messages"][count:]
    archive["pages"] += 1
    archive["messages"] += count
    return True


def estimate_tokens(message: dict) -> int:
    """Provider usage where we have it (a reply's completion tokens), else ~4 chars/token."""
    usage = message.get("usage") or {}
    if message.get("role") == "assistant" and usage.get("completion_tokens") \
            and not message.get("tool_calls"):
        return int(usage["completion_tokens"]) + MESSAGE_OVERHEAD_TOKENS
    size = len(message.get("content") or "")
    if message.get("tool_calls"):
        size += len(json.dumps(message["tool_calls"]))
    return size // CHARS_PER_TOKEN + 1 + MESSAGE_OVERHEAD_TOKENS


def context_window(messages: list[dict], budget_tokens: int) -> list[dict]:
    """The newest messages that fit the budget, oldest first, in wire shape.

    Whole turns only: the window starts at a user message, so it never opens with a lone
    reply, nor splits a tool call from its result."""
    window: list[dict] = []
    used = 0
    for message in reversed(messages):
        cost = estimate_tokens(message)
        if used + cost > budget_tokens:
            break
        window.append(wire_message(message))
        used += cost
    window.reverse()
    while window and window[0]["role"] != "user":
        window.pop(0)
    return window


def prompt_messages(instructions: str, history: list[dict], message: str) -> list[dict]:
    """System prompt (always kept), the history window, then the new user message."""
    system = [{"role": "system", "content": instructions}] if instructions else []
    return system + history + [{"role": "user", "content": message}]
