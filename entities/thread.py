"""The thread entity: one per conversation, named `dafx-<agent>` with the thread's uuid as key.

Operations (each a small function below):
- `get_context` {agent, thread_id, create, budget_tokens} → the newest messages that fit the
  budget; creates the thread on its first turn.
- `append_turn` {turn_id, message, reply, usage, model, durations, started_at, completed_at}
  → {appended, message_count}; a turn id already stored changes nothing.
- `get` → the whole state document (or null).
- `delete` → forgets the thread.
"""
from __future__ import annotations

from datetime import datetime, timezone

import azure.durable_functions as df

from core import conversation
from core.agents import load_catalogue

bp = df.Blueprint()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def get_context(state: dict | None, request: dict) -> tuple[dict | None, list[dict]]:
    if state is None:
        if not request.get("create"):
            return None, []
        state = conversation.new_state(request["agent"], request["thread_id"], _now())
    return state, conversation.context_window(state["messages"], int(request["budget_tokens"]))


def append_turn(state: dict | None, turn: dict) -> tuple[dict, dict]:
    if state is None:  # a thread deleted while its turn ran: keep the turn, recreate the thread
        state = conversation.new_state(turn["agent"], turn["thread_id"], turn["started_at"])
    appended = conversation.append_turn(state, turn)
    return state, {"appended": appended, "message_count": len(state["messages"])}


OPERATIONS = {"get_context": get_context, "append_turn": append_turn}


def thread_entity(context: df.DurableEntityContext) -> None:
    state = conversation.upgrade(context.get_state(lambda: None))
    operation = context.operation_name
    if operation == "get":
        context.set_result(state)
        return
    if operation == "delete":
        context.set_result(state is not None)
        context.destruct_on_exit()  # after set_result, which marks the entity as existing
        return
    if operation not in OPERATIONS:
        raise ValueError(f"unknown thread operation '{operation}'")
    new_state, result = OPERATIONS[operation](state, context.get_input())
    if new_state is not None:
        context.set_state(new_state)
    context.set_result(result)


def _register(entity_name: str) -> None:
    """One entity function per configured agent, so thread ids read `@dafx-<agent>@<uuid>`."""
    def handler(context: df.DurableEntityContext) -> None:
        thread_entity(context)

    handler.__name__ = entity_name.replace("-", "_")
    bp.function_name(name=entity_name)(
        bp.entity_trigger(context_name="context", entity_name=entity_name)(handler))


for _agent in load_catalogue().values():
    _register(_agent.entity_name)
