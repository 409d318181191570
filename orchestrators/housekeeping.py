"""Forgetting threads: `delete_thread` (the DELETE route and the reaper use it) and
`thread_reaper`, the eternal clean-up that deletes threads idle past THREAD_TTL_HOURS and purges
finished turn histories older than TURN_HISTORY_RETENTION_HOURS.

The reaper never deletes a thread in use: the thread entity itself refuses (atomically) when a
turn holds its lease or waits in its queue, or it was updated after the cutoff. It reads its
settings through an activity every round, and a `reconfigure` event (sent by the app's first
request after a start) wakes it at once, so changed settings reach the running reaper.
"""
from __future__ import annotations

import logging
from datetime import timedelta

import azure.durable_functions as df

from core import settings
from core.agents import find_agent, load_catalogue
from entities.thread import THREAD_ARCHIVE_ENTITY, archive_key
from entities.thread_index import index_entities, index_entity

bp = df.Blueprint()
DELETE_ORCHESTRATOR = "delete_thread"
REAPER_ORCHESTRATOR = "thread_reaper"
REAPER_INSTANCE = "thread-reaper"
RECONFIGURE_EVENT = "reconfigure"
LIVE = ("Running", "Pending", "ContinuedAsNew", "Suspended")


@bp.orchestration_trigger(context_name="context")
def delete_thread(context: df.DurableOrchestrationContext):
    """Forget a thread: its entity state now (so later reads are 404), then its archive pages,
    index entry and turn histories. With `idle_before` (the reaper) a thread in use is kept;
    a lease whose holder is no longer running is released first."""
    request = context.get_input()
    agent = find_agent(request["agent"])
    thread = df.EntityId(agent.entity_name, request["thread_key"])
    condition = {"idle_before": request["idle_before"]} if request.get("idle_before") else None
    deleted = yield context.call_entity(thread, "delete", condition)
    holder = deleted.get("holder")
    if condition and not deleted["deleted"] and holder and not (
            yield context.call_activity("turn_is_active", holder["instanceId"])):
        yield context.call_entity(thread, "release", {
            "turn_id": holder["turnId"], "now": context.current_utc_datetime.isoformat()})
        deleted = yield context.call_entity(thread, "delete", condition)
    if not deleted["deleted"] and deleted["existed"]:
        return {"existed": True, "deleted": False, "turn_histories_purged": 0}
    for page in range(deleted["archive_pages"]):
        yield context.call_entity(df.EntityId(THREAD_ARCHIVE_ENTITY, archive_key(
            agent.name, request["thread_key"], page)), "delete")
    for shard in (index_entities(agent.name)[0], index_entity(agent.name, request["thread_key"])):
        context.signal_entity(shard, "remove", {"key": request["thread_key"]})
    purged = yield context.call_activity("purge_turns", f"turn-{request['thread_key']}-")
    return {"existed": deleted["existed"], "deleted": deleted["existed"],
            "turn_histories_purged": purged}


@bp.orchestration_trigger(context_name="context")
def thread_reaper(context: df.DurableOrchestrationContext):
    """One clean-up round, then a durable timer (or a `reconfigure` event), then
    ContinueAsNew (its history stays short). Its custom status reports the last round."""
    config = yield context.call_activity("housekeeping_settings", None)
    if not config:
        return "clean-up disabled"
    now = context.current_utc_datetime
    report = {"round_at": now.isoformat(), "settings": config, "reaped": [], "kept_in_use": []}
    if config["ttl_seconds"]:
        cutoff = (now - timedelta(seconds=config["ttl_seconds"])).isoformat()
        shards = [(agent, shard) for agent in load_catalogue().values()
                  for shard in index_entities(agent.name)]
        # every index shard of every agent read at once: one round stays short with many agents
        indexes = yield context.task_all([context.call_entity(shard, "get") for _, shard in shards])
        for (agent, _), index in zip(shards, indexes):
            for key, entry in sorted((index or {}).items()):
                if entry["updated_at"] >= cutoff:
                    continue
                outcome = yield context.call_sub_orchestrator(DELETE_ORCHESTRATOR, {
                    "agent": agent.name, "thread_key": key, "idle_before": cutoff})
                if outcome["deleted"] or not outcome["existed"]:
                    report["reaped"].append(key)
                else:
                    report["kept_in_use"].append(key)
    if config["retention_seconds"]:
        before = now - timedelta(seconds=config["retention_seconds"])
        report["turn_histories_purged"] = yield context.call_activity(
            "purge_old_turns", {"before": before.isoformat()})
    context.set_custom_status(report)
    timer = context.create_timer(now + timedelta(seconds=config["every_seconds"]))
    wake = context.wait_for_external_event(RECONFIGURE_EVENT)
    if (yield context.task_any([timer, wake])) == wake:
        timer.cancel()
    context.continue_as_new(None)


_checked = False


async def ensure_housekeeping(client: df.DurableOrchestrationClient) -> None:
    """Once per process: with a clean-up setting on, start the reaper, or wake the running one
    so it re-reads its settings now."""
    global _checked
    if _checked:
        return
    if not settings.number("THREAD_TTL_HOURS") and \
            not settings.number("TURN_HISTORY_RETENTION_HOURS"):
        _checked = True
        return
    status = await client.get_status(REAPER_INSTANCE)
    running = status and status.runtime_status and status.runtime_status.value in LIVE
    if running:
        await client.raise_event(REAPER_INSTANCE, RECONFIGURE_EVENT, None)
    else:
        try:
            await client.start_new(REAPER_ORCHESTRATOR, REAPER_INSTANCE, None)
        except Exception:
            again = await client.get_status(REAPER_INSTANCE)
            if not (again and again.runtime_status):
                raise  # not a concurrent start by another request
            logging.getLogger(__name__).info("the clean-up was started by another request")
    _checked = True
