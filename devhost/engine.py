"""The dispatch loop: runs orchestrator episodes, activities and entity batches.

Event-driven inside one process: every commit names the instances/entities/activities it made
runnable and the engine starts them at once (durable timers are asyncio timers armed from the
store). Each orchestration instance and each entity runs strictly one episode/batch at a time;
different ones run concurrently, bounded by host.json's concurrency limits. All SQLite access
happens on the event-loop thread; user code runs in thread pools.

Recovery is a scan of the store: queued inbox events, activity rows and entity operations are
the whole truth, so a restart after kill -9 resumes exactly where the last commit left off.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from . import protocol as p
from . import sdk_speedups
from .calls import perform_http_call
from .config import HostConfig
from .invocations import Invocation
from .loader import AppIndex
from .store import Store

log = logging.getLogger("devhost.engine")
ET, AT = p.EventType, p.ActionType
INLINE_EVENTS_LIMIT = 400     # replays/batches up to this size run on the loop, bigger in threads
SLOW_HANDLE_SECONDS = 0.25
PACING_THRESHOLD_SECONDS, MAX_PACING_SECONDS = 0.005, 0.1
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.1, 10.0  # back-off after devhost's own failures


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
    flat: list[dict] = field(default_factory=list)  # the SDK's actions, flattened


class Engine:
    def __init__(self, store: Store, index: AppIndex, config: HostConfig):
        sdk_speedups.install()
        self.store, self.index, self.cfg = store, index, config
        self.orchestrator_pool = ThreadPoolExecutor(config.max_orchestrators, "orchestrator")
        self.activity_pool = ThreadPoolExecutor(config.max_activities, "activity")
        self.entity_pool = ThreadPoolExecutor(config.max_entities, "entity")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._activity_slots: asyncio.Semaphore | None = None
        self._busy: dict[str, set] = {"instance": set(), "entity": set()}
        self._dirty: dict[str, set] = {"instance": set(), "entity": set()}
        self._running_activities: set[int] = set()
        self._pauses: dict[str, float] = {}
        self._wakeups: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._status_waiters: dict[str, list[asyncio.Future]] = {}
        # (kind, key) → what keeps failing inside devhost for that instance/entity; shown in
        # its status document (`devhost` field) and retried with back-off until it works
        self.stuck: dict[tuple[str, str], dict] = {}
        self.stopping = False
        # (hub, connection) → durableClient binding JSON; set by the HTTP layer, which knows
        # the addresses, for functions other than HTTP triggers that take a client binding.
        self.client_binding: Callable[[str | None, str | None], str] | None = None

    # ------------------------------------------------------------------------------------------
    # lifecycle

    async def start(self) -> None:
        """Recover: whatever the store says is queued is started again."""
        self.loop = asyncio.get_running_loop()
        self._activity_slots = asyncio.Semaphore(self.cfg.max_activities)
        now = time.time()
        for instance_id, visible_at in self.store.instances_with_inbox():
            self.wake_instance(instance_id, max(0.0, visible_at - now))
        for row in self.store.all_activities():
            self._spawn(self._run_activity(row))
        for entity in self.store.entities_with_ops():
            self.wake_entity(entity)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking new work; let in-flight episodes commit. Activities still running are
        abandoned: their rows stay queued and run again at the next start (at-least-once)."""
        self.stopping = True
        for _, handle in self._wakeups.values():
            handle.cancel()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for pool in (self.orchestrator_pool, self.activity_pool, self.entity_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro) -> None:
        if self.stopping:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("devhost internal error", exc_info=task.exception())

    # ------------------------------------------------------------------------------------------
    # waking work

    def wake_instance(self, instance_id: str, delay: float = 0.0) -> None:
        if delay > 0.001:
            due = time.time() + delay
            current = self._wakeups.get(instance_id)
            if current and current[0] <= due:
                return
            if current:
                current[1].cancel()
            handle = self.loop.call_later(delay, self._wake_due, instance_id)
            self._wakeups[instance_id] = (due, handle)
            return
        self._kick("instance", instance_id, self._instance_worker)

    def _wake_due(self, instance_id: str) -> None:
        self._wakeups.pop(instance_id, None)
        self._kick("instance", instance_id, self._instance_worker)

    def wake_entity(self, scheduler_id: str) -> None:
        self._kick("entity", scheduler_id, self._entity_worker)

    def _kick(self, kind: str, key: str, worker) -> None:
        if key in self._busy[kind]:
            self._dirty[kind].add(key)
        else:
            self._busy[kind].add(key)
            self._spawn(worker(key))

    async def _drain(self, kind: str, key: str, step) -> None:
        """Run `step` until it reports no more work and nobody woke the key meanwhile. When
        devhost itself fails (a commit refused, a bug), nothing was changed: try again later,
        with back-off, and say so in the instance's status until it works."""
        retry_in = None
        try:
            while not self.stopping:
                self._dirty[kind].discard(key)
                try:
                    more = await step(key)
                except Exception as exc:
                    retry_in = self._record_stuck(kind, key, exc)
                    return
                self._clear_stuck(kind, key)
                if not more and key not in self._dirty[kind]:
                    break
        finally:
            self._busy[kind].discard(key)
            self._dirty[kind].discard(key)
            if retry_in is not None and not self.stopping:
                if kind == "instance":
                    self.wake_instance(key, retry_in)
                else:
                    self.loop.call_later(retry_in, self.wake_entity, key)

    def _record_stuck(self, kind: str, key: str, exc: BaseException) -> float:
        """Remember and report a failure of devhost's own; returns the back-off delay."""
        previous = self.stuck.get((kind, key))
        attempts = previous["attempts"] + 1 if previous else 1
        delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (attempts - 1))
        self.stuck[(kind, key)] = {
            "stuck": True, "error": f"{type(exc).__name__}: {exc}", "attempts": attempts,
            "since": previous["since"] if previous else p.status_time(p.utcnow()),
            "nextAttemptInSeconds": delay}
        what = "orchestration instance" if kind == "instance" else "entity"
        if previous is None:
            log.error("devhost could not process %s '%s' (nothing was changed); retrying with "
                      "back-off", what, key, exc_info=exc)
        else:
            log.warning("devhost could not process %s '%s' (attempt %d, next in %.1f s): %s",
                        what, key, attempts, delay, exc)
        return delay

    def _clear_stuck(self, kind: str, key: str) -> None:
        record = self.stuck.pop((kind, key), None)
        if record:
            log.warning("devhost processed '%s' again after %d failed attempts", key,
                        record["attempts"])

    def stuck_report(self, instance_id: str) -> dict | None:
        """The `devhost` field of a status document: present only while devhost keeps failing
        to process the instance (Azure has no such field; the SDK ignores unknown fields)."""
        return self.stuck.get(("instance", instance_id))

    async def _instance_worker(self, instance_id: str) -> None:
        await self._drain("instance", instance_id, self._paced_episode)

    async def _paced_episode(self, instance_id: str) -> bool:
        """An episode replays the whole history, so with many activities still out (fan-in)
        running one per completion is quadratic. After an expensive episode, wait as long as
        it took before the next one, letting completions pile up into one batch: replay work
        stays at most about half the time. Cheap episodes and chains never wait."""
        pause = self._pauses.pop(instance_id, 0.0)
        if pause:
            await asyncio.sleep(pause)
        started = time.perf_counter()
        more = await self._episode(instance_id)
        cost = time.perf_counter() - started
        if cost > PACING_THRESHOLD_SECONDS and self.store.activity_count(instance_id):
            self._pauses[instance_id] = min(cost, MAX_PACING_SECONDS)
        return more

    async def _entity_worker(self, scheduler_id: str) -> None:
        await self._drain("entity", scheduler_id, self._entity_batch)

    def wait_for_status(self, instance_id: str) -> asyncio.Future:
        """A future resolved at the next status change of an instance (webhook waits). A
        waiter that is cancelled (its wait timed out, its client left) removes itself."""
        future = self.loop.create_future()
        self._status_waiters.setdefault(instance_id, []).append(future)
        future.add_done_callback(lambda done: self._forget_waiter(instance_id, done))
        return future

    def _forget_waiter(self, instance_id: str, future: asyncio.Future) -> None:
        waiters = self._status_waiters.get(instance_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._status_waiters[instance_id]

    def waiter_count(self) -> int:
        return sum(len(w) for w in self._status_waiters.values())

    def notify_status(self, instance_id: str) -> None:
        for future in self._status_waiters.pop(instance_id, []):
            if not future.done():
                future.set_result(None)

    # ------------------------------------------------------------------------------------------
    # orchestrator episodes

    async def _episode(self, instance_id: str) -> bool:
        """Run one episode if the instance has deliverable events; True if more are waiting."""
        store = self.store
        now = time.time()
        inst = store.get_instance(instance_id)
        rows = store.inbox(instance_id)
        if inst is None or inst["status"] in p.TERMINAL_STATUSES:
            if rows:
                with store.transaction():
                    store.clear_inbox(instance_id)
            return False
        if inst["status"] == "Suspended":
            return False
        stale = [r["id"] for r in rows
                 if r["execution_id"] not in (None, inst["execution_id"])]
        due = [r for r in rows if r["id"] not in stale and r["visible_at"] <= now]
        future = [r["visible_at"] for r in rows if r["id"] not in stale and r["visible_at"] > now]
        if future:
            self.wake_instance(instance_id, min(future) - now)
        if not due:
            if stale:
                with store.transaction():
                    store.delete_inbox(stale)
            return False

        state = json.loads(inst["engine_state"])
        batch, events, retry_event = self._select_batch(due, state)
        started = p.utcnow()
        new_events = [p.event(ET.OrchestratorStarted, p.history_time(started))] + events
        history_texts = store.replay_texts(instance_id)

        registered = self.index.orchestrator(inst["name"])
        if registered is None:
            result = {"isDone": False, "actions": [[]], "error": p.unknown_function_message(
                inst["name"], "orchestrator", [n for n, _ in self.index.orchestrators.values()])}
        else:
            document = p.context_document(history_texts, new_events, inst["input_raw"], instance_id,
                                          inst["parent_instance_id"])
            invocation = Invocation(self.index.function_name(registered[0]))
            returned, raised = await self._run_handle(
                self.orchestrator_pool, registered[1], document,
                len(history_texts) + len(new_events), f"orchestrator '{inst['name']}'")
            result = p.parse_orchestrator_result(returned, raised)
            if result.get("error") is None:
                invocation.succeeded()
            else:
                cause = raised and (raised.__cause__ or raised.__context__)
                invocation.failed(result["error"], user_traceback(cause) if cause else None)

        effects = self._decide(inst, state, result, retry_event, started)
        self._commit_episode(inst, state, result, effects, new_events,
                             [r["id"] for r in batch] + stale, started)
        return len(due) > len(batch)

    async def _run_handle(self, pool: ThreadPoolExecutor, handle, document: str, size: int,
                          what: str) -> tuple[str | None, BaseException | None]:
        """Run an orchestrator/entity handle. Their code is CPU-only and must not block (the
        Durable programming model), so small episodes run right here on the loop: a thread
        hand-off costs more than they do. Big replays go to a thread to keep HTTP responsive."""
        if size > INLINE_EVENTS_LIMIT:
            return await self.loop.run_in_executor(pool, _call_handle, handle, document)
        started = time.perf_counter()
        outcome = _call_handle(handle, document)
        elapsed = time.perf_counter() - started
        if elapsed > SLOW_HANDLE_SECONDS:
            log.warning("%s took %.0f ms for one episode: orchestrator and entity code must "
                        "not block or do I/O (move that work into an activity)", what,
                        elapsed * 1000)
        return outcome

    def _select_batch(self, due: list[dict], state: dict
                      ) -> tuple[list[dict], list[dict], dict | None]:
        """Ordinary events in arrival order, ending at the first retry-relevant one (§3.4):
        that keeps our id allocation in step with the SDK's. Returns (rows, their events,
        the retry-relevant event or None)."""
        batch, events = [], []
        for row in due:
            event = json.loads(row["event"])
            batch.append(row)
            events.append(event)
            if self._is_retry_relevant(event, state):
                return batch, events, event
        return batch, events, None

    @staticmethod
    def _is_retry_relevant(event: dict, state: dict) -> bool:
        kind = event["EventType"]
        if kind in (ET.TaskFailed, ET.SubOrchestrationInstanceFailed):
            return str(event.get("TaskScheduledId")) in state["retries"]
        if kind == ET.TimerFired:
            timer = state["retry_timers"].get(str(event.get("TimerId")))
            return bool(timer) and not timer["exhausted"]
        return False

    def _decide(self, inst: dict, state: dict, result: dict, retry_event: dict | None,
                started: datetime) -> Effects:
        """Turn the SDK's cumulative actions into new history and work (§3.4, §3.5)."""
        fx = Effects(flat=p.flatten_actions(result.get("actions") or []))
        if result.get("error") is not None:
            return fx
        flat = fx.flat
        if len(flat) > self.cfg.max_orchestration_actions:
            fx.failure = (f"Maximum amount of orchestration actions "
                          f"({self.cfg.max_orchestration_actions}) has been reached.")
            return fx
        ts = p.history_time(started)
        for index in range(state["actions_seen"], len(flat)):
            action = flat[index]
            kind = action.get("actionType")
            if kind in (AT.WaitForExternalEvent, AT.ContinueAsNew):
                continue
            task_id = state["next_id"]
            state["next_id"] += 1
            failure = self._schedule_action(inst, state, action, task_id, index, ts, fx)
            if failure:
                fx.failure = failure
                return fx
        state["actions_seen"] = len(flat)
        if retry_event is not None:
            self._schedule_retry(inst, state, retry_event, started, fx)
        for index_text, timer_id in list(state["timers"].items()):
            index = int(index_text)
            if index < len(flat) and flat[index].get("isCanceled"):
                fx.cancelled_timers.append(timer_id)
                del state["timers"][index_text]
        return fx

    def _schedule_action(self, inst: dict, state: dict, action: dict, task_id: int, index: int,
                         ts: str, fx: Effects) -> str | None:
        kind = action.get("actionType")
        if kind in (AT.CallActivity, AT.CallActivityWithRetry):
            activity = self.index.activity(action.get("functionName") or "")
            if activity is None:
                return p.unknown_function_message(action.get("functionName"), "activity",
                                                  [a.name for a in self.index.activities.values()])
            fx.history.append(p.event(ET.TaskScheduled, ts, task_id, Name=action["functionName"],
                                      Version="", Input=action.get("input")))
            fx.activities.append((task_id, activity.name, action.get("input")))
            if kind == AT.CallActivityWithRetry:
                state["retries"][str(task_id)] = {
                    "kind": "activity", "name": activity.name, "input": action.get("input"),
                    "attempt": 1, "options": action.get("retryOptions") or {}}
        elif kind in (AT.CallSubOrchestrator, AT.CallSubOrchestratorWithRetry):
            registered = self.index.orchestrator(action.get("functionName") or "")
            if registered is None:
                return p.unknown_function_message(action.get("functionName"), "orchestrator",
                                                  [n for n, _ in self.index.orchestrators.values()])
            child_id = action.get("instanceId") or f"{inst['execution_id']}:{task_id}"
            version = action.get("version") or self.cfg.default_version
            self._schedule_child(fx, ts, task_id, registered[0], child_id, action.get("input"),
                                 version)
            if kind == AT.CallSubOrchestratorWithRetry:
                state["retries"][str(task_id)] = {
                    "kind": "orchestrator", "name": registered[0], "input": action.get("input"),
                    "attempt": 1, "options": action.get("retryOptions") or {},
                    "instance_id": action.get("instanceId"), "version": version}
        elif kind == AT.CreateTimer:
            fire_at = p.parse_time(action["fireAt"])
            fx.history.append(p.event(ET.TimerCreated, ts, task_id,
                                      FireAt=p.history_time(fire_at)))
            fx.timers.append((task_id, fire_at))
            state["timers"][str(index)] = task_id
        elif kind in (AT.CallEntity, AT.SignalEntity):
            target = action.get("instanceId") or ""
            try:
                name, _ = p.split_entity_id(target)
            except ValueError as exc:
                return str(exc)
            if self.index.entity(name) is None:
                return p.unknown_function_message(name, "entity",
                                                  [n for n, _ in self.index.entities.values()])
            request_id = str(uuid.uuid4())
            is_signal = kind == AT.SignalEntity
            op_input = p.orchestrator_entity_input(action.get("input"))
            request = {"op": action.get("operation"), "signal": is_signal, "input": op_input,
                       "id": request_id, "parent": inst["instance_id"],
                       "parentExecution": inst["execution_id"]}
            fx.history.append(p.event(ET.EventSent, ts, task_id, InstanceId=target, Name="op",
                                      Input=json.dumps(request)))
            fx.entity_ops.append({"entity": target, "name": action.get("operation"),
                                  "input": op_input, "is_signal": is_signal,
                                  "request_id": request_id})
        elif kind == AT.CallHttp:
            request_text = json.dumps(action.get("httpRequest") or {})
            fx.history.append(p.event(ET.TaskScheduled, ts, task_id, Name=p.HTTP_ACTIVITY_NAME,
                                      Version="", Input=request_text))
            fx.activities.append((task_id, p.HTTP_ACTIVITY_NAME, request_text))
        else:
            return f"devhost does not support orchestrator action type {kind}"
        return None

    @staticmethod
    def _schedule_child(fx: Effects, ts: str, task_id: int, name: str, child_id: str,
                        input_text: str | None, version: str | None) -> None:
        fx.history.append(p.event(ET.SubOrchestrationInstanceCreated, ts, task_id, Name=name,
                                  Version=version or "", InstanceId=child_id, Input=input_text))
        fx.children.append({"instance_id": child_id, "name": name, "input": input_text,
                            "task_id": task_id, "version": version})

    def _schedule_retry(self, inst: dict, state: dict, retry_event: dict, started: datetime,
                        fx: Effects) -> None:
        """DTFx's RetryInterceptor: a timer after each failed attempt (a zero-delay one after
        the last), and a fresh attempt when a non-final retry timer fires."""
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
                self._schedule_child(fx, ts, new_id, record["name"], child_id, record["input"],
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

    def _commit_episode(self, inst: dict, state: dict, result: dict, fx: Effects,
                        new_events: list[dict], consumed: list[int], started: datetime) -> None:
        store = self.store
        instance_id, execution_id = inst["instance_id"], inst["execution_id"]
        ts = p.history_time(started)
        error = result.get("error") if fx.failure is None else fx.failure
        continue_as_new = next((a for a in fx.flat if a.get("actionType") == AT.ContinueAsNew),
                               None)
        custom = result.get("customStatus")
        fields: dict[str, Any] = {
            "custom_status": None if custom is None else json.dumps(custom),
            "engine_state": json.dumps(state)}
        outcome = "Running"
        completion: dict | None = None
        if error is not None:
            outcome = "Failed"
            output = p.orchestrator_failure_output(inst["name"], error)
            fields.update(output=json.dumps(output), engine_state=inst["engine_state"])
            completion = p.event(ET.ExecutionCompleted, ts, OrchestrationStatus="Failed",
                                 Result=json.dumps(output), FailureDetails={"ErrorMessage": error})
        elif result.get("isDone") and continue_as_new is not None:
            outcome = "ContinuedAsNew"
            fields.update(engine_state=json.dumps(fresh_engine_state()), output=None)
        elif result.get("isDone"):
            outcome = "Completed"
            fields["output"] = json.dumps(result.get("output"))
            completion = p.event(ET.ExecutionCompleted, ts, OrchestrationStatus="Completed",
                                 Result=fields["output"])
        history = new_events + fx.history + [p.event(ET.OrchestratorCompleted, ts)]
        if completion:
            history.append(completion)

        woken: list[str] = []
        new_activities: list[int] = []
        with store.transaction():
            current = store.get_instance(instance_id)
            if (current is None or current["execution_id"] != execution_id
                    or current["status"] in p.TERMINAL_STATUSES):
                return  # terminated, purged or replaced while the episode ran: discard it
            store.delete_inbox(consumed)
            store.append_history(instance_id, [p.stored_event(e) for e in history])
            for op in fx.entity_ops:
                if outcome != "Failed" and (outcome == "Running" or op["is_signal"]):
                    store.add_entity_op(op["entity"], op["name"], op["input"], op["is_signal"],
                                        instance_id, execution_id, op["request_id"])
                    woken.append("entity:" + op["entity"])
            if outcome == "Running":
                for task_id, name, input_text in fx.activities:
                    new_activities.append(store.add_activity(
                        instance_id, execution_id, task_id, name, input_text))
                for timer_id, fire_at in fx.timers:
                    fired = p.timer_fired(p.history_time(fire_at), timer_id,
                                          p.history_time(fire_at))
                    store.add_inbox(instance_id, execution_id, json.dumps(fired),
                                    fire_at.timestamp())
                    woken.append("instance:" + instance_id)
                for timer_id in fx.cancelled_timers:
                    store.delete_inbox_where_event_like(
                        instance_id, f'%"EventType": 11, %"TimerId": {timer_id}, %')
                for child in fx.children:
                    woken.append("instance:" + self._start_child(inst, child, ts))
            if outcome == "ContinuedAsNew":
                self._continue_as_new(inst, continue_as_new.get("input"))
                woken.append("instance:" + instance_id)
            if outcome in ("Completed", "Failed"):
                store.delete_activities_of(instance_id)
                parent = self.notify_parent(inst, outcome, fields.get("output"), error, ts)
                if parent:
                    woken.append("instance:" + parent)
            suspended = current["status"] == "Suspended" and outcome == "Running"
            store.update_instance(instance_id, status="Suspended" if suspended else outcome,
                                  **fields)
        self.notify_status(instance_id)
        for activity_id in new_activities:
            self._spawn(self._run_activity(store.get_activity(activity_id)))
        for target in dict.fromkeys(woken):
            kind, _, key = target.partition(":")
            if kind == "entity":
                self.wake_entity(key)
            else:
                self.wake_instance(key, self._next_visible_delay(key))

    def _next_visible_delay(self, instance_id: str) -> float:
        rows = self.store.inbox(instance_id)
        if not rows:
            return 0.0
        return max(0.0, min(r["visible_at"] for r in rows) - time.time())

    def _start_child(self, parent: dict, child: dict, ts: str) -> str:
        """Create a sub-orchestration; a still-running instance with that id fails the call."""
        existing = self.store.get_instance(child["instance_id"])
        if existing and existing["status"] not in p.TERMINAL_STATUSES:
            failed = p.event(ET.SubOrchestrationInstanceFailed, ts,
                             TaskScheduledId=child["task_id"],
                             Reason=f"An orchestration with instance id '{child['instance_id']}' "
                                    "is already running.", Details="")
            self.store.add_inbox(parent["instance_id"], parent["execution_id"],
                                 json.dumps(failed), time.time())
            return parent["instance_id"]
        create_instance(self.store, child["instance_id"], child["name"], child["input"],
                        json.dumps(child["input"]),
                        parent=(parent["instance_id"], parent["execution_id"], child["task_id"]),
                        version=child["version"])
        return child["instance_id"]

    def notify_parent(self, inst: dict, outcome: str, output_json: str | None,
                       error: str | None, ts: str) -> str | None:
        parent_id = inst["parent_instance_id"]
        if not parent_id:
            return None
        if outcome == "Completed":
            done = p.event(ET.SubOrchestrationInstanceCompleted, ts,
                           TaskScheduledId=inst["parent_task_id"], Result=output_json)
        else:
            done = p.event(ET.SubOrchestrationInstanceFailed, ts,
                           TaskScheduledId=inst["parent_task_id"],
                           Reason=json.loads(output_json) if output_json else str(error),
                           Details=str(error))
        self.store.add_inbox(parent_id, inst["parent_execution_id"], json.dumps(done), time.time())
        return parent_id

    def _continue_as_new(self, inst: dict, input_text: str | None) -> None:
        """Fresh generation: same id and parent, new execution, history and bookkeeping."""
        store = self.store
        execution_id = uuid.uuid4().hex
        store.clear_history(inst["instance_id"])
        store.clear_inbox(inst["instance_id"])
        store.delete_activities_of(inst["instance_id"])
        started = p.execution_started(p.history_time(p.utcnow()), inst["name"], input_text,
                                      inst["instance_id"], execution_id,
                                      _parent_ref(inst["parent_instance_id"]), inst["version"])
        store.add_inbox(inst["instance_id"], execution_id, json.dumps(started), time.time())
        store.update_instance(inst["instance_id"], execution_id=execution_id, input=input_text,
                              input_raw=json.dumps(input_text), output=None)

    # ------------------------------------------------------------------------------------------
    # activities

    async def _run_activity(self, row: dict | None) -> None:
        if row is None or row["id"] in self._running_activities:
            return
        self._running_activities.add(row["id"])
        try:
            async with self._activity_slots:
                if self.stopping:
                    return
                completion = await self._invoke_activity(row)
            while not self.stopping:
                try:
                    with self.store.transaction():
                        if not self.store.delete_activity(row["id"]):
                            return  # the instance was terminated, purged or continued meanwhile
                        self.store.add_inbox(row["instance_id"], row["execution_id"],
                                             json.dumps(completion), time.time())
                    break
                except Exception as exc:  # devhost's own failure: keep the result, retry
                    await asyncio.sleep(self._record_stuck("instance", row["instance_id"], exc))
            else:
                return
            self._clear_stuck("instance", row["instance_id"])
            self.wake_instance(row["instance_id"])
        finally:
            self._running_activities.discard(row["id"])

    async def _invoke_activity(self, row: dict) -> dict:
        name, task_id = row["name"], row["task_id"]
        invocation = None if name == p.HTTP_ACTIVITY_NAME else Invocation(name)
        try:
            if invocation is None:
                result_text = await perform_http_call(json.loads(row["input"]))
            else:
                result_text = await self._call_user_activity(name, row["input"], invocation)
                invocation.succeeded()
            return p.task_completed(p.history_time(p.utcnow()), task_id, result_text)
        except Exception as exc:  # user code: any failure becomes TaskFailed
            if invocation is not None:
                invocation.failed(exc)
            else:
                log.warning("call_http failed: %s: %s", type(exc).__name__, exc)
            return p.task_failed(p.history_time(p.utcnow()), task_id,
                                 p.activity_failure_reason(name, exc), user_traceback(exc))

    async def _call_user_activity(self, name: str, input_text: str | None,
                                  invocation: Invocation) -> str:
        activity = self.index.activity(name)
        if activity is None:
            raise LookupError(f"activity '{name}' is no longer registered")
        value = ActivityTriggerConverter.decode(
            meta.Datum(type="string", value=input_text if input_text is not None else "null"),
            trigger_metadata=None)
        kwargs = {activity.input_param: value}
        if activity.client_param:
            kwargs[activity.client_param] = self.client_binding(activity.client_hub,
                                                                activity.client_connection)
        if activity.wants_context:
            kwargs["context"] = invocation_context(activity.name, invocation.id)
        timeout = self.cfg.function_timeout
        if activity.is_async:
            result = await asyncio.wait_for(activity.fn(**kwargs), timeout)
        else:
            result = await asyncio.wait_for(self.loop.run_in_executor(
                self.activity_pool, lambda: activity.fn(**kwargs)), timeout)
        return ActivityTriggerConverter.encode(result, expected_type=None).value

    # ------------------------------------------------------------------------------------------
    # entities

    async def _entity_batch(self, scheduler_id: str) -> bool:
        store = self.store
        ops = store.entity_ops(scheduler_id, self.cfg.max_entity_batch)
        if not ops:
            return False
        name, key = p.split_entity_id(scheduler_id)
        registered = self.index.entity(name)
        row = store.get_entity(scheduler_id)
        state = row["state"] if row else None
        if registered is None:
            message = p.unknown_function_message(name, "entity",
                                                 [n for n, _ in self.index.entities.values()])
            results = [{"isError": True, "result": json.dumps(message)} for _ in ops]
            new_state = state
        else:
            document = p.entity_batch_document(name, key, state, ops)
            invocation = Invocation(self.index.function_name(registered[0]))
            returned, raised = await self._run_handle(
                self.entity_pool, registered[1], document, len(ops), f"entity '{name}'")
            if raised is not None:
                invocation.failed(raised)
                results = [{"isError": True, "result": json.dumps(str(raised))} for _ in ops]
                new_state = state
            else:
                out = json.loads(returned)
                results = out.get("results") or []
                new_state = out.get("entityState") if out.get("entityExists") else None
                if len(results) != len(ops):  # never leave a caller without an answer
                    message = f"entity '{name}' answered {len(results)} of {len(ops)} operations"
                    results = [{"isError": True, "result": json.dumps(message)} for _ in ops]
                    new_state = state
                failures = [(op, r) for op, r in zip(ops, results) if r.get("isError")]
                for op, res in failures:
                    invocation.failed(f"operation '{op['name']}' on entity "
                                      f"'{scheduler_id}' failed: "
                                      f"{p.decode_json_text(res.get('result'))}")
                if not failures:
                    invocation.succeeded()
        ts = p.history_time(p.utcnow())
        callers = []
        with store.transaction():
            store.put_entity(scheduler_id, name, key, new_state)
            store.delete_entity_ops([op["id"] for op in ops])
            for op, res in zip(ops, results):
                if op["is_signal"] or not op["caller_instance"]:
                    continue
                response = p.entity_response(ts, op["request_id"], res.get("result"),
                                             bool(res.get("isError")))
                store.add_inbox(op["caller_instance"], op["caller_execution"],
                                json.dumps(response), time.time())
                callers.append(op["caller_instance"])
        for caller in dict.fromkeys(callers):
            self.wake_instance(caller)
        return len(ops) == self.cfg.max_entity_batch


def user_traceback(exc: BaseException) -> str:
    """The failure's traceback without devhost's and asyncio's own frames (the details Azure
    records show the user's code, not the host's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not any(part in f.filename for part in _HOST_FRAMES)]
    return ("Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
            + "".join(traceback.format_exception_only(exc)))


_HOST_FRAMES = (f"{__package__}/", "/asyncio/", "/concurrent/futures/")


def _call_handle(handle, document: str) -> tuple[str | None, BaseException | None]:
    """Invoke an orchestrator/entity handle; hand back its text or the exception it raised."""
    try:
        return handle(document), None
    except Exception as exc:  # the SDK reports orchestrator failures by raising
        return None, exc


def _parent_ref(parent_instance_id: str | None) -> dict | None:
    if not parent_instance_id:
        return None
    return {"OrchestrationInstance": {"InstanceId": parent_instance_id}}


def invocation_context(function_name: str, invocation_id: str | None = None):
    """The azure.functions.Context a function gets when it declares a `context` parameter."""
    from .context import InvocationContext
    return InvocationContext(function_name, invocation_id=invocation_id)


def create_instance(store: Store, instance_id: str, name: str, input_text: str | None,
                    input_raw: str | None, parent: tuple[str, str, int] | None = None,
                    version: str | None = None) -> dict:
    """Write a new (or replacing) instance row plus its ExecutionStarted; caller holds the txn."""
    now = time.time()
    execution_id = uuid.uuid4().hex
    row = {"instance_id": instance_id, "name": name, "execution_id": execution_id,
           "status": "Pending", "input": input_text, "input_raw": input_raw,
           "engine_state": json.dumps(fresh_engine_state()), "created_at": now,
           "updated_at": now, "version": version}
    if parent:
        row.update(parent_instance_id=parent[0], parent_execution_id=parent[1],
                   parent_task_id=parent[2])
    store.delete_instance(instance_id)
    store.put_instance(row)
    started = p.execution_started(p.history_time(datetime.fromtimestamp(now, timezone.utc)),
                                  name, input_text, instance_id, execution_id,
                                  _parent_ref(parent[0] if parent else None), version)
    store.add_inbox(instance_id, execution_id, json.dumps(started), now)
    return row
