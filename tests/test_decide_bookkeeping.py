"""decide.bookkeeping against recorded runs: the bookkeeping devhost derives from history and
the SDK's actions equals, after every recorded episode, the `engine_state` the engine used to
store; and decide, fed each recorded episode, writes the very history that run wrote.

The fixtures (tests/fixtures/bookkeeping/*.json) were recorded from the devhost tests named in
their `source` while the engine still stored engine_state: per segment of one execution's
history (a rewind or a continue-as-new starts a new one), the history and, after each commit,
its length, the SDK's actions (raw OrchestratorState `actions`) and the stored engine_state.
"""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func
import pytest

from devhost import protocol as p
from devhost.config import HostConfig
from devhost.decide import (Attempt, RetryTimer, bookkeeping, decide, possible_retry_timers,
                            rewind_plan, select_batch)
from devhost.invoker import _call_handle
from devhost.loader import index_app

ET, AT = p.EventType, p.ActionType
FIXTURES = Path(__file__).parent / "fixtures" / "bookkeeping"
SCENARIOS = sorted(path.stem for path in FIXTURES.glob("*.json"))


def load(scenario: str) -> dict:
    return json.loads((FIXTURES / f"{scenario}.json").read_text())


def keys(events: list[dict]) -> list[tuple[int, int | None]]:
    return [p.event_key(e) for e in events]


def actions_of(step: dict) -> list[p.Action]:
    return p.read_actions({"actions": step["actions"]})


def derived_at(fixture: dict, segment: int, step: int):
    seg = fixture["segments"][segment]
    chosen = seg["steps"][step]
    return bookkeeping(keys(seg["history"][:chosen["length"]]), actions_of(chosen))


def all_steps():
    for scenario in SCENARIOS:
        for s, segment in enumerate(load(scenario)["segments"]):
            for i in range(len(segment["steps"])):
                yield pytest.param(scenario, s, i, id=f"{scenario}-{s}-{i}")


# -- the recorded engine_state, in the shape both sides share ------------------------------------

def stored_view(state: dict, actions: list[p.Action]) -> dict:
    """engine_state with actions_seen as a count of id-taking actions, without the keys a
    re-scheduled attempt carried over from its timer record, and without the timers the
    current actions cancel (the engine forgot a timer once it had cancelled it)."""
    seen = sum(1 for a in actions[:state["actions_seen"]]
               if a.kind not in (AT.WaitForExternalEvent, AT.ContinueAsNew))
    return {"next_id": state["next_id"], "scheduled": seen,
            "retries": {k: {f: v for f, v in r.items() if f not in ("exhausted", "failed_task")}
                        for k, r in state["retries"].items()},
            "retry_timers": state["retry_timers"],
            "timers": {k: v for k, v in state["timers"].items()
                       if not actions[int(k)].is_canceled}}


def derived_view(bk, actions: list[p.Action]) -> dict:
    def record(attempt: Attempt) -> dict:
        action = actions[attempt.position]
        out = {"kind": "activity" if action.kind == AT.CallActivityWithRetry else "orchestrator",
               "name": action.function_name, "input": action.input, "attempt": attempt.number,
               "options": action.retry_options}
        if action.kind == AT.CallSubOrchestratorWithRetry:
            out.update(instance_id=action.instance_id, version=action.version)
        return out

    return {"next_id": bk.next_id, "scheduled": bk.scheduled,
            "retries": {str(k): record(a) for k, a in bk.retries.items()},
            "retry_timers": {str(k): {**record(t.failed), "exhausted": t.exhausted,
                                      "failed_task": t.failed_task}
                             for k, t in bk.retry_timers.items()},
            "timers": {str(k): v for k, v in bk.timers.items() if not actions[k].is_canceled}}


@pytest.mark.parametrize("scenario, segment, step", all_steps())
def test_derived_bookkeeping_equals_the_recorded_engine_state(scenario, segment, step):
    chosen = load(scenario)["segments"][segment]["steps"][step]
    actions = actions_of(chosen)
    bk = derived_at(load(scenario), segment, step)
    assert bk.retry_event is None  # after a commit, every retry is answered
    assert derived_view(bk, actions) == stored_view(chosen["engine_state"], actions)


