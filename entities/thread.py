"""The thread entity: one per conversation, named `dafx-<agent>` with the thread's uuid as key.

Operations (each a small function below; `now`/`lease_until` come from the calling
orchestration's deterministic clock):
- `acquire` {agent, thread_id, create, budget_tokens, turn_id, instance_id, now, lease_until}
  → {granted, history} or {granted: false} (queued) or {missing: true}; creates the thread on
  its first turn.
- `append_turn` {turn record} → {appended, message_count, next}: stores the exchange (a turn id
  already stored changes nothing) and hands the lease to the next queued turn.
- `release` {turn_id, lease_until} → {next}: a failed turn gives up its lease or queue place.
- `get` → the whole state document (or null); `delete` → forgets the thread, answering
  {existed, archive_pages}.
When the state outgrows THREAD_MAX_STATE_BYTES, `append_turn` moves the oldest messages out and
returns them as `archive_page`; the turn stores them in a `thread_archive` entity.
"""
from __future__ import annotations

import os

import azure.durable_functions as df

from core import conversation
from core.agents import load_catalogue

bp = df.Blueprint()
DEFAULT_MAX_STATE_BYTES = 64 * 1024


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
    max_bytes = int(os.environ.get("THREAD_MAX_STATE_BYTES") or DEFAULT_MAX_STATE_BYTES)
    archived = conversation.split_off_archive(state, max_bytes)
    result = {"appended": appended, "message_count": conversation.message_count(state),
              "next": following}
    if archived:
        result["archive_page"] = {"page": state["archive"]["pages"] - 1, "messages": archived}
    return state, result


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
        pages = (state or {}).get("archive", {}).get("pages", 0)
        new_state, result = None, {"existed": state is not None, "archive_pages": pages}
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


THREAD_ARCHIVE_ENTITY = "thread_archive"


def archive_key(agent_name: str, thread_key: str, page: int) -> str:
    return f"{agent_name.lower()}.{thread_key}.{page}"


@bp.entity_trigger(context_name="context", entity_name=THREAD_ARCHIVE_ENTITY)
def thread_archive(context: df.DurableEntityContext) -> None:
    """One page of a thread's older messages, written once, read by the thread API."""
    if context.operation_name == "store":
        context.set_state(context.get_input())
        context.set_result(True)
    elif context.operation_name == "delete":
        context.set_result(True)
        context.destruct_on_exit()
    else:
        raise ValueError(f"unknown archive operation '{context.operation_name}'")
