"""Each agent's list of threads (the SDK's client cannot enumerate entities): an entity keyed by
the agent's lower-case name, holding {thread uuid: {thread_id, updatedAt, messages}}. Turn
orchestrations signal it after each stored turn; deleting a thread removes its entry."""
from __future__ import annotations

import azure.durable_functions as df

bp = df.Blueprint()
THREAD_INDEX_ENTITY = "agent_threads"


@bp.entity_trigger(context_name="context", entity_name=THREAD_INDEX_ENTITY)
def agent_threads(context: df.DurableEntityContext) -> None:
    threads: dict = context.get_state(lambda: {})
    operation = context.operation_name
    entry = context.get_input() if operation in ("touch", "remove") else None
    if operation == "touch":
        threads[entry["key"]] = {"thread_id": entry["thread_id"], "updated_at": entry["updated_at"],
                                 "messages": entry["messages"],
                                 "created_at": threads.get(entry["key"], {}).get(
                                     "created_at", entry["updated_at"])}
    elif operation == "remove":
        threads.pop(entry["key"], None)
    elif operation != "get":
        raise ValueError(f"unknown thread index operation '{operation}'")
    context.set_state(threads)
    context.set_result(threads if operation == "get" else len(threads))