def test_the_fixtures_cover_every_scenario_the_issue_names():
    assert {"plain_activities", "fan_out", "timer_cancelled", "entities", "sub_orchestrations",
            "activity_retry_then_success", "exhausted_retry_failed", "exhausted_retry_caught",
            "sub_orchestration_retry", "external_event", "continue_as_new",
            "rewind_exhausted_retry"} <= set(SCENARIOS)
    assert sum(1 for _ in all_steps()) >= 90


# -- decide replays the recorded runs ------------------------------------------------------------

def patterns_index():
    """The functions the recorded orchestrators call (tests/apps/patterns), as stubs."""
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.activity_trigger(input_name="x")
    def say_hello(x): return x

    @app.activity_trigger(input_name="x")
    def double(x): return x

    @app.activity_trigger(input_name="x")
    def flaky(x): return x

    @app.orchestration_trigger(context_name="context")
    def chain(context): yield context.call_activity("double", 1)

    @app.orchestration_trigger(context_name="context")
    def fan_out(context): yield context.call_activity("double", 1)

    @app.orchestration_trigger(context_name="context")
    def flaky_once(context): yield context.call_activity("flaky", 1)

    @app.entity_trigger(context_name="context", entity_name="Counter")
    def counter(context): context.set_result(None)

    return index_app(app)


INDEX = patterns_index()


def episodes(scenario: str):
    """Each recorded episode: (instance, history before its decisions, its result, its start
    time, the scheduling events it wrote, the step recorded after it)."""
    fixture = load(scenario)
    for segment in fixture["segments"]:
        history, end = segment["history"], 0
        for step in segment["steps"]:
            begin, end = end, step["length"]
            starts = [i for i in range(begin, end)
                      if history[i]["EventType"] == ET.OrchestratorStarted]
            if step["after"] != "commit" or not starts:
                continue  # a rewind, or the commit that continued as new (history cleared)
            inbound_end = next(i for i in range(starts[0] + 1, end)
                               if history[i]["EventType"] in p.SCHEDULING_TYPES
                               or history[i]["EventType"] == ET.OrchestratorCompleted)
            completed = next(i for i in range(inbound_end, end)
                             if history[i]["EventType"] == ET.OrchestratorCompleted)
            started = next(e for e in history if e["EventType"] == ET.ExecutionStarted)
            inst = {"instance_id": started["OrchestrationInstance"]["InstanceId"],
                    "execution_id": started["OrchestrationInstance"]["ExecutionId"],
                    "name": fixture["orchestrator"]}
            failed = any(e["EventType"] == ET.ExecutionCompleted
                         and e["OrchestrationStatus"] == "Failed" for e in history[begin:end])
            result = {"actions": step["actions"]}
            if failed:
                result["error"] = "recorded failure"
            yield (inst, history[:inbound_end], result,
                   p.parse_time(history[starts[0]]["Timestamp"]),
                   history[inbound_end:completed], step)


def comparable(events: list[dict]) -> list[dict]:
    out = []
    for e in events:
        e = {k: v for k, v in e.items() if k != "IsPlayed"}
        if e["EventType"] == ET.EventSent:  # the entity request id is random
            e["Input"] = {k: v for k, v in json.loads(e["Input"]).items() if k != "id"}
        out.append(e)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_decide_writes_what_the_recorded_run_wrote(scenario):
    count = 0
    for inst, before, result, started, written, _ in episodes(scenario):
        fx = decide(inst, keys(before), result, started, INDEX, HostConfig())
        assert comparable(fx.history) == comparable(written)
        count += 1
    assert count >= 1


# -- the scenarios, one by one -----------------------------------------------------------------

def last(scenario: str, segment: int = 0):
    fixture = load(scenario)
    return derived_at(fixture, segment, len(fixture["segments"][segment]["steps"]) - 1)


