"""Pure translation between devhost's stored state and the Durable Functions SDK's JSON.

Everything the Python SDK expects from the Functions host + Durable extension, as JSON shapes:
history events, the orchestration context document, action flattening, entity batches, the
durable-client binding and the status documents. No I/O here; see
docs/durable-functions-protocol.md (shared) for the contract these functions implement.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum
from typing import Any, Iterable, NamedTuple
from urllib.parse import quote


class EventType(IntEnum):
    """DTFx history event types (the numbering the SDK's HistoryEventType mirrors)."""

    ExecutionStarted = 0
    ExecutionCompleted = 1
    ExecutionFailed = 2
    ExecutionTerminated = 3
    TaskScheduled = 4
    TaskCompleted = 5
    TaskFailed = 6
    SubOrchestrationInstanceCreated = 7
    SubOrchestrationInstanceCompleted = 8
    SubOrchestrationInstanceFailed = 9
    TimerCreated = 10
    TimerFired = 11
    OrchestratorStarted = 12
    OrchestratorCompleted = 13
    EventSent = 14
    EventRaised = 15
    ContinueAsNew = 16
    GenericEvent = 17
    HistoryState = 18
    ExecutionSuspended = 19
    ExecutionResumed = 20


class ActionType(IntEnum):
    """Action types of the SDK's OrchestratorState."""

    CallActivity = 0
    CallActivityWithRetry = 1
    CallSubOrchestrator = 2
    CallSubOrchestratorWithRetry = 3
    ContinueAsNew = 4
    CreateTimer = 5
    WaitForExternalEvent = 6
    CallEntity = 7
    CallHttp = 8
    SignalEntity = 9
    ScheduledSignalEntity = 10
    WhenAny = 11
    WhenAll = 12


TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
RUNTIME_STATUSES = ("Pending", "Running", "Completed", "ContinuedAsNew", "Failed", "Canceled",
                    "Terminated", "Suspended")
OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"
HTTP_ACTIVITY_NAME = "BuiltIn::HttpActivity"


# ----------------------------------------------------------------------------------------------
# time

def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def history_time(moment: datetime) -> str:
    """History timestamps: UTC, 7 fractional digits, like the extension emits."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def status_time(moment: datetime) -> str:
    """Status-document timestamps: whole seconds, as the extension renders them."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse the ISO-8601 forms the SDK and clients send (3-7 fractional digits, Z or offset)."""
    value = text.strip()
    if value.endswith("Z") or value.endswith("z"):
        value = value[:-1] + "+00:00"
    if "." in value:
        head, _, tail = value.partition(".")
        digits = ""
        rest = tail
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        value = f"{head}.{(digits + '000000')[:6]}{rest}"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


# ----------------------------------------------------------------------------------------------
# history events

def event(kind: EventType, timestamp: str, event_id: int = -1, **fields: Any) -> dict:
    """One history event with the four keys the SDK's HistoryEvent constructor requires."""
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False,
            "Timestamp": timestamp, **fields}


def execution_started(timestamp: str, name: str, input_text: str | None, instance_id: str,
                      execution_id: str, parent: dict | None, version: str | None = None) -> dict:
    return event(EventType.ExecutionStarted, timestamp, Name=name, Version=version or "",
                 Input=input_text,
                 OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
                 ParentInstance=parent)


def task_completed(timestamp: str, task_id: int, result: str | None) -> dict:
    return event(EventType.TaskCompleted, timestamp, TaskScheduledId=task_id, Result=result)


def task_failed(timestamp: str, task_id: int, reason: str, details: str) -> dict:
    return event(EventType.TaskFailed, timestamp, TaskScheduledId=task_id, Reason=reason,
                 Details=details)


def timer_fired(timestamp: str, timer_id: int, fire_at: str) -> dict:
    return event(EventType.TimerFired, timestamp, TimerId=timer_id, FireAt=fire_at)


def event_raised(timestamp: str, name: str, input_text: str | None) -> dict:
    return event(EventType.EventRaised, timestamp, Name=name, Input=input_text)


def entity_response(timestamp: str, request_id: str, result: str, is_error: bool) -> dict:
    """The EventRaised that answers an orchestrator's entity call (§4.3)."""
    body = {"result": result}
    if is_error:
        body["exceptionType"] = "Error"
    return event_raised(timestamp, request_id, json.dumps(body))


