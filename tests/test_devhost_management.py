"""End-to-end: the durable management API (public webhooks) and function keys on a real devhost.

Most tests share one devhost on the patterns app and isolate themselves with their own instance
ids; tests whose filters span the whole task hub (purge by filter) get a fresh hub.
"""
from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from conftest import APPS, DevhostProcess, wait_for_status

W = "/runtime/webhooks/durabletask"
JSON = {"Content-Type": "application/json"}
HISTORY = "?showHistory=true&showHistoryOutput=true"
DONE = ("Completed", "Failed", "Terminated")
WEBHOOK_START_KEYS = {"id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri",
                      "purgeHistoryDeleteUri", "restartPostUri", "suspendPostUri",
                      "resumePostUri"}

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def host(module_patterns_host):
    return module_patterns_host


def uid(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def start(host, name: str, instance_id: str | None = None, body=None, query: str = ""):
    """POST orchestrators/{name}[/{id}] with a raw JSON body (what curl would send)."""
    path = f"{W}/orchestrators/{name}" + (f"/{instance_id}" if instance_id else "") + query
    return host.request("POST", path, None if body is None else json.dumps(body),
                        JSON if body is not None else None)


def started(host, name: str, instance_id: str | None = None, body=None) -> str:
    r = start(host, name, instance_id, body)
    assert r.status == 202, r
    return r.json()["id"]


def status(host, instance_id: str, query: str = ""):
    return host.request("GET", f"{W}/instances/{instance_id}{query}")


def finished(host, instance_id: str, timeout: float = 30) -> dict:
    return wait_for_status(host, instance_id, DONE, timeout=timeout, query=HISTORY)


def kinds(doc: dict) -> list[str]:
    return [e["EventType"] for e in doc["historyEvents"]]


def assert_error(r, code: int, *fragments: str) -> dict:
    assert r.status == code, r
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    for key in ("Message", "ExceptionMessage"):  # what the SDK client reads
        assert isinstance(body[key], str) and body[key]
    for fragment in fragments:
        assert fragment in body["Message"], body
    return body


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- starting ----------------------------------------------------------------------------------

def test_start_without_instance_id(host):
    r = start(host, "chain")
    assert r.status == 202
    payload = r.json()
    # correction 6: the extension's own webhook-start payload has no rewindPostUri
    assert set(payload) == WEBHOOK_START_KEYS
    instance_id = payload["id"]
    assert len(instance_id) == 32 and all(c in "0123456789abcdef" for c in instance_id)
    assert r.headers["location"] == payload["statusQueryGetUri"]
    assert r.headers["retry-after"] == "10"
    base = f"{host.base}{W}/instances/{instance_id}"
    assert payload["statusQueryGetUri"].startswith(base + "?")
    assert payload["sendEventPostUri"].startswith(base + "/raiseEvent/{eventName}?")
    assert payload["terminatePostUri"].startswith(base + "/terminate?reason={text}")
    assert payload["purgeHistoryDeleteUri"] == payload["statusQueryGetUri"]
    assert "taskHub=PatternsHub" in payload["statusQueryGetUri"]
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed" and doc["name"] == "chain"


def test_start_with_instance_id(host):
    instance_id = uid("given")
    r = start(host, "chain", instance_id)
    assert r.status == 202
    assert r.json()["id"] == instance_id
    assert f"/instances/{instance_id}?" in r.headers["location"]
    assert finished(host, instance_id)["output"][0] == "Hello Tokyo!"


def test_start_with_running_id_conflicts(host):
    instance_id = started(host, "long_wait", uid("dup"))
    before = wait_for_status(host, instance_id, ("Running",))
    r = start(host, "chain", instance_id)
    assert_error(r, 409, instance_id)
    after = status(host, instance_id).json()
    assert after["name"] == "long_wait" and after["runtimeStatus"] == "Running"
    assert after["createdTime"] == before["createdTime"]
    assert host.request("POST", f"{W}/instances/{instance_id}/terminate").status == 202


def test_start_with_completed_id_replaces_it(host):
    instance_id = started(host, "chain", uid("again"))
    finished(host, instance_id)
    r = start(host, "echo", instance_id, {"second": True})
    assert r.status == 202
    doc = finished(host, instance_id)
    assert doc["name"] == "echo" and doc["output"] == {"second": True}
    assert kinds(doc) == ["ExecutionStarted", "ExecutionCompleted"]  # old history discarded


@pytest.mark.parametrize("bad_id", ["@entity-like", "has%23hash", "x" * 257, "has%5Cbackslash",
                                    "ctl%01char"])
def test_start_with_invalid_instance_id(host, bad_id):
    r = start(host, "chain", bad_id)
    assert_error(r, 400, "instance id")
    assert status(host, bad_id).status in (404, 400)  # nothing was created


def test_start_unknown_orchestrator(host):
    r = start(host, "no_such_orchestrator")
    body = assert_error(r, 400, "The function 'no_such_orchestrator' doesn't exist, is disabled, "
                                "or is not an orchestrator function.")
    assert "'chain'" in body["ExceptionMessage"]
    # the SDK client raises with that ExceptionMessage; the starter function then answers an
    # empty 500 (as in Azure) and the console shows why
    r = host.request("POST", "/api/orchestrators/no_such_orchestrator")
    assert r.status == 500 and r.body == b""
    assert "doesn't exist" in host.log()


def test_start_and_wait_returns_output(host):
    # a wait far longer than the test's own timeout: only an answer at completion passes
    r = start(host, "chain", query="?timeout=3600&pollingInterval=1")
    assert r.status == 200
    assert r.json() == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


def test_start_and_wait_times_out_with_202(host):
    r = start(host, "long_wait", query="?timeout=1&pollingInterval=1")
    assert r.status == 202
    assert set(r.json()) >= {"id", "statusQueryGetUri"}
    # the wait ended without the instance finishing: it still waits for its event
    assert status(host, r.json()["id"]).json()["runtimeStatus"] == "Running"
    host.request("POST", f"{W}/instances/{r.json()['id']}/terminate")


def test_start_and_wait_for_a_failure_returns_the_status(host):
    r = start(host, "broken", query="?timeout=5&pollingInterval=1")
    assert r.status == 200
    doc = r.json()
    assert doc["runtimeStatus"] == "Failed"
    assert doc["output"] == "Orchestrator function 'broken' failed: orchestrator broke"


def test_start_input_decoding(host):
    # raw JSON object (curl): the status shows the object, the orchestrator gets the object
    raw = started(host, "echo", body={"a": 1, "b": [1, 2]})
    doc = finished(host, raw)
    assert doc["input"] == {"a": 1, "b": [1, 2]} and doc["output"] == {"a": 1, "b": [1, 2]}
    # the Python client's form: a JSON string holding JSON text (status shows the string)
    client = started(host, "echo", body=json.dumps({"a": 1}))
    doc = finished(host, client)
    assert doc["input"] == '{"a": 1}' and doc["output"] == {"a": 1}
    # no body: no input
    empty = started(host, "echo")
    doc = finished(host, empty)
    assert doc["input"] is None and doc["output"] is None
    # a body that is not JSON is refused and nothing is created
    instance_id = uid("badbody")
    r = host.request("POST", f"{W}/orchestrators/echo/{instance_id}", b"{nope", JSON)
    assert_error(r, 400, "JSON")
    assert status(host, instance_id).status == 404


@pytest.mark.parametrize("body", [[1, 2], 7])
def test_start_with_array_or_number_body_is_faithful(host, body):
    """Correction 3: Azure passes the parsed body through unchanged, so an array or a number
    reaches the SDK as a non-string `input` and `get_input()` raises there too."""
    instance_id = started(host, "echo", body=body)
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Failed", doc


@pytest.mark.parametrize("timeout", ["abc", "nan", "inf"])
def test_start_with_a_bad_timeout_is_refused_before_starting(host, timeout):
    """The start endpoint validates first: a refused request leaves no instance behind, and a
    timeout that is not a finite number of seconds must not make the request hang."""
    instance_id = uid("tmo")
    try:
        r = host.request("POST", f"{W}/orchestrators/long_wait/{instance_id}?timeout={timeout}",
                         timeout=3)
    except (TimeoutError, urllib.error.URLError):
        pytest.fail(f"?timeout={timeout} made the start request hang")
    finally:
        leftover = status(host, instance_id)
        if leftover.status != 404:
            host.request("POST", f"{W}/instances/{instance_id}/terminate")
    assert_error(r, 400, "timeout")
    assert leftover.status == 404, "the refused start created the instance anyway"


@pytest.mark.parametrize("instance_id", ["order 1", "100%41", "k\u00fcche-\u00fc", "a+b", "a&b=c"])
def test_management_urls_encode_the_instance_id(host, instance_id):
    """The extension escapes the instance id in the URLs it hands out (Uri.EscapeDataString):
    the Location / statusQueryGetUri of an id with a space, a '%' or non-ASCII letters must be a
    valid URL that leads back to that very instance."""
    r = host.request("POST", f"{W}/orchestrators/chain/{urllib.parse.quote(instance_id, safe='')}")
    assert r.status == 202, r
    payload = r.json()
    assert payload["id"] == instance_id
    location = r.headers["location"]
    assert location.isascii() and " " not in location, location
    assert location == payload["statusQueryGetUri"]
    deadline = time.time() + 10
    while True:
        followed = host.request("GET", location)
        assert followed.status in (200, 202), (location, followed)
        assert followed.json()["instanceId"] == instance_id
        if followed.status == 200:
            break
        assert time.time() < deadline
        time.sleep(0.02)
    terminate = payload["terminatePostUri"].replace("{text}", "x")
    assert_error(host.request("POST", terminate), 410)  # the action URLs reach it too


# -- listing -----------------------------------------------------------------------------------

def test_list_instances_with_filters_and_paging(host):
    prefix = uid("list") + "-"
    before = datetime.now(timezone.utc) - timedelta(seconds=2)
    done_ids = [started(host, "chain", f"{prefix}{i}") for i in range(5)]
    waiting = started(host, "long_wait", f"{prefix}w")
    for instance_id in done_ids:
        finished(host, instance_id)
    wait_for_status(host, waiting, ("Running",))
    q = urllib.parse.quote

    def listed(query: str, headers=None):
        r = host.request("GET", f"{W}/instances?instanceIdPrefix={q(prefix)}{query}",
                         headers=headers)
        assert r.status == 200, r
        return r

    everything = listed("").json()
    assert sorted(d["instanceId"] for d in everything) == sorted(done_ids + [waiting])
    assert all(set(d) >= {"name", "instanceId", "runtimeStatus", "input", "output",
                          "customStatus", "createdTime", "lastUpdatedTime"} for d in everything)
    assert all("historyEvents" not in d for d in everything)
    completed = listed("&runtimeStatus=Completed").json()
    assert sorted(d["instanceId"] for d in completed) == sorted(done_ids)
    running = listed("&runtimeStatus=Running,Pending").json()
    assert [d["instanceId"] for d in running] == [waiting]
    both = listed("&runtimeStatus=completed,running").json()  # status names: any case
    assert len(both) == 6
    assert len(listed(f"&createdTimeFrom={q(iso(before))}").json()) == 6
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert listed(f"&createdTimeFrom={q(iso(future))}").json() == []
    assert listed(f"&createdTimeTo={q(iso(before))}").json() == []
    assert len(listed(f"&createdTimeFrom={q(iso(before))}&createdTimeTo={q(iso(future))}"
                      "&runtimeStatus=Completed").json()) == 5
    assert host.request("GET", f"{W}/instances?instanceIdPrefix={uid('none')}").json() == []

    # paging: top + x-ms-continuation-token
    pages, token = [], None
    for _ in range(10):
        r = listed("&top=4", headers={"x-ms-continuation-token": token} if token else None)
        pages.append([d["instanceId"] for d in r.json()])
        token = r.headers.get("x-ms-continuation-token")
        if not token:
            break
    assert [len(p) for p in pages][:2] == [4, 2]
    seen = [i for page in pages for i in page]
    assert len(seen) == len(set(seen)) == 6
    assert set(seen) == set(done_ids + [waiting])
    host.request("POST", f"{W}/instances/{waiting}/terminate")


def test_list_rejects_bad_filters(host):
    assert_error(host.request("GET", f"{W}/instances?runtimeStatus=Finished"), 400, "Finished")
    assert_error(host.request("GET", f"{W}/instances?createdTimeFrom=yesterday"), 400)
    assert_error(host.request("GET", f"{W}/instances?top=-1"), 400, "top")
    assert_error(host.request("DELETE", f"{W}/instances?runtimeStatus=Done"), 400)


def test_list_with_top_zero_does_not_page_forever(host):
    r = host.request("GET", f"{W}/instances?top=0")
    if r.status == 200:
        token = r.headers.get("x-ms-continuation-token")
        assert token is None or token != "0", "top=0 hands out a token for the same empty page"
    else:
        assert_error(r, 400, "top")


def test_show_input_false_keeps_a_null_input(host):
    prefix = uid("noin") + "-"
    instance_id = started(host, "echo", f"{prefix}1", {"secret": 1})
    finished(host, instance_id)
    assert status(host, instance_id).json()["input"] == {"secret": 1}
    doc = status(host, instance_id, "?showInput=false&showHistory=true").json()
    assert "input" in doc and doc["input"] is None
    assert all("Input" not in e for e in doc["historyEvents"])
    assert doc["output"] == {"secret": 1}
    listed = host.request("GET", f"{W}/instances?instanceIdPrefix={prefix}&showInput=false")
    (item,) = listed.json()
    assert "input" in item and item["input"] is None


def test_status_of_unknown_instance(host):
    r = status(host, uid("ghost"))
    assert r.status == 404 and r.body == b""


# -- raising events ----------------------------------------------------------------------------

def test_raise_event_errors(host):
    assert_error(host.request("POST", f"{W}/instances/{uid('ghost')}/raiseEvent/Go", {"x": 1}),
                 404)
    done = started(host, "chain")
    finished(host, done)
    assert_error(host.request("POST", f"{W}/instances/{done}/raiseEvent/Go", {"x": 1}), 410)
    waiting = started(host, "long_wait")
    wait_for_status(host, waiting, ("Running",))
    assert_error(host.request("POST", f"{W}/instances/{waiting}/raiseEvent/Go", "plain words",
                              {"Content-Type": "text/plain"}), 400, "application/json")
    assert_error(host.request("POST", f"{W}/instances/{waiting}/raiseEvent/Go", "{broken",
                              JSON), 400, "Invalid JSON")
    assert host.request("POST", f"{W}/instances/{waiting}/raiseEvent/Go", "Rome", JSON) \
        .status == 400  # bare words are not JSON either
    r = host.request("POST", f"{W}/instances/{waiting}/raiseEvent/Go", json.dumps("Rome"), JSON)
    assert r.status == 202
    # none of the refused requests was delivered (events are consumed in arrival order, so a
    # delivered one would have been the instance's answer and its one EventRaised)
    doc = finished(host, waiting)
    assert doc["output"] == "Hello Rome!"
    assert kinds(doc).count("EventRaised") == 1


# -- terminate / suspend / resume --------------------------------------------------------------

def test_terminate(host):
    instance_id = started(host, "long_wait")
    wait_for_status(host, instance_id, ("Running",))
    r = host.request("POST", f"{W}/instances/{instance_id}/terminate?reason=no%20longer%20needed")
    assert r.status == 202
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Terminated"
    assert doc["output"] == "no longer needed"
    assert kinds(doc)[-1] == "ExecutionTerminated"
    assert doc["historyEvents"][-1]["Input"] == "no longer needed"
    assert status(host, instance_id).status == 200
    assert_error(host.request("POST", f"{W}/instances/{instance_id}/terminate"), 410)
    assert_error(host.request("POST", f"{W}/instances/{instance_id}/raiseEvent/Go", "1", JSON),
                 410)
    assert_error(host.request("POST", f"{W}/instances/{uid('ghost')}/terminate"), 404)


def test_terminate_while_an_activity_runs(devhost_factory, tmp_path):
    flaky = tmp_path / "flaky-term"
    flaky.mkdir()
    host = devhost_factory("patterns", env={"FLAKY_DIR": str(flaky),
                                            "DEVHOST_VERBOSE": "1"}).start()
    instance_id = started(host, "slow_steps", body=json.dumps(uid("term")))
    wait_for_status(host, instance_id, ("Running",))  # the first slow_step is queued/running
    assert host.request("POST", f"{W}/instances/{instance_id}/terminate?reason=stop") \
        .status == 202
    # the activity finishes after the terminate; its (verbose) success line is logged in the
    # same step of the event loop that then drops its result, so any later read sees that
    deadline = time.time() + 20
    while "Executed 'Functions.slow_step' (Succeeded" not in host.log():
        assert time.time() < deadline, "the activity never finished"
        time.sleep(0.02)
    doc = status(host, instance_id, HISTORY).json()
    assert doc["runtimeStatus"] == "Terminated" and doc["output"] == "stop"
    assert "TaskCompleted" not in kinds(doc)


def test_suspend_and_resume(host):
    instance_id = started(host, "long_wait")
    wait_for_status(host, instance_id, ("Running",))
    assert host.request("POST", f"{W}/instances/{instance_id}/suspend?reason=pause").status == 202
    r = status(host, instance_id)
    assert r.status == 202 and r.json()["runtimeStatus"] == "Suspended"
    # suspending twice: Azure's webhook answers 500 (the client's InvalidOperationException)
    r = host.request("POST", f"{W}/instances/{instance_id}/suspend")
    assert r.status == 500 and "Suspended state" in r.json()["ExceptionMessage"]
    r = host.request("POST", f"{W}/instances/{instance_id}/raiseEvent/Go", json.dumps("Lima"), JSON)
    assert r.status == 202
    assert host.request("POST", f"{W}/instances/{instance_id}/resume?reason=go").status == 202
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed" and doc["output"] == "Hello Lima!"
    names = kinds(doc)
    # the event raised while suspended was consumed only after the resume
    assert names.index("ExecutionSuspended") < names.index("ExecutionResumed") \
        < names.index("EventRaised") < names.index("TaskCompleted")
    assert_error(host.request("POST", f"{W}/instances/{instance_id}/resume"), 410)
    assert_error(host.request("POST", f"{W}/instances/{instance_id}/suspend"), 410)


def test_resume_when_running_is_refused(host):
    instance_id = started(host, "long_wait")
    wait_for_status(host, instance_id, ("Running",))
    r = host.request("POST", f"{W}/instances/{instance_id}/resume")
    assert r.status == 500 and "Running state" in r.json()["ExceptionMessage"]
    assert status(host, instance_id).json()["runtimeStatus"] == "Running"
    assert_error(host.request("POST", f"{W}/instances/{uid('ghost')}/suspend"), 404)
    assert_error(host.request("POST", f"{W}/instances/{instance_id}/explode"), 404)
    host.request("POST", f"{W}/instances/{instance_id}/terminate")


def test_suspended_timer_fires_after_resume(host):
    instance_id = started(host, "approval", body="0.8")
    wait_for_status(host, instance_id, ("Running",))
    assert host.request("POST", f"{W}/instances/{instance_id}/suspend").status == 202
    fire_at = next(e["FireAt"] for e in status(host, instance_id, HISTORY).json()["historyEvents"]
                   if e["EventType"] == "TimerCreated")
    due = datetime.fromisoformat(fire_at[:26]).replace(tzinfo=timezone.utc)
    while datetime.now(timezone.utc) <= due:  # let the timer fall due while suspended
        time.sleep(0.05)
    assert host.request("POST", f"{W}/instances/{instance_id}/resume").status == 202
    doc = finished(host, instance_id)
    assert doc["output"] == "timed out"
    names = kinds(doc)
    assert names.index("ExecutionResumed") < names.index("TimerFired")  # fired after resume


# -- rewind ------------------------------------------------------------------------------------

def test_rewind_failed_activity(host):
    instance_id = started(host, "flaky_once", body={"key": uid("rw"), "fail_times": 1})
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Failed"
    assert "Activity function 'flaky' failed: ValueError: attempt 1 failed" in doc["output"]
    assert host.request("POST", f"{W}/instances/{instance_id}/rewind?reason=fixed").status == 202
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == "ok after 2"
    assert "TaskFailed" not in kinds(doc)
    assert kinds(doc).count("TaskCompleted") == 1
    assert kinds(doc).count("ExecutionCompleted") == 1
    assert doc["historyEvents"][-1]["OrchestrationStatus"] == "Completed"
    # rewinding a Completed instance is refused
    assert_error(host.request("POST", f"{W}/instances/{instance_id}/rewind"), 410)
    assert_error(host.request("POST", f"{W}/instances/{uid('ghost')}/rewind"), 404)


def test_rewind_after_exhausted_retries(host):
    instance_id = started(host, "retrying",
                          body={"key": uid("rwr"), "fail_times": 2, "attempts": 2})
    assert finished(host, instance_id)["runtimeStatus"] == "Failed"
    assert host.request("POST", f"{W}/instances/{instance_id}/rewind").status == 202
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed", doc["output"]
    assert doc["output"] == "ok after 3"


def test_rewind_failed_sub_orchestration(host):
    instance_id = started(host, "parent_of_flaky", uid("rwp"),
                          body={"key": uid("rwc"), "fail_times": 1})
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Failed"
    assert doc["output"].startswith("Orchestrator function 'parent_of_flaky' failed: "
                                    "Orchestrator function 'flaky_once' failed: ")
    assert host.request("POST", f"{W}/instances/{instance_id}/rewind").status == 202
    doc = finished(host, instance_id)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == {"child": "ok after 2"}
    child = status(host, f"{instance_id}-kid").json()
    assert child["runtimeStatus"] == "Completed" and child["output"] == "ok after 2"


# -- restart -----------------------------------------------------------------------------------

def test_restart_with_new_instance_id(host):
    instance_id = started(host, "echo", body={"x": 1})
    finished(host, instance_id)
    r = host.request("POST", f"{W}/instances/{instance_id}/restart")
    assert r.status == 202
    new_id = r.json()["id"]
    assert new_id != instance_id
    assert r.headers["location"] == r.json()["statusQueryGetUri"]
    doc = finished(host, new_id)
    assert doc["name"] == "echo" and doc["input"] == {"x": 1} and doc["output"] == {"x": 1}
    assert status(host, instance_id).json()["runtimeStatus"] == "Completed"  # untouched


def test_restart_with_same_instance_id(host):
    instance_id = started(host, "echo", uid("rs"), {"y": 2})
    first = finished(host, instance_id)
    r = host.request("POST", f"{W}/instances/{instance_id}/restart?restartWithNewInstanceId=false")
    assert r.status == 202 and r.json()["id"] == instance_id
    doc = finished(host, instance_id)
    assert doc["output"] == {"y": 2}
    assert kinds(doc) == kinds(first)  # a fresh history, not an appended one
    running = started(host, "long_wait")
    wait_for_status(host, running, ("Running",))
    assert_error(host.request("POST", f"{W}/instances/{running}/restart"
                                      "?restartWithNewInstanceId=false"), 409)
    assert_error(host.request("POST", f"{W}/instances/{uid('ghost')}/restart"), 404)
    host.request("POST", f"{W}/instances/{running}/terminate")


# -- purge -------------------------------------------------------------------------------------

def test_purge_single_instance(host):
    instance_id = started(host, "chain")
    finished(host, instance_id)
    r = host.request("DELETE", f"{W}/instances/{instance_id}")
    assert r.status == 200 and r.json() == {"instancesDeleted": 1}
    assert status(host, instance_id).status == 404
    assert host.request("DELETE", f"{W}/instances/{instance_id}").status == 404


def test_purge_by_filter(devhost_factory, tmp_path):
    flaky = tmp_path / "flaky-purge"
    flaky.mkdir()
    host = devhost_factory("patterns", env={"FLAKY_DIR": str(flaky)}).start()
    before = datetime.now(timezone.utc) - timedelta(seconds=2)
    done = [started(host, "chain") for _ in range(3)]
    failed = started(host, "broken")
    waiting = started(host, "long_wait")
    for instance_id in done + [failed]:
        finished(host, instance_id)
    wait_for_status(host, waiting, ("Running",))
    q = urllib.parse.quote
    r = host.request("DELETE", f"{W}/instances?runtimeStatus=Completed"
                               f"&createdTimeFrom={q(iso(before))}")
    assert r.status == 200 and r.json() == {"instancesDeleted": 3}
    remaining = {d["instanceId"] for d in host.request("GET", f"{W}/instances").json()}
    assert remaining == {failed, waiting}
    r = host.request("DELETE", f"{W}/instances?runtimeStatus=Completed")
    assert r.status == 404 and r.json() == {"instancesDeleted": 0}
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    r = host.request("DELETE", f"{W}/instances?createdTimeFrom={q(iso(future))}")
    assert r.status == 404
    r = host.request("DELETE", f"{W}/instances?runtimeStatus=Failed,Running")
    assert r.json() == {"instancesDeleted": 2}
    assert host.request("GET", f"{W}/instances").json() == []


# -- entities ----------------------------------------------------------------------------------

def wait_entity(host, path: str, expected, timeout: float = 10):
    deadline = time.time() + timeout
    while True:
        r = host.request("GET", f"{W}/entities/{path}")
        if (r.status, r.json() if r.status == 200 else None) == expected:
            return
        assert time.time() < deadline, f"{path}: {r} != {expected}"
        time.sleep(0.02)


def test_entity_signal_and_read(host):
    key = uid("ent")
    # the client's wire form: a JSON string holding the JSON text (§4.3)
    assert host.request("POST", f"{W}/entities/Counter/{key}?op=add", json.dumps("5"), JSON) \
        .status == 202
    wait_entity(host, f"counter/{key}", (200, 5))
    assert host.request("POST", f"{W}/entities/counter/{key}?op=add", json.dumps("3"), JSON) \
        .status == 202
    wait_entity(host, f"counter/{key}", (200, 8))
    assert host.request("POST", f"{W}/entities/counter/{key}?op=reset").status == 202
    wait_entity(host, f"counter/{key}", (200, 0))
    r = host.request("GET", f"{W}/entities/counter")
    assert {"entityId": {"name": "counter", "key": key}, "state": 0}.items() <= \
        next(e for e in r.json() if e["entityId"]["key"] == key).items()


def test_entity_text_body_is_passed_as_a_string(host):
    """Non-JSON content types pass the body as a plain string (§5.1): the operation input is
    that string, which the SDK's get_input() then decodes as JSON text."""
    key = uid("txt")
    r = host.request("POST", f"{W}/entities/Register/{key}?op=set", '{"b": [1, 2]}',
                     {"Content-Type": "text/plain"})
    assert r.status == 202
    wait_entity(host, f"register/{key}", (200, {"b": [1, 2]}))


def test_entity_delete(host):
    key = uid("del")
    host.request("POST", f"{W}/entities/register/{key}?op=set", json.dumps('{"a": 1}'), JSON)
    wait_entity(host, f"register/{key}", (200, {"a": 1}))
    assert host.request("DELETE", f"{W}/entities/register/{key}").status == 202
    wait_entity(host, f"register/{key}", (404, None))
    assert all(e["entityId"]["key"] != key
               for e in host.request("GET", f"{W}/entities/register").json())


def test_entity_errors(host):
    body = assert_error(host.request("POST", f"{W}/entities/nope/k?op=add", "1", JSON), 404,
                        "'nope' doesn't exist")
    assert "'Counter'" in body["Message"]
    assert_error(host.request("POST", f"{W}/entities/counter/k"), 400, "op")
    assert_error(host.request("POST", f"{W}/entities/counter/k?op=add", "{bad", JSON), 400)
    assert host.request("GET", f"{W}/entities/counter/{uid('ghost')}").status == 404


# -- host.json functionTimeout ----------------------------------------------------------------

def test_function_timeout_applies_to_activities(devhost_factory):
    host = devhost_factory("timeouts").start()
    r = host.request("POST", f"{W}/orchestrators/naps/naps-1")
    assert r.status == 202
    doc = finished(host, "naps-1")
    assert doc["runtimeStatus"] == "Completed", doc["output"]
    fast_sync, slow_sync, fast_async, slow_async = doc["output"]
    assert fast_sync == "slept 0.05" and fast_async == "slept 0.05"
    assert slow_sync.startswith("Activity function 'sleepy' failed: TimeoutError")
    assert slow_async.startswith("Activity function 'sleepy_async' failed: TimeoutError")
    failed = [e for e in doc["historyEvents"] if e["EventType"] == "TaskFailed"]
    assert len(failed) == 2
    # a TimeoutError is raised only by the functionTimeout expiring (the activities themselves
    # never raise); how long it took is the machine's business, not the test's


# -- keys --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys_app(tmp_path_factory):
    """A copy of tests/apps/keys with its local.settings.json (git ignores those files)."""
    app = tmp_path_factory.mktemp("keys") / "app"
    shutil.copytree(APPS / "keys", app)
    (app / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "FUNCTIONS_WORKER_RUNTIME": "python", "DEVHOST_FUNCTION_KEYS": "k1, k2",
        "DEVHOST_MASTER_KEY": "m1", "KEYS_HUB_NAME": "KeysHub"}}))
    return app