def test_plain_activities_take_one_id_each():
    bk = last("plain_activities")
    assert (bk.next_id, bk.scheduled, bk.retries, bk.timers) == (3, 3, {}, {})


def test_a_fan_out_takes_its_ids_in_one_episode():
    fixture = load("fan_out")
    first = derived_at(fixture, 0, 0)
    assert (first.next_id, first.scheduled) == (5, 5)
    inst, before, result, started, written, _ = list(episodes("fan_out"))[1]
    fx = decide(inst, keys(before), result, started, INDEX, HostConfig())
    assert fx.history == [] and fx.activities == []  # the fan-in schedules nothing new


def test_a_timer_the_code_cancels_is_named_by_decide():
    bk = last("timer_cancelled")
    assert bk.timers == {1: 0}  # task_any([event, timer]): the timer is action 1, task id 0
    inst, before, result, started, _, step = list(episodes("timer_cancelled"))[1]
    assert actions_of(step)[1].is_canceled
    fx = decide(inst, keys(before), result, started, INDEX, HostConfig())
    assert fx.cancelled_timers == [0]


def test_a_timer_that_fired_is_not_cancelled():
    for inst, before, result, started, _, _ in episodes("timer_fired"):
        fx = decide(inst, keys(before), result, started, INDEX, HostConfig())
        assert fx.cancelled_timers == []
    assert last("timers_in_a_loop").timers == {0: 0, 1: 1, 2: 2}


def test_entity_calls_and_signals_take_ids_through_their_event_sent():
    history = load("entities")["segments"][0]["history"]
    sent = [e["EventId"] for e in history if e["EventType"] == ET.EventSent]
    assert sent == [0, 1, 2, 3, 4, 5]  # the signal first, then five calls
    assert last("entities").next_id == 6


def test_sub_orchestrations_get_the_parents_execution_and_task_id_as_default_id():
    inst, before, result, started, written, _ = next(episodes("sub_orchestrations"))
    fx = decide(inst, keys(before), result, started, INDEX, HostConfig())
    assert fx.children[0]["instance_id"] == f"{inst['execution_id']}:0"
    assert last("sub_orchestrations").next_id == 2


def test_an_activity_retry_step_by_step():
    fixture = load("activity_retry_then_success")
    states = [derived_at(fixture, 0, i) for i in range(6)]
    assert states[0].retries == {0: Attempt(0, 1)}
    assert states[1].retries == {} and states[1].retry_timers == {
        1: RetryTimer(Attempt(0, 1), 0, exhausted=False)}
    assert states[2].retries == {2: Attempt(0, 2)} and states[2].retry_timers == {}
    assert states[3].retry_timers == {3: RetryTimer(Attempt(0, 2), 2, exhausted=False)}
    assert states[4].retries == {4: Attempt(0, 3)}
    assert states[5].retries == {4: Attempt(0, 3)} and states[5].next_id == 5  # succeeded


def test_a_retry_timer_waits_the_retry_interval_and_the_extra_one_does_not():
    delays = []
    for inst, before, result, started, _, _ in episodes("exhausted_retry_caught"):
        fx = decide(inst, keys(before), result, started, INDEX, HostConfig())
        delays += [fire_at - started for _, fire_at in fx.timers]
    assert delays == [timedelta(milliseconds=50)] * 2 + [timedelta(0)]
    bk = last("exhausted_retry_caught")
    assert bk.retry_timers[5] == RetryTimer(Attempt(0, 3), 4, exhausted=True)


def test_the_extra_timer_firing_awaits_no_retry():
    """Its TimerFired is ordinary: the SDK fails the call; nothing is scheduled for it."""
    inst, before, result, started, written, _ = list(episodes("exhausted_retry_failed"))[-1]
    assert before[-1]["EventType"] == ET.TimerFired
    assert bookkeeping(keys(before), p.read_actions(result)).retry_event is None
    assert written == []


