"""The agent app end to end: devhost serving function_app.py over HTTP, the real openai client
talking to a fake OpenAI-compatible server on loopback."""
from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from conftest import ROOT, DevhostProcess, app_env, thread_state, wait_for_status
from tests.fake_openai import rate_limited, server_error, sleep, unauthorized

RUN = "/api/agents/MyDurableAgent/run"


@pytest.fixture(autouse=True)
def _reset_model(fresh_llm):
    yield
THREAD_ID = re.compile(r"^@dafx-mydurableagent@[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-"
                       r"[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TEXT = {"Content-Type": "text/plain"}


def instance_count(host: DevhostProcess) -> int:
    return len(host.request("GET", "/runtime/webhooks/durabletask/instances").json())


def test_seed_conversation_remembers_the_first_exchange(agent_host, llm):
    first = agent_host.request("POST", RUN, "What are three popular programming languages?", TEXT)
    assert first.status == 200, first
    assert first.headers["content-type"].startswith("text/plain")
    thread_id = first.headers["x-ms-thread-id"]
    assert THREAD_ID.match(thread_id)
    assert first.text == "echo: What are three popular programming languages? [messages=2]"

    second = agent_host.request("POST", f"{RUN}?thread_id={thread_id}",
                                "Which one is best for beginners?", TEXT)
    assert second.status == 200, second
    assert second.headers["x-ms-thread-id"] == thread_id
    assert second.text == "echo: Which one is best for beginners? [messages=4]"
    sent = llm.requests[-1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "What are three popular programming languages?"
    assert sent[2]["content"] == first.text

    state = thread_state(agent_host, thread_id)
    assert state["schemaVersion"] == 1
    assert [m["role"] for m in state["messages"]] == ["user", "assistant"] * 2
    reply = state["messages"][1]
    assert reply["usage"]["total_tokens"] > 0 and reply["model"] == "fake-model"
    assert reply["durationMs"]["model"] >= 0 and reply["durationMs"]["turn"] >= 0
    assert state["totals"]["turns"] == 2


def test_bare_uuid_and_any_agent_case_continue_the_thread(agent_host):
    first = agent_host.request("POST", RUN, "hello", TEXT)
    key = first.headers["x-ms-thread-id"].rsplit("@", 1)[1]
    again = agent_host.request("POST", f"/api/agents/mydurableagent/run?thread_id={key}",
                               "again", TEXT)
    assert again.status == 200, again
    assert again.headers["x-ms-thread-id"] == first.headers["x-ms-thread-id"]
    assert again.text.endswith("[messages=4]")


def test_json_request_gets_a_json_result_document(agent_host):
    r = agent_host.request("POST", RUN, {"message": "Hi there"})
    assert r.status == 200, r
    doc = r.json()
    assert doc["reply"] == "echo: Hi there [messages=2]"
    assert doc["thread_id"] == r.headers["x-ms-thread-id"]
    assert doc["turn_id"] == r.headers["x-ms-turn-id"]
    assert doc["instance_id"].endswith(doc["turn_id"])
    assert set(doc["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert doc["usage"]["total_tokens"] == doc["usage"]["prompt_tokens"] + \
        doc["usage"]["completion_tokens"]
    assert doc["model"] == "fake-model" and doc["provider"] == "openai"
    assert doc["durations_ms"]["turn"] >= 0

    follow = agent_host.request("POST", RUN, {"message": "more", "thread_id": doc["thread_id"]})
    assert follow.json()["reply"] == "echo: more [messages=4]"
    accept = agent_host.request("POST", RUN, "plain", {**TEXT, "Accept": "application/json"})
    assert accept.json()["reply"] == "echo: plain [messages=2]"


def test_no_wait_answers_202_and_the_status_url_serves_the_result(agent_host):
    r = agent_host.request("POST", f"{RUN}?wait_for_response=false", "later", TEXT)
    assert r.status == 202, r
    payload = r.json()
    assert r.headers["location"] == payload["statusQueryGetUri"]
    assert THREAD_ID.match(r.headers["x-ms-thread-id"])
    for key in ("id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri",
                "purgeHistoryDeleteUri"):
        assert key in payload
    deadline = time.time() + 20
    while True:
        status = agent_host.request("GET", payload["statusQueryGetUri"])
        if status.status == 200 or time.time() > deadline:
            break
        assert status.status == 202
        time.sleep(0.02)
    doc = status.json()
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"]["reply"] == "echo: later [messages=2]"
    assert doc["output"]["thread_id"] == r.headers["x-ms-thread-id"]

    body_flag = agent_host.request("POST", RUN, {"message": "x", "wait_for_response": False})
    assert body_flag.status == 202
    assert wait_for_status(agent_host, body_flag.json()["id"])["runtimeStatus"] == "Completed"


@pytest.mark.parametrize("path,body,headers,status,code", [
    (RUN, "", TEXT, 400, "empty_message"),
    (RUN, "  \n\t ", TEXT, 400, "empty_message"),
    (RUN, "{not json", {"Content-Type": "application/json"}, 400, "invalid_json"),
    (RUN, "[1, 2]", {"Content-Type": "application/json"}, 400, "invalid_body"),
    (RUN, "[" * 100000 + "]" * 100000, {"Content-Type": "application/json"}, 413,
     "message_too_large"),
    (RUN, '{"message": ' + "[" * 5000 + "]" * 5000 + "}", {"Content-Type": "application/json"},
     400, "invalid_json"),
    (RUN, '{"message": 5}', {"Content-Type": "application/json"}, 400, "invalid_message"),
    (RUN, '{"message": "  "}', {"Content-Type": "application/json"}, 400, "empty_message"),
    (RUN, '{"message": "hi", "thread_id": 7}', {"Content-Type": "application/json"}, 400,
     "invalid_thread_id"),
    (RUN, '{"message": "hi", "wait_for_response": "no"}', {"Content-Type": "application/json"},
     400, "invalid_parameter"),
    (f"{RUN}?wait_for_response=maybe", "hi", TEXT, 400, "invalid_parameter"),
    (RUN, b"\xff\xfe bad utf8", TEXT, 400, "invalid_encoding"),
    (RUN, "x" * 40000, TEXT, 413, "message_too_large"),
    ("/api/agents/NoSuchAgent/run", "hi", TEXT, 404, "agent_not_found"),
    (f"{RUN}?thread_id=not-a-thread", "hi", TEXT, 400, "invalid_thread_id"),
    (f"{RUN}?thread_id=@dafx-otheragent@{uuid.uuid4()}", "hi", TEXT, 404, "thread_not_found"),
    (f"{RUN}?thread_id=@dafx-mydurableagent@{uuid.uuid4()}", "hi", TEXT, 404,
     "thread_not_found"),
    (f"{RUN}?thread_id={uuid.uuid4()}", "hi", TEXT, 404, "thread_not_found"),
    (f"{RUN}?thread_id=@dafx-mydurableagent@{uuid.uuid4()}",
     json.dumps({"message": "hi", "thread_id": f"@dafx-mydurableagent@{uuid.uuid4()}"}),
     {"Content-Type": "application/json"}, 400, "conflicting_thread_id"),
])
def test_bad_requests_get_a_json_error_and_change_nothing(agent_host, llm, path, body, headers,
                                                          status, code):
    before, calls = instance_count(agent_host), len(llm.requests)
    r = agent_host.request("POST", path, body, headers)
    assert r.status == status, r
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == code and error["status"] == status and error["message"]
    assert instance_count(agent_host) == before
    assert len(llm.requests) == calls


def test_wrong_method_is_405(agent_host):
    r = agent_host.request("GET", RUN)
    assert r.status == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"


def test_permanent_llm_failure_is_502_and_not_written(agent_host, llm):
    first = agent_host.request("POST", RUN, "start", TEXT)
    thread_id = first.headers["x-ms-thread-id"]
    llm.script(unauthorized())
    r = agent_host.request("POST", f"{RUN}?thread_id={thread_id}", "this fails", TEXT)
    assert r.status == 502, r
    error = r.json()["error"]
    assert error["code"] == "auth" and "401" in error["message"]
    assert len(llm.requests) == 2  # not retried
    state = thread_state(agent_host, thread_id)
    assert [m["content"] for m in state["messages"] if m["role"] == "user"] == ["start"]
    assert "this fails" not in json.dumps(state)


def test_transient_failures_exhaust_retries_then_503_and_nothing_is_written(agent_host, llm):
    first = agent_host.request("POST", RUN, "start", TEXT)
    thread_id = first.headers["x-ms-thread-id"]
    llm.script(*[rate_limited("0")] * 9)
    r = agent_host.request("POST", f"{RUN}?thread_id={thread_id}", "rate limited", TEXT)
    assert r.status == 503, r
    assert r.json()["error"]["code"] == "rate_limited"
    assert len(llm.requests) == 1 + 9  # 3 tries inside the activity × 3 durable attempts
    assert len(thread_state(agent_host, thread_id)["messages"]) == 2


def test_a_transient_failure_is_retried_and_the_turn_succeeds(agent_host, llm):
    llm.script(server_error(500), rate_limited("0"))
    r = agent_host.request("POST", RUN, {"message": "flaky upstream"})
    assert r.status == 200, r
    assert r.json()["reply"] == "echo: flaky upstream [messages=2]"
    assert len(llm.requests) == 3


def test_a_slow_turn_answers_202_and_completes(llm, tmp_path):
    host = DevhostProcess(ROOT, tmp_path / "slow.sqlite", app_env(llm, TURN_WAIT_SECONDS="0.3"))
    host.start()
    try:
        llm.script(sleep(5))  # far beyond the 0.3 s wait: the answer is a 202
        r = host.request("POST", RUN, "take your time", TEXT)
        assert r.status == 202, r
        instance_id = r.json()["id"]
        doc = wait_for_status(host, instance_id)
        assert doc["runtimeStatus"] == "Completed"
        assert doc["output"]["reply"] == "echo: take your time [messages=2]"
    finally:
        host.kill()


def test_health(agent_host):
    r = agent_host.request("GET", "/api/health")
    assert r.status == 200
    catalogue = [a["name"] for a in json.loads((ROOT / "agents.json").read_text())["agents"]]
    assert r.json() == {"status": "ok", "agents": catalogue,
                        "provider": {"provider": "openai", "model": "fake-model"}}


def test_twenty_simultaneous_turns_on_one_thread_run_one_at_a_time(agent_host, llm):
    from concurrent.futures import ThreadPoolExecutor

    first = agent_host.request("POST", RUN, "turn 0", TEXT)
    thread_id = first.headers["x-ms-thread-id"]
    llm.reset()

    def post(i: int):
        return agent_host.request("POST", f"{RUN}?thread_id={thread_id}", f"turn {i}", TEXT)

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(post, range(1, 21)))
    assert all(r.status == 200 for r in replies), [r for r in replies if r.status != 200]

    state = thread_state(agent_host, thread_id)
    messages = state["messages"]
    assert len(messages) == 42  # turn 0 + 20 concurrent turns, none lost
    assert state["lease"] is None and state["waiting"] == []
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert sorted(users) == sorted(f"turn {i}" for i in range(21))
    # Each model call saw every exchange stored before it, in the stored order.
    by_message = {r.messages[-1]["content"]: r.messages for r in llm.requests}
    for index in range(2, 42, 2):
        sent = by_message[messages[index]["content"]]
        assert [m["content"] for m in sent[1:-1]] == [m["content"] for m in messages[:index]]


def test_a_turn_interrupted_by_a_crash_completes_after_restart(llm, tmp_path):
    db = tmp_path / "crash.sqlite"
    host = DevhostProcess(ROOT, db, app_env(llm))
    host.start()
    first = host.request("POST", RUN, "before the crash", TEXT)
    thread_id = first.headers["x-ms-thread-id"]
    llm.script(sleep(30))  # the model call in flight when devhost dies
    r = host.request("POST", f"{RUN}?thread_id={thread_id}&wait_for_response=false",
                     "during the crash", TEXT)
    assert r.status == 202
    llm.wait_for_requests(2, timeout=10)
    host.kill()  # SIGKILL while the activity waits on the model

    restarted = DevhostProcess(ROOT, db, app_env(llm), port=host.port)
    restarted.start()
    try:
        doc = wait_for_status(restarted, r.json()["id"], timeout=60)
        assert doc["runtimeStatus"] == "Completed", doc
        assert doc["output"]["reply"] == "echo: during the crash [messages=4]"
        messages = thread_state(restarted, thread_id)["messages"]
        assert [m["content"] for m in messages if m["role"] == "user"] == [
            "before the crash", "during the crash"]  # written once, in order
        assert len(llm.requests) == 3  # the interrupted call ran again: at least once
    finally:
        restarted.kill()
