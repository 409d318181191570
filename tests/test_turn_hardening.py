"""Issue 8, the app's items: a turn's crash windows, races and limits, each shown by a test.

Replay tests drive the real SDK with handcrafted histories (the host's side of the protocol);
end-to-end tests talk to devhost over HTTP with the fake OpenAI-compatible server."""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, DevhostProcess, app_env, thread_state, wait_for_status
from test_agent_units import (ANSWER, HISTORY_WINDOW, acquire_request, batch, entity_answer,
                              entity_call, ev, run, start_events, turn_record)
from tests.fake_openai import sleep

RUN = "/api/agents/MyDurableAgent/run"
THREADS = "/api/agents/MyDurableAgent/threads"
W = "/runtime/webhooks/durabletask"
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(autouse=True)
def _reset_model(fresh_llm):
    yield


def new_thread(host, message="hello", headers=None) -> str:
    r = host.request("POST", RUN, message, {**TEXT, **(headers or {})})
    assert r.status == 200, r
    return r.headers["x-ms-thread-id"]


def instances(host, prefix: str) -> list[dict]:
    return host.request("GET", f"{W}/instances?instanceIdPrefix={prefix}").json()


def wait_until(predicate, timeout: float = 30, interval: float = 0.05):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, "condition not reached"
        time.sleep(interval)


# -- 1. Idempotency-Key accepts what clients send -----------------------------------------------

def test_idempotency_key_rules():
    from api.turn_request import Problem, parse_idempotency_key
    thread_key = f"@dafx-mydurableagent@{uuid.uuid4()}-m3"
    assert parse_idempotency_key(thread_key) == thread_key
    assert parse_idempotency_key(f'"{thread_key}"') == thread_key  # structured-header string
    assert parse_idempotency_key('"a \\"quoted\\" \\\\ key"') == 'a "quoted" \\ key'
    assert parse_idempotency_key("order 42/#!$%&'()*+,;<=>?[]^`{|}") == \
        "order 42/#!$%&'()*+,;<=>?[]^`{|}"
    assert parse_idempotency_key("k" * 255) == "k" * 255
    assert parse_idempotency_key(None) is None
    for bad in ("", "  ", '""', "k" * 256, "tab\there", "bell\x07", "del\x7f", "café",
                '"unterminated \\"', '"inner " quote"'):
        with pytest.raises(Problem) as refused:
            parse_idempotency_key(bad)
        assert refused.value.status == 400 and refused.value.code == "invalid_idempotency_key"


def test_keys_derived_from_the_thread_id_continue_the_thread(agent_host, llm):
    thread_id = new_thread(agent_host, "m0", {"Idempotency-Key": f"client-{uuid.uuid4()}-m0"})
    path = f"{RUN}?thread_id={urllib.parse.quote(thread_id)}"
    for n in range(1, 4):
        key = f"{thread_id}-m{n}"
        first = agent_host.request("POST", path, f"m{n}", {**TEXT, "Idempotency-Key": key})
        assert first.status == 200, first
        quoted = agent_host.request("POST", path, f"m{n}", {**TEXT, "Idempotency-Key": f'"{key}"'})
        assert quoted.status == 200 and quoted.headers["x-ms-turn-id"] == \
            first.headers["x-ms-turn-id"]  # the quoted form is the same key
    users = [m["content"] for m in thread_state(agent_host, thread_id)["messages"]
             if m["role"] == "user"]
    assert users == ["m0", "m1", "m2", "m3"]  # each stored once
    assert len(llm.requests) == 4
    long = agent_host.request("POST", path, "x", {**TEXT, "Idempotency-Key": "k" * 256})
    assert long.status == 400 and long.json()["error"]["code"] == "invalid_idempotency_key"


# -- 2. Once stored, a turn succeeds: the hand-off cannot fail it --------------------------------

