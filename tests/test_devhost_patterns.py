"""End-to-end: every Durable Functions pattern of tests/apps/patterns on a real devhost process.

One devhost serves the whole module (start-up is the expensive part); every test uses its own
instance ids / entity keys / flaky keys, so the tests stay independent of each other.
Assertions are on outputs, status documents, recorded histories (showHistory=true) and, where
the rendered history hides ids (merged completions lose TaskScheduledId), on the raw history
rows of the task hub's SQLite file.
"""
from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import wait_for_status

WEBHOOKS = "/runtime/webhooks/durabletask"
JSON = {"Content-Type": "application/json"}
HISTORY = "?showHistory=true&showHistoryOutput=true"
DONE = ("Completed", "Failed", "Terminated")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def host(module_patterns_host):
    return module_patterns_host


# -- helpers ---------------------------------------------------------------------------------

def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sdk_start(host, name: str, payload=None) -> str:
    """Start through the app's own HTTP starter (the SDK client's start_new)."""
    r = host.request("POST", f"/api/orchestrators/{name}",
                     None if payload is None else json.dumps(payload), JSON)
    assert r.status == 202, r
    return r.json()["id"]


def finished(host, instance_id: str, timeout: float = 30) -> dict:
    return wait_for_status(host, instance_id, DONE, timeout=timeout, query=HISTORY)


def events_of(doc: dict, kind: str) -> list[dict]:
    return [e for e in doc["historyEvents"] if e["EventType"] == kind]


def kinds(doc: dict) -> list[str]:
    return [e["EventType"] for e in doc["historyEvents"]]


def raw_history(host, instance_id: str) -> list[dict]:
    """The stored (unrendered) history: ids the status document does not show."""
    con = sqlite3.connect(host.db, timeout=10)
    try:
        rows = con.execute("SELECT event FROM history WHERE instance_id=? ORDER BY seq",
                           (instance_id,)).fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


def assert_ids_unique(events: list[dict]) -> tuple[list[int], list[int]]:
    scheduled = [e["EventId"] for e in events if e["EventType"] == 4]
    completed = [e["TaskScheduledId"] for e in events if e["EventType"] in (5, 6)]
    assert len(scheduled) == len(set(scheduled)), f"duplicate TaskScheduled ids: {scheduled}"
    assert len(completed) == len(set(completed)), f"duplicate completion ids: {completed}"
    assert set(completed) <= set(scheduled)
    return scheduled, completed


# -- chaining ----------------------------------------------------------------------------------

def test_chaining_output_and_rendered_history(host):
    instance_id = sdk_start(host, "chain")
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    # Correction 1: exactly ExecutionStarted, 3 x TaskCompleted, ExecutionCompleted
    assert kinds(doc) == ["ExecutionStarted", "TaskCompleted", "TaskCompleted", "TaskCompleted",
                          "ExecutionCompleted"]
    started, *tasks, completed = doc["historyEvents"]
    assert started["FunctionName"] == "chain"
    assert [t["FunctionName"] for t in tasks] == ["say_hello"] * 3
    assert [t["Result"] for t in tasks] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    assert [t["Input"] for t in tasks] == ['"Tokyo"', '"Seattle"', '"London"']
    for t in tasks:
        assert "TaskScheduledId" not in t and "EventId" not in t and "IsPlayed" not in t
        assert t["ScheduledTime"] <= t["Timestamp"]
    assert completed["OrchestrationStatus"] == "Completed"
    assert completed["Result"] == doc["output"]
    # without showHistoryOutput the results are left out
    plain = host.request("GET", f"{WEBHOOKS}/instances/{instance_id}?showHistory=true").json()
    assert all("Result" not in e for e in plain["historyEvents"])
    # and without showHistory there is no history at all
    assert "historyEvents" not in host.request("GET", f"{WEBHOOKS}/instances/{instance_id}").json()


def test_chaining_through_wait_for_completion(host):
    r = host.request("POST", "/api/wait/chain")
    assert r.status == 200
    assert r.json() == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


# -- fan-out / fan-in --------------------------------------------------------------------------

