"""The thread entity: one per conversation, named `dafx-<agent>` with the thread's uuid as key.

Operations (each a small function below; `now`/`lease_until` come from the calling
orchestration's deterministic clock):
- `acquire` {agent, thread_id, create, budget_tokens, turn_id, instance_id, now, lease_until}
  → {granted, history} or {granted: false} (queued) or {missing: true}; creates the thread on
  its first turn.
- `append_turn` {turn record} → {appended, message_count, next}: stores the exchange (a turn id
  already stored changes nothing) and hands the lease to the next queued turn.
- `release` {turn_id, lease_until} → {next}: a failed turn gives up its lease or queue place.
- `get` → the whole state document (or null); `delete` → forgets the thread.
"""
from __future__ import annotations

import azure.durable_functions as df

from core import conversation
from core.agents import load_catalogue

bp = df.Blueprint()


def acquire(state: dict | None, request: dict) -> tuple[dict | None, dict]:
    if state is None:
        if not request.get("create"):
            return None, {"granted": False, "missing": True}
        state = conversation.new_state(request["agent"], request["thread_id"], request["now"])
    if not conversation.acquire(state, request["turn_id"], request["instance_id"],
                                request["now"], request["lease_until"]):
        return state, {"granted": False, "holder": state["lease"]}
    window = conversation.context_window(state["messages"], int(request["budget_tokens"]))
    return state, {"granted": True, "history": window}


def append_turn(state: dict | None, turn: dict) -> tuple[dict | None, dict]:
    if state is None:  # deleted while the turn ran: the thread stays forgotten
        return None, {"appended": False, "message_count": 0, "next": None}
    appended = conversation.append_turn(state, turn)
    following = conversation.release(state, turn["turn_id"], turn["lease_until"])
    return state, {"appended": appended, "message_count": len(state["messages"]),
                   "next": following}


def release(state: dict | None, request: dict) -> tuple[dict | None, dict]:
    if state is None:
        return None, {"next": None}
    return state, {"next": conversation.release(state, request["turn_id"],
                                                request["lease_until"])}


OPERATIONS = {"acquire": acquire, "append_turn": append_turn, "release": release}


def thread_entity(context: df.DurableEntityContext) -> None:
    state = conversation.upgrade(context.get_state(lambda: None))
    operation = context.operation_name
    if operation == "get":
        new_state, result = state, state
    elif operation == "delete":
        new_state, result = None, state is not None
    elif operation in OPERATIONS:
        new_state, result = OPERATIONS[operation](state, context.get_input())
    else:
        raise ValueError(f"unknown thread operation '{operation}'")
    context.set_result(result)
    if new_state is None:
        context.destruct_on_exit()  # set_result marks an entity as existing: undo that
    else:
        context.set_state(new_state)


def _register(entity_name: str) -> None:
    """One entity function per configured agent, so thread ids read `@dafx-<agent>@<uuid>`."""
    def handler(context: df.DurableEntityContext) -> None:
        thread_entity(context)

    handler.__name__ = entity_name.replace("-", "_")
    bp.function_name(name=entity_name)(
        bp.entity_trigger(context_name="context", entity_name=entity_name)(handler))


for _agent in load_catalogue().values():
    _register(_agent.entity_name)