def activity_failure_reason(name: str, error: BaseException | str) -> str:
    """TaskFailed's reason; `error` is the exception, or its `Type: message` text (from a
    worker process)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return f"Activity function '{name}' failed: {text}"


def orchestrator_failure_output(name: str, error: str) -> str:
    return f"Orchestrator function '{name}' failed: {error}"


def unknown_function_message(name: str, kind: str, known: Iterable[str]) -> str:
    listed = ", ".join(f"'{k}'" for k in sorted(known))
    return (f"The function '{name}' doesn't exist, is disabled, or is not an {kind} function. "
            f"Additional info: The following are the known {kind} functions: {listed}.")


# ----------------------------------------------------------------------------------------------
# orchestration context and state

def context_document(history_texts: list[str], new_events: list[dict], input_json: str | None,
                     instance_id: str, parent_instance_id: str | None) -> str:
    """The JSON the orchestrator handle parses. Stored events are already JSON text with
    IsPlayed=true; we splice them in rather than re-encoding the whole history every episode.

    `input_json` is the input as the extension hands it over: the started value itself (for
    the Python client a JSON string holding JSON text; a raw array from curl stays an array,
    which makes get_input() raise, as in Azure)."""
    new_texts = [json.dumps(e) for e in new_events]
    head = json.dumps({"input": decode_json_text(input_json), "instanceId": instance_id,
                       "isReplaying": bool(history_texts), "parentInstanceId": parent_instance_id,
                       "upperSchemaVersion": 1, "upperSchemaVersionNew": 2})
    return '{"history": [' + ",".join(history_texts + new_texts) + "], " + head[1:]


# The SDK acts only on these; it parses (with dateutil, ~0.3 ms each) but ignores the rest
# (TaskScheduled, TimerCreated, OrchestratorCompleted, ...), so replays are sent only these.
REPLAYED_TYPES = frozenset({EventType.OrchestratorStarted, EventType.ExecutionStarted,
                            EventType.TaskCompleted, EventType.TaskFailed,
                            EventType.SubOrchestrationInstanceCompleted,
                            EventType.SubOrchestrationInstanceFailed, EventType.TimerFired,
                            EventType.EventSent, EventType.EventRaised, EventType.ContinueAsNew})


# Scheduling events carry in EventId the task id DTFx handed out for them (§2.2).
SCHEDULING_TYPES = frozenset({EventType.TaskScheduled, EventType.SubOrchestrationInstanceCreated,
                              EventType.TimerCreated, EventType.EventSent})


def event_key(e: dict) -> tuple[int, int | None]:
    """(EventType, the task id the event names): the EventId of a scheduling event, the
    TaskScheduledId of a completion, the TimerId of a TimerFired. All that the engine's
    bookkeeping (decide.bookkeeping) reads of an event."""
    kind = e["EventType"]
    if kind in SCHEDULING_TYPES:
        return kind, e.get("EventId")
    if kind == EventType.TimerFired:
        return kind, e.get("TimerId")
    return kind, e.get("TaskScheduledId")


class StoredEvent(NamedTuple):
    """How an event is kept: played-history JSON text, whether replays need it, and its
    event_key (what the bookkeeping reads, so it never parses the text)."""

    text: str
    replayed: bool
    kind: int
    task_id: int | None


def stored_event(e: dict) -> StoredEvent:
    return StoredEvent(json.dumps({**e, "IsPlayed": True}), e["EventType"] in REPLAYED_TYPES,
                       *event_key(e))


def parse_orchestrator_result(returned: str | None, raised: BaseException | None) -> dict:
    """Return the OrchestratorState dict from the handle's return value or its exception.

    An exception carrying the out-of-proc marker holds the state (with ``error``); any other
    exception is a host-side failure and becomes a state with that error."""
    if raised is None:
        return json.loads(returned or "{}")
    message = str(raised)
    if OUT_OF_PROC_MARKER in message:
        state = json.loads(message.split(OUT_OF_PROC_MARKER, 1)[1])
        state.setdefault("error", message.split(OUT_OF_PROC_MARKER, 1)[0])
        return state
    return {"isDone": False, "actions": [[]], "error": f"{type(raised).__name__}: {raised}"}


def flatten_actions(actions: list) -> list[dict]:
    """Depth-first list of atomic actions; compound WhenAll/WhenAny are replaced by children.

    V2/V3 state has one inner list; V1 has one list per yield. Both flatten the same way."""
    flat: list[dict] = []

    def walk(action: dict) -> None:
        if action.get("actionType") in (ActionType.WhenAll, ActionType.WhenAny):
            for child in action.get("compoundActions") or []:
                walk(child)
        else:
            flat.append(action)

    for group in actions or []:
        for action in group if isinstance(group, list) else [group]:
            walk(action)
    return flat


@dataclass(frozen=True)
class Action:
    """One atomic action of the SDK's OrchestratorState, with the keys devhost reads."""

    kind: int | None
    function_name: str | None = None
    input: str | None = None
    retry_options: dict = field(default_factory=dict)
    instance_id: str | None = None
    version: str | None = None
    fire_at: str | None = None
    is_canceled: bool = False
    operation: str | None = None
    http_request: dict | None = None


