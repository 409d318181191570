"""Management operations on the task hub: start, status, events, lifecycle, purge, entities.

Plain functions over the engine, used by the HTTP API (public webhooks and the SDK client's
rpc calls) and the dashboard alike. Each one validates first and changes nothing on refusal;
each state change is one transaction followed by waking whatever it made runnable.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid

from . import protocol as p
from .decide import bookkeeping, rewind_plan
from .engine import Engine, create_instance
from .errors import BadRequest, Conflict, Gone, InvalidOperation, NotFound

ET = p.EventType
_BAD_ID = re.compile(r"[/\\?#\x00-\x1f\x7f]")


def validate_instance_id(instance_id: str) -> str:
    if not instance_id or len(instance_id) > 256 or instance_id.startswith("@") \
            or _BAD_ID.search(instance_id):
        raise BadRequest(f"invalid instance id {instance_id!r}: 1-256 characters, not starting "
                         "with '@', without '/', '\\', '?', '#' or control characters")
    return instance_id


def parse_seconds(name: str, value: str) -> float:
    """A TimeSpan query parameter in seconds (`timeout`, `pollingInterval`), as the extension
    reads them, refused when it is not a finite number >= 0."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRequest(f"query parameter '{name}' must be a number of seconds (>= 0)")
    return seconds


def decode_start_input(body: bytes) -> tuple[str | None, str | None]:
    """(context input text, status input JSON) from a start request body (§5.1).

    The Python client sends a JSON string holding JSON text; curl sends raw JSON."""
    if not body or not body.strip():
        return None, None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    if isinstance(value, str):
        return value, json.dumps(value)
    text = json.dumps(value)
    return text, text


def _instance(engine: Engine, instance_id: str) -> dict:
    row = engine.store.get_instance(instance_id)
    if row is None:
        raise NotFound(f"no orchestration instance with id '{instance_id}'")
    return row


def start(engine: Engine, name: str, instance_id: str | None, body: bytes,
          version: str | None = None) -> dict:
    """Start an orchestration (replacing a finished one with the same id); the version is the
    SDK's `start_new(version=...)` or host.json's `defaultVersion`."""
    registered = engine.index.orchestrator(name)
    if registered is None:
        raise BadRequest(p.unknown_function_message(
            name, "orchestrator", [n for n, _ in engine.index.orchestrators.values()]))
    instance_id = validate_instance_id(instance_id) if instance_id else uuid.uuid4().hex
    input_text, input_raw = decode_start_input(body)
    with engine.store.transaction():
        existing = engine.store.get_instance(instance_id)
        if existing and existing["status"] not in p.TERMINAL_STATUSES:
            raise Conflict(f"an orchestration with instance id '{instance_id}' already exists "
                           f"and is {existing['status']}")
        row = create_instance(engine.store, instance_id, registered[0], input_text, input_raw,
                              version=version or engine.cfg.default_version)
    engine.wake_instance(instance_id)
    return row


def status(engine: Engine, instance_id: str, *, show_input: bool = True,
           show_history: bool = False, show_history_output: bool = False) -> dict | None:
    """The status document, read on the loop (cheap without history; see fetch_status)."""
    return _status_document(engine, engine.store, instance_id, show_input, show_history,
                            show_history_output)