def test_a_retried_sub_orchestration_reuses_a_given_child_id_and_makes_fresh_ones():
    ids = {}
    for scenario in ("sub_orchestration_retry", "sub_orchestration_retry_exhausted"):
        for inst, before, result, started, _, _ in episodes(scenario):
            fx = decide(inst, keys(before), result, started, INDEX, HostConfig())
            ids.setdefault(scenario, []).extend(
                (c["task_id"], c["instance_id"].replace(inst["execution_id"], "x"))
                for c in fx.children)
    fixed = load("sub_orchestration_retry")["segments"][0]["history"][1]
    kid = fixed["OrchestrationInstance"]["InstanceId"] + "-kid"
    assert ids["sub_orchestration_retry"] == [(0, kid), (2, kid), (4, kid)]
    assert ids["sub_orchestration_retry_exhausted"] == [(0, "x:0"), (2, "x:2")]


def test_parallel_retries_take_their_ids_where_the_sdk_takes_them():
    bk = last("parallel_retries")
    assert bk.next_id == 11 and bk.retry_timers == {}
    # attempt 1 of calls 1 and 2 failed → timers 5, 6; their second attempts 7, 8; 8 failed → 9
    assert {k: a.number for k, a in bk.retries.items()} == {0: 1, 3: 1, 7: 2, 10: 3}
    assert possible_retry_timers(keys(load("parallel_retries")["segments"][0]["history"])) == \
        {5, 6, 9}


def test_an_external_event_takes_no_id():
    fixture = load("external_event")
    waiting = derived_at(fixture, 0, 0)
    assert (waiting.next_id, waiting.scheduled) == (0, 0)
    assert last("external_event").next_id == 1


def test_continue_as_new_starts_the_bookkeeping_over():
    fixture = load("continue_as_new")
    first, second = fixture["segments"][0], fixture["segments"][1]
    assert derived_at(fixture, 1, 1).next_id == 1
    # even with both generations in one history, the second ExecutionStarted starts afresh
    both = first["history"] + second["history"]
    assert bookkeeping(keys(both), actions_of(second["steps"][1])).next_id == 1


def test_rewind_of_an_exhausted_retry_drops_its_extra_timer():
    fixture = load("rewind_exhausted_retry")
    failed, rewound = fixture["segments"]
    history = failed["history"]
    bk = bookkeeping(keys(history), actions_of(failed["steps"][-1]))
    assert rewind_plan(history, bk) == ([2], 3)  # run attempt 2 again; timer 3 goes
    after = derived_at(fixture, 1, 0)
    assert after.next_id == 3 and after.retries == {2: Attempt(0, 2)} and after.retry_timers == {}


def test_rewind_of_a_failed_task_runs_it_again():
    for scenario in ("rewind_failed_activity", "rewind_failed_sub_orchestration"):
        failed = load(scenario)["segments"][0]
        history = failed["history"]
        bk = bookkeeping(keys(history), actions_of(failed["steps"][-1]))
        assert rewind_plan(history, bk) == ([0], None), scenario


# -- select_batch: before the SDK runs, only history is known -------------------------------------

def rows(*events: dict) -> list[dict]:
    return [{"id": i, "event": json.dumps(e)} for i, e in enumerate(events)]


def test_a_batch_ends_at_any_failure_and_at_a_possible_retry_timer():
    t = "2026-01-01T00:00:00.0000000Z"
    history = keys(load("activity_retry_then_success")["segments"][0]["history"][:8])
    assert possible_retry_timers(history) == {1}
    done, failed = p.task_completed(t, 7, "1"), p.task_failed(t, 8, "no", "")
    batch, events = select_batch(rows(done, failed, done), history)
    assert [e["EventType"] for e in events] == [ET.TaskCompleted, ET.TaskFailed]
    batch, _ = select_batch(rows(p.timer_fired(t, 1, t), done), history)
    assert len(batch) == 1  # timer 1 may be (and is) a retry timer
    batch, _ = select_batch(rows(p.timer_fired(t, 0, t), done), history)
    assert len(batch) == 2  # an ordinary timer does not end a batch


