"""The dispatcher: schedules, wakes and commits orchestrator episodes, activities and entity
batches. What an episode means is decided in decide.py; user code is called by invoker.py.

Event-driven inside one process: every commit names the instances/entities/activities it made
runnable and the engine starts them at once (durable timers are asyncio timers armed from the
store). Each orchestration instance and each entity runs strictly one episode/batch at a time;
different ones run concurrently, bounded by host.json's concurrency limits. All SQLite writes
happen on the event-loop thread; user code runs where invoker.py puts it.

Recovery is a scan of the store: queued inbox events, activity rows and entity operations are
the whole truth, so a restart after kill -9 resumes exactly where the last commit left off.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from . import protocol as p
from . import sdk_speedups
from .config import HostConfig
from .decide import Effects, decide, select_batch
from .invoker import Invoker
from .loader import AppIndex
from .store import Store

log = logging.getLogger("devhost.engine")
ET = p.EventType
PACING_THRESHOLD_SECONDS, MAX_PACING_SECONDS = 0.005, 0.1
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.1, 10.0  # back-off after devhost's own failures


class Engine:
    def __init__(self, store: Store, index: AppIndex, config: HostConfig):
        sdk_speedups.install()
        self.store, self.index, self.cfg = store, index, config
        self.invoker = Invoker(index, config)
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
        self.invoker.shutdown()

    def run_queued_activities(self, instance_id: str) -> None:
        """Start the activity rows queued for an instance (after a rewind re-queued some)."""
        for activity in self.store.all_activities():
            if activity["instance_id"] == instance_id:
                self._spawn(self._run_activity(activity))

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
        stays at most about half the time. Cheap episodes and chains never wait: with one
        activity out there is nothing to batch (pausing then only delayed a chain whose episode
        was slow once, e.g. behind a garbage collection)."""
        pause = self._pauses.pop(instance_id, 0.0)
        if pause:
            await asyncio.sleep(pause)
        started = time.perf_counter()
        more = await self._episode(instance_id)
        cost = time.perf_counter() - started
        if cost > PACING_THRESHOLD_SECONDS and self.store.activity_count(instance_id) > 1:
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

        history_texts, history = store.replay_history(instance_id)
        batch, events = select_batch(due, history)
        consumed = [r["id"] for r in batch] + stale
        started = p.utcnow()
        new_events = [p.event(ET.OrchestratorStarted, p.history_time(started))] + events

        registered = self.index.orchestrator(inst["name"])
        if registered is None:
            result = {"isDone": False, "actions": [[]], "error": p.unknown_function_message(
                inst["name"], "orchestrator", [n for n, _ in self.index.orchestrators.values()])}
        else:
            document = p.context_document(history_texts, new_events, inst["input_raw"], instance_id,
                                          inst["parent_instance_id"])
            result = await self.invoker.run_orchestrator(
                registered[0], registered[1], document, len(history_texts) + len(new_events))

        history += [p.event_key(e) for e in new_events]
        effects = decide(inst, history, result, started, self.index, self.cfg)
        queued_timers = {r["timer_id"] for r in rows
                         if r["timer_id"] is not None and r["id"] not in consumed}
        self._commit_episode(inst, result, effects, new_events, consumed, queued_timers, started)
        return len(due) > len(batch)

    async def replay_actions(self, inst: dict) -> list[p.Action]:
        """The SDK's actions for the history as it stands: a replay with no new events, not
        committed (rewind needs them to know which calls retry)."""
        registered = self.index.orchestrator(inst["name"])
        if registered is None:
            return []
        instance_id = inst["instance_id"]
        texts, _ = self.store.replay_history(instance_id)
        document = p.context_document(texts, [], inst["input_raw"], instance_id,
                                      inst["parent_instance_id"])
        result = await self.invoker.replay_orchestrator(registered[0], registered[1], document,
                                                        len(texts))
        return p.read_actions(result)

    def _commit_episode(self, inst: dict, result: dict, fx: Effects, new_events: list[dict],
                        consumed: list[int], queued_timers: set[int], started: datetime) -> None:
        store = self.store
        instance_id, execution_id = inst["instance_id"], inst["execution_id"]
        ts = p.history_time(started)
        error = result.get("error") if fx.failure is None else fx.failure
        continue_as_new = fx.continue_as_new
        custom = result.get("customStatus")
        fields: dict[str, Any] = {"custom_status": None if custom is None else json.dumps(custom)}
        outcome = "Running"
        completion: dict | None = None
        if error is not None:
            outcome = "Failed"
            output = p.orchestrator_failure_output(inst["name"], error)
            fields["output"] = json.dumps(output)
            completion = p.event(ET.ExecutionCompleted, ts, OrchestrationStatus="Failed",
                                 Result=json.dumps(output), FailureDetails={"ErrorMessage": error})
        elif result.get("isDone") and continue_as_new is not None:
            outcome = "ContinuedAsNew"
            fields["output"] = None
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
                                    fire_at.timestamp(), timer_id=timer_id)
                    woken.append("instance:" + instance_id)
                queued_timers |= {timer_id for timer_id, _ in fx.timers}
                for timer_id in fx.cancelled_timers:
                    if timer_id in queued_timers:  # else it fired, or was dropped before
                        store.delete_timer(instance_id, timer_id)
                for child in fx.children:
                    woken.append("instance:" + self._start_child(inst, child, ts))
            if outcome == "ContinuedAsNew":
                self._continue_as_new(inst, continue_as_new.input)
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
        """Fresh generation: same id and parent, new execution and history (and so fresh
        bookkeeping: it is derived from the history)."""
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
                completion = await self.invoker.run_activity(row["name"], row["task_id"],
                                                             row["input"])
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
            results = [p.EntityResult(True, json.dumps(message)) for _ in ops]
            new_state = state
        else:
            document = p.entity_batch_document(name, key, state, ops)
            results, new_state = await self.invoker.run_entity(
                registered[0], scheduler_id, registered[1], document, ops, state)
        ts = p.history_time(p.utcnow())
        callers = []
        with store.transaction():
            store.put_entity(scheduler_id, name, key, new_state)
            store.delete_entity_ops([op["id"] for op in ops])
            for op, res in zip(ops, results):
                if op["is_signal"] or not op["caller_instance"]:
                    continue
                response = p.entity_response(ts, op["request_id"], res.result, res.is_error)
                store.add_inbox(op["caller_instance"], op["caller_execution"],
                                json.dumps(response), time.time())
                callers.append(op["caller_instance"])
        for caller in dict.fromkeys(callers):
            self.wake_instance(caller)
        return len(ops) == self.cfg.max_entity_batch


def _parent_ref(parent_instance_id: str | None) -> dict | None:
    if not parent_instance_id:
        return None
    return {"OrchestrationInstance": {"InstanceId": parent_instance_id}}


def create_instance(store: Store, instance_id: str, name: str, input_text: str | None,
                    input_raw: str | None, parent: tuple[str, str, int] | None = None,
                    version: str | None = None) -> dict:
    """Write a new (or replacing) instance row plus its ExecutionStarted; caller holds the txn."""
    now = time.time()
    execution_id = uuid.uuid4().hex
    row = {"instance_id": instance_id, "name": name, "execution_id": execution_id,
           "status": "Pending", "input": input_text, "input_raw": input_raw,
           "created_at": now, "updated_at": now, "version": version}
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
