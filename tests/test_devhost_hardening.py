"""Issue 8, devhost items: each test failed on the code before its fix (see the closing note).

Real devhost processes on loopback, real SQLite files, real HTTP servers for call_http.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import APPS, ROOT, DevhostProcess, free_port, wait_for_status

W = "/runtime/webhooks/durabletask"
JSON = {"Content-Type": "application/json"}
DONE = ("Completed", "Failed", "Terminated")

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    process = DevhostProcess(APPS / "hardening", root / "hub.sqlite",
                             env={"DEVHOST_HTTP_MAX_RESPONSE_BYTES": "100000"})
    process.start()
    yield process
    process.kill()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def start(host, name: str, instance_id: str, body=None, headers=None, query: str = ""):
    """Start as the SDK client does: the input as a JSON string holding its JSON text."""
    return host.request("POST", f"{W}/orchestrators/{name}/{instance_id}{query}",
                        None if body is None else json.dumps(json.dumps(body)),
                        {**JSON, **(headers or {})})


def finished(host, instance_id: str, timeout: float = 30) -> dict:
    return wait_for_status(host, instance_id, DONE, timeout=timeout,
                           query="?showHistory=true&showHistoryOutput=true")


def wait_until(condition, timeout: float = 30, what: str = "condition"):
    """Poll until `condition()` is truthy (the timeout only bounds a failing test)."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.time() < deadline, f"{what} not reached"
        time.sleep(0.02)