def test_a_timer_made_after_a_caught_failure_only_looks_like_a_retry_timer():
    """A failed call without retry, caught, then a timer: history alone cannot tell it from a
    retry timer (select_batch plays safe), the SDK's actions can."""
    t = "2026-01-01T00:00:00.0000000Z"
    history = [p.event(ET.OrchestratorStarted, t),
               p.execution_started(t, "o", None, "i", "x", None),
               p.event(ET.TaskScheduled, t, 0, Name="a"), p.event(ET.OrchestratorCompleted, t),
               p.event(ET.OrchestratorStarted, t), p.task_failed(t, 0, "no", ""),
               p.event(ET.TimerCreated, t, 1, FireAt=t), p.event(ET.OrchestratorCompleted, t)]
    assert possible_retry_timers(keys(history)) == {1}
    actions = [p.Action(kind=AT.CallActivity, function_name="a"),
               p.Action(kind=AT.CreateTimer, fire_at=t)]
    bk = bookkeeping(keys(history), actions)
    assert bk.retry_timers == {} and bk.timers == {1: 1} and bk.next_id == 2


# -- new actions and a retry in one episode, against the SDK's own numbering ---------------------

def test_new_actions_then_the_retry_in_one_episode_keep_the_sdks_ids():
    """Batch [TaskCompleted(0), TaskFailed(1)]: the completion resumes the code, which calls
    another activity (id 2) before the SDK, reaching the failure of the retried call, takes
    the retry timer's id (3). Run by the real SDK: wrong ids would resolve the wrong tasks.
    (The actions come in yield order: task_any([first, retried]) numbers `first` 0.)"""
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.orchestration_trigger(context_name="context")
    def orch(context: df.DurableOrchestrationContext):
        retried = context.call_activity_with_retry("flaky", df.RetryOptions(1000, 2), "x")
        first = context.call_activity("double", 1)
        yield context.task_any([first, retried])
        second = context.call_activity("double", 2)
        return (yield context.task_all([retried, second]))

    @app.activity_trigger(input_name="x")
    def flaky(x): return x

    @app.activity_trigger(input_name="x")
    def double(x): return x

    index = index_app(app)
    name, handle = index.orchestrator("orch")
    inst = {"instance_id": "i1", "execution_id": "x1", "name": name}
    history: list[dict] = []
    t0 = p.parse_time("2026-01-01T00:00:00Z")

    def episode(n: int, *inbound: dict):
        started = t0 + timedelta(seconds=n)
        batch, events = select_batch(rows(*inbound), keys(history))
        assert len(batch) == len(inbound)
        new = [p.event(ET.OrchestratorStarted, p.history_time(started))] + events
        texts = [s.text for s in map(p.stored_event, history) if s.replayed]
        result = p.parse_orchestrator_result(*_call_handle(handle, p.context_document(
            texts, new, None, "i1", None)))
        fx = decide(inst, keys(history + new), result, started, index, HostConfig())
        done = p.event(ET.OrchestratorCompleted, p.history_time(started))
        history.extend(new + fx.history + [done])
        return result, [(e["EventType"], e["EventId"]) for e in fx.history]

    t = p.history_time(t0)
    _, scheduled = episode(1, p.execution_started(t, name, None, "i1", "x1", None))
    assert scheduled == [(ET.TaskScheduled, 0), (ET.TaskScheduled, 1)]
    _, scheduled = episode(2, p.task_completed(t, 0, "1"), p.task_failed(t, 1, "no", ""))
    assert scheduled == [(ET.TaskScheduled, 2), (ET.TimerCreated, 3)]
    _, scheduled = episode(3, p.task_completed(t, 2, "2"), p.timer_fired(t, 3, t))
    assert scheduled == [(ET.TaskScheduled, 4)]  # the second attempt
    result, scheduled = episode(4, p.task_completed(t, 4, '"ok"'))
    assert scheduled == [] and result["isDone"] and result["output"] == ["ok", 2]