def read_actions(result: dict) -> list[Action]:
    """The SDK's cumulative actions of an OrchestratorState, flattened, as Action values."""
    return [Action(kind=a.get("actionType"), function_name=a.get("functionName"),
                   input=a.get("input"), retry_options=a.get("retryOptions") or {},
                   instance_id=a.get("instanceId"), version=a.get("version"),
                   fire_at=a.get("fireAt"), is_canceled=bool(a.get("isCanceled")),
                   operation=a.get("operation"), http_request=a.get("httpRequest"))
            for a in flatten_actions(result.get("actions") or [])]


# ----------------------------------------------------------------------------------------------
# entities

def entity_id(name: str, key: str) -> str:
    """Scheduler id of an entity: ``@{name lower}@{key}``."""
    return f"@{name.lower()}@{key}"


def split_entity_id(scheduler_id: str) -> tuple[str, str]:
    """Inverse of entity_id; keys may contain '@', names may not."""
    if not scheduler_id.startswith("@") or "@" not in scheduler_id[1:]:
        raise ValueError(f"not an entity id: {scheduler_id!r}")
    name, key = scheduler_id[1:].split("@", 1)
    return name, key


def entity_batch_document(name: str, key: str, state: str | None, operations: list[dict]) -> str:
    """Exactly the four keys the SDK's entity context accepts (an extra key fails the batch)."""
    batch = [{"name": op["name"], "input": op["input"], "isSignal": bool(op["is_signal"])}
             for op in operations]
    return json.dumps({"self": {"name": name, "key": key}, "exists": state is not None,
                       "state": state, "batch": batch})


@dataclass(frozen=True)
class EntityResult:
    is_error: bool
    result: str | None  # JSON text


def read_entity_batch_result(returned: str) -> tuple[list[EntityResult], bool, str | None]:
    """(per-operation results, entity exists, new state) from the entity handle's output."""
    out = json.loads(returned)
    results = [EntityResult(bool(r.get("isError")), r.get("result"))
               for r in out.get("results") or []]
    return results, bool(out.get("entityExists")), out.get("entityState")


def orchestrator_entity_input(action_input: str | None) -> str | None:
    """An orchestrator's entity input is JSON-encoded once more by the extension (§4.3)."""
    return None if action_input is None else json.dumps(action_input)


# ----------------------------------------------------------------------------------------------
# client binding and status documents

MANAGEMENT_ACTIONS = {
    "sendEventPostUri": "/raiseEvent/{eventName}",
    "terminatePostUri": "/terminate?reason={text}",
    "rewindPostUri": "/rewind?reason={text}",
    "purgeHistoryDeleteUri": "",
    "restartPostUri": "/restart",
    "suspendPostUri": "/suspend?reason={text}",
    "resumePostUri": "/resume?reason={text}",
}


def management_urls(base: str, instance_id: str, hub: str, connection: str = "Storage",
                    code: str | None = None, rewind: bool = True) -> dict:
    """The check-status payload URLs for one instance (``base`` ends before ``/instances``).
    The extension's own webhook answers leave out ``rewindPostUri``; the SDK's binding has it."""
    common = f"taskHub={hub}&connection={connection}" + (f"&code={code}" if code else "")
    path_id = quote(instance_id, safe="")  # the extension escapes it too (Uri.EscapeDataString)
    urls = {"id": instance_id,
            "statusQueryGetUri": f"{base}/instances/{path_id}?{common}"}
    for key, suffix in MANAGEMENT_ACTIONS.items():
        if key == "rewindPostUri" and not rewind:
            continue
        joiner = "&" if "?" in suffix else "?"
        urls[key] = f"{base}/instances/{path_id}{suffix}{joiner}{common}"
    return urls


def error_body(message: str) -> dict:
    """A management API error: Message/ExceptionMessage are the extension's keys, which the
    SDK client reads."""
    return {"error": message, "Message": message, "ExceptionMessage": message}


