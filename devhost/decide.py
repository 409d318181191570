"""The Durable decision rules, pure: history bookkeeping + the SDK's output → what to do.

Given an instance, its bookkeeping (`engine_state`: next task id, actions already seen, retry
records, timers), the events of this episode and the OrchestratorState the SDK returned, decide
the history events to append and the work to schedule (activities, timers, entity operations,
sub-orchestrations), exactly as DTFx and the extension do (protocol doc §3.4, §3.5). No I/O, no
clock: the episode's start time is an argument, so recorded JSON fixtures replay identically.
The dispatcher (engine.py) commits the result in one transaction.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import protocol as p
from .config import HostConfig
from .loader import AppIndex

ET, AT = p.EventType, p.ActionType


def fresh_engine_state() -> dict:
    """Per-execution bookkeeping the SDK assumes the other side keeps (ids, retries, timers)."""
    return {"next_id": 0, "actions_seen": 0, "retries": {}, "retry_timers": {}, "timers": {}}


@dataclass
class Effects:
    """What one orchestrator episode decided, applied in a single transaction."""

    history: list[dict] = field(default_factory=list)
    activities: list[tuple[int, str, str | None]] = field(default_factory=list)
    timers: list[tuple[int, datetime]] = field(default_factory=list)
    cancelled_timers: list[int] = field(default_factory=list)
    entity_ops: list[dict] = field(default_factory=list)
    children: list[dict] = field(default_factory=list)
    failure: str | None = None
    actions: list[p.Action] = field(default_factory=list)  # the SDK's actions, flattened

    @property
    def continue_as_new(self) -> p.Action | None:
        return next((a for a in self.actions if a.kind == AT.ContinueAsNew), None)


def select_batch(due: list[dict], state: dict) -> tuple[list[dict], list[dict], dict | None]:
    """Ordinary events in arrival order, ending at the first retry-relevant one (§3.4):
    that keeps our id allocation in step with the SDK's. Returns (inbox rows, their events,
    the retry-relevant event or None)."""
    batch, events = [], []
    for row in due:
        event = json.loads(row["event"])
        batch.append(row)
        events.append(event)
        if is_retry_relevant(event, state):
            return batch, events, event
    return batch, events, None


def is_retry_relevant(event: dict, state: dict) -> bool:
    kind = event["EventType"]
    if kind in (ET.TaskFailed, ET.SubOrchestrationInstanceFailed):
        return str(event.get("TaskScheduledId")) in state["retries"]
    if kind == ET.TimerFired:
        timer = state["retry_timers"].get(str(event.get("TimerId")))
        return bool(timer) and not timer["exhausted"]
    return False


def decide(inst: dict, state: dict, result: dict, retry_event: dict | None, started: datetime,
           index: AppIndex, cfg: HostConfig) -> Effects:
    """Turn the SDK's cumulative actions into new history and work; updates `state`."""
    fx = Effects(actions=p.read_actions(result))
    if result.get("error") is not None:
        return fx
    actions = fx.actions
    if len(actions) > cfg.max_orchestration_actions:
        fx.failure = (f"Maximum amount of orchestration actions "
                      f"({cfg.max_orchestration_actions}) has been reached.")
        return fx
    ts = p.history_time(started)
    for position in range(state["actions_seen"], len(actions)):
        action = actions[position]
        if action.kind in (AT.WaitForExternalEvent, AT.ContinueAsNew):
            continue
        task_id = state["next_id"]
        state["next_id"] += 1
        failure = _schedule_action(inst, state, action, task_id, position, ts, fx, index, cfg)
        if failure:
            fx.failure = failure
            return fx
    state["actions_seen"] = len(actions)
    if retry_event is not None:
        _schedule_retry(inst, state, retry_event, started, fx)
    for position_text, timer_id in list(state["timers"].items()):
        position = int(position_text)
        if position < len(actions) and actions[position].is_canceled:
            fx.cancelled_timers.append(timer_id)
            del state["timers"][position_text]
    return fx