def test_fan_out_fan_in_200(host):
    instance_id = sdk_start(host, "fan_out", 200)
    doc = finished(host, instance_id, timeout=60)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == sum(2 * i for i in range(200))
    completions = events_of(doc, "TaskCompleted")
    assert len(completions) == 200
    assert {e["FunctionName"] for e in completions} == {"double"}
    assert sorted(int(e["Input"]) for e in completions) == list(range(200))
    assert sorted(e["Result"] for e in completions) == [2 * i for i in range(200)]
    assert not events_of(doc, "TaskScheduled")  # every one merged with its completion
    scheduled, completed = assert_ids_unique(raw_history(host, instance_id))
    assert sorted(scheduled) == list(range(200))
    assert sorted(completed) == list(range(200))


# -- async HTTP API ----------------------------------------------------------------------------

def test_async_http_api_polling(host):
    # an instance that waits for an event: the first poll is a 202 on any machine
    r = host.request("POST", "/api/orchestrators/approval", "30", JSON)
    assert r.status == 202
    payload = r.json()
    location = r.headers["location"]
    assert location == payload["statusQueryGetUri"]
    assert location.startswith(host.base + WEBHOOKS + "/instances/" + payload["id"])
    assert "taskHub=PatternsHub" in location
    seen = []
    deadline = time.time() + 20
    while time.time() < deadline:
        try:  # a plain GET, as curl would do it
            with urllib.request.urlopen(location, timeout=10) as response:
                status, body, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as e:  # pragma: no cover - reported below
            status, body, headers = e.code, e.read(), e.headers
        seen.append(status)
        if status == 202:
            assert headers["Location"] == location
            assert headers["Retry-After"]
            assert json.loads(body)["runtimeStatus"] in ("Pending", "Running")
            if len(seen) == 1:  # approve after the first 202
                send = payload["sendEventPostUri"].replace("{eventName}", "Approval")
                assert host.request("POST", send, json.dumps(True), JSON).status == 202
            time.sleep(0.02)
            continue
        break
    assert seen[0] == 202 and seen[-1] == 200, seen
    assert set(seen) == {200, 202}
    final = json.loads(body)
    assert final["runtimeStatus"] == "Completed" and final["output"] == {"approved": True}


# -- monitor / custom status -------------------------------------------------------------------

def test_monitor_custom_status_and_timers(host):
    # (custom status while running is shown by test_custom_status_while_waiting, which holds
    # the instance on an event instead of racing a 100 ms timer)
    instance_id = sdk_start(host, "monitor")
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == 3
    assert doc["customStatus"] == {"polls": 3}
    assert len(events_of(doc, "TimerCreated")) == 3
    fired = events_of(doc, "TimerFired")
    assert len(fired) == 3
    assert all("TimerId" not in e and "FireAt" in e for e in fired)
    # each timer fired no earlier than its FireAt
    assert all(e["Timestamp"] >= e["FireAt"] for e in fired)


def test_custom_status_while_waiting(host):
    instance_id = uid("cs")
    r = host.request("POST", f"{WEBHOOKS}/orchestrators/status_then_wait/{instance_id}")
    assert r.status == 202
    doc = wait_for_status(host, instance_id, ("Running",))
    deadline = time.time() + 10
    while doc["customStatus"] is None and time.time() < deadline:
        doc = host.request("GET", f"{WEBHOOKS}/instances/{instance_id}").json()
    assert doc["customStatus"] == {"stage": "waiting", "n": [1, 2]}
    r = host.request("POST", f"{WEBHOOKS}/instances/{instance_id}/raiseEvent/Go", {"v": 1})
    assert r.status == 202
    doc = finished(host, instance_id)
    assert doc["output"] == {"v": 1}
    assert doc["customStatus"] == {"stage": "done"}


# -- human interaction -------------------------------------------------------------------------

def test_human_interaction_approved_via_webhook(host):
    r = host.request("POST", "/api/orchestrators/approval", "30", JSON)
    payload = r.json()
    wait_for_status(host, payload["id"], ("Running",))
    url = payload["sendEventPostUri"].replace("{eventName}", "Approval")
    r = host.request("POST", url, {"by": "alice", "ok": True})
    assert r.status == 202
    doc = finished(host, payload["id"])
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == {"approved": {"by": "alice", "ok": True}}  # decoded JSON (item 11)
    assert kinds(doc) == ["ExecutionStarted", "TimerCreated", "EventRaised", "ExecutionCompleted"]
    raised = events_of(doc, "EventRaised")[0]
    assert raised["Name"] == "Approval"
    assert json.loads(raised["Input"]) == {"by": "alice", "ok": True}


