"""The thread entity: one per conversation, named `dafx-<agent>` with the thread's uuid as key.

Operations (each a small function below; `now` comes from the calling orchestration's
deterministic clock):
- `acquire` {agent, thread_id, create, budget_tokens, turn_id, instance_id, now}
  → {granted, history} or {granted: false, holder} (queued) or {missing: true} or
  {done: summary} (this turn is already stored: a late repeat must not run it again);
  creates the thread on its first turn.
- `append_turn` {turn record} → {appended, message_count, next}: stores the exchange (a turn id
  already stored changes nothing) and hands the lease to the next queued turn. When the state
  has outgrown THREAD_MAX_STATE_BYTES it keeps the lease and answers `archive_page` instead:
  the turn stores that page, then calls `trim_archive` {page, count, turn_id, now} → {next},
  which drops those messages and hands the lease on (page first, trim after: nothing is lost
  if the turn is stopped between the two).
- `release` {turn_id, now} → {next}: a failed turn gives up its lease or queue place.
- `get` → the whole state document (or null); `delete` {idle_before?} → forgets the thread,
  answering {existed, deleted, archive_pages}; with `idle_before` (the TTL reaper) a thread in
  use (a lease or queued turns) or updated since is kept and its lease holder returned.
"""
from __future__ import annotations

import azure.durable_functions as df

from core import conversation, settings
from core.agents import load_catalogue

bp = df.Blueprint()
DEFAULT_MAX_STATE_BYTES = 64 * 1024


def acquire(state: dict | None, request: dict) -> tuple[dict | None, dict]:
    if state is None:
        if not request.get("create"):
            return None, {"granted": False, "missing": True}
        state = conversation.new_state(request["agent"], request["thread_id"], request["now"])
    done = conversation.stored_turn(state, request["turn_id"])
    if done:
        return state, {"granted": False, "done": done}
    if not conversation.acquire(state, request["turn_id"], request["instance_id"],
                                request["now"]):
        return state, {"granted": False, "holder": state["lease"]}
    window = conversation.context_window(state["messages"], int(request["budget_tokens"]))
    return state, {"granted": True, "history": window}


def append_turn(state: dict | None, turn: dict) -> tuple[dict | None, dict]:
    if state is None:  # deleted while the turn ran: the thread stays forgotten
        return None, {"appended": False, "message_count": 0, "next": None}
    appended = conversation.append_turn(state, turn)
    max_bytes = settings.integer("THREAD_MAX_STATE_BYTES", DEFAULT_MAX_STATE_BYTES, 1)
    cut = conversation.archive_cut(state, max_bytes)
    result = {"appended": appended, "message_count": conversation.message_count(state),
              "next": None}
    if cut:  # keep the lease until the page is stored and trimmed
        result["archive_page"] = {"page": state.get("archive", {}).get("pages", 0),
                                  "count": cut, "messages": state["messages"][:cut]}
    else:
        result["next"] = conversation.release(state, turn["turn_id"], turn.get("now"))
    return state, result


def trim_archive(state: dict | None, request: dict) -> tuple[dict | None, dict]:
    if state is None:
        return None, {"next": None}
    conversation.trim_archive(state, request["page"], request["count"])
    return state, {"next": conversation.release(state, request["turn_id"], request.get("now"))}


def release(state: dict | None, request: dict) -> tuple[dict | None, dict]:
    if state is None:
        return None, {"next": None}
    return state, {"next": conversation.release(state, request["turn_id"], request.get("now"))}


def delete(state: dict | None, request: dict | None) -> tuple[dict | None, dict]:
    idle_before = (request or {}).get("idle_before")
    if state is not None and idle_before and (conversation.is_busy(state)
                                              or state["updatedAt"] >= idle_before):
        return state, {"existed": True, "deleted": False, "holder": state.get("lease"),
                       "archive_pages": 0}
    pages = (state or {}).get("archive", {}).get("pages", 0)
    return None, {"existed": state is not None, "deleted": state is not None,
                  "archive_pages": pages}


OPERATIONS = {"acquire": acquire, "append_turn": append_turn, "trim_archive": trim_archive,
              "release": release, "delete": delete}


def optional_input(context: df.DurableEntityContext):
    """The operation's input; None when it was sent without one (the SDK raises on that)."""
    try:
        return context.get_input()
    except TypeError:
        return None


def thread_entity(context: df.DurableEntityContext) -> None:
    state = conversation.upgrade(context.get_state(lambda: None))
    operation = context.operation_name
    if operation == "get":
        new_state, result = state, state
    elif operation in OPERATIONS:
        new_state, result = OPERATIONS[operation](state, optional_input(context))
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