def raw_request(port: int, data: bytes) -> bytes:
    """Send raw bytes and read the whole answer (for requests urllib will not build)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- 6: the instance list pages exactly as the extension does --------------------------------

def test_list_pages_by_100_with_an_always_present_continuation_token(host):
    prefix = uid("page") + "-"
    ids = [f"{prefix}{i:03d}" for i in range(105)]
    for instance_id in ids:
        assert start(host, "quick", instance_id, "x").status == 202
    for instance_id in ids:
        wait_for_status(host, instance_id, DONE)
    listed = lambda headers=None: host.request(  # noqa: E731
        "GET", f"{W}/instances?instanceIdPrefix={prefix}&showInput=false", headers=headers)
    first = listed()
    assert first.status == 200
    assert len(first.json()) == 100  # no `top`: the extension's page size
    token = first.headers["x-ms-continuation-token"]
    assert token
    # the app purges the first page before asking for the next (deleting a thread's turns):
    # the token still leads to the five not yet seen
    for doc in first.json():
        assert host.request("DELETE", f"{W}/instances/{doc['instanceId']}").status == 200
    second = listed({"x-ms-continuation-token": token})
    assert second.status == 200
    assert sorted(d["instanceId"] for d in second.json()) == sorted(
        set(ids) - {d["instanceId"] for d in first.json()})
    assert second.headers["x-ms-continuation-token"] == ""  # last page: present and empty
    r = listed({"x-ms-continuation-token": "not-a-token"})
    assert r.status == 400


# -- 8: bounded call_http bodies, no leftover status waiters ---------------------------------

class Recorder(ThreadingHTTPServer):
    """A tiny HTTP server that answers by path and records the headers each request had."""

    daemon_threads = True

    def __init__(self, routes):
        self.routes, self.seen = routes, []
        super().__init__(("127.0.0.1", 0), _RecorderHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RecorderHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        status, headers, body = self.server.routes[self.path]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    servers = []

    def make(routes):
        servers.append(Recorder(routes))
        return servers[-1]

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def test_call_http_refuses_a_body_over_the_limit(host, recorder):
    big = b"x" * 200_000  # the host allows 100 000 bytes (DEVHOST_HTTP_MAX_RESPONSE_BYTES)
    server = recorder({"/sized": (200, {"Content-Length": str(len(big))}, big),
                       "/streamed": (200, {}, big),  # no length: read until the limit
                       "/small": (200, {"Content-Length": "2"}, b"ok")})
    for path in ("/sized", "/streamed"):
        instance_id = uid("big")
        assert start(host, "http_call", instance_id, {"uri": server.base + path}).status == 202
        doc = finished(host, instance_id)
        assert doc["runtimeStatus"] == "Failed"
        assert "over devhost's limit" in json.dumps(doc["output"]), doc["output"]
        assert "DEVHOST_HTTP_MAX_RESPONSE_BYTES" in json.dumps(doc["output"])
    instance_id = uid("small")
    assert start(host, "http_call", instance_id, {"uri": server.base + "/small"}).status == 202
    assert finished(host, instance_id)["output"] == {"status": 200, "content": "ok"}


def test_timed_out_status_waits_leave_no_waiters(host):
    ids = [uid("wait") for _ in range(20)]
    for instance_id in ids:  # start-and-wait whose wait times out: a 202 each
        r = start(host, "waits", instance_id, query="?timeout=0.01")
        assert r.status == 202, r
    assert host.request("GET", "/admin/host/status").json()["statusWaiters"] == 0
    for instance_id in ids:
        host.request("POST", f"{W}/instances/{instance_id}/terminate")


# -- 9: a failed COMMIT does not wedge the store ---------------------------------------------

def test_a_failed_commit_rolls_back_and_the_store_keeps_working(tmp_path):
    from devhost.errors import DatabaseError
    from devhost.store import Store

    store = Store(tmp_path / "hub.sqlite")
    # a deferred constraint is checked at COMMIT: the COMMIT itself fails
    store.db.execute("PRAGMA foreign_keys=ON")
    store.db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    store.db.execute("CREATE TABLE child (parent_id INTEGER REFERENCES parent(id) "
                     "DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(DatabaseError) as failed:
        with store.transaction():
            store.add_entity_op("@counter@a", "add", "1", True)
            store.db.execute("INSERT INTO child VALUES (42)")  # no parent 42
    assert "FOREIGN KEY" in failed.value.message
    assert not store.db.in_transaction
    assert store.entity_ops("@counter@a", 10) == []  # rolled back, nothing half-written
    with store.transaction():  # the next transaction works
        store.add_entity_op("@counter@b", "add", "1", True)
    assert len(store.entity_ops("@counter@b", 10)) == 1
    store.close()


# -- 10: devhost's own errors are retried and visible ----------------------------------------

def test_an_episode_whose_commit_fails_is_retried_and_reported_stuck(devhost_factory, tmp_path):
    db = tmp_path / "stuck.sqlite"
    host = devhost_factory("hardening", db=db).start()
    con = sqlite3.connect(db, timeout=10, isolation_level=None)
    con.execute("CREATE TABLE test_block (x)")
    con.execute("INSERT INTO test_block VALUES (1)")
    con.execute("CREATE TRIGGER refuse_history BEFORE INSERT ON history "
                "WHEN NEW.instance_id LIKE 'stuck-%' AND EXISTS (SELECT 1 FROM test_block) "
                "BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END")
    instance_id = uid("stuck")
    assert start(host, "quick", instance_id, "z").status == 202

    def stuck_doc():
        doc = host.request("GET", f"{W}/instances/{instance_id}").json()
        return doc if doc.get("devhost") else None

    doc = wait_until(stuck_doc, what="a stuck flag in the status")
    assert doc["runtimeStatus"] == "Pending" and doc["customStatus"] is None
    assert doc["devhost"]["stuck"] is True
    assert "simulated write failure" in doc["devhost"]["error"]
    assert host.request("GET", "/admin/host/status").json()["stuck"] >= 1
    assert "retrying with back-off" in host.log() and "simulated write failure" in host.log()
    con.execute("DELETE FROM test_block")  # the disk is writable again
    done = finished(host, instance_id)  # no new event arrives: only the retry can do this
    assert done["runtimeStatus"] == "Completed" and done["output"] == "worked: z"
    assert "devhost" not in host.request("GET", f"{W}/instances/{instance_id}").json()
    con.close()


# -- 11: big reads run off the event loop, on a read-only connection -------------------------

def test_reads_run_on_the_read_thread_over_a_read_only_connection(tmp_path):
    from devhost.store import Store

    store = Store(tmp_path / "hub.sqlite")
    with store.transaction():
        store.add_entity_op("@counter@r", "add", "1", True)

    async def main():
        loop_thread = threading.get_ident()
        thread, ops = await store.read(lambda v: (threading.get_ident(),
                                                  v.entity_ops("@counter@r", 10)))
        assert thread != loop_thread
        assert len(ops) == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.read(lambda v: v.add_entity_op("@counter@r", "add", "2", True))

    asyncio.run(main())
    assert len(store.entity_ops("@counter@r", 10)) == 1
    store.close()


# -- 12: a non-ASCII key is a wrong key -------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    app = tmp_path_factory.mktemp("keys") / "app"
    shutil.copytree(APPS / "keys", app)
    (app / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "DEVHOST_FUNCTION_KEYS": "k1", "DEVHOST_MASTER_KEY": "m1", "KEYS_HUB_NAME": "KeysHub"}}))
    process = DevhostProcess(app, app.parent / "hub.sqlite")
    process.start()
    yield process
    process.kill()


def test_a_non_ascii_key_answers_401(keyed):
    r = keyed.request("GET", "/secret?code=%C3%A9t%C3%A9")
    assert r.status == 401, r
    assert r.json()["Message"]
    answer = raw_request(keyed.port, b"GET /secret HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"x-functions-key: \xe9t\xe9\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    r = keyed.request("GET", f"{W}/instances?code=%E2%9C%93")
    assert r.status == 401


# -- 13: foreign Host names and foreign Origins are refused ----------------------------------

def test_a_foreign_host_name_is_refused(host):
    r = host.request("GET", f"{W}/instances", headers={"Host": f"evil.example:{host.port}"})
    assert r.status == 403
    error = r.json()["error"]
    assert error["status"] == 403 and error["code"] == "foreign_host"
    assert "DEVHOST_ALLOW_ANY_HOST" in error["message"]
    for name in ("localhost", "127.0.0.1", "[::1]"):
        r = host.request("GET", "/admin/host/status", headers={"Host": f"{name}:{host.port}"})
        assert r.status == 200, (name, r)
    answer = raw_request(host.port, b"GET /admin/host/status HTTP/1.0\r\n\r\n")  # no Host
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer[:80]


def test_a_cross_site_post_is_refused_and_starts_nothing(host):
    instance_id = uid("csrf")
    r = start(host, "waits", instance_id, headers={"Origin": "https://evil.example"})
    assert r.status == 403
    error = r.json()["error"]
    assert error["code"] == "foreign_origin" and "DEVHOST_ALLOWED_ORIGINS" in error["message"]
    assert host.request("GET", f"{W}/instances/{instance_id}").status == 404
    r = host.request("POST", "/api/poke", b"", {"Origin": "null"})
    assert r.status == 403
    # curl (no Origin) and the dashboard (its own origin) keep working; reads stay open
    assert host.request("POST", "/api/poke", b"").text == "poked"
    r = host.request("POST", "/api/poke", b"", {"Origin": f"http://127.0.0.1:{host.port}"})
    assert r.text == "poked"
    r = host.request("GET", "/api/poke", headers={"Origin": "https://evil.example"})
    assert r.text == "poked"
    # a page on this machine's loopback (a frontend dev server, the MCP inspector) may call
    for origin in ("http://localhost:3000", "http://127.0.0.1:6274", "http://[::1]:8080"):
        assert host.request("POST", "/api/poke", b"", {"Origin": origin}).text == "poked"


def test_the_guards_can_be_opted_out_of(devhost_factory):
    host = devhost_factory("hardening", env={
        "DEVHOST_ALLOW_ANY_HOST": "true",
        "DEVHOST_ALLOWED_ORIGINS": "https://app.example"}).start()
    r = host.request("GET", "/api/poke", headers={"Host": "tunnel.example"})
    assert r.text == "poked"
    assert host.request("POST", "/api/poke", b"", {"Origin": "https://app.example"}).text \
        == "poked"
    assert host.request("POST", "/api/poke", b"", {"Origin": "https://evil.example"}).status \
        == 403


# -- 14: call_http keeps credentials on the host they were meant for -------------------------

CREDENTIALS = {"Authorization": "Bearer secret-token", "Cookie": "session=abc",
               "Proxy-Authorization": "Basic cHJveHk=", "x-functions-key": "fkey"}


def test_call_http_drops_credentials_when_a_202_points_elsewhere(host, recorder):
    elsewhere = recorder({"/done": (200, {"Content-Length": "4"}, b"done")})
    origin = recorder({
        "/start": (202, {"Location": elsewhere.base + "/done", "Retry-After": "0",
                         "Content-Length": "0"}, b""),
        "/start-here": (202, {"Location": "/here", "Retry-After": "0",
                              "Content-Length": "0"}, b""),
        "/here": (200, {"Content-Length": "4"}, b"here")})
    headers = {**CREDENTIALS, "X-Trace": "t-1"}
    instance_id = uid("loc")
    assert start(host, "http_call", instance_id,
                 {"uri": origin.base + "/start", "headers": headers}).status == 202
    assert finished(host, instance_id)["output"] == {"status": 200, "content": "done"}
    (path, seen), = elsewhere.seen
    assert seen["x-trace"] == "t-1"
    assert not {k.lower() for k in CREDENTIALS} & set(seen), seen
    assert origin.seen[0][1]["authorization"] == "Bearer secret-token"
    # the same scheme, host and port keeps them
    instance_id = uid("here")
    assert start(host, "http_call", instance_id,
                 {"uri": origin.base + "/start-here", "headers": headers}).status == 202
    assert finished(host, instance_id)["output"] == {"status": 200, "content": "here"}
    polled = dict(origin.seen)["/here"]
    assert polled["authorization"] == "Bearer secret-token" and polled["cookie"] == "session=abc"


# -- 16: oversized URLs and headers get a JSON 414 / 431 -------------------------------------

def test_a_long_url_is_a_json_414_without_echo(host):
    r = host.request("GET", "/api/sizes?q=" + "A" * 10_000)
    assert r.status == 414
    assert r.json()["error"]["code"] == "uri_too_long"
    assert b"AAAA" not in r.body
    assert host.request("GET", "/api/sizes?q=" + "A" * 3000).status == 200


def test_big_headers_up_to_azures_limit_pass_and_beyond_are_a_json_431(host):
    r = host.request("GET", "/api/sizes", headers={"X-Big": "B" * 10_000})
    assert r.status == 200, r  # Azure (Kestrel) takes 32 kB of headers
    r = host.request("GET", "/api/sizes", headers={f"X-Big-{i}": "B" * 8000 for i in range(5)})
    assert r.status == 431
    assert r.json()["error"]["code"] == "request_header_fields_too_large"
    assert b"BBBB" not in r.body


# -- 18: failed invocations are logged like the Functions host does --------------------------

def test_failed_invocations_are_logged_with_their_traceback(host):
    before = len(host.log())
    instance_id = uid("fail")
    assert start(host, "retries_a_failure", instance_id).status == 202
    assert finished(host, instance_id)["output"] == "caught"
    failing = uid("raises")
    assert start(host, "raises", failing).status == 202
    assert finished(host, failing)["runtimeStatus"] == "Failed"
    r = host.request("POST", f"{W}/entities/Faulty/f1?op=explode")
    assert r.status == 202
    log = wait_until(lambda: "Functions.faulty_entity' (Failed" in host.log()[before:]
                     and host.log()[before:], what="the entity failure line")
    activity_lines = [line for line in log.splitlines()
                      if line.endswith("ms)") and "Executed 'Functions.fails' (Failed, Id=" in line]
    assert len(activity_lines) == 2, log  # one per attempt, the retry included
    assert "Exception: ValueError: boom: twice" in log
    assert "Traceback (most recent call last)" in log and "in fails" in log
    assert "Executed 'Functions.raises' (Failed, Id=" in log
    assert "the orchestrator gave up" in log
    assert "no such fuse" in log
    assert "(Succeeded," not in log  # successful ones only with --verbose


def test_successful_invocations_are_logged_when_verbose(devhost_factory):
    host = devhost_factory("hardening", env={"DEVHOST_VERBOSE": "1"}).start()
    assert start(host, "quick", "v-1", "v").status == 202
    assert finished(host, "v-1")["output"] == "worked: v"
    log = wait_until(lambda: "Executed 'Functions.works' (Succeeded, Id=" in host.log()
                     and host.log(), what="the success line")
    assert "Executed 'Functions.quick' (Succeeded, Id=" in log


# -- 19: suspend twice / resume a running instance answer as Azure does ----------------------

def test_suspend_twice_and_resume_running_answer_500_like_azure(host):
    instance_id = uid("susp")
    assert start(host, "waits", instance_id).status == 202
    wait_for_status(host, instance_id, ("Running",))
    r = host.request("POST", f"{W}/instances/{instance_id}/resume")
    assert r.status == 500
    assert r.json()["ExceptionMessage"] == (f"Cannot resume the orchestration instance "
                                            f"{instance_id} because instance is in the Running "
                                            "state.")
    assert r.json()["ExceptionType"] == "System.InvalidOperationException"
    assert host.request("POST", f"{W}/instances/{instance_id}/suspend").status == 202
    r = host.request("POST", f"{W}/instances/{instance_id}/suspend")
    assert r.status == 500
    assert "because instance is in the Suspended state" in r.json()["ExceptionMessage"]
    assert host.request("GET", f"{W}/instances/{instance_id}").json()["runtimeStatus"] \
        == "Suspended"
    assert "answered 500, as Azure does" in host.log()
    host.request("POST", f"{W}/instances/{instance_id}/terminate")


# -- 20: a relative --db is relative to the shell's working directory ------------------------

def test_a_relative_db_path_is_resolved_against_the_working_directory(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(APPS / "hardening", app)
    shell_dir = tmp_path / "shell"
    shell_dir.mkdir()
    port = free_port()
    env = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "start", "--app", str(app),
                             "--port", str(port), "--db", "hubs/rel.sqlite"],
                            cwd=shell_dir, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def ready():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/host/status",
                                              timeout=1).status == 200
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                return False
        wait_until(ready, what="devhost ready")
        assert (shell_dir / "hubs" / "rel.sqlite").is_file()
        assert not (app / "hubs").exists()
    finally:
        proc.kill()
        proc.wait(10)


# -- issue 13: the decision rules are pure (history + the SDK's output → events and work) ----

def test_decide_turns_the_sdks_own_output_into_history_and_work():
    """Three episodes of a real SDK orchestrator, decided without a store or a clock."""
    from datetime import datetime, timedelta, timezone

    import azure.durable_functions as df
    import azure.functions as func

    from devhost import protocol as p
    from devhost.config import HostConfig
    from devhost.decide import decide, select_batch
    from devhost.loader import index_app

    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.orchestration_trigger(context_name="context")
    def orch(context: df.DurableOrchestrationContext):
        first = yield context.call_activity("act", 1)
        timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=5))
        event = context.wait_for_external_event("Go")
        winner = yield context.task_any([timer, event])
        if winner == event:
            timer.cancel()
        return [first, event.result]

    @app.activity_trigger(input_name="n")
    def act(n: int) -> int:
        return n

    index = index_app(app)
    name, handle = index.orchestrator("orch")
    inst = {"instance_id": "i1", "execution_id": "x1", "name": name}
    history: list[dict] = []
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def episode(n: int, events: list[dict]):
        started = t0 + timedelta(seconds=n)
        rows = [{"id": i, "event": json.dumps(e)} for i, e in enumerate(events)]
        _, batch = select_batch(rows, [p.event_key(e) for e in history])
        new = [p.event(p.EventType.OrchestratorStarted, p.history_time(started))] + batch
        texts = [s.text for s in map(p.stored_event, history) if s.replayed]
        document = p.context_document(texts, new, None, "i1", None)
        result = p.parse_orchestrator_result(*_call(handle, document))
        fx = decide(inst, [p.event_key(e) for e in history + new], result, started, index,
                    HostConfig())
        history.extend(new + fx.history)
        return result, fx

    started_event = p.execution_started(p.history_time(t0), name, None, "i1", "x1", None)
    _, fx = episode(1, [started_event])
    assert [(e["EventType"], e["EventId"], e["Name"]) for e in fx.history] == \
        [(p.EventType.TaskScheduled, 0, "act")]
    assert fx.activities == [(0, "act", "1")]

    _, fx = episode(2, [p.task_completed(p.history_time(t0), 0, "1")])
    assert [(e["EventType"], e["EventId"]) for e in fx.history] == \
        [(p.EventType.TimerCreated, 1)]
    (timer_id, fire_at), = fx.timers
    assert timer_id == 1 and fire_at == t0 + timedelta(seconds=2 + 5)

    result, fx = episode(3, [p.event_raised(p.history_time(t0), "Go", json.dumps("yes"))])
    assert result["isDone"] and result["output"] == [1, "yes"]
    assert fx.cancelled_timers == [1] and fx.history == [] and fx.activities == []


def _call(handle, document):
    try:
        return handle(document), None
    except Exception as exc:  # the SDK reports orchestrator failures by raising
        return None, exc


def test_cancelled_timers_are_found_by_their_column_also_in_an_older_hub(tmp_path):
    """Schema 3 names a timer's inbox row by its id; a hub from schema 2 gets it filled in."""
    from devhost import protocol as p
    from devhost.store import Store

    path = tmp_path / "old.sqlite"
    store = Store(path)
    store.close()
    con = sqlite3.connect(path, isolation_level=None)
    fired = json.dumps(p.timer_fired("t", 7, "t"))
    con.execute("INSERT INTO inbox (instance_id, execution_id, event, visible_at) "
                "VALUES ('i1', 'x1', ?, 0)", (fired,))
    con.execute("DROP INDEX inbox_timer")  # back to the inbox of schema 2
    con.execute("ALTER TABLE inbox DROP COLUMN timer_id")
    con.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    con.close()
    store = Store(path)
    with store.transaction():
        store.add_inbox("i1", "x1", json.dumps(p.timer_fired("t", 8, "t")), 0, timer_id=8)
        store.add_inbox("i1", "x1", json.dumps(p.event_raised("t", "Go", None)), 0)
    with store.transaction():
        store.delete_timer("i1", 7)
        store.delete_timer("i1", 8)
    assert [json.loads(r["event"])["EventType"] for r in store.inbox("i1")] == [
        p.EventType.EventRaised]
    store.close()


def test_function_timeout_bounds_http_functions_too(devhost_factory):
    host = devhost_factory("timeouts").start()
    assert host.request("GET", "/api/nap/0.01").text == "rested"
    r = host.request("GET", "/api/nap/30")  # functionTimeout is 0.5 s in this app
    assert r.status == 500 and r.body == b""
    assert "Executed 'Functions.nap_http' (Failed, Id=" in host.log()
    assert "TimeoutError" in host.log()
