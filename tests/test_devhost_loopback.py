"""devhost answers the SDK client's get_status, read_entity_state, start_new and the start
webhook with `timeout` in-process
(devhost/loopback.py): the app must see exactly what the same calls over HTTP return."""
import json
import time
from urllib.parse import urlencode

import pytest

from conftest import wait_for_status

WEBHOOKS = "/runtime/webhooks/durabletask"


@pytest.fixture
def host(devhost_factory):
    return devhost_factory("loopback").start()


def both(host, op: str, **params) -> dict:
    r = host.request("GET", f"/api/compare/{op}?{urlencode(params)}")
    assert r.status == 200, r
    answers = r.json()
    assert answers["in_process"] == answers["over_http"], answers
    return answers["in_process"]


def test_start_new_starts_the_same_instance_either_way(host):
    started = host.request("GET", "/api/compare/start?" + urlencode(
        {"name": "hello", "id": "greet", "input": json.dumps(7)})).json()
    assert started == {"in_process": {"id": "greet-in"}, "over_http": {"id": "greet-http"}}
    outputs = [wait_for_status(host, i)["output"] for i in ("greet-in", "greet-http")]
    assert outputs == ["hello 7", "hello 7"], started


def test_start_new_errors_are_the_same_either_way(host):
    unknown = both(host, "start", name="nope")
    assert "error" in unknown and "nope" in unknown["error"]
    r = host.request("POST", f"{WEBHOOKS}/orchestrators/waits/busy")
    assert r.status == 202, r
    wait_for_status(host, "busy", ("Running",))
    conflict = both(host, "start", name="waits", id="busy", same="1")
    assert "error" in conflict and "busy" in conflict["error"]


def test_start_and_wait_answers_the_same_either_way(host):
    done = both(host, "startwait", name="relay", id="sw", input=json.dumps("go"), timeout="30")
    assert done == [200, "GO"], done
    failed = both(host, "startwait", name="fails", id="sf", input=json.dumps("luck"),
                  timeout="30")
    assert failed[0] == 200 and failed[1]["runtimeStatus"] == "Failed", failed
    assert "no luck" in json.dumps(failed[1]["output"]), failed
    pending = both(host, "startwait", name="waits", id="sp", timeout="0.2")
    assert pending[0] == 202 and pending[1]["id"] == "sp", pending
    assert "statusQueryGetUri" in pending[1], pending
    bad = both(host, "startwait", name="hello", id="sb", timeout="soon")
    assert bad[0] == 400, bad
    assert host.request("GET", f"{WEBHOOKS}/instances/sb-in").status == 404  # nothing started


def test_get_status_is_the_same_either_way(host):
    r = host.request("POST", f"{WEBHOOKS}/orchestrators/hello/done",
                     json.dumps(json.dumps("x")))  # the Python client's input encoding
    assert r.status == 202, r
    wait_for_status(host, "done")
    status = both(host, "status", id="done")
    assert status["runtimeStatus"] == "Completed" and status["output"] == "hello x", json.dumps(status)
    r = host.request("POST", f"{WEBHOOKS}/orchestrators/waits/running")
    wait_for_status(host, "running", ("Running",))
    assert both(host, "status", id="running")["runtimeStatus"] == "Running"
    missing = both(host, "status", id="never-started")
    assert not missing or missing.get("runtimeStatus") is None


def test_read_entity_state_is_the_same_either_way(host):
    r = host.request("POST", f"{WEBHOOKS}/entities/counter/k?op=add", json.dumps(5))
    assert r.status == 202, r
    deadline = time.time() + 30
    while host.request("GET", f"{WEBHOOKS}/entities/counter/k").status != 200:
        assert time.time() < deadline, "the signal was never processed"
        time.sleep(0.02)
    assert both(host, "entity", name="counter", key="k") == {"exists": True, "state": 5}
    assert both(host, "entity", name="counter", key="nobody") == {"exists": False,
                                                                  "state": None}


def test_polling_without_a_sleep_does_not_starve_the_orchestration(host):
    r = host.request("POST", "/api/busy/spin")
    assert r.status == 200, r
    assert r.json()["output"] == "BUSY"
