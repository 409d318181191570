"""Thread API, idempotent turns and the OpenAPI document, through devhost over HTTP."""
from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, thread_state

RUN = "/api/agents/MyDurableAgent/run"
THREADS = "/api/agents/MyDurableAgent/threads"
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(autouse=True)
def _reset_model(fresh_llm):
    yield


def new_thread(host, message="hello") -> str:
    r = host.request("POST", RUN, message, TEXT)
    assert r.status == 200, r
    return r.headers["x-ms-thread-id"]


def test_read_a_thread_with_usage_and_totals(agent_host):
    thread_id = new_thread(agent_host, "first")
    agent_host.request("POST", f"{RUN}?thread_id={thread_id}", "second", TEXT)
    r = agent_host.request("GET", f"{THREADS}/{thread_id}")
    assert r.status == 200, r
    doc = r.json()
    assert doc["thread_id"] == thread_id and doc["agent"] == "MyDurableAgent"
    assert [m["content"] for m in doc["messages"] if m["role"] == "user"] == ["first", "second"]
    replies = [m for m in doc["messages"] if m["role"] == "assistant"]
    assert all(m["usage"]["total_tokens"] > 0 and m["model"] == "fake-model" for m in replies)
    assert all(m["duration_ms"]["turn"] >= m["duration_ms"]["model"] >= 0 for m in replies)
    assert doc["totals"]["turns"] == 2
    assert doc["totals"]["total_tokens"] == sum(m["usage"]["total_tokens"] for m in replies)
    bare = agent_host.request("GET", f"{THREADS}/{thread_id.rsplit('@', 1)[1]}")
    assert bare.json()["messages"] == doc["messages"]


def test_list_threads_newest_first_with_paging(agent_host):
    ids = [new_thread(agent_host, f"list {i}") for i in range(3)]
    agent_host.request("POST", f"{RUN}?thread_id={ids[0]}", "bump", TEXT)  # now the newest
    listed = agent_host.request("GET", f"{THREADS}?limit=100").json()
    order = [t["thread_id"] for t in listed["threads"]]
    assert order[0] == ids[0]
    assert order.index(ids[2]) < order.index(ids[1])
    assert listed["total"] >= 3
    page = agent_host.request("GET", f"{THREADS}?limit=2&offset=1").json()
    assert [t["thread_id"] for t in page["threads"]] == order[1:3]
    assert agent_host.request("GET", f"{THREADS}?limit=x").status == 400


def test_delete_forgets_the_thread_and_its_turn_histories(agent_host):
    thread_id = new_thread(agent_host, "forget me")
    key = thread_id.rsplit("@", 1)[1]
    turns = agent_host.request(
        "GET", f"/runtime/webhooks/durabletask/instances?instanceIdPrefix=turn-{key}-").json()
    assert len(turns) == 1
    r = agent_host.request("DELETE", f"{THREADS}/{thread_id}")
    assert r.status == 200, r
    assert r.json()["turn_histories_purged"] == 1
    assert agent_host.request("GET", f"{THREADS}/{thread_id}").status == 404
    assert thread_state(agent_host, thread_id) is None
    assert agent_host.request(
        "GET", f"/runtime/webhooks/durabletask/instances?instanceIdPrefix=turn-{key}-").json() == []
    assert agent_host.request("POST", f"{RUN}?thread_id={thread_id}", "x", TEXT).status == 404
    listed = agent_host.request("GET", f"{THREADS}?limit=100").json()["threads"]
    assert thread_id not in [t["thread_id"] for t in listed]
    assert agent_host.request("DELETE", f"{THREADS}/{thread_id}").status == 404


def test_one_turn_points_at_its_orchestration(agent_host):
    r = agent_host.request("POST", RUN, {"message": "which turn?"})
    doc = r.json()
    turn = agent_host.request("GET", f"{THREADS}/{doc['thread_id']}/turns/{doc['turn_id']}")
    assert turn.status == 200, turn
    body = turn.json()
    assert body["status"] == "Completed" and body["instance_id"] == doc["instance_id"]
    assert body["result"]["reply"] == doc["reply"]
    status = agent_host.request("GET", body["status_query_url"])
    assert status.json()["instanceId"] == doc["instance_id"]
    missing = agent_host.request("GET", f"{THREADS}/{doc['thread_id']}/turns/nope")
    assert missing.status == 404 and missing.json()["error"]["code"] == "turn_not_found"