@pytest.fixture(scope="module")
def keyed(keys_app):
    process = DevhostProcess(keys_app, keys_app.parent / "hub.sqlite")
    process.start()
    yield process
    process.kill()


def test_function_keys(keyed):
    assert keyed.request("GET", "/secret").status == 401
    assert_error(keyed.request("GET", "/secret?code=wrong"), 401)
    for query, headers in (("?code=k1", None), ("?code=k2", None), ("", {"x-functions-key": "k1"}),
                           ("?code=m1", None)):  # the master key opens function routes too
        r = keyed.request("GET", "/secret" + query, headers=headers)
        assert (r.status, r.text) == (200, "secret"), (query, headers)
    assert keyed.request("GET", "/open").text == "open"  # anonymous
    assert keyed.request("GET", "/admin-only?code=k1").status == 401
    assert keyed.request("GET", "/admin-only?code=m1").text == "admin"
    # routePrefix "" in this app's host.json
    assert keyed.request("GET", "/api/open").status == 404


def test_webhooks_need_the_master_key(keyed):
    r = keyed.request("GET", f"{W}/instances")
    assert_error(r, 401, "master key")
    assert keyed.request("GET", f"{W}/instances?code=k1").status == 401  # a function key is not
    assert keyed.request("GET", f"{W}/instances?code=m1").status == 200
    assert keyed.request("GET", f"{W}/instances", headers={"x-functions-key": "m1"}).status == 200
    assert_error(keyed.request("POST", f"{W}/orchestrators/greet"), 401)
    r = keyed.request("POST", f"{W}/orchestrators/greet?code=m1", json.dumps(json.dumps("Rome")),
                      JSON)
    assert r.status == 202
    # the URLs handed out carry the key, so they work as given
    assert "code=m1" in r.json()["statusQueryGetUri"]
    assert "taskHub=KeysHub" in r.json()["statusQueryGetUri"]
    deadline = time.time() + 10
    while (doc := keyed.request("GET", r.json()["statusQueryGetUri"]).json())["runtimeStatus"] \
            != "Completed":
        assert time.time() < deadline, doc
        time.sleep(0.02)
    assert doc["output"] == "Hello Rome!"


def test_sdk_client_works_with_keys(keyed):
    # every SDK client call (start_new, get_status) goes over the rpc base URL without a key
    r = keyed.request("POST", "/run/greet")
    assert r.status == 200, r
    assert r.text == "Hello Oslo!"  # the SDK sends string outputs unquoted (§5.3)
    r = keyed.request("POST", "/start/greet")
    assert r.status == 202
    assert "code=m1" in r.headers["location"]
    assert keyed.request("GET", "/admin/host/status").json()["hub"] == "KeysHub"


def test_environment_overrides_local_settings(keys_app, tmp_path):
    process = DevhostProcess(keys_app, tmp_path / "hub.sqlite",
                             env={"DEVHOST_MASTER_KEY": "m2", "KEYS_HUB_NAME": "OtherHub"})
    try:
        process.start()
        assert process.request("GET", f"{W}/instances?code=m1").status == 401
        assert process.request("GET", f"{W}/instances?code=m2").status == 200
        assert process.request("GET", "/secret?code=k1").status == 200
        assert process.request("GET", "/admin/host/status").json()["hub"] == "OtherHub"
    finally:
        process.kill()