def test_human_interaction_approved_via_sdk_client(host):
    instance_id = sdk_start(host, "approval", 30)
    wait_for_status(host, instance_id, ("Running",))
    r = host.request("POST", f"/api/client/raise/{instance_id}?name=Approval", {"ok": True})
    assert r.status == 204
    doc = finished(host, instance_id)
    # the Python client double-encodes: the orchestrator receives a JSON *string* (§5.1, item 11)
    assert doc["output"] == {"approved": '{"ok": true}'}


def test_human_interaction_times_out(host):
    instance_id = sdk_start(host, "approval", 0.3)
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == "timed out"
    assert kinds(doc) == ["ExecutionStarted", "TimerCreated", "TimerFired", "ExecutionCompleted"]


def test_event_raised_with_wrong_case_is_not_delivered(host):
    instance_id = sdk_start(host, "approval", 0.5)
    wait_for_status(host, instance_id, ("Running",))
    r = host.request("POST", f"{WEBHOOKS}/instances/{instance_id}/raiseEvent/approval", {"x": 1})
    assert r.status == 202
    assert finished(host, instance_id)["output"] == "timed out"  # names are case-sensitive


# -- entities ----------------------------------------------------------------------------------

def test_counter_entity(host):
    key = uid("ctr")
    instance_id = sdk_start(host, "counting", key)
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed", doc["output"]
    assert doc["output"] == {"final": 31, "failed": "counter refused"}
    sent = events_of(doc, "EventSent")
    assert len(sent) == 6  # signal + 3 adds + fail + get
    assert {e["InstanceId"] for e in sent} == {f"@counter@{key}"}
    assert [json.loads(e["Input"])["op"] for e in sent] == ["add", "add", "add", "add", "fail",
                                                            "get"]
    assert [json.loads(e["Input"])["signal"] for e in sent] == [True] + [False] * 5
    assert len(events_of(doc, "EventRaised")) == 5  # one response per call, none for the signal

    r = host.request("GET", f"{WEBHOOKS}/entities/counter/{key}")
    assert r.status == 200 and r.json() == 31
    assert host.request("GET", f"/api/client/read/{key}").json() == {"exists": True, "state": 31}

    # a client signal is applied
    assert host.request("POST", f"/api/client/signal/{key}?n=5").status == 204
    deadline = time.time() + 10
    while host.request("GET", f"{WEBHOOKS}/entities/counter/{key}").json() != 36:
        assert time.time() < deadline, "the client's signal was not applied"
        time.sleep(0.02)
    assert host.request("GET", f"/api/client/read/{key}").json() == {"exists": True, "state": 36}
    listed = host.request("GET", f"{WEBHOOKS}/entities/counter").json()
    mine = [e for e in listed if e["entityId"] == {"name": "counter", "key": key}]
    assert len(mine) == 1 and mine[0]["state"] == 36


def test_reading_a_missing_entity(host):
    key = uid("none")
    assert host.request("GET", f"{WEBHOOKS}/entities/counter/{key}").status == 404
    assert host.request("GET", f"/api/client/read/{key}").json() == {"exists": False,
                                                                     "state": None}


# -- sub-orchestrations ------------------------------------------------------------------------

def test_sub_orchestrations(host):
    instance_id = uid("parent")
    r = host.request("POST", f"{WEBHOOKS}/orchestrators/parent/{instance_id}")
    assert r.status == 202
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == {"chain": ["Hello Tokyo!", "Hello Seattle!", "Hello London!"],
                             "fan_out": 20}
    subs = events_of(doc, "SubOrchestrationInstanceCompleted")
    assert [e["FunctionName"] for e in subs] == ["chain", "fan_out"]
    assert [e["Result"] for e in subs] == [doc["output"]["chain"], 20]
    assert subs[1]["InstanceId"] == f"{instance_id}-child"
    assert subs[1]["Input"] == "5"
    # the children are real instances with their own status documents
    for sub, name in zip(subs, ["chain", "fan_out"]):
        child = host.request("GET", f"{WEBHOOKS}/instances/{sub['InstanceId']}{HISTORY}")
        assert child.status == 200
        child_doc = child.json()
        assert child_doc["name"] == name and child_doc["runtimeStatus"] == "Completed"
        assert child_doc["output"] == sub["Result"]
    child_doc = host.request("GET", f"{WEBHOOKS}/instances/{instance_id}-child{HISTORY}").json()
    assert len(events_of(child_doc, "TaskCompleted")) == 5