def test_idempotency_key_runs_the_model_once(agent_host, llm):
    thread_id = new_thread(agent_host)
    llm.reset()
    headers = {**TEXT, "Idempotency-Key": "order-42"}
    path = f"{RUN}?thread_id={thread_id}"
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: agent_host.request("POST", path, "pay", headers),
                                range(5)))
    assert {r.status for r in answers} == {200}
    assert len({r.headers["x-ms-turn-id"] for r in answers}) == 1
    assert len({r.text for r in answers}) == 1
    assert len(llm.requests) == 1
    again = agent_host.request("POST", path, "pay", headers)
    assert again.headers["x-ms-turn-id"] == answers[0].headers["x-ms-turn-id"]
    assert len(llm.requests) == 1
    assert len(thread_state(agent_host, thread_id)["messages"]) == 4
    reused = agent_host.request("POST", path, "something else", headers)
    assert reused.status == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    bad = agent_host.request("POST", path, "pay", {**TEXT, "Idempotency-Key": "k" * 256})
    assert bad.status == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


def test_idempotency_key_without_a_thread_names_the_thread_it_created(agent_host, llm):
    key = f"new-{uuid.uuid4().hex}"
    first = agent_host.request("POST", RUN, "start", {**TEXT, "Idempotency-Key": key})
    second = agent_host.request("POST", RUN, "start", {**TEXT, "Idempotency-Key": key})
    assert first.status == second.status == 200
    assert first.headers["x-ms-thread-id"] == second.headers["x-ms-thread-id"]
    assert len(llm.requests) == 1


def test_agents_are_listed_with_their_model(agent_host):
    agents = agent_host.request("GET", "/api/agents").json()["agents"]
    catalogue = json.loads((ROOT / "agents.json").read_text())["agents"]
    assert [a["name"] for a in agents] == [a["name"] for a in catalogue]
    assert agents[0]["provider"] == "openai" and agents[0]["model"] == "fake-model"