def _schedule_action(inst: dict, state: dict, action: p.Action, task_id: int, position: int,
                     ts: str, fx: Effects, index: AppIndex, cfg: HostConfig) -> str | None:
    kind = action.kind
    if kind in (AT.CallActivity, AT.CallActivityWithRetry):
        activity = index.activity(action.function_name or "")
        if activity is None:
            return p.unknown_function_message(action.function_name, "activity",
                                              [a.name for a in index.activities.values()])
        fx.history.append(p.event(ET.TaskScheduled, ts, task_id, Name=action.function_name,
                                  Version="", Input=action.input))
        fx.activities.append((task_id, activity.name, action.input))
        if kind == AT.CallActivityWithRetry:
            state["retries"][str(task_id)] = {
                "kind": "activity", "name": activity.name, "input": action.input,
                "attempt": 1, "options": action.retry_options}
    elif kind in (AT.CallSubOrchestrator, AT.CallSubOrchestratorWithRetry):
        registered = index.orchestrator(action.function_name or "")
        if registered is None:
            return p.unknown_function_message(action.function_name, "orchestrator",
                                              [n for n, _ in index.orchestrators.values()])
        child_id = action.instance_id or f"{inst['execution_id']}:{task_id}"
        version = action.version or cfg.default_version
        _schedule_child(fx, ts, task_id, registered[0], child_id, action.input, version)
        if kind == AT.CallSubOrchestratorWithRetry:
            state["retries"][str(task_id)] = {
                "kind": "orchestrator", "name": registered[0], "input": action.input,
                "attempt": 1, "options": action.retry_options,
                "instance_id": action.instance_id, "version": version}
    elif kind == AT.CreateTimer:
        fire_at = p.parse_time(action.fire_at)
        fx.history.append(p.event(ET.TimerCreated, ts, task_id, FireAt=p.history_time(fire_at)))
        fx.timers.append((task_id, fire_at))
        state["timers"][str(position)] = task_id
    elif kind in (AT.CallEntity, AT.SignalEntity):
        target = action.instance_id or ""
        try:
            name, _ = p.split_entity_id(target)
        except ValueError as exc:
            return str(exc)
        if index.entity(name) is None:
            return p.unknown_function_message(name, "entity",
                                              [n for n, _ in index.entities.values()])
        request_id = str(uuid.uuid4())
        is_signal = kind == AT.SignalEntity
        op_input = p.orchestrator_entity_input(action.input)
        request = {"op": action.operation, "signal": is_signal, "input": op_input,
                   "id": request_id, "parent": inst["instance_id"],
                   "parentExecution": inst["execution_id"]}
        fx.history.append(p.event(ET.EventSent, ts, task_id, InstanceId=target, Name="op",
                                  Input=json.dumps(request)))
        fx.entity_ops.append({"entity": target, "name": action.operation, "input": op_input,
                              "is_signal": is_signal, "request_id": request_id})
    elif kind == AT.CallHttp:
        request_text = json.dumps(action.http_request or {})
        fx.history.append(p.event(ET.TaskScheduled, ts, task_id, Name=p.HTTP_ACTIVITY_NAME,
                                  Version="", Input=request_text))
        fx.activities.append((task_id, p.HTTP_ACTIVITY_NAME, request_text))
    else:
        return f"devhost does not support orchestrator action type {kind}"
    return None


def _schedule_child(fx: Effects, ts: str, task_id: int, name: str, child_id: str,
                    input_text: str | None, version: str | None) -> None:
    fx.history.append(p.event(ET.SubOrchestrationInstanceCreated, ts, task_id, Name=name,
                              Version=version or "", InstanceId=child_id, Input=input_text))
    fx.children.append({"instance_id": child_id, "name": name, "input": input_text,
                        "task_id": task_id, "version": version})


def _schedule_retry(inst: dict, state: dict, retry_event: dict, started: datetime,
                    fx: Effects) -> None:
    """DTFx's RetryInterceptor: a timer after each failed attempt (a zero-delay one after the
    last), and a fresh attempt when a non-final retry timer fires."""
    ts = p.history_time(started)
    new_id = state["next_id"]
    state["next_id"] += 1
    if retry_event["EventType"] == ET.TimerFired:
        record = state["retry_timers"].pop(str(retry_event["TimerId"]))
        record["attempt"] += 1
        if record["kind"] == "activity":
            fx.history.append(p.event(ET.TaskScheduled, ts, new_id, Name=record["name"],
                                      Version="", Input=record["input"]))
            fx.activities.append((new_id, record["name"], record["input"]))
        else:
            child_id = record.get("instance_id") or f"{inst['execution_id']}:{new_id}"
            _schedule_child(fx, ts, new_id, record["name"], child_id, record["input"],
                            record.get("version"))
        state["retries"][str(new_id)] = record
        return
    record = state["retries"].pop(str(retry_event["TaskScheduledId"]))
    options = record["options"]
    attempts = int(options.get("maxNumberOfAttempts") or 1)
    exhausted = record["attempt"] >= attempts
    delay_ms = 0.0
    if not exhausted:
        first = float(options.get("firstRetryIntervalInMilliseconds") or 0)
        backoff = float(options.get("backoffCoefficient") or 1)
        delay_ms = first * backoff ** (record["attempt"] - 1)
        cap = options.get("maxRetryIntervalInMilliseconds")
        if cap:
            delay_ms = min(delay_ms, float(cap))
    fire_at = started + timedelta(milliseconds=delay_ms)
    fx.history.append(p.event(ET.TimerCreated, ts, new_id, FireAt=p.history_time(fire_at)))
    fx.timers.append((new_id, fire_at))
    state["retry_timers"][str(new_id)] = {**record, "exhausted": exhausted,
                                          "failed_task": retry_event["TaskScheduledId"]}
