"""Crash safety and start-up failures of devhost.

Crash tests SIGKILL a real devhost at several points of a running orchestration and start a new
process on the same SQLite file: the instance must complete with the right output, its history
must record every task exactly once and entity state must count every step exactly once.
Activities may run more than once (at-least-once): the trace file of `slow_step` shows that.
Start-up tests check that unusable databases and apps end the process with one readable line.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import APPS, ROOT, free_port, wait_for_status

W = "/runtime/webhooks/durabletask"
JSON = {"Content-Type": "application/json"}
HISTORY = "?showHistory=true&showHistoryOutput=true"
DONE = ("Completed", "Failed", "Terminated")


# -- helpers ---------------------------------------------------------------------------------

class Hub:
    """One task hub (SQLite file + FLAKY_DIR) that successive devhost processes open."""

    def __init__(self, factory, tmp_path: Path):
        self.factory = factory
        self.flaky = tmp_path / "flaky"
        self.flaky.mkdir()
        self.db = tmp_path / "crash.sqlite"
        self.host = None

    def start(self):
        self.host = self.factory("patterns", env={"FLAKY_DIR": str(self.flaky)}, db=self.db)
        return self.host.start()

    def trace(self, key: str) -> list[int]:
        path = self.flaky / f"slow-{key}"
        return [int(x) for x in path.read_text().split()] if path.exists() else []


def wait_until(predicate, timeout: float = 20, interval: float = 0.005):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached"
        time.sleep(interval)


def raw_history(db: Path, instance_id: str) -> list[dict]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return [json.loads(r[0]) for r in con.execute(
            "SELECT event FROM history WHERE instance_id=? ORDER BY seq", (instance_id,))]
    finally:
        con.close()


def start_slow_steps(host, key: str) -> str:
    r = host.request("POST", f"{W}/orchestrators/slow_steps/crash-{key}", json.dumps(json.dumps(key)),
                     JSON)
    assert r.status == 202, r
    return r.json()["id"]


def assert_slow_steps_exactly_once(hub: Hub, host, instance_id: str, key: str) -> dict:
    doc = wait_for_status(host, instance_id, DONE, timeout=30, query=HISTORY)
    assert doc["runtimeStatus"] == "Completed", doc["output"]
    assert doc["output"] == {"results": [f"step {i}" for i in range(5)], "total": 5}
    events = doc["historyEvents"]
    completed = [e for e in events if e["EventType"] == "TaskCompleted"]
    assert len(completed) == 5
    assert [json.loads(e["Input"])["i"] for e in completed] == [0, 1, 2, 3, 4]
    assert sum(e["EventType"] == "ExecutionStarted" for e in events) == 1
    assert sum(e["EventType"] == "ExecutionCompleted" for e in events) == 1
    sent = [e for e in events if e["EventType"] == "EventSent"]
    answers = [e for e in events if e["EventType"] == "EventRaised"]
    assert len(sent) == 6 and len(answers) == 6  # 5 adds + 1 get, each answered once
    request_ids = [json.loads(e["Input"])["id"] for e in sent]
    assert len(set(request_ids)) == 6
    assert sorted(e["Name"] for e in answers) == sorted(request_ids)

    raw = raw_history(hub.db, instance_id)
    scheduled = [e["EventId"] for e in raw if e["EventType"] == 4]
    done = [e["TaskScheduledId"] for e in raw if e["EventType"] == 5]
    assert len(scheduled) == len(set(scheduled)) == 5, scheduled
    assert len(done) == len(set(done)) == 5, done
    assert set(done) == set(scheduled)
    all_ids = [e["EventId"] for e in raw if e["EventType"] in (4, 7, 10, 14)]
    assert len(all_ids) == len(set(all_ids)), all_ids

    # the entity counted every step once, even where the activity ran twice
    r = host.request("GET", f"{W}/entities/counter/{key}")
    assert r.status == 200 and r.json() == 5
    trace = Counter(hub.trace(key))
    assert set(trace) == {0, 1, 2, 3, 4}  # every step ran at least once
    return doc


# -- crash recovery ----------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_sigkill_at_several_points_then_restart(devhost_factory, tmp_path):
    hub = Hub(devhost_factory, tmp_path)
    key = "kill-points"
    host = hub.start()
    instance_id = start_slow_steps(host, key)
    kills = []
    # kill points: as soon as step 0's trace appears (its completion may not be committed yet),
    # in the middle of step 2's sleep, and as soon as step 3's trace appears
    for distinct, pause in ((1, 0.0), (2, 0.15), (4, 0.0)):
        wait_until(lambda: len(set(hub.trace(key))) >= distinct)
        time.sleep(pause)
        host.kill()
        kills.append(sorted(set(hub.trace(key))))
        con = sqlite3.connect(hub.db)
        stored = con.execute("SELECT status FROM instances WHERE instance_id=?",
                             (instance_id,)).fetchone()[0]
        con.close()
        assert stored in ("Pending", "Running"), stored  # the crash did hit a running instance
        host = hub.start()
    assert all(len(k) < 5 for k in kills), kills
    doc = assert_slow_steps_exactly_once(hub, host, instance_id, key)
    assert doc["historyEvents"][-1]["OrchestrationStatus"] == "Completed"


@pytest.mark.timeout(60)
def test_sigkill_immediately_after_start(devhost_factory, tmp_path):
    hub = Hub(devhost_factory, tmp_path)
    key = "kill-early"
    host = hub.start()
    instance_id = start_slow_steps(host, key)
    host.kill()  # probably before the first episode committed
    host = hub.start()
    assert_slow_steps_exactly_once(hub, host, instance_id, key)


def stored_status(db: Path, instance_id: str) -> tuple[str | None, int]:
    """(status, number of queued activity rows) straight from the task hub file."""
    con = sqlite3.connect(db, timeout=10)
    try:
        row = con.execute("SELECT status FROM instances WHERE instance_id=?",
                          (instance_id,)).fetchone()
        queued = con.execute("SELECT COUNT(*) FROM activities WHERE instance_id=?",
                             (instance_id,)).fetchone()[0]
    finally:
        con.close()
    return (row[0] if row else None), queued


@pytest.mark.timeout(60)
def test_sigkill_during_fan_out(devhost_factory, tmp_path):
    hub = Hub(devhost_factory, tmp_path)
    host = hub.start()
    count = 600
    r = host.request("POST", f"{W}/orchestrators/fan_out/crash-fan", json.dumps(str(count)),
                     JSON)
    assert r.status == 202
    wait_until(lambda: stored_status(hub.db, "crash-fan")[1] > 0)  # the fan-out committed
    time.sleep(0.02)
    host.kill()
    status, queued = stored_status(hub.db, "crash-fan")
    assert status == "Running" and queued > 0, (status, queued)  # killed mid fan-in
    host = hub.start()
    doc = wait_for_status(host, "crash-fan", DONE, timeout=60, query=HISTORY)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == sum(2 * i for i in range(count))
    completed = [e for e in doc["historyEvents"] if e["EventType"] == "TaskCompleted"]
    assert sorted(int(e["Input"]) for e in completed) == list(range(count))
    raw = raw_history(hub.db, "crash-fan")
    scheduled = [e["EventId"] for e in raw if e["EventType"] == 4]
    done = [e["TaskScheduledId"] for e in raw if e["EventType"] == 5]
    assert sorted(scheduled) == list(range(count))
    assert sorted(done) == list(range(count))


@pytest.mark.timeout(60)
def test_timer_and_event_survive_a_crash(devhost_factory, tmp_path):
    hub = Hub(devhost_factory, tmp_path)
    host = hub.start()
    for instance_id, timeout in (("timer-due", "0.8"), ("timer-waits", "30")):
        r = host.request("POST", f"{W}/orchestrators/approval/{instance_id}", json.dumps(timeout),
                         JSON)
        assert r.status == 202
    for instance_id in ("timer-due", "timer-waits"):
        wait_for_status(host, instance_id, ("Running",))
    host.kill()
    fire_at = next(e["FireAt"] for e in raw_history(hub.db, "timer-due")
                   if e["EventType"] == 10)  # TimerCreated
    due = datetime.fromisoformat(fire_at[:26]).replace(tzinfo=timezone.utc)
    while datetime.now(timezone.utc) <= due:  # timer-due's timer falls due while none runs
        time.sleep(0.05)
    host = hub.start()
    assert wait_for_status(host, "timer-due", DONE)["output"] == "timed out"
    # timer-waits' 30 s timer has not fired: the event decides it (else "timed out")
    r = host.request("POST", f"{W}/instances/timer-waits/raiseEvent/Approval", {"ok": 1})
    assert r.status == 202
    assert wait_for_status(host, "timer-waits", DONE)["output"] == {"approved": {"ok": 1}}


@pytest.mark.timeout(60)
def test_sigint_mid_run_then_restart(devhost_factory, tmp_path):
    hub = Hub(devhost_factory, tmp_path)
    key = "sigint"
    host = hub.start()
    instance_id = start_slow_steps(host, key)
    wait_until(lambda: len(set(hub.trace(key))) >= 2)
    assert host.stop() == 0  # exited by itself (stop() kills, giving -9, if it hangs)
    assert "stopping" in host.log()
    assert "Traceback" not in host.log()
    assert len(set(hub.trace(key))) < 5
    host = hub.start()
    assert_slow_steps_exactly_once(hub, host, instance_id, key)


# -- start-up failures -------------------------------------------------------------------------

def run_devhost(app: Path, db: Path, port: int | None = None, timeout: float = 30):
    """Run `devhost start` expecting it to exit by itself; (returncode, combined output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "devhost", "start", "--app", str(app), "--port",
         str(port or free_port()), "--db", str(db)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, proc.stderr


def assert_readable_failure(code: int, output: str, stderr: str, *fragments: str) -> str:
    assert code not in (0, None), output
    assert "Traceback" not in output, output
    lines = [line for line in stderr.splitlines() if line.startswith("devhost:")]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.timeout(60)
def test_corrupt_database(tmp_path):
    db = tmp_path / "corrupt.sqlite"
    garbage = b"\x00\xffthis is not a sqlite database\x13\x37" * 200
    db.write_bytes(garbage)
    code, output, stderr = run_devhost(APPS / "patterns", db)
    assert_readable_failure(code, output, stderr, "cannot open the task hub database", str(db))
    assert db.read_bytes() == garbage  # nothing was overwritten


@pytest.mark.timeout(60)
def test_database_from_a_newer_devhost(tmp_path):
    db = tmp_path / "newer.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    con.commit()
    con.close()
    code, output, stderr = run_devhost(APPS / "patterns", db)
    assert_readable_failure(code, output, stderr, "schema version 999")
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    con.close()
    assert tables == {"meta"} and version == "999"  # left exactly as it was


@pytest.mark.timeout(60)
def test_app_that_fails_to_import(tmp_path):
    code, output, stderr = run_devhost(APPS / "broken_import", tmp_path / "hub.sqlite")
    line = assert_readable_failure(
        code, output, stderr, "function_app.py",
        "RuntimeError: cannot configure the app: missing setting 'north'-db")
    assert "line 7" in line  # where in the app it failed


@pytest.mark.timeout(60)
def test_missing_app_folder(tmp_path):
    missing = tmp_path / "no" / "such" / "app"
    code, output, stderr = run_devhost(missing, tmp_path / "hub.sqlite")
    assert_readable_failure(code, output, stderr, str(missing), "function_app.py")


@pytest.mark.timeout(60)
def test_invalid_host_json(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "host.json").write_text('{"version": "2.0", "extensions": ')
    (app / "function_app.py").write_text("import azure.functions as func\n"
                                         "app = func.FunctionApp()\n")
    code, output, stderr = run_devhost(app, tmp_path / "hub.sqlite")
    assert_readable_failure(code, output, stderr, "host.json", "not valid JSON")


@pytest.mark.timeout(60)
def test_database_path_that_cannot_be_created(tmp_path):
    """--db below a regular file: the message must be about the database, not the port."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    db = blocker / "hub.sqlite"
    code, output, stderr = run_devhost(APPS / "patterns", db)
    line = assert_readable_failure(code, output, stderr, str(db))
    assert "cannot listen" not in line


@pytest.mark.timeout(60)
def test_port_in_use(devhost_factory, tmp_path):
    first = devhost_factory("patterns", env={"FLAKY_DIR": str(tmp_path)}).start()
    code, output, stderr = run_devhost(APPS / "patterns", tmp_path / "other.sqlite",
                                       port=first.port)
    assert_readable_failure(code, output, stderr, "cannot listen", str(first.port))
    assert first.request("GET", "/admin/host/status").status == 200


def test_a_second_devhost_on_the_same_task_hub_is_refused(devhost_factory, tmp_path):
    first = devhost_factory("patterns", db=tmp_path / "shared.sqlite").start()
    second = devhost_factory("patterns", db=tmp_path / "shared.sqlite")
    with pytest.raises(RuntimeError) as refused:
        second.start()
    assert "is in use by devhost (pid" in str(refused.value)
    assert "Traceback" not in str(refused.value)
    first.kill()  # the lock dies with the process, even on SIGKILL
    devhost_factory("patterns", db=tmp_path / "shared.sqlite").start()