def test_a_failing_hand_off_after_the_exchange_is_stored_does_not_fail_the_turn():
    t2 = "2026-11-22T10:00:02.0000000Z"
    following = {"turnId": "t2", "instanceId": "i2"}
    history = start_events() + [
        ev(13), entity_call(0, "r1", "acquire"), ev(12),
        entity_answer("r1", {"granted": True, "history": HISTORY_WINDOW}),
        ev(4, 1, Name="call_llm"), ev(13), ev(12, ts=t2),
        ev(5, ts=t2, TaskScheduledId=1, Result=json.dumps(ANSWER)),
        ev(13), entity_call(2, "r2", "append_turn"), ev(12, ts=t2),
        entity_answer("r2", {"appended": True, "message_count": 4, "next": following}, t2)]
    state = run(history)
    notify = state["actions"][0][3]
    assert notify["compoundActions"][0]["functionName"] == "notify_turn"
    assert notify["compoundActions"][0]["retryOptions"]["maxNumberOfAttempts"] >= 2  # retried
    # raise-event kept answering 5xx until the retry policy gave up
    attempts = notify["compoundActions"][0]["retryOptions"]["maxNumberOfAttempts"]
    for attempt in range(attempts):  # what the host records: each failure, then a timer
        event_id = 3 + 2 * attempt
        history += [ev(4, event_id, Name="notify_turn"), ev(13), ev(12, ts=t2),
                    ev(6, ts=t2, TaskScheduledId=event_id, Reason="raise_event answered 503",
                       Details=""),
                    ev(10, event_id + 1, FireAt=t2), ev(13), ev(12, ts=t2),
                    ev(11, ts=t2, TimerId=event_id + 1, FireAt=t2)]
    state = run(history)
    assert state["isDone"] is True, state
    assert "error" not in state or not state.get("error")
    assert state["output"]["reply"] == "Python" and state["output"]["thread_messages"] == 4


# -- 3. Archive: the page is written before the thread is trimmed --------------------------------

def test_archiving_keeps_every_message_until_the_page_is_stored(monkeypatch):
    monkeypatch.setenv("THREAD_MAX_STATE_BYTES", "1500")
    state = batch(None, ("acquire", acquire_request("t0")))["entityState"]
    for i in range(6):
        out = batch(state, ("acquire", acquire_request(f"t{i}")),
                    ("append_turn", turn_record(f"t{i}", f"question {i} " + "x" * 150,
                                                f"answer {i}")))
        result = json.loads(out["results"][1]["result"])
        state = out["entityState"]
        if result.get("archive_page"):
            break
        assert json.loads(out["results"][1]["result"])["next"] is None
    page = result["archive_page"]
    assert page["page"] == 0 and page["count"] >= 2
    raw, state = state, json.loads(state)
    # nothing trimmed yet: a turn stopped now loses nothing, readers see no gap
    assert len(state["messages"]) == 2 * (i + 1)
    assert state.get("archive", {}).get("pages", 0) == 0
    assert state["lease"]["turnId"] == f"t{i}"  # held until the trim
    assert page["messages"] == state["messages"][:page["count"]]
    trimmed = batch(raw, ("trim_archive", {"page": 0, "count": page["count"],
                                             "turn_id": f"t{i}", "now": "x"}),
                    ("trim_archive", {"page": 0, "count": page["count"], "turn_id": f"t{i}",
                                      "now": "x"}))
    after = json.loads(trimmed["entityState"])
    assert after["archive"] == {"pages": 1, "messages": page["count"]}  # the repeat is a no-op
    assert len(after["messages"]) == 2 * (i + 1) - page["count"] and after["lease"] is None


# -- 5. A lease is never taken from a running holder -------------------------------------------

def test_a_lease_does_not_lapse_by_time():
    held = batch(None, ("acquire", acquire_request("a")))
    days_later = batch(held["entityState"], ("acquire", acquire_request(
        "b", now="2026-11-29T10:00:00+00:00", lease_until="2026-11-29T10:10:00+00:00")))
    answer = json.loads(days_later["results"][0]["result"])
    assert answer["granted"] is False and answer["holder"]["turnId"] == "a"


def test_a_turn_whose_holder_was_terminated_takes_the_lease(agent_host, llm):
    thread_id = new_thread(agent_host, "first")
    llm.script(sleep(60))
    stuck = agent_host.request("POST", f"{RUN}?thread_id={thread_id}&wait_for_response=false",
                               "stuck", TEXT)
    llm.wait_for_requests(2, timeout=20)
    assert thread_state(agent_host, thread_id)["lease"]["turnId"] == stuck.headers["x-ms-turn-id"]
    r = agent_host.request("POST", f"{W}/instances/{stuck.json()['id']}/terminate?reason=test")
    assert r.status == 202
    wait_for_status(agent_host, stuck.json()["id"], ("Terminated",))
    after = agent_host.request("POST", f"{RUN}?thread_id={thread_id}", "after", TEXT)
    assert after.status == 200, after
    users = [m["content"] for m in thread_state(agent_host, thread_id)["messages"]
             if m["role"] == "user"]
    assert users == ["first", "after"]


# -- 7. A late repeat cannot run a finished turn again -----------------------------------------