def status_http_code(document: dict) -> int:
    """The status webhook answers 202 while the instance can still change, 200 after."""
    return 202 if document["runtimeStatus"] in ("Pending", "Running", "ContinuedAsNew",
                                                "Suspended") else 200


def client_binding(public_base: str, rpc_base: str, hub: str, connection: str = "Storage",
                   code: str | None = None) -> str:
    """The durableClient binding value (a JSON string) the SDK's client is built from."""
    start = f"{public_base}/orchestrators/{{functionName}}[/{{instanceId}}]"
    return json.dumps({
        "taskHubName": hub,
        "creationUrls": {
            "createNewInstancePostUri": f"{start}?" + (f"code={code}" if code else ""),
            "createAndWaitOnNewInstancePostUri":
                f"{start}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&"
                + (f"code={code}" if code else ""),
        },
        "managementUrls": management_urls(public_base, "INSTANCEID", hub, connection, code),
        "baseUrl": public_base,
        "requiredQueryStringParameters": f"code={code}" if code else "",
        "rpcBaseUrl": rpc_base,
    })


def decode_json_text(text: str | None) -> Any:
    """Stored JSON text → value; text that is not JSON is returned as is."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def status_document(row: dict, *, show_input: bool = True, history: list[dict] | None = None,
                    show_history_output: bool = False) -> dict:
    """The extension's status object for GET instances/{id} and the list endpoint."""
    doc = {"name": row["name"], "instanceId": row["instance_id"],
           "runtimeStatus": row["status"],
           "input": decode_json_text(row["input_raw"]) if show_input else None,
           "customStatus": decode_json_text(row["custom_status"]),
           "output": decode_json_text(row["output"]),
           "createdTime": status_time(from_epoch(row["created_at"])),
           "lastUpdatedTime": status_time(from_epoch(row["updated_at"]))}
    if history is not None:
        doc["historyEvents"] = render_history(history, show_input, show_history_output)
    return doc


_SCHEDULING = {EventType.TaskScheduled, EventType.SubOrchestrationInstanceCreated}
_COMPLETIONS = {EventType.TaskCompleted: EventType.TaskScheduled,
                EventType.TaskFailed: EventType.TaskScheduled,
                EventType.SubOrchestrationInstanceCompleted: EventType.SubOrchestrationInstanceCreated,
                EventType.SubOrchestrationInstanceFailed: EventType.SubOrchestrationInstanceCreated}
_DROPPED = {EventType.OrchestratorStarted, EventType.OrchestratorCompleted}


def render_history(events: list[dict], show_input: bool, show_output: bool) -> list[dict]:
    """History as the extension shows it: completions merged with their scheduling events,
    episode markers dropped, enum names instead of numbers (protocol doc, corrections 1 and 5)."""
    scheduled = {e["EventId"]: e for e in events if e["EventType"] in _SCHEDULING}
    merged_ids = {e.get("TaskScheduledId") for e in events if e["EventType"] in _COMPLETIONS}
    rendered = []
    for e in events:
        kind = EventType(e["EventType"])
        if kind in _DROPPED or (kind in _SCHEDULING and e["EventId"] in merged_ids):
            continue
        out: dict[str, Any] = {"EventType": kind.name, "Timestamp": e["Timestamp"]}
        if kind is EventType.ExecutionStarted:
            out["FunctionName"] = e.get("Name")
            out["Input"] = e.get("Input")
            out["Correlation"] = None
            out["ScheduledStartTime"] = None
        elif kind in _COMPLETIONS:
            source = scheduled.get(e.get("TaskScheduledId"), {})
            out["FunctionName"] = source.get("Name")
            out["ScheduledTime"] = source.get("Timestamp")
            if kind in (EventType.TaskCompleted, EventType.SubOrchestrationInstanceCompleted):
                if show_output:
                    out["Result"] = decode_json_text(e.get("Result"))
            else:
                out["Reason"] = e.get("Reason")
                out["Details"] = e.get("Details")
            out["Input"] = source.get("Input")
            if source.get("InstanceId"):
                out["InstanceId"] = source["InstanceId"]
        elif kind is EventType.ExecutionCompleted:
            out["OrchestrationStatus"] = e.get("OrchestrationStatus")
            if show_output:
                out["Result"] = decode_json_text(e.get("Result"))
        else:
            for key, value in e.items():
                if key not in ("EventType", "EventId", "IsPlayed", "Timestamp", "TimerId",
                               "Version"):
                    out[key] = value
        if not show_input and "Input" in out:
            del out["Input"]
        rendered.append(out)
    return rendered