def test_openapi_document_matches_what_the_routes_answer(agent_host):
    spec = agent_host.request("GET", "/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    thread_id = new_thread(agent_host, "for the spec")
    turn_id = agent_host.request("GET", f"{THREADS}/{thread_id}").json()["messages"][0]["turn_id"]
    values = {"name": "MyDurableAgent", "thread_id": thread_id, "turn_id": turn_id}
    checked = 0
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            path = template
            for name, value in values.items():
                path = path.replace("{" + name + "}", value)
            body = json.dumps({"message": "spec check"}) if method == "post" else None
            headers = {"Content-Type": "application/json"} if body else {}
            if method == "delete":
                path = path.replace(thread_id, new_thread(agent_host, "to delete"))
            r = agent_host.request(method.upper(), path, body, headers)
            assert str(r.status) in operation["responses"], (method, path, r)
            declared = operation["responses"][str(r.status)].get("content", {})
            if "application/json" in declared and r.headers["content-type"].startswith(
                    "application/json"):
                required = declared["application/json"]["schema"].get("required", [])
                assert all(key in r.json() for key in required), (path, r.json())
            unknown = agent_host.request(method.upper(), path.replace("MyDurableAgent", "Nope"),
                                         body, headers)
            if "{name}" in template:
                assert unknown.status == 404 and "404" in operation["responses"]
            checked += 1
    assert checked == 10  # with GET .../turns/{turn_id}/stream (api/stream.py)


def test_long_threads_are_archived_and_still_read_back_whole(llm, tmp_path):
    from conftest import ROOT, DevhostProcess, app_env

    host = DevhostProcess(ROOT, tmp_path / "long.sqlite",
                          app_env(llm, THREAD_MAX_STATE_BYTES="6000"))
    host.start()
    try:
        thread_id = new_thread(host, "turn 0 " + "words " * 20)
        for i in range(1, 40):
            r = host.request("POST", f"{RUN}?thread_id={thread_id}", f"turn {i} " + "words " * 20,
                             TEXT)
            assert r.status == 200, r
        state = thread_state(host, thread_id)
        assert len(json.dumps(state)) < 12000  # compacted: far below the payload limit
        assert state["archive"]["pages"] >= 2
        doc = host.request("GET", f"{THREADS}/{thread_id}").json()
        users = [m["content"].split(" ")[1] for m in doc["messages"] if m["role"] == "user"]
        assert users == [str(i) for i in range(40)]  # nothing lost, in order
        assert doc["message_count"] == 80 and doc["totals"]["turns"] == 40
        key = thread_id.rsplit("@", 1)[1]
        assert host.request("DELETE", f"{THREADS}/{thread_id}").status == 200
        archive = host.request(
            "GET", f"/runtime/webhooks/durabletask/entities/thread_archive/mydurableagent.{key}.0")
        assert archive.status == 404
    finally:
        host.kill()


def test_idle_threads_are_deleted_by_the_durable_reaper(llm, tmp_path):
    """Reaped by the reaper's own account (its round report), not by a race against the
    clock; that a thread in use is kept is tests/test_turn_hardening.py's job."""
    import time

    from conftest import ROOT, DevhostProcess, app_env

    host = DevhostProcess(ROOT, tmp_path / "ttl.sqlite", app_env(
        llm, THREAD_TTL_HOURS=str(1.5 / 3600), THREAD_TTL_CHECK_SECONDS="0.5"))
    host.start()
    try:
        old = new_thread(host, "soon idle")
        key = old.rsplit("@", 1)[1]
        reaper = host.request("GET", "/runtime/webhooks/durabletask/instances/thread-reaper")
        assert reaper.json()["name"] == "thread_reaper"
        deadline = time.time() + 30
        while time.time() < deadline:
            status = host.request(
                "GET", "/runtime/webhooks/durabletask/instances/thread-reaper").json()
            if key in ((status or {}).get("customStatus") or {}).get("reaped", []):
                break
            time.sleep(0.1)
        assert key in status["customStatus"]["reaped"], status
        assert host.request("GET", f"{THREADS}/{old}").status == 404
        assert host.request("GET", "/runtime/webhooks/durabletask/instances"
                                   f"?instanceIdPrefix=turn-{key}-").json() == []
        listed = host.request("GET", f"{THREADS}?limit=100").json()["threads"]
        assert old not in [t["thread_id"] for t in listed]
    finally:
        host.kill()


def test_a_new_thread_whose_first_turn_failed_is_empty_but_listed(agent_host, llm):
    from tests.fake_openai import unauthorized

    llm.script(unauthorized())
    r = agent_host.request("POST", RUN, "refused", TEXT)
    assert r.status == 502
    thread_id = r.headers["x-ms-thread-id"]
    doc = agent_host.request("GET", f"{THREADS}/{thread_id}").json()
    assert doc["messages"] == [] and doc["in_progress"] is None  # the lease was given back
    listed = agent_host.request("GET", f"{THREADS}?limit=100").json()["threads"]
    assert {"thread_id": thread_id, "messages": 0}.items() <= next(
        t for t in listed if t["thread_id"] == thread_id).items()
    again = agent_host.request("POST", f"{RUN}?thread_id={thread_id}", "now it works", TEXT)
    assert again.status == 200 and again.text == "echo: now it works [messages=2]"


def test_fuzzing_the_published_api_finds_no_server_error_and_no_undocumented_answer(agent_host,
                                                                                  tmp_path):
    """schemathesis generates valid and hostile requests from /api/openapi.json (with a fixed
    seed, so a failure reproduces) and checks every answer against the document."""
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(cli), "run", f"{agent_host.base}/api/openapi.json", "--url", agent_host.base,
         "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance,"
         "content_type_conformance", "--max-examples", "15", "--workers", "1",
         "--seed", "20261122", "--no-color"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)  # its cache stays out of git
    assert result.returncode == 0, result.stdout[-4000:]