def test_restarting_a_finished_turn_does_not_call_the_model_again(agent_host, llm):
    first = agent_host.request("POST", RUN, {"message": "only once"},
                               {"Idempotency-Key": f"late-{uuid.uuid4()}"})
    assert first.status == 200
    doc = first.json()
    status = agent_host.request("GET", f"{W}/instances/{doc['instance_id']}?showInput=true").json()
    calls = len(llm.requests)
    # what start_new does for a repeat that checked just before the first turn started
    again = agent_host.request("POST", f"{W}/orchestrators/agent_turn/{doc['instance_id']}",
                               json.dumps(status["input"]) if not isinstance(status["input"], str)
                               else json.dumps(status["input"]),
                               {"Content-Type": "application/json"})
    assert again.status == 202, again
    replaced = wait_for_status(agent_host, doc["instance_id"])
    assert replaced["runtimeStatus"] == "Completed", replaced
    assert replaced["output"]["reply"] == doc["reply"] and replaced["output"]["repeated"] is True
    assert len(llm.requests) == calls  # the model was not called again
    assert len(thread_state(agent_host, doc["thread_id"])["messages"]) == 2


# -- 15. Content types ---------------------------------------------------------------------------

@pytest.mark.parametrize("content_type,body,status", [
    ("application/xml", b"<message>hi</message>", 415),
    ("application/octet-stream", b"\x00\x01\x02", 415),
    ("image/png", b"\x89PNG\r\n", 415),
    ("text/plain", b"nul\x00inside", 415),
    ("application/x-www-form-urlencoded", b"hello from curl -d", 200),
    ("text/markdown", b"# hello", 200),
])
def test_content_types(agent_host, llm, content_type, body, status):
    before = len(agent_host.request("GET", f"{W}/instances").json())
    calls = len(llm.requests)
    r = agent_host.request("POST", RUN, body, {"Content-Type": content_type})
    assert r.status == status, r
    if status == 415:
        error = r.json()["error"]
        assert error["code"] == "unsupported_media_type" and error["status"] == 415
        assert len(agent_host.request("GET", f"{W}/instances").json()) == before
        assert len(llm.requests) == calls
    else:
        assert r.text == f"echo: {body.decode()} [messages=2]"


# -- 6. Deleting a thread with more than a page of turns ----------------------------------------

@pytest.mark.timeout(300)
def test_deleting_a_thread_with_more_than_a_page_of_turns_purges_every_turn(agent_host):
    thread_id = new_thread(agent_host, "turn 0")
    key = thread_id.rsplit("@", 1)[1]
    path = f"{RUN}?thread_id={thread_id}"
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: agent_host.request("POST", path, f"turn {i}", TEXT),
                                range(1, 106)))
    assert all(r.status == 200 for r in answers)
    page = agent_host.request("GET", f"{W}/instances?instanceIdPrefix=turn-{key}-&top=100")
    assert len(page.json()) == 100 and page.headers.get("x-ms-continuation-token")
    r = agent_host.request("DELETE", f"{THREADS}/{thread_id}")
    assert r.status == 200, r
    assert r.json()["turn_histories_purged"] == 106
    assert instances(agent_host, f"turn-{key}-") == []


# -- 8. Bounded growth ----------------------------------------------------------------------------

def test_the_thread_index_is_sharded(agent_host):
    ids = [new_thread(agent_host, f"shard {i}") for i in range(12)]
    legacy = agent_host.request("GET", f"{W}/entities/agent_threads/mydurableagent")
    assert legacy.status == 404  # no single entity holds every thread
    from entities.thread_index import INDEX_SHARDS, index_entity
    sizes = []
    for shard in range(INDEX_SHARDS):
        r = agent_host.request("GET", f"{W}/entities/agent_threads/mydurableagent.{shard:02d}")
        sizes.append(len(r.json()) if r.status == 200 else 0)
    assert sum(sizes) >= 12 and max(sizes) < sum(sizes)
    for thread_id in ids:
        entity = index_entity("MyDurableAgent", thread_id.rsplit("@", 1)[1])
        shard = agent_host.request("GET", f"{W}/entities/agent_threads/{entity.key}").json()
        assert thread_id.rsplit("@", 1)[1] in shard
    listed = agent_host.request("GET", f"{THREADS}?limit=100").json()
    order = [t["thread_id"] for t in listed["threads"]]
    assert [t for t in order if t in ids] == ids[::-1]  # newest first, across shards