def test_sub_orchestration_sees_its_parent(host):
    instance_id = uid("asks")
    host.request("POST", f"{WEBHOOKS}/orchestrators/parent_asks/{instance_id}")
    doc = finished(host, instance_id)
    assert doc["output"] == {"instanceId": f"{instance_id}-w", "parent": instance_id,
                             "input": {"n": 1}}
    child = wait_for_status(host, f"{instance_id}-w")
    assert child["runtimeStatus"] == "Completed"


def test_failing_child_is_caught_by_parent(host):
    instance_id = sdk_start(host, "parent_of_failing")
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"].startswith(
        "parent caught: Orchestrator function 'failing_child' failed: child broke")
    failed = events_of(doc, "SubOrchestrationInstanceFailed")
    assert len(failed) == 1 and failed[0]["FunctionName"] == "failing_child"
    child = host.request("GET", f"{WEBHOOKS}/instances/{failed[0]['InstanceId']}").json()
    assert child["runtimeStatus"] == "Failed"
    assert child["output"].startswith("Orchestrator function 'failing_child' failed: child broke")


# -- retries -----------------------------------------------------------------------------------

def test_retry_succeeds_on_third_attempt(host):
    instance_id = sdk_start(host, "retrying", {"key": uid("r"), "fail_times": 2})
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == "ok after 3"
    assert kinds(doc) == ["ExecutionStarted", "TaskFailed", "TimerCreated", "TimerFired",
                          "TaskFailed", "TimerCreated", "TimerFired", "TaskCompleted",
                          "ExecutionCompleted"]
    failed = events_of(doc, "TaskFailed")
    assert [e["Reason"] for e in failed] == [
        "Activity function 'flaky' failed: ValueError: attempt 1 failed",
        "Activity function 'flaky' failed: ValueError: attempt 2 failed"]
    assert all(e["FunctionName"] == "flaky" for e in failed)
    assert events_of(doc, "TaskCompleted")[0]["Result"] == "ok after 3"
    # the retry timers wait the first retry interval (50 ms) after the failure's episode
    for created in events_of(doc, "TimerCreated"):
        assert created["FireAt"] > created["Timestamp"]
    scheduled, completed = assert_ids_unique(raw_history(host, instance_id))
    assert len(scheduled) == 3 and len(completed) == 3


def test_retries_exhausted_fail_the_orchestration(host):
    instance_id = sdk_start(host, "retrying", {"key": uid("x"), "fail_times": 9, "attempts": 2})
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Failed"
    assert doc["output"].startswith(
        "Orchestrator function 'retrying' failed: Activity function 'flaky' failed: "
        "ValueError: attempt 2 failed")
    assert len(events_of(doc, "TaskFailed")) == 2
    # one timer between the attempts and the extra one after the last failure (§3.5)
    assert len(events_of(doc, "TimerCreated")) == 2
    assert len(events_of(doc, "TimerFired")) == 2
    assert doc["historyEvents"][-1]["EventType"] == "ExecutionCompleted"
    assert doc["historyEvents"][-1]["OrchestrationStatus"] == "Failed"
    # GET status of a Failed instance answers 200 (correction 10)
    assert host.request("GET", f"{WEBHOOKS}/instances/{instance_id}").status == 200


def test_retries_exhausted_and_caught(host):
    instance_id = sdk_start(host, "retrying",
                            {"key": uid("c"), "fail_times": 9, "attempts": 3, "catch": True})
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"].rstrip() == \
        "caught: Activity function 'flaky' failed: ValueError: attempt 3 failed"
    assert len(events_of(doc, "TaskFailed")) == 3


