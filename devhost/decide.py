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
from typing import Iterable

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


# ----------------------------------------------------------------------------------------------
# bookkeeping, derived from history (protocol doc §3.4, §3.5)

UNNUMBERED = frozenset({AT.WaitForExternalEvent, AT.ContinueAsNew})  # they take no task id
WITH_RETRY = frozenset({AT.CallActivityWithRetry, AT.CallSubOrchestratorWithRetry})
FAILURES = frozenset({ET.TaskFailed, ET.SubOrchestrationInstanceFailed})
EventKey = tuple[int, "int | None"]  # p.event_key: (EventType, the task id it names)


@dataclass(frozen=True)
class Attempt:
    """One attempt of a *_with_retry call: the action that asked for it, and which try."""

    position: int  # in the SDK's flattened action list
    number: int    # 1 for the action's own task, +1 for each re-scheduled attempt


@dataclass(frozen=True)
class RetryTimer:
    """The timer the RetryInterceptor starts after a failed attempt."""

    failed: Attempt
    failed_task: int
    exhausted: bool  # that was the last attempt: when this fires, the SDK fails the call


@dataclass
class Bookkeeping:
    """What the SDK assumes the other side knows about an execution, rebuilt from its history
    and the SDK's current action list (nothing of it is stored)."""

    next_id: int = 0    # task ids handed out so far
    scheduled: int = 0  # id-taking actions already in history (the rest are new)
    retries: dict[int, Attempt] = field(default_factory=dict)  # attempt's task id → attempt
    retry_timers: dict[int, RetryTimer] = field(default_factory=dict)  # timer id → timer
    timers: dict[int, int] = field(default_factory=dict)  # CreateTimer position → timer id
    retry_event: EventKey | None = None  # the last episode's retry-relevant event, unanswered


@dataclass
class _Episode:
    last_inbound: EventKey | None = None
    allocated: list[EventKey] = field(default_factory=list)
    closed: bool = False


def bookkeeping(history: Iterable[EventKey], actions: list[p.Action]) -> Bookkeeping:
    """Replay the current execution's history against the SDK's cumulative actions, as DTFx
    does every episode: each id-taking action gets the next sequence number, and the history
    events that carry an EventId say which of them are already scheduled. The retry
    interceptor's ids are taken where devhost wrote them: an episode whose batch ended with a
    retry-relevant event (select_batch) answered it with its last id, after the new actions.

    One pass over (EventType, task id) pairs (see p.event_key); history from devhost itself,
    so an episode is OrchestratorStarted, its inbound events, its scheduling events,
    OrchestratorCompleted (a failed episode schedules nothing)."""
    numbered = [i for i, action in enumerate(actions) if action.kind not in UNNUMBERED]
    bk, episode = Bookkeeping(), None
    for kind, task_id in history:
        if kind == ET.OrchestratorStarted:
            if episode is not None:
                _replay_episode(bk, episode, numbered, actions, last=False)
            episode = _Episode()
        elif episode is None or episode.closed:
            continue  # ExecutionCompleted, or suspend/resume/terminate between episodes
        elif kind == ET.OrchestratorCompleted:
            episode.closed = True
        elif kind in p.SCHEDULING_TYPES:
            episode.allocated.append((kind, task_id))
        elif not episode.allocated:
            if kind == ET.ExecutionStarted:
                bk = Bookkeeping()  # a new execution starts from nothing
            episode.last_inbound = (kind, task_id)
    if episode is not None:
        _replay_episode(bk, episode, numbered, actions, last=True)
    return bk


def _replay_episode(bk: Bookkeeping, episode: _Episode, numbered: list[int],
                    actions: list[p.Action], last: bool) -> None:
    event = episode.last_inbound
    retry_event = event if event is not None and awaits_retry(bk, event) else None
    allocated = [task_id for _, task_id in episode.allocated]
    answer = allocated.pop() if retry_event is not None and allocated else None
    for task_id in allocated:
        if bk.scheduled < len(numbered):  # else the code no longer asks for it (changed code)
            position = numbered[bk.scheduled]
            kind = actions[position].kind
            if kind in WITH_RETRY:
                bk.retries[task_id] = Attempt(position, 1)
            elif kind == AT.CreateTimer:
                bk.timers[position] = task_id
        bk.scheduled += 1
        bk.next_id += 1
    if answer is not None:
        bk.next_id += 1
        kind, ref = retry_event
        if kind == ET.TimerFired:
            failed = bk.retry_timers.pop(ref).failed
            bk.retries[answer] = Attempt(failed.position, failed.number + 1)
        else:
            attempt = bk.retries.pop(ref)
            exhausted = attempt.number >= max_attempts(actions[attempt.position].retry_options)
            bk.retry_timers[answer] = RetryTimer(attempt, ref, exhausted)
    elif retry_event is not None and last:
        bk.retry_event = retry_event  # this episode's: decide answers it