def test_a_queued_turn_continues_as_new_instead_of_growing():
    from orchestrators.agent_turn import RECHECKS_PER_EXECUTION
    holder = {"turnId": "t0", "instanceId": "i0"}
    history = start_events()
    event_id, request, t = 0, 0, "2026-11-22T10:00:00+00:00"
    for _ in range(RECHECKS_PER_EXECUTION):
        state = run(history)
        assert not state["isDone"], state
        history += [ev(13), entity_call(event_id, f"r{request}", "acquire"), ev(12, ts=t),
                    entity_answer(f"r{request}", {"granted": False, "holder": holder}, t)]
        state = run(history)
        timer = next(a for a in state["actions"][-1] if a["actionType"] in (5, 11))
        if timer["actionType"] == 11:  # the first wait races the grant event
            timer = next(a for a in timer["compoundActions"] if a["actionType"] == 5)
        fire = timer["fireAt"]
        history += [ev(10, event_id + 1, FireAt=fire), ev(13), ev(12, ts=fire),
                    ev(11, ts=fire, TimerId=event_id + 1, FireAt=fire)]
        state = run(history)
        active = state["actions"][-1][-1]
        assert active["actionType"] in (0, 1), active  # asks whether the holder still runs
        history += [ev(4, event_id + 2, Name="turn_is_active"), ev(13), ev(12, ts=fire),
                    ev(5, ts=fire, TaskScheduledId=event_id + 2, Result="true")]
        event_id, request, t = event_id + 3, request + 1, fire
    state = run(history)
    assert state["isDone"] is True
    final = state["actions"][-1][-1]
    assert final["actionType"] == 4  # ContinueAsNew
    carried = json.loads(final["input"])
    assert carried["turn_id"] == "t1" and carried["started_at"].startswith("2026-11-22T10:00:00")
    waits = [json.loads(a["input"]) for step in state["actions"] for a in step
             if a.get("actionType") == 7]
    assert len(waits) == RECHECKS_PER_EXECUTION


# -- 4. The TTL reaper never takes a thread in use, and follows changed settings ---------------

def reaper_status(host) -> dict:
    doc = host.request("GET", f"{W}/instances/thread-reaper").json() or {}
    custom = doc.get("customStatus")
    return custom if isinstance(custom, dict) else {}


@pytest.mark.timeout(120)
def test_the_reaper_keeps_a_thread_whose_turn_outlives_the_ttl(llm, tmp_path):
    host = DevhostProcess(ROOT, tmp_path / "ttl-live.sqlite", app_env(
        llm, THREAD_TTL_HOURS=str(1.5 / 3600), THREAD_TTL_CHECK_SECONDS="0.3"))
    host.start()
    try:
        idle = new_thread(host, "soon idle")
        busy_thread = new_thread(host, "busy soon")
        llm.script(sleep(10))  # the next turn runs across several cutoffs
        busy = host.request("POST", f"{RUN}?thread_id={busy_thread}&wait_for_response=false",
                            "a long turn", TEXT)
        busy_key = busy_thread.rsplit("@", 1)[1]
        llm.wait_for_requests(3, timeout=20)
        # a round found the busy thread past its TTL and kept it (the entity refused)
        wait_until(lambda: busy_key in reaper_status(host).get("kept_in_use", []), timeout=60)
        assert host.request("GET", f"{THREADS}/{idle}").status == 404  # idle ones still go
        doc = wait_for_status(host, busy.json()["id"], timeout=60)
        assert doc["runtimeStatus"] == "Completed", doc
        assert doc["output"]["reply"] == "echo: a long turn [messages=4]"
        assert doc["output"]["thread_messages"] == 4
    finally:
        host.kill()


@pytest.mark.timeout(120)
def test_changed_ttl_settings_reach_the_running_reaper(llm, tmp_path):
    db = tmp_path / "ttl-change.sqlite"
    host = DevhostProcess(ROOT, db, app_env(llm, THREAD_TTL_HOURS="1000",
                                            THREAD_TTL_CHECK_SECONDS="3600"))
    host.start()
    try:
        old = new_thread(host, "kept for a thousand hours")
        wait_until(lambda: reaper_status(host).get("settings", {}).get("ttl_seconds") == 3.6e6)
    finally:
        host.kill()
    host = DevhostProcess(ROOT, db, app_env(llm, THREAD_TTL_HOURS=str(1 / 3600),
                                            THREAD_TTL_CHECK_SECONDS="0.3"), port=host.port)
    host.start()
    try:
        new_thread(host, "the first request after the restart wakes the reaper")
        wait_until(lambda: host.request("GET", f"{THREADS}/{old}").status == 404, timeout=30)
        # a ContinueAsNew'd reaper shows no report until its round ends: wait for one
        wait_until(lambda: reaper_status(host).get("settings", {}).get("ttl_seconds") == 1.0)
    finally:
        host.kill()


