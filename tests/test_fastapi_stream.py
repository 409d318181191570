"""devhost's FastAPI mode (docs/streaming.md): an app that imports
azurefunctions.extensions.http.fastapi gets FastAPI requests in EVERY HTTP function and streams
StreamingResponse bodies as they are produced; a plain func.HttpRequest app is untouched."""
from __future__ import annotations

import http.client
import json
import textwrap

import pytest

from tests.conftest import wait_for_status


@pytest.fixture(scope="module")
def fastapi_host(tmp_path_factory):
    from tests.conftest import APPS, DevhostProcess
    host = DevhostProcess(APPS / "fastapi_stream", tmp_path_factory.mktemp("fastapi") / "hub.sqlite")
    host.start()
    yield host
    host.kill()


def test_the_first_chunk_arrives_before_the_function_has_finished(fastapi_host):
    """The generator yields chunk 0 and then waits until the client, holding chunk 0, opens the
    gate: a host that buffered the body would never deliver chunk 0 and the stream would fail."""
    conn = http.client.HTTPConnection("127.0.0.1", fastapi_host.port, timeout=90)
    conn.request("GET", "/api/stream/first?count=3", headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    assert response.getheader("Content-Length") is None  # chunked: sent as produced

    def next_event() -> list[str]:
        lines = []
        while True:
            line = response.readline().decode()
            assert line, f"the stream ended early after {lines}"
            if line == "\n":
                return lines
            lines.append(line.rstrip("\n"))

    first = next_event()
    # At this moment the function has not finished: its own record says so.
    assert fastapi_host.request("GET", "/api/journal/first").json() == ["yield 0"]
    assert first == ["id: 1", "event: delta", 'data: {"text": "chunk 0 "}']
    assert fastapi_host.request("POST", "/api/release/first").json() == {"released": "first"}
    rest = [next_event() for _ in range(3)]
    assert [e[0] for e in rest] == ["id: 2", "id: 3", "event: done"]
    assert response.read() == b""
    conn.close()
    assert fastapi_host.request("GET", "/api/journal/first").json() == [
        "yield 0", "released", "yield 1", "yield 2", "finished"]


def test_every_http_function_gets_a_fastapi_request(fastapi_host):
    r = fastapi_host.request("POST", "/api/echo/hi?q=2", body="x" * 100_000,
                             headers={"X-Test": "yes", "Content-Type": "text/plain"})
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {"word": "hi", "q": "2", "header": "yes", "method": "POST",
                        "bytes": 100_000, "url": f"{fastapi_host.base}/api/echo/hi?q=2"}
    # A sync function runs in the thread pool and still gets path_params; a dict is JSON.
    assert fastapi_host.request("GET", "/api/sync/9").json() == {"square": 81}


def test_errors_are_answered_like_fastapi(fastapi_host):
    missing = fastapi_host.request("GET", "/api/missing")
    assert (missing.status, missing.json()) == (404, {"detail": "nothing here"})
    boom = fastapi_host.request("GET", "/api/boom")
    assert (boom.status, boom.text) == (500, "Internal Server Error")
    assert "RuntimeError: the function failed" in fastapi_host.log()


def test_a_stream_that_fails_midway_is_cut_not_ended_cleanly(fastapi_host):
    conn = http.client.HTTPConnection("127.0.0.1", fastapi_host.port, timeout=60)
    conn.request("GET", "/api/stream_fails")
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline() == b"data: one\n"
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        response.read()
    conn.close()
    assert "RuntimeError: the body iterator failed" in fastapi_host.log()


def test_the_durable_client_binding_works_in_fastapi_mode(fastapi_host):
    started = fastapi_host.request("POST", "/api/start/greet", body=json.dumps("bob"))
    assert started.status == 202
    payload = started.json()
    assert started.headers["location"] == payload["statusQueryGetUri"]
    doc = wait_for_status(fastapi_host, payload["id"])
    assert doc["runtimeStatus"] == "Completed" and doc["output"] == "hello bob"


def test_a_func_httprequest_function_in_fastapi_mode_is_refused_at_load(devhost_factory, tmp_path):
    """On Azure the worker cannot index it (bindings/meta.py); devhost refuses it the same way."""
    app = tmp_path / "mixed"
    app.mkdir()
    (app / "host.json").write_text('{"version": "2.0"}')
    (app / "function_app.py").write_text(textwrap.dedent('''
        import azure.functions as func
        from azurefunctions.extensions.http.fastapi import Request, StreamingResponse

        app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

        @app.route(route="new")
        async def new(req: Request) -> StreamingResponse:
            return StreamingResponse(iter([b"x"]))

        @app.route(route="old")
        def old(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("old")
    '''))
    host = devhost_factory(app)
    with pytest.raises(RuntimeError) as failed:
        host.start()
    assert 'cannot load the old function: type of req binding in function.json "httpTrigger" ' \
           'does not match its Python annotation "HttpRequest"' in str(failed.value)


def test_a_plain_app_keeps_func_httprequest(patterns_host):
    """The extension is installed in the environment but not imported: nothing changes."""
    r = patterns_host.request("POST", "/api/orchestrators/chain", body=json.dumps(None))
    assert r.status == 202 and "statusQueryGetUri" in r.json()  # req.route_params, get_body()
    doc = wait_for_status(patterns_host, r.json()["id"])
    assert doc["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


class SSEReader:
    """A streaming SSE client on http.client: one parsed event at a time, as it arrives."""

    def __init__(self, host, path: str, headers: dict | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=60)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()

    def next(self) -> dict | None:
        fields: dict = {}
        while True:
            line = self.response.readline().decode()
            if not line:
                return None  # the stream ended
            if line == "\n":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue  # heartbeat comment
            name, _, value = line.rstrip("\n").partition(": ")
            fields[name] = json.loads(value) if name == "data" else value

    def close(self) -> None:
        self.conn.close()


def test_journal_behind_sse_resume_is_exact_and_two_readers_get_everything(fastapi_host):
    base = "/api/turns/t-resume"

    def publish(kind, data, finish=False):
        return fastapi_host.request("POST", f"{base}/events",
                                    body={"kind": kind, "data": data, "finish": finish}).json()["id"]

    a, b = SSEReader(fastapi_host, f"{base}/stream"), SSEReader(fastapi_host, f"{base}/stream")
    got_a, got_b = [], []
    for i in range(5):
        assert publish("delta", {"text": f"w{i} "}) == i + 1
        got_a.append(a.next())
        got_b.append(b.next())  # each event reaches both readers before the next is written
    a.close()  # reader A drops mid-stream after event 5
    for i in range(5, 8):
        publish("delta", {"text": f"w{i} "})
        got_b.append(b.next())
    publish("done", {"reply": "w0 w1 w2 w3 w4 w5 w6 w7 "}, finish=True)
    got_b.append(b.next())
    assert b.next() is None  # the stream ends after the closing event
    resumed = SSEReader(fastapi_host, f"{base}/stream", {"Last-Event-ID": got_a[-1]["id"]})
    rest = []
    while (event := resumed.next()) is not None:
        rest.append(event)
    assert [e["id"] for e in got_a + rest] == [str(i) for i in range(1, 10)]  # no gap, no duplicate
    assert got_a + rest == got_b
    assert "".join(e["data"]["text"] for e in got_b if e["event"] == "delta") == got_b[-1]["data"]["reply"]
    bad = fastapi_host.request("GET", f"{base}/stream?after=x")
    assert bad.status == 400 and bad.json()["error"]["code"] == "invalid_after"
    # devhost keeps the journal beside its task hub file.
    assert fastapi_host.db.with_name(fastapi_host.db.stem + ".journal.sqlite").is_file()