async def wait_for_end(engine: Engine, instance_id: str, timeout: float) -> dict | None:
    """The status document once the instance has ended, or None when `timeout` seconds pass
    first: the start webhook's `?timeout=` wait as a poll-free provider answers it (the
    extension's WaitForCompletionOrCreateCheckStatusResponse), woken by the commit that changes
    the status instead of polling. Only the status column is read until it is terminal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = engine.store.get_instance(instance_id)
        if row is not None and row["status"] in p.TERMINAL_STATUSES:
            return status(engine, instance_id)
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        try:
            async with asyncio.timeout(remaining):
                await engine.wait_for_status(instance_id)
        except TimeoutError:
            pass


async def fetch_status(engine: Engine, instance_id: str, *, show_input: bool = True,
                       show_history: bool = False,
                       show_history_output: bool = False) -> dict | None:
    """status(); with its history read and rendered off the event loop (histories can be
    large). Without one it is a single-row read, cheaper on the loop than a thread hop."""
    if not show_history:
        return status(engine, instance_id, show_input=show_input)
    return await engine.store.read(lambda view: _status_document(
        engine, view, instance_id, show_input, show_history, show_history_output))


def _status_document(engine: Engine, store, instance_id: str, show_input: bool,
                     show_history: bool, show_history_output: bool) -> dict | None:
    row = store.get_instance(instance_id)
    if row is None:
        return None
    history = store.history(instance_id) if show_history else None
    document = p.status_document(row, show_input=show_input, history=history,
                                 show_history_output=show_history_output)
    stuck = engine.stuck_report(instance_id)
    if stuck:
        document["devhost"] = stuck
    return document


def _filters(created_from: str | None, created_to: str | None,
             statuses: str | None, prefix: str | None) -> dict:
    try:
        return {"created_from": p.parse_time(created_from).timestamp() if created_from else None,
                "created_to": p.parse_time(created_to).timestamp() if created_to else None,
                "statuses": _statuses(statuses), "prefix": prefix or None}
    except ValueError as exc:
        raise BadRequest(f"bad time filter: {exc}") from exc


def _statuses(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    by_lower = {s.lower(): s for s in p.RUNTIME_STATUSES}
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown:
        raise BadRequest(f"unknown runtimeStatus {unknown}; use {', '.join(p.RUNTIME_STATUSES)}")
    return [by_lower[n.lower()] for n in names]


def list_statuses(engine: Engine, *, created_from=None, created_to=None, statuses=None,
                  prefix=None, show_input: bool = True, top: int | None = None,
                  offset: int = 0) -> list[dict]:
    rows = engine.store.query_instances(**_filters(created_from, created_to, statuses, prefix),
                                        limit=top, offset=offset)
    return [p.status_document(r, show_input=show_input) for r in rows]


async def fetch_statuses(engine: Engine, *, created_from=None, created_to=None, statuses=None,
                         prefix=None, show_input: bool = True, top: int,
                         after: tuple[float, str] | None = None
                         ) -> tuple[list[dict], tuple[float, str] | None]:
    """One page of status documents, read off the loop, newest first, starting after the
    (created time, instance id) of the previous page's last row. Returns the page and that
    position for its own last row, or None when no row follows it."""
    filters = _filters(created_from, created_to, statuses, prefix)

    def page(view) -> tuple[list[dict], tuple[float, str] | None]:
        rows = view.query_instances(**filters, limit=top + 1, after=after)
        more = len(rows) > top
        rows = rows[:top]
        last = (rows[-1]["created_at"], rows[-1]["instance_id"]) if more else None
        return [p.status_document(r, show_input=show_input) for r in rows], last

    return await engine.store.read(page)


def raise_event(engine: Engine, instance_id: str, event_name: str, data_text: str | None) -> None:
    row = _instance(engine, instance_id)
    if row["status"] in p.TERMINAL_STATUSES:
        raise Gone(f"instance '{instance_id}' is {row['status']} and takes no more events")
    raised = p.event_raised(p.history_time(p.utcnow()), event_name, data_text)
    with engine.store.transaction():
        engine.store.add_inbox(instance_id, None, json.dumps(raised), time.time())
    engine.wake_instance(instance_id)


def _lifecycle_event(engine: Engine, row: dict, kind: ET, reason: str | None, **fields) -> None:
    engine.store.append_history(row["instance_id"], [p.stored_event(
        p.event(kind, p.history_time(p.utcnow()), Input=reason, **fields))])


def terminate(engine: Engine, instance_id: str, reason: str | None) -> None:
    row = _instance(engine, instance_id)
    if row["status"] in p.TERMINAL_STATUSES:
        raise Gone(f"instance '{instance_id}' is already {row['status']}")
    ts = p.history_time(p.utcnow())
    with engine.store.transaction():
        _lifecycle_event(engine, row, ET.ExecutionTerminated, reason)
        engine.store.clear_inbox(instance_id)
        engine.store.delete_activities_of(instance_id)
        engine.store.update_instance(instance_id, status="Terminated", output=json.dumps(reason))
        parent = engine.notify_parent(row, "Failed", json.dumps(reason), reason, ts)
    engine.notify_status(instance_id)
    if parent:
        engine.wake_instance(parent)


def suspend(engine: Engine, instance_id: str, reason: str | None) -> None:
    row = _instance(engine, instance_id)
    if row["status"] in p.TERMINAL_STATUSES:
        raise Gone(f"instance '{instance_id}' is {row['status']}")
    if row["status"] == "Suspended":
        raise InvalidOperation(f"Cannot suspend the orchestration instance {instance_id} "
                               "because instance is in the Suspended state.")
    with engine.store.transaction():
        engine.store.append_history(instance_id, [p.stored_event(p.event(
            ET.ExecutionSuspended, p.history_time(p.utcnow()), Reason=reason))])
        engine.store.update_instance(instance_id, status="Suspended")
    engine.notify_status(instance_id)


def resume(engine: Engine, instance_id: str, reason: str | None) -> None:
    row = _instance(engine, instance_id)
    if row["status"] in p.TERMINAL_STATUSES:
        raise Gone(f"instance '{instance_id}' is {row['status']}")
    if row["status"] != "Suspended":
        raise InvalidOperation(f"Cannot resume the orchestration instance {instance_id} "
                               f"because instance is in the {row['status']} state.")
    with engine.store.transaction():
        engine.store.append_history(instance_id, [p.stored_event(p.event(
            ET.ExecutionResumed, p.history_time(p.utcnow()), Reason=reason))])
        engine.store.update_instance(instance_id, status="Running")
    engine.notify_status(instance_id)
    engine.wake_instance(instance_id)


async def rewind(engine: Engine, instance_id: str, reason: str | None) -> None:
    """Re-run what failed in the last episode of a Failed instance, with the same task ids:
    failed activities and sub-orchestrations, or the last attempt of an exhausted retry
    (decide.rewind_plan). Only history is rewritten; the bookkeeping follows from it."""
    row = _instance(engine, instance_id)
    if row["status"] != "Failed":
        raise Gone(f"only Failed instances can be rewound; '{instance_id}' is {row['status']}")
    history = engine.store.history(instance_id)
    last_start = max(i for i, e in enumerate(history) if e["EventType"] == ET.OrchestratorStarted)
    undone = {i for i, e in enumerate(history)  # a failed episode dispatched nothing it scheduled
              if i > last_start and e["EventType"] in p.SCHEDULING_TYPES}
    kept = [e for i, e in enumerate(history) if i not in undone]
    # which timers are retry timers only the SDK's actions say: replay for them if it matters
    actions = (await engine.replay_actions(row)
               if any(e["EventType"] == ET.TimerFired for e in history[last_start:]) else [])
    rewound_ids, dropped_timer = rewind_plan(kept, bookkeeping(map(p.event_key, kept), actions))
    for i, e in enumerate(history):
        kind = e["EventType"]
        if ((kind in (ET.TaskFailed, ET.SubOrchestrationInstanceFailed)
             and e["TaskScheduledId"] in rewound_ids)
                or (dropped_timer is not None and kind in (ET.TimerCreated, ET.TimerFired)
                    and dropped_timer in (e.get("EventId"), e.get("TimerId")))):
            undone.add(i)
    generic = {"EventType": int(ET.GenericEvent), "EventId": -1, "IsPlayed": True,
               "Data": f"Rewound: {reason or ''}"}
    rewritten = [{**generic, "Timestamp": e["Timestamp"]} if i in undone else e
                 for i, e in enumerate(history) if e["EventType"] != ET.ExecutionCompleted]
    scheduled = {e["EventId"]: e for e in history
                 if e["EventType"] in (ET.TaskScheduled, ET.SubOrchestrationInstanceCreated)}
    ts = p.history_time(p.utcnow())
    woken = [instance_id]
    with engine.store.transaction():
        current = engine.store.get_instance(instance_id)
        if current is None or current["status"] != "Failed" \
                or current["execution_id"] != row["execution_id"]:
            raise Gone(f"instance '{instance_id}' changed while it was being rewound")
        engine.store.replace_history(instance_id, [p.stored_event(e) for e in rewritten])
        for task_id in rewound_ids:
            source = scheduled[task_id]
            if source["EventType"] == ET.TaskScheduled:
                engine.store.add_activity(instance_id, row["execution_id"], task_id,
                                          source["Name"], source.get("Input"))
            else:
                create_instance(engine.store, source["InstanceId"], source["Name"],
                                source.get("Input"), json.dumps(source.get("Input")),
                                parent=(instance_id, row["execution_id"], task_id),
                                version=source.get("Version") or None)
                woken.append(source["InstanceId"])
        if not rewound_ids:  # a failure in orchestrator code: just replay it
            engine.store.add_inbox(instance_id, row["execution_id"], json.dumps(
                p.event(ET.GenericEvent, ts, Data="Rewound")), time.time())
        engine.store.update_instance(instance_id, status="Running", output=None)
    engine.notify_status(instance_id)
    engine.run_queued_activities(instance_id)
    for target in woken:
        engine.wake_instance(target)


def restart(engine: Engine, instance_id: str, new_instance_id: bool) -> dict:
    row = _instance(engine, instance_id)
    target = uuid.uuid4().hex if new_instance_id else instance_id
    with engine.store.transaction():
        if not new_instance_id and row["status"] not in p.TERMINAL_STATUSES:
            raise Conflict(f"instance '{instance_id}' is {row['status']}; restart it with a new "
                           "instance id or terminate it first")
        created = create_instance(engine.store, target, row["name"], row["input"],
                                  row["input_raw"], version=row["version"])
    engine.wake_instance(target)
    return created


def purge(engine: Engine, instance_id: str) -> int:
    with engine.store.transaction():
        deleted = engine.store.delete_instance(instance_id)
    if deleted:
        engine.notify_status(instance_id)
    return deleted


PURGE_CHUNK = 100


async def purge_by(engine: Engine, *, created_from=None, created_to=None,
                   statuses=None) -> int:
    """Purge every matching instance: found off the loop, deleted a hundred per transaction
    with the loop free in between (like Azure, a big purge is not one atomic step)."""
    filters = _filters(created_from, created_to, statuses, None)
    ids = await engine.store.read(
        lambda view: [r["instance_id"] for r in view.query_instances(**filters)])
    deleted = 0
    for start_at in range(0, len(ids), PURGE_CHUNK):
        with engine.store.transaction():
            for instance_id in ids[start_at:start_at + PURGE_CHUNK]:
                deleted += engine.store.delete_instance(instance_id)
        for instance_id in ids[start_at:start_at + PURGE_CHUNK]:
            engine.notify_status(instance_id)
        await asyncio.sleep(0)
    return deleted


def signal_entity(engine: Engine, name: str, key: str, operation: str,
                  input_text: str | None) -> None:
    if engine.index.entity(name) is None:
        raise NotFound(p.unknown_function_message(
            name, "entity", [n for n, _ in engine.index.entities.values()]))
    if not operation:
        raise BadRequest("signalling an entity needs an operation name (?op=...)")
    scheduler_id = p.entity_id(name, key)
    with engine.store.transaction():
        engine.store.add_entity_op(scheduler_id, operation, input_text, True)
    engine.wake_entity(scheduler_id)


def read_entity(engine: Engine, name: str, key: str) -> str | None:
    row = engine.store.get_entity(p.entity_id(name, key))
    return row["state"] if row else None


def list_entities(engine: Engine, name: str | None, top: int, offset: int) -> list[dict]:
    return [{"entityId": {"name": r["name"], "key": r["key"]},
             "lastOperationTime": p.status_time(p.from_epoch(r["updated_at"])),
             "state": p.decode_json_text(r["state"])}
            for r in engine.store.query_entities(name, top, offset)]
