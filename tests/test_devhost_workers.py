"""FUNCTIONS_WORKER_PROCESS_COUNT: devhost's extra Python worker processes (devhost/workers.py).

Where invocations run (pids), that N=2 leaves the same histories, outputs and failure details
as N=1 (activities only, and with DEVHOST_WORKER_HANDLES=1 episodes and batches too), what a
worker's or devhost's SIGKILL does, and the setting's validation.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import APPS, ROOT, DevhostProcess, wait_for_status

WEBHOOKS = "/runtime/webhooks/durabletask"
HISTORY = "?showHistory=true&showHistoryOutput=true"
pytestmark = pytest.mark.timeout(120)


def workers_host(factory, tmp_path, count: str, handles: bool = False) -> DevhostProcess:
    env = {"FUNCTIONS_WORKER_PROCESS_COUNT": count, "MARKS_DIR": str(tmp_path),
           "DEVHOST_WORKER_HANDLES": "1" if handles else "0"}
    return factory("workers", env=env).start()


def start(host, name: str, payload=None, instance_id: str | None = None) -> str:
    instance_id = instance_id or f"{name}-{uuid.uuid4().hex[:8]}"
    r = host.request("POST", f"{WEBHOOKS}/orchestrators/{name}/{instance_id}",
                     None if payload is None else json.dumps(json.dumps(payload)),
                     {"Content-Type": "application/json"})  # as the Python client encodes it
    assert r.status == 202, r
    return instance_id


def run(host, name: str, payload=None, instance_id: str | None = None) -> dict:
    return wait_for_status(host, start(host, name, payload, instance_id), timeout=60,
                           query=HISTORY)


def worker_pids(host) -> list[int]:
    """The pids devhost's start-up line lists (`... ready (...): pids 123, 456`)."""
    match = re.search(r"Python worker processes ready \(.*\): pids ([\d, ]+)", host.log())
    assert match, host.log()
    return [int(p) for p in match.group(1).split(",")]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], within: float = 15) -> list[int]:
    deadline = time.time() + within
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


# -- where things run ----------------------------------------------------------------------

def test_activities_run_in_a_worker_process(devhost_factory, tmp_path):
    host = workers_host(devhost_factory, tmp_path, "2")
    http_pid = host.request("GET", "/api/pid").json()
    assert http_pid == host.proc.pid  # HTTP triggers stay in devhost's own process
    [worker] = worker_pids(host)
    doc = run(host, "pids", 6)
    assert doc["runtimeStatus"] == "Completed"
    assert sorted(r["n"] for r in doc["output"]) == list(range(6))
    assert {r["pid"] for r in doc["output"]} == {worker}  # sync and async activities
    # the episode itself ran in devhost (DEVHOST_WORKER_HANDLES=0)
    assert run(host, "orchestrator_pid")["output"] == host.proc.pid
    # the activity's durable client reaches devhost's rpc base from the worker
    doc = run(host, "asks_own_status")
    assert doc["output"] == {"status": "Running", "pid": worker}


def test_handles_switch_runs_episodes_in_workers_too(devhost_factory, tmp_path):
    host = workers_host(devhost_factory, tmp_path, "3", handles=True)
    workers = worker_pids(host)
    assert len(workers) == 2
    assert run(host, "orchestrator_pid")["output"] in workers
    doc = run(host, "pids", 10)
    assert {r["pid"] for r in doc["output"]} <= set(workers)


# -- N=2 records what N=1 records ----------------------------------------------------------