def test_parallel_retries(host):
    ids = {sdk_start(host, "parallel_retries", uid("p")): None for _ in range(4)}
    for instance_id in ids:
        doc = finished(host, instance_id)
        assert doc["runtimeStatus"] == "Completed", doc["output"]
        assert doc["output"] == ["ok after 1", "ok after 2", "ok after 3", "ok after 1", 42]
        assert len(events_of(doc, "TaskFailed")) == 3  # 0 + 1 + 2 + 0 failures
        assert len(events_of(doc, "TaskCompleted")) == 5
        assert_ids_unique(raw_history(host, instance_id))


def test_sub_orchestration_retries(host):
    ok2 = sdk_start(host, "sub_retry", {"key": uid("sr"), "fail_times": 1})
    ok3 = sdk_start(host, "sub_retry", {"key": uid("sr"), "fail_times": 2, "fixed_id": True})
    gave_up = sdk_start(host, "sub_retry", {"key": uid("sr"), "fail_times": 9, "attempts": 2})
    doc = finished(host, ok2)
    assert doc["output"] == "ok after 2"
    assert kinds(doc) == ["ExecutionStarted", "SubOrchestrationInstanceFailed", "TimerCreated",
                          "TimerFired", "SubOrchestrationInstanceCompleted",
                          "ExecutionCompleted"]
    attempts = [e["InstanceId"] for e in doc["historyEvents"] if "InstanceId" in e]
    assert len(set(attempts)) == 2  # a fresh child id per attempt
    doc = finished(host, ok3)
    assert doc["output"] == "ok after 3"
    assert [e["InstanceId"] for e in doc["historyEvents"] if "InstanceId" in e] == \
        [f"{ok3}-kid"] * 3  # the caller's child id, re-used by every attempt
    child = host.request("GET", f"{WEBHOOKS}/instances/{ok3}-kid").json()
    assert child["runtimeStatus"] == "Completed" and child["output"] == "ok after 3"
    doc = finished(host, gave_up)
    assert doc["output"].rstrip() == ("gave up: Orchestrator function 'flaky_once' failed: "
                                      "Activity function 'flaky' failed: ValueError: attempt 2 "
                                      "failed")
    assert kinds(doc).count("SubOrchestrationInstanceFailed") == 2
    assert kinds(doc).count("TimerFired") == 2


# -- eternal -----------------------------------------------------------------------------------

def test_eternal_continue_as_new(host):
    instance_id = sdk_start(host, "eternal")
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == 5
    # only the last generation's history remains; its input is the last continue_as_new value
    assert kinds(doc) == ["ExecutionStarted", "ExecutionCompleted"]
    assert doc["historyEvents"][0]["Input"] == "5"


# -- failures ----------------------------------------------------------------------------------

def test_broken_orchestrator(host):
    instance_id = sdk_start(host, "broken")
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Failed"
    assert doc["output"] == "Orchestrator function 'broken' failed: orchestrator broke"
    assert kinds(doc) == ["ExecutionStarted", "TaskCompleted", "ExecutionCompleted"]
    assert doc["historyEvents"][-1]["OrchestrationStatus"] == "Failed"
    r = host.request("POST", "/api/wait/broken")
    assert r.status == 500  # the SDK's wait_for_completion answers 500 for Failed
    assert r.json()["runtimeStatus"] == "Failed"


def test_unknown_activity(host):
    instance_id = sdk_start(host, "calls_missing")
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Failed"
    assert doc["output"].startswith(
        "Orchestrator function 'calls_missing' failed: The function 'no_such_activity' doesn't "
        "exist, is disabled, or is not an activity function. Additional info: The following are "
        "the known activity functions: 'double', 'flaky', 'say_hello'")


def test_unknown_entity(host):
    instance_id = sdk_start(host, "calls_missing_entity")
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Failed"
    assert "doesn't exist, is disabled, or is not an entity function" in doc["output"]
    assert "'Counter', 'Register'" in doc["output"]


