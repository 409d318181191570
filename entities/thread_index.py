"""Each agent's list of threads (the SDK's client cannot enumerate entities), sharded so no
single entity grows with the agent: `agent_threads` entities keyed `<agent lower>.<shard>`
(INDEX_SHARDS of them, a thread's shard fixed by its uuid), each holding only what listing
needs: {thread uuid: {updated_at, created_at, messages}} (the thread id is derived from the
uuid). A turn re-parses only its own
shard; listing reads every shard and merges. Turn orchestrations signal `touch` after each
stored turn; deleting a thread sends `remove`. An agent's pre-sharding entity (keyed by the bare
agent name) is still read and cleaned, so older task hubs keep their lists."""
from __future__ import annotations

import azure.durable_functions as df

bp = df.Blueprint()
THREAD_INDEX_ENTITY = "agent_threads"
INDEX_SHARDS = 16


def index_entity(agent_name: str, thread_key: str) -> df.EntityId:
    """The index shard that lists this thread."""
    shard = int(thread_key.replace("-", "")[:8], 16) % INDEX_SHARDS
    return df.EntityId(THREAD_INDEX_ENTITY, f"{agent_name.lower()}.{shard:02d}")


def index_entities(agent_name: str) -> list[df.EntityId]:
    """Every shard of the agent's index, plus its pre-sharding entity."""
    return [df.EntityId(THREAD_INDEX_ENTITY, agent_name.lower())] + [
        df.EntityId(THREAD_INDEX_ENTITY, f"{agent_name.lower()}.{shard:02d}")
        for shard in range(INDEX_SHARDS)]


@bp.entity_trigger(context_name="context", entity_name=THREAD_INDEX_ENTITY)
def agent_threads(context: df.DurableEntityContext) -> None:
    threads: dict = context.get_state(lambda: {})
    operation = context.operation_name
    entry = context.get_input() if operation in ("touch", "remove") else None
    if operation == "touch":
        threads[entry["key"]] = {"updated_at": entry["updated_at"],
                                 "messages": entry["messages"],
                                 "created_at": threads.get(entry["key"], {}).get(
                                     "created_at", entry["updated_at"])}
    elif operation == "remove":
        threads.pop(entry["key"], None)
    elif operation != "get":
        raise ValueError(f"unknown thread index operation '{operation}'")
    context.set_result(threads if operation == "get" else len(threads))
    if threads:
        context.set_state(threads)
    else:
        context.destruct_on_exit()  # an empty shard (or a clean-up of the old one) takes no row