def awaits_retry(bk: Bookkeeping, event: EventKey) -> bool:
    """A failed attempt that a retry timer answers, or a retry timer that a new attempt
    answers (the exhausted one is ordinary: the SDK fails the call then)."""
    kind, ref = event
    if kind in FAILURES:
        return ref in bk.retries
    if kind == ET.TimerFired:
        timer = bk.retry_timers.get(ref)
        return timer is not None and not timer.exhausted
    return False


def max_attempts(options: dict) -> int:
    return int(options.get("maxNumberOfAttempts") or 1)


def possible_retry_timers(history: Iterable[EventKey]) -> set[int]:
    """Timers that may be retry timers, knowing only history: those created last in an
    episode that a failure ended (history does not say which calls retry; the SDK's actions
    do, and they are known only after the SDK ran)."""
    found: set[int] = set()
    last_inbound, last_allocated, closed = None, None, True
    for kind, task_id in [*history, (ET.OrchestratorStarted, None)]:
        if kind == ET.OrchestratorStarted:
            if (last_inbound in FAILURES and last_allocated is not None
                    and last_allocated[0] == ET.TimerCreated):
                found.add(last_allocated[1])
            last_inbound, last_allocated, closed = None, None, False
        elif closed:
            continue
        elif kind == ET.OrchestratorCompleted:
            closed = True
        elif kind in p.SCHEDULING_TYPES:
            last_allocated = (kind, task_id)
        elif last_allocated is None:
            if kind == ET.ExecutionStarted:
                found.clear()
            last_inbound = kind
    return found


def select_batch_from_history(due: list[dict], history: list[EventKey]
                              ) -> tuple[list[dict], list[dict]]:
    """The inbox rows of one episode and their events: arrival order, ending at the first
    event that may be retry-relevant (§3.4), which keeps our ids in step with the SDK's.

    This runs before the SDK, when only history is known, and history does not say which calls
    retry (in DTFx the RetryInterceptor knows it from the code it re-runs). So any failure ends
    a batch, and so does the firing of any timer that may be a retry timer. Where no retry
    follows, that costs an episode, never correctness: bookkeeping() tells after the SDK ran
    whether the last event really awaits a retry."""
    candidates = possible_retry_timers(history)
    batch, events = [], []
    for row in due:
        event = json.loads(row["event"])
        batch.append(row)
        events.append(event)
        kind = event["EventType"]
        if kind in FAILURES or (kind == ET.TimerFired and event.get("TimerId") in candidates):
            break
    return batch, events


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
        failure = _schedule_action(inst, action, task_id, ts, fx, index, cfg)
        if failure:
            return Effects(actions=actions, failure=failure)
        _legacy_record(state, action, task_id, position, index, cfg)
    state["actions_seen"] = len(actions)
    if retry_event is not None:
        _legacy_schedule_retry(inst, state, retry_event, started, fx)
    for position_text, timer_id in list(state["timers"].items()):
        position = int(position_text)
        if position < len(actions) and actions[position].is_canceled:
            fx.cancelled_timers.append(timer_id)
            del state["timers"][position_text]
    return fx


def _legacy_record(state: dict, action: p.Action, task_id: int, position: int,
                   index: AppIndex, cfg: HostConfig) -> None:
    if action.kind == AT.CallActivityWithRetry:
        state["retries"][str(task_id)] = {
            "kind": "activity", "name": index.activity(action.function_name).name,
            "input": action.input, "attempt": 1, "options": action.retry_options}
    elif action.kind == AT.CallSubOrchestratorWithRetry:
        state["retries"][str(task_id)] = {
            "kind": "orchestrator", "name": index.orchestrator(action.function_name)[0],
            "input": action.input, "attempt": 1, "options": action.retry_options,
            "instance_id": action.instance_id, "version": action.version or cfg.default_version}
    elif action.kind == AT.CreateTimer:
        state["timers"][str(position)] = task_id