_VOLATILE = {"Timestamp", "ScheduledTime", "FireAt", "createdTime", "lastUpdatedTime"}
_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalised(doc: dict) -> dict:
    """The status document without clocks and generated ids; history as a sorted multiset
    (parallel completions arrive in any order, with one process or several)."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return _ID.sub("<id>", value) if isinstance(value, str) else value
    doc = clean(doc)
    doc["historyEvents"] = sorted(json.dumps(e, sort_keys=True) for e in doc["historyEvents"])
    return doc


CASES = [  # (orchestrator, input, instance id suffix): each run once on every host
    ("fan_out", 10, "fan"),
    ("retrying", {"key": "r1", "fail_times": 2, "attempts": 3}, "retry-ok"),
    ("retrying", {"key": "r2", "fail_times": 5, "attempts": 2}, "retry-fails"),
    ("parallel_retries", "pr", "parallel"),
    ("counting", "c1", "entity"),
    ("parent", None, "sub"),
    ("parent_of_failing", None, "sub-fails"),
    ("broken", None, "broken"),
]


def patterns_host(factory, tmp_path, count: str, handles: bool = False) -> DevhostProcess:
    flaky = tmp_path / f"flaky-{count}-{handles}"
    flaky.mkdir()
    return factory("patterns", env={"FLAKY_DIR": str(flaky),
                                    "FUNCTIONS_WORKER_PROCESS_COUNT": count,
                                    "DEVHOST_WORKER_HANDLES": "1" if handles else "0"}).start()


def outcomes(host) -> dict:
    ids = {suffix: start(host, name, payload, f"same-{suffix}") for name, payload, suffix in CASES}
    docs = {suffix: wait_for_status(host, i, timeout=60, query=HISTORY)
            for suffix, i in ids.items()}
    return {suffix: normalised(doc) for suffix, doc in docs.items()}


@pytest.mark.parametrize("handles", [False, True], ids=["activities", "activities+handles"])
def test_two_workers_record_what_one_process_records(devhost_factory, tmp_path, handles):
    one = outcomes(patterns_host(devhost_factory, tmp_path, "1"))
    two_host = patterns_host(devhost_factory, tmp_path, "2", handles)
    two = outcomes(two_host)
    assert set(one) == set(two)
    for suffix in one:
        assert two[suffix] == one[suffix], suffix
    # the failure details came back from the worker: reason and the user's traceback
    failed = [json.loads(e) for e in two["retry-fails"]["historyEvents"]
              if '"TaskFailed"' in e]
    assert failed and failed[-1]["Reason"] == \
        "Activity function 'flaky' failed: ValueError: attempt 2 failed"
    assert 'function_app.py", line' in failed[-1]["Details"]
    assert "raise ValueError" in failed[-1]["Details"]
    assert "devhost/" not in failed[-1]["Details"]
    assert one["fan"]["output"] == 90 and one["entity"]["output"]["final"] == 31
    # and devhost still writes the host's console line for the failed invocation
    assert "Executed 'Functions.flaky' (Failed, Id=" in two_host.log()
    assert "Exception: ValueError: attempt 2 failed" in two_host.log()


# -- failures ------------------------------------------------------------------------------

def test_worker_killed_mid_activity_reruns_it(devhost_factory, tmp_path):
    host = workers_host(devhost_factory, tmp_path, "2")
    [worker] = worker_pids(host)
    key = uuid.uuid4().hex[:8]
    instance_id = start(host, "kill_me", key)
    marks = tmp_path / f"killable-{key}"
    deadline = time.time() + 30
    while time.time() < deadline and not (marks.exists() and marks.read_text().strip()):
        time.sleep(0.05)
    assert marks.read_text().split() == [str(worker)]  # first run, in the worker
    os.kill(worker, signal.SIGKILL)
    doc = wait_for_status(host, instance_id, timeout=60, query=HISTORY)
    assert doc["runtimeStatus"] == "Completed", doc
    runs = marks.read_text().split()
    assert len(runs) == 2  # ran again, once
    assert doc["output"]["runs"] == 2
    assert doc["output"]["pid"] not in (worker, host.proc.pid)  # a new worker process
    assert len([e for e in doc["historyEvents"] if e["EventType"] == "TaskCompleted"]) == 1
    assert "starting it again" in host.log()
    # the restarted worker takes new work
    assert {r["pid"] for r in run(host, "pids", 4)["output"]} == {doc["output"]["pid"]}


def test_sigkill_of_devhost_leaves_no_worker(devhost_factory, tmp_path):
    host = workers_host(devhost_factory, tmp_path, "3")
    workers = worker_pids(host)
    assert len(workers) == 2 and all(alive(p) for p in workers)
    start(host, "kill_me", "busy")  # one worker busy in a sync activity (a thread sleeping)
    time.sleep(0.5)
    host.kill()
    assert wait_gone(workers) == []


def test_clean_stop_stops_workers_and_keeps_in_flight_work(devhost_factory, tmp_path):
    host = workers_host(devhost_factory, tmp_path, "2")
    workers = worker_pids(host)
    instance_id = start(host, "kill_me", "stop")  # a sync activity busy in the worker
    marks = tmp_path / "killable-stop"
    deadline = time.time() + 30
    while time.time() < deadline and not marks.exists():
        time.sleep(0.05)
    assert host.stop() == 0  # Ctrl-C: devhost exits by itself (stop() SIGKILLs after 20 s)
    assert wait_gone(workers) == []
    assert "(Failed" not in host.log()  # the activity was not reported as failed
    # its row stayed queued: the next start runs it again and the orchestration completes
    host.start()
    doc = wait_for_status(host, instance_id, timeout=60)
    assert doc["runtimeStatus"] == "Completed" and doc["output"]["runs"] == 2


@pytest.mark.parametrize("value", ["0", "11", "two", "1.5"])
def test_bad_worker_count_is_a_clear_start_up_error(tmp_path, value):
    env = {**os.environ, "FUNCTIONS_WORKER_PROCESS_COUNT": value}
    out = subprocess.run([sys.executable, "-m", "devhost", "start", "--app",
                          str(APPS / "workers"), "--port", "0", "--db",
                          str(tmp_path / "hub.sqlite")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"FUNCTIONS_WORKER_PROCESS_COUNT={value!r} is invalid" in out.stderr
    assert "1 to 10" in out.stderr


def test_worker_count_setting_values(tmp_path):
    from devhost.config import load_host_config
    from devhost.errors import ConfigError
    assert load_host_config(tmp_path, {}).worker_process_count == 1
    assert load_host_config(tmp_path, {"FUNCTIONS_WORKER_PROCESS_COUNT": "10"}
                            ).worker_process_count == 10
    with pytest.raises(ConfigError, match="FUNCTIONS_WORKER_PROCESS_COUNT"):
        load_host_config(tmp_path, {"FUNCTIONS_WORKER_PROCESS_COUNT": "-1"})
