"""Hands a thread's lease to the next queued turn by raising `turn_granted` on its orchestration.

Python orchestrations cannot raise events on each other and entities cannot message them, so
this tiny activity does it through the durable client. If it fails, the waiting turn's own
timer makes it ask the thread again: the notification only makes hand-offs fast.
"""
from __future__ import annotations

import azure.durable_functions as df

bp = df.Blueprint()
TURN_GRANTED_EVENT = "turn_granted"


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
    return bool(status and status.runtime_status and status.runtime_status.value in (
        "Running", "Pending", "Suspended"))


@bp.activity_trigger(input_name="prefix")
@bp.durable_client_input(client_name="client")
async def purge_turns(prefix: str, client: df.DurableOrchestrationClient) -> int:
    """Purge the histories of a deleted thread's turn orchestrations (running ones are
    terminated first); returns how many were purged."""
    turns = await client.get_status_by(instance_id_prefix=prefix)
    for turn in turns:
        if turn.runtime_status and turn.runtime_status.value in ("Running", "Pending",
                                                                 "Suspended"):
            await client.terminate(turn.instance_id, "thread deleted")
    purged = 0
    for turn in turns:
        purged += (await client.purge_instance_history(turn.instance_id)).instances_deleted
    return purged