def decide_from_bookkeeping(inst: dict, bk: Bookkeeping, result: dict, started: datetime,
                            index: AppIndex, cfg: HostConfig) -> Effects:
    """Turn the SDK's cumulative actions into new history and work: the actions history does
    not have yet get the next ids, then the retry the episode's last event awaits, if any;
    timers the code cancelled are named (the engine drops those still queued). A failure
    (an unknown function, too many actions) keeps nothing of the episode's work."""
    fx = Effects(actions=p.read_actions(result))
    if result.get("error") is not None:
        return fx
    actions = fx.actions
    if len(actions) > cfg.max_orchestration_actions:
        fx.failure = (f"Maximum amount of orchestration actions "
                      f"({cfg.max_orchestration_actions}) has been reached.")
        return fx
    ts = p.history_time(started)
    task_id, timers = bk.next_id, dict(bk.timers)
    for position in _unscheduled(actions, bk.scheduled):
        action = actions[position]
        failure = _schedule_action(inst, action, task_id, ts, fx, index, cfg)
        if failure:
            return Effects(actions=actions, failure=failure)
        if action.kind == AT.CreateTimer:
            timers[position] = task_id
        task_id += 1
    if bk.retry_event is not None:
        _schedule_retry(inst, bk, actions, task_id, started, fx, index, cfg)
    fx.cancelled_timers = [timer_id for position, timer_id in timers.items()
                           if actions[position].is_canceled]
    return fx


def _unscheduled(actions: list[p.Action], scheduled: int) -> Iterable[int]:
    """Positions of the id-taking actions after the first `scheduled` of them."""
    seen = 0
    for position, action in enumerate(actions):
        if action.kind not in UNNUMBERED:
            seen += 1
            if seen > scheduled:
                yield position


def _schedule_action(inst: dict, action: p.Action, task_id: int, ts: str, fx: Effects,
                     index: AppIndex, cfg: HostConfig) -> str | None:
    kind = action.kind
    if kind in (AT.CallActivity, AT.CallActivityWithRetry):
        activity = index.activity(action.function_name or "")
        if activity is None:
            return p.unknown_function_message(action.function_name, "activity",
                                              [a.name for a in index.activities.values()])
        fx.history.append(p.event(ET.TaskScheduled, ts, task_id, Name=action.function_name,
                                  Version="", Input=action.input))
        fx.activities.append((task_id, activity.name, action.input))
    elif kind in (AT.CallSubOrchestrator, AT.CallSubOrchestratorWithRetry):
        registered = index.orchestrator(action.function_name or "")
        if registered is None:
            return p.unknown_function_message(action.function_name, "orchestrator",
                                              [n for n, _ in index.orchestrators.values()])
        child_id = action.instance_id or f"{inst['execution_id']}:{task_id}"
        version = action.version or cfg.default_version
        _schedule_child(fx, ts, task_id, registered[0], child_id, action.input, version)
    elif kind == AT.CreateTimer:
        fire_at = p.parse_time(action.fire_at)
        fx.history.append(p.event(ET.TimerCreated, ts, task_id, FireAt=p.history_time(fire_at)))
        fx.timers.append((task_id, fire_at))
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


def _legacy_schedule_retry(inst: dict, state: dict, retry_event: dict, started: datetime,
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


def _schedule_retry(inst: dict, bk: Bookkeeping, actions: list[p.Action], task_id: int,
                    started: datetime, fx: Effects, index: AppIndex, cfg: HostConfig) -> None:
    """DTFx's RetryInterceptor: a timer after each failed attempt (a zero-delay one after the
    last), and a fresh attempt when a non-final retry timer fires."""
    ts = p.history_time(started)
    kind, ref = bk.retry_event
    if kind == ET.TimerFired:
        action = actions[bk.retry_timers[ref].failed.position]
        if action.kind == AT.CallActivityWithRetry:
            activity = index.activity(action.function_name or "")
            name = activity.name if activity else action.function_name
            fx.history.append(p.event(ET.TaskScheduled, ts, task_id, Name=name, Version="",
                                      Input=action.input))
            fx.activities.append((task_id, name, action.input))
        else:
            registered = index.orchestrator(action.function_name or "")
            child_id = action.instance_id or f"{inst['execution_id']}:{task_id}"
            _schedule_child(fx, ts, task_id, registered[0] if registered else action.function_name,
                            child_id, action.input, action.version or cfg.default_version)
        return
    attempt = bk.retries[ref]
    options = actions[attempt.position].retry_options
    delay_ms = 0.0
    if attempt.number < max_attempts(options):
        first = float(options.get("firstRetryIntervalInMilliseconds") or 0)
        backoff = float(options.get("backoffCoefficient") or 1)
        delay_ms = first * backoff ** (attempt.number - 1)
        cap = options.get("maxRetryIntervalInMilliseconds")
        if cap:
            delay_ms = min(delay_ms, float(cap))
    fire_at = started + timedelta(milliseconds=delay_ms)
    fx.history.append(p.event(ET.TimerCreated, ts, task_id, FireAt=p.history_time(fire_at)))
    fx.timers.append((task_id, fire_at))
