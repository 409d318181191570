"""The thread's state document and the pure operations on it.

State (schemaVersion 1): agent, threadId, createdAt, updatedAt, messages (role, content,
createdAt, turnId; replies add usage, model, durationMs), totals. Appending a turn whose id is
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
# expires (so a terminated turn that never releases cannot block the thread forever), and
# waiting turns re-ask on a timer in case a hand-off notification was lost.

def _expired(lease: dict, now: str) -> bool:
    return lease["expiresAt"] <= now


def acquire(state: dict, turn_id: str, instance_id: str, now: str, expires_at: str) -> bool:
    """Take the lease if free, expired or already ours; otherwise queue. True if granted."""
    lease = state.get("lease")
    if lease is None or lease["turnId"] == turn_id or _expired(lease, now):
        state["lease"] = {"turnId": turn_id, "instanceId": instance_id, "expiresAt": expires_at}
        state["waiting"] = [w for w in state.get("waiting", []) if w["turnId"] != turn_id]
        return True
    waiting = state.setdefault("waiting", [])
    if all(w["turnId"] != turn_id for w in waiting):
        waiting.append({"turnId": turn_id, "instanceId": instance_id})
    return False


def release(state: dict, turn_id: str, expires_at: str) -> dict | None:
    """Drop this turn's lease or queue place; hand the lease to the next turn (returned)."""
    state["waiting"] = [w for w in state.get("waiting", []) if w["turnId"] != turn_id]
    lease = state.get("lease")
    if lease is None or lease["turnId"] != turn_id:
        return None
    state["lease"] = None
    if not state["waiting"]:
        return None
    following = state["waiting"].pop(0)
    state["lease"] = {**following, "expiresAt": expires_at}
    return following


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


def append_turn(state: dict, turn: dict) -> bool:
    """Append the user message and the reply of a completed turn; False if already there."""
    if has_turn(state, turn["turn_id"]):
        return False
    state["messages"].append({"role": "user", "content": turn["message"],
                              "createdAt": turn["started_at"], "turnId": turn["turn_id"]})
    state["messages"].append({"role": "assistant", "content": turn["reply"],
                              "createdAt": turn["completed_at"], "turnId": turn["turn_id"],
                              "usage": turn["usage"], "model": turn["model"],
                              "durationMs": turn["durations"]})
    totals = state["totals"]
    totals["turns"] += 1
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        totals[key] += int(turn["usage"].get(key) or 0)
    state["updatedAt"] = turn["completed_at"]
    return True


def split_off_archive(state: dict, max_bytes: int) -> list[dict] | None:
    """Keep the state far below the scheduler's 1 MB payload limit: once it is over
    `max_bytes`, the oldest half of the messages (whole turns) leave it, to be stored in an
    archive page. The state counts the pages so the thread API can read everything back."""
    messages = state["messages"]
    if len(json.dumps(state)) <= max_bytes or len(messages) < 4:
        return None
    cut = len(messages) // 2
    while cut < len(messages) and messages[cut]["role"] == "assistant":
        cut += 1
    chunk, state["messages"] = messages[:cut], messages[cut:]
    archive = state.setdefault("archive", {"pages": 0, "messages": 0})
    archive["pages"] += 1
    archive["messages"] += len(chunk)
    return chunk


def estimate_tokens(message: dict) -> int:
    """Provider usage where we have it (a reply's completion tokens), else ~4 chars/token."""
    usage = message.get("usage") or {}
    if message.get("role") == "assistant" and usage.get("completion_tokens"):
        return int(usage["completion_tokens"]) + MESSAGE_OVERHEAD_TOKENS
    return len(message.get("content", "")) // CHARS_PER_TOKEN + 1 + MESSAGE_OVERHEAD_TOKENS


def context_window(messages: list[dict], budget_tokens: int) -> list[dict]:
    """The newest messages that fit the budget, oldest first, as {role, content}.

    Whole turns only: the window never starts with a lone assistant reply."""
    window: list[dict] = []
    used = 0
    for message in reversed(messages):
        cost = estimate_tokens(message)
        if used + cost > budget_tokens:
            break
        window.append({"role": message["role"], "content": message["content"]})
        used += cost
    window.reverse()
    while window and window[0]["role"] == "assistant":
        window.pop(0)
    return window


def prompt_messages(instructions: str, history: list[dict], message: str) -> list[dict]:
    """System prompt (always kept), the history window, then the new user message."""
    system = [{"role": "system", "content": instructions}] if instructions else []
    return system + history + [{"role": "user", "content": message}]
