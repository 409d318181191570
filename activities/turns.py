"""Small activities the turn and housekeeping orchestrations need from the durable client.

- `notify_turn` hands a thread's lease to the next queued turn by raising `turn_granted` on its
  orchestration (Python orchestrations cannot raise events on each other and entities cannot
  message them). If it fails, the waiting turn's own timer makes it ask the thread again: the
  notification only makes hand-offs fast.
- `turn_is_active`: is a lease holder still running? (a lease is only ever taken from one that
  is not).
- `purge_turns` / `purge_old_turns`: delete turn histories, listing them page by page.
- `housekeeping_settings`: the clean-up settings as they are now (an orchestration must not
  read the environment itself), so changed settings reach the running clean-up.
"""
from __future__ import annotations

from datetime import datetime, timezone

import aiohttp
import azure.durable_functions as df

from core import settings

bp = df.Blueprint()
TURN_GRANTED_EVENT = "turn_granted"
ACTIVE = ("Running", "Pending", "Suspended", "ContinuedAsNew")
FINISHED = "Completed,Failed,Terminated,Canceled"
PAGE_SIZE = 100  # the extension's default page; we ask for it explicitly and follow tokens


@bp.activity_trigger(input_name="grant")
@bp.durable_client_input(client_name="client")
async def notify_turn(grant: dict, client: df.DurableOrchestrationClient) -> bool:
    """False if that turn is no longer running (the caller then skips it)."""
    try:
        await client.raise_event(grant["instanceId"], TURN_GRANTED_EVENT, grant["turnId"])
    except Exception as exc:  # the SDK raises on 404/410: the waiting turn is gone
        text = str(exc)
        if "is gone" in text or "No instance with ID" in text:
            return False
        raise
    return True


@bp.activity_trigger(input_name="instance_id")
@bp.durable_client_input(client_name="client")
async def turn_is_active(instance_id: str, client: df.DurableOrchestrationClient) -> bool:
    """Is the turn holding a thread's lease still running (not failed or terminated)?"""
    status = await client.get_status(instance_id)
    return bool(status and status.runtime_status and status.runtime_status.value in ACTIVE)


async def list_instances(client: df.DurableOrchestrationClient, prefix: str,
                         query: dict | None = None, page_size: int = PAGE_SIZE):
    """Every instance whose id starts with `prefix`, following `x-ms-continuation-token`
    (the SDK's get_status_by reads only the first page of the extension's answer)."""
    # The SDK keeps the host's management base URL private; its own calls use the same one.
    base = client._orchestration_bindings.rpc_base_url
    params = {"instanceIdPrefix": prefix, "top": str(page_size), "showInput": "false",
              **(query or {})}
    token = None
    async with aiohttp.ClientSession() as session:
        while True:
            headers = {"x-ms-continuation-token": token} if token else {}
            async with session.get(f"{base}instances/", params=params, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"listing instances '{prefix}*' answered {r.status}: "
                                       f"{(await r.text())[:300]}")
                for doc in await r.json(content_type=None) or []:
                    yield doc
                token = r.headers.get("x-ms-continuation-token")
            if not token:
                return


@bp.activity_trigger(input_name="prefix")
@bp.durable_client_input(client_name="client")
async def purge_turns(prefix: str, client: df.DurableOrchestrationClient) -> int:
    """Purge the histories of a deleted thread's turn orchestrations (running ones are
    terminated first); returns how many were purged. Listed in full before purging, so
    purging cannot shift the pages."""
    turns = [doc async for doc in list_instances(client, prefix)]
    for turn in turns:
        if turn.get("runtimeStatus") in ACTIVE:
            await client.terminate(turn["instanceId"], "thread deleted")
    purged = 0
    for turn in turns:
        purged += (await client.purge_instance_history(turn["instanceId"])).instances_deleted
    return purged


@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def purge_old_turns(request: dict, client: df.DurableOrchestrationClient) -> int:
    """Purge finished turn histories last updated before `request["before"]` (ISO time):
    TURN_HISTORY_RETENTION_HOURS. The thread keeps every message; only the per-turn status
    and history go."""
    before = _utc(request["before"])
    old = [doc["instanceId"] async for doc in list_instances(
        client, "turn-", {"runtimeStatus": FINISHED, "createdTimeTo": before.isoformat()})
        if doc.get("lastUpdatedTime") and _utc(doc["lastUpdatedTime"]) < before]
    purged = 0
    for instance_id in old:
        purged += (await client.purge_instance_history(instance_id)).instances_deleted
    return purged


@bp.activity_trigger(input_name="unused")
def housekeeping_settings(unused) -> dict | None:
    """{ttl_seconds, retention_seconds, every_seconds}, or None when neither clean-up is on."""
    ttl_hours = settings.number("THREAD_TTL_HOURS")
    retention_hours = settings.number("TURN_HISTORY_RETENTION_HOURS")
    if not ttl_hours and not retention_hours:
        return None
    shortest = min(h for h in (ttl_hours, retention_hours) if h) * 3600
    every = settings.number("THREAD_TTL_CHECK_SECONDS") or min(3600.0, max(1.0, shortest / 4))
    return {"ttl_seconds": ttl_hours * 3600 if ttl_hours else None,
            "retention_seconds": retention_hours * 3600 if retention_hours else None,
            "every_seconds": every}


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