def test_call_http(host):
    ok = sdk_start(host, "http_caller", host.base + "/api/hello/ann")
    missing = sdk_start(host, "http_caller", host.base + "/api/no/such/thing")
    doc = finished(host, ok)
    assert doc["output"] == {"status": 200, "content": "hello ann",
                             "type": "text/plain; charset=utf-8"}
    (task,) = events_of(doc, "TaskCompleted")
    assert task["FunctionName"] == "BuiltIn::HttpActivity"
    assert json.loads(task["Input"])["uri"] == host.base + "/api/hello/ann"
    doc = finished(host, missing)
    assert doc["output"]["status"] == 404
    assert json.loads(doc["output"]["content"])["error"]
    unreachable = sdk_start(host, "http_caller", "http://127.0.0.1:1/nothing")
    doc = finished(host, unreachable)
    assert doc["runtimeStatus"] == "Failed"
    assert "Activity function 'BuiltIn::HttpActivity' failed: " in doc["output"]


# -- the SDK client's operations ---------------------------------------------------------------

def test_client_status(host):
    instance_id = sdk_start(host, "chain")
    finished(host, instance_id)
    s = host.request("GET", f"/api/client/status/{instance_id}").json()
    assert s["instanceId"] == instance_id and s["name"] == "chain"
    assert s["runtimeStatus"] == "Completed"
    assert s["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    assert host.request("GET", f"/api/client/status/{uid('missing')}").json() is None


def test_client_terminate(host):
    instance_id = sdk_start(host, "long_wait")
    wait_for_status(host, instance_id, ("Running",))
    assert host.request("POST", f"/api/client/terminate/{instance_id}").status == 204
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Terminated"
    assert doc["output"] == "by test"
    terminated = events_of(doc, "ExecutionTerminated")
    assert len(terminated) == 1 and terminated[0]["Input"] == "by test"
    # a second terminate is tolerated by the client (410 underneath)
    assert host.request("POST", f"/api/client/terminate/{instance_id}").status == 204


def test_client_raise_to_long_wait(host):
    instance_id = sdk_start(host, "long_wait")
    wait_for_status(host, instance_id, ("Running",))
    assert host.request("POST", f"/api/client/raise/{instance_id}?name=Go",
                        json.dumps("Kyoto"), JSON).status == 204
    assert finished(host, instance_id)["output"] == 'Hello "Kyoto"!'  # the JSON string, §5.1


def test_client_get_status_all_and_purge(host):
    ids = [sdk_start(host, "chain") for _ in range(3)]
    for instance_id in ids:
        finished(host, instance_id)
    count = host.request("GET", "/api/client/all").json()
    listed = host.request("GET", f"{WEBHOOKS}/instances").json()
    assert count == len(listed) and count >= 3
    assert host.request("POST", f"/api/client/purge/{ids[0]}").json() == 1
    assert host.request("GET", f"{WEBHOOKS}/instances/{ids[0]}").status == 404
    assert host.request("POST", f"/api/client/purge/{ids[0]}").json() == 0
    assert host.request("GET", "/api/client/all").json() == count - 1


# -- HTTP triggers -----------------------------------------------------------------------------

def test_route_constraint(host):
    r = host.request("GET", "/api/hello/bob")
    assert r.status == 200 and r.text == "hello bob"
    assert r.headers["content-type"].startswith("text/plain")
    assert host.request("GET", "/api/HELLO/Bob").text == "hello Bob"  # literals: any case
    r = host.request("GET", "/api/hello/123")
    assert r.status == 404
    assert "error" in r.json()


def test_unknown_route_is_404_json(host):
    r = host.request("GET", "/api/no/such/route")
    assert r.status == 404
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]
    assert host.request("GET", "/nothing-here").status == 404  # outside the route prefix


def test_wrong_method_is_405_json(host):
    r = host.request("GET", "/api/orchestrators/chain")
    assert r.status == 405
    assert r.json()["error"]
    r = host.request("DELETE", "/api/hello/bob")
    assert r.status == 405


def test_function_exception_is_an_empty_500_and_a_logged_traceback(host):
    # http_start with a body that is not JSON: the user's json.loads raises. Azure answers 500
    # with no body and logs the exception; so does devhost.
    r = host.request("POST", "/api/orchestrators/chain", b"{not json", JSON)
    assert r.status == 500 and r.body == b""
    log = host.log()
    assert "Executed 'Functions.http_start' (Failed, Id=" in log and "JSONDecodeError" in log


def test_health(host):
    r = host.request("GET", "/admin/host/status")
    assert r.status == 200
    body = r.json()
    assert body["state"] == "Running" and body["hub"] == "PatternsHub"