# -- 8. Finished turn histories are purged after TURN_HISTORY_RETENTION_HOURS -------------------

@pytest.mark.timeout(120)
def test_finished_turn_histories_are_purged_after_the_retention(llm, tmp_path):
    host = DevhostProcess(ROOT, tmp_path / "retention.sqlite", app_env(
        llm, TURN_HISTORY_RETENTION_HOURS=str(1 / 3600), THREAD_TTL_CHECK_SECONDS="0.3"))
    host.start()
    try:
        thread_id = new_thread(host, "one")
        assert host.request("POST", f"{RUN}?thread_id={thread_id}", "two", TEXT).status == 200
        key = thread_id.rsplit("@", 1)[1]
        assert len(instances(host, f"turn-{key}-")) == 2
        wait_until(lambda: instances(host, f"turn-{key}-") == [], timeout=30)
        doc = host.request("GET", f"{THREADS}/{thread_id}").json()
        assert [m["content"] for m in doc["messages"] if m["role"] == "user"] == ["one", "two"]
        assert reaper_status(host)["turn_histories_purged"] >= 0
        assert host.request("GET", f"{W}/instances/thread-reaper").status in (200, 202)
    finally:
        host.kill()


# -- Proof: SIGKILLs under 8 concurrent threads with keys derived from their thread ids ---------

@pytest.mark.timeout(600)
def test_sigkills_under_concurrent_threads_with_thread_derived_keys_leave_every_thread_intact(
        llm, tmp_path):
    threads, messages, kill_at = 8, 20, (12, 30, 50, 70, 90, 110, 130)
    db = tmp_path / "kills.sqlite"
    host = DevhostProcess(ROOT, db, app_env(llm))
    host.start()
    port = host.port
    done = []                      # (thread index, message index) as each reply arrives
    lock = threading.Lock()
    failures: list[str] = []

    def send(path: str, text: str, key: str):
        """POST until 200, retrying what a crash causes (refused or cut connections, 5xx, a
        202 of a turn that outlived the wait); anything else is a bug."""
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                r = DevhostProcess.request(host, "POST", path, text,
                                           {**TEXT, "Idempotency-Key": key}, timeout=30)
            except OSError:
                time.sleep(0.1)
                continue
            if r.status == 200:
                return r
            if r.status not in (202, 500, 502, 503):
                failures.append(f"{key}: {r}")
                return r
            time.sleep(0.1)
        failures.append(f"{key}: no answer")

    def client(i: int):
        first = send(RUN, f"t{i} m0", f"client-{i}-{uuid.uuid4().hex}-m0")
        thread_id = first.headers["x-ms-thread-id"]
        with lock:
            done.append((i, 0))
        for n in range(1, messages):
            send(f"{RUN}?thread_id={urllib.parse.quote(thread_id)}", f"t{i} m{n}",
                 f"{thread_id}-m{n}")
            with lock:
                done.append((i, n))
        return thread_id

    kills = 0
    try:
        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(client, i) for i in range(threads)]
            for threshold in kill_at:
                while len(done) < threshold and not all(f.done() for f in futures):
                    time.sleep(0.01)
                if all(f.done() for f in futures):
                    break
                host.kill()
                kills += 1
                host.proc = None
                restarted = DevhostProcess(ROOT, db, app_env(llm), port=port)
                restarted.start()
                host.proc = restarted.proc  # the clients keep using `host` (same port)
            ids = [f.result() for f in futures]
        assert not failures, failures[:5]
        assert kills >= 6, kills
        for i, thread_id in enumerate(ids):
            doc = host.request("GET", f"{THREADS}/{thread_id}").json()
            users = [m["content"] for m in doc["messages"] if m["role"] == "user"]
            assert users == [f"t{i} m{n}" for n in range(messages)], (i, users)
            replies = [m["content"] for m in doc["messages"] if m["role"] == "assistant"]
            assert [r.split(" [")[0] for r in replies] == [f"echo: t{i} m{n}"
                                                             for n in range(messages)]
            assert doc["message_count"] == 2 * messages and doc["in_progress"] is None
            key = thread_id.rsplit("@", 1)[1]
            assert len(instances(host, f"turn-{key}-")) == messages  # one turn per message
    finally:
        host.kill()
