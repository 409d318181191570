"""The Durable decision rules, pure: history + the SDK's output → what to do.

devhost keeps no bookkeeping of its own. What the SDK assumes the other side knows (the next
task id, which of its actions are scheduled already, the attempts and timers of retried calls,
which action is which timer) is rebuilt each episode by `bookkeeping` from the current
execution's history and the SDK's cumulative action list, as DTFx rebuilds it by replay
(protocol doc §3.4, §3.5). `select_batch` picks an episode's inbox events before the SDK runs,
when only history is known, and history does not say which calls retry: it plays safe (see
there). `decide` turns the SDK's OrchestratorState into the history events to append and the
work to schedule (activities, timers, entity operations, sub-orchestrations, cancelled
timers); `rewind_plan` says what a rewind runs again. No I/O, no clock: the episode's start
time is an argument, so recorded JSON fixtures replay identically. The dispatcher (engine.py)
commits the result in one transaction.
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
    retries: dict[int, Attempt] = field(default_factory=dict)  # task id → attempt, until it fails
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


def select_batch(due: list[dict], history: list[EventKey]) -> tuple[list[dict], list[dict]]:
    """The inbox rows of one episode and their events: arrival order, ending at the first
    event that may be retry-relevant (§3.4), which keeps our ids in step with the SDK's.

    This runs before the SDK, when only history is known, and history does not say which calls
    retry (in DTFx the RetryInterceptor knows it from the code it re-runs). So any failure ends
    a batch, and so does the firing of any timer that may be a retry timer. Where no retry
    follows, that costs an episode, never correctness: bookkeeping() tells after the SDK ran
    whether the last event really awaits a retry."""
    batch, events, candidates = [], [], None
    for row in due:
        event = json.loads(row["event"])
        batch.append(row)
        events.append(event)
        kind = event["EventType"]
        if kind in FAILURES:
            break
        if kind == ET.TimerFired:
            if candidates is None:
                candidates = possible_retry_timers(history)
            if event.get("TimerId") in candidates:
                break
    return batch, events


def decide(inst: dict, history: list[EventKey], result: dict, started: datetime,
           index: AppIndex, cfg: HostConfig) -> Effects:
    """Turn the SDK's cumulative actions into new history and work. `history` is the current
    execution's, this episode's events included (as p.event_key pairs). The actions history
    does not have yet take the next ids, then the retry the episode's last event awaits, if
    any; the timers the code cancelled are named (the engine drops those still queued). A
    failure (an unknown function, too many actions) keeps nothing of the episode's work."""
    fx = Effects(actions=p.read_actions(result))
    if result.get("error") is not None:
        return fx
    actions = fx.actions
    if len(actions) > cfg.max_orchestration_actions:
        fx.failure = (f"Maximum amount of orchestration actions "
                      f"({cfg.max_orchestration_actions}) has been reached.")
        return fx
    bk = bookkeeping(history, actions)
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


# ----------------------------------------------------------------------------------------------
# rewind

def rewind_plan(history: list[dict], bk: Bookkeeping) -> tuple[list[int], int | None]:
    """What a rewind of a Failed instance runs again, with the same task ids: the tasks that
    failed in its last episode, or the last attempt of a retried call whose extra timer fired
    there. That timer is dropped (returned second) when it was the last id handed out, so the
    retried attempt's next timer takes its id again. `bk` is the bookkeeping of `history`
    (with the SDK's actions: only they say which timer is a retry timer)."""
    last_start = max(i for i, e in enumerate(history) if e["EventType"] == ET.OrchestratorStarted)
    rewound, dropped = set(), None
    for e in history[last_start:]:
        if e["EventType"] in FAILURES:
            rewound.add(e["TaskScheduledId"])
        elif e["EventType"] == ET.TimerFired:
            timer = bk.retry_timers.get(e["TimerId"])
            if timer and timer.exhausted and e["TimerId"] == bk.next_id - 1:
                dropped = e["TimerId"]
                rewound.add(timer.failed_task)
    return sorted(rewound), dropped
