"""Streamed turns over HTTP on devhost (issue 11): Server-Sent Events from the durable turn,
read by a real HTTP client, against the fake OpenAI-compatible server streaming slowly (and,
once, the real local model). Order, not wall-clock: the client's receive times are compared with
the fake model's own chunk times (`RecordedRequest.chunks`), both `time.time()` on this machine.
"""
from __future__ import annotations

import json
import threading
import time

import httpx2 as httpx  # the HTTP client the openai and mcp packages ship with
import pytest

from conftest import ROOT, DevhostProcess, app_env, thread_state, wait_for_status
from tests.fake_openai import (reply, server_error, sleep, streamed, tool_call, tool_calls,
                               unauthorized)

AGENT = "MyDurableAgent"
RUN = f"/api/agents/{AGENT}/run"
SSE = {"Accept": "text/event-stream", "Content-Type": "text/plain"}


@pytest.fixture(scope="module")
def host(llm, tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    process = DevhostProcess(ROOT, root / "hub.sqlite", app_env(
        llm, STREAM_HEARTBEAT_SECONDS="0.2", TOOLS_DATA_DIR=str(root)))
    process.start()
    yield process
    process.kill()


class Frame(dict):
    """One SSE event (id, event, data) or comment, with the client's receive time."""


def frames(response, stop_after: int | None = None):
    """Parse SSE from an httpx streamed response as it arrives (comments included)."""
    current: dict = {}
    count = 0
    for line in response.iter_lines():
        if line.startswith(":"):
            yield Frame(comment=line[1:].strip(), at=time.time())
            continue
        if line:
            field, _, value = line.partition(":")
            current[field] = value[1:] if value.startswith(" ") else value
            continue
        if current:
            frame = Frame(id=int(current["id"]), event=current.get("event", "message"),
                          data=json.loads(current["data"]), at=time.time())
            current = {}
            yield frame
            count += 1
            if stop_after is not None and count >= stop_after:
                return


def events_only(items) -> list[Frame]:
    return list(live_events(items))


def live_events(items):
    """The events (no comments) as they arrive."""
    return (f for f in items if "event" in f)


def run_streamed(host, message: str, path: str = RUN, headers: dict | None = None):
    """POST the turn asking for SSE; (response head, every frame until the stream ends)."""
    with httpx.stream("POST", host.base + path, content=message.encode(),
                      headers={**SSE, **(headers or {})}, timeout=120) as r:
        return r, list(frames(r))


def read_stream(host, thread_id: str, turn_id: str, after: int | None = None,
                header: bool = True, agent: str = AGENT):
    headers = {"Accept": "text/event-stream"}
    url = f"{host.base}/api/agents/{agent}/threads/{thread_id}/turns/{turn_id}/stream"
    if after is not None and header:
        headers["Last-Event-ID"] = str(after)
    elif after is not None:
        url += f"?after={after}"
    with httpx.stream("GET", url, headers=headers, timeout=120) as r:
        assert r.status_code == 200, r.read()
        return events_only(frames(r))


def reply_text(events: list[Frame]) -> str:
    """What a reader shows: the text of the last step, discarding text before each `attempt`."""
    text: dict = {}
    for e in events:
        if e["event"] == "attempt":
            text[e["data"]["step"]] = ""
        elif e["event"] == "delta":
            text[e["data"]["step"]] = text.get(e["data"]["step"], "") + e["data"]["text"]
    return text[max(text)] if text else ""


def assert_well_formed(events: list[Frame], closing: str = "done") -> None:
    ids = [e["id"] for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # contiguous, no duplicates
    assert events[-1]["event"] == closing
    assert [e["event"] for e in events].count(closing) == 1
    assert not {"done", "error"} & {e["event"] for e in events[:-1]}


def turn_document(host, thread_id: str, turn_id: str) -> dict:
    return host.request("GET", f"/api/agents/{AGENT}/threads/{thread_id}/turns/{turn_id}").json()


def test_deltas_arrive_while_the_model_writes_and_add_up_to_the_reply(host, fresh_llm):
    words = "Lisbon in two days: trams, custard tarts, the river and a fado night."
    fresh_llm.script(streamed(reply(words), chunk_delay=0.15))
    r, items = run_streamed(host, "Plan a weekend in Lisbon")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = events_only(items)
    assert_well_formed(events)

    first = events[0]
    assert first["event"] == "turn" and first["id"] == 1
    thread_id, turn_id = first["data"]["thread_id"], first["data"]["turn_id"]
    assert r.headers["x-ms-thread-id"] == thread_id and r.headers["x-ms-turn-id"] == turn_id
    assert first["data"]["instance_id"] == f"turn-{thread_id.rsplit('@', 1)[1]}-{turn_id}"
    assert events[1]["event"] == "attempt" and events[1]["data"] == {
        "step": 1, "attempt": 1, "reason": "start"}

    chunks = fresh_llm.requests[-1].chunks
    deltas = [e for e in events if e["event"] == "delta"]
    assert len(chunks) == len(words.split()) and len(deltas) > 1
    # the first delta reached the client before the model had sent its last chunk
    assert deltas[0]["at"] < chunks[-1][0]
    assert reply_text(events) == words == "".join(d["data"]["text"] for d in deltas)

    done = events[-1]["data"]
    assert done["reply"] == words and done["thread_id"] == thread_id
    # the same turn as a non-streamed call: the same result document, stored in the thread
    status = wait_for_status(host, first["data"]["instance_id"])
    assert status["output"] == done
    assert turn_document(host, thread_id, turn_id)["result"] == done
    messages = thread_state(host, thread_id)["messages"]
    assert [m["content"] for m in messages] == ["Plan a weekend in Lisbon", words]


def test_idle_moments_get_comment_heartbeats(host, fresh_llm):
    fresh_llm.script(sleep(1.0, then=streamed(reply("slow to start then quick"))))
    _, items = run_streamed(host, "take your time")
    kinds = [f.get("event", "comment") for f in items]
    assert kinds[0] == "comment"  # at once, before any event: the response head is out
    attempt, first_delta = kinds.index("attempt"), kinds.index("delta")
    assert kinds[attempt:first_delta].count("comment") >= 2  # the model was silent for 1 s
    assert_well_formed(events_only(items))


def test_resume_after_a_drop_gives_exactly_the_missing_events(host, fresh_llm):
    words = "one two three four five six seven eight nine ten"
    fresh_llm.script(streamed(reply(words), chunk_delay=0.15))
    with httpx.stream("POST", host.base + RUN, content=b"count to ten", headers=SSE,
                      timeout=60) as r:
        seen = []
        for frame in live_events(frames(r)):
            seen.append(frame)
            if sum(1 for e in seen if e["event"] == "delta") == 3:
                break  # the client drops the connection mid-stream
    thread_id, turn_id = seen[0]["data"]["thread_id"], seen[0]["data"]["turn_id"]
    assert seen[-1]["event"] == "delta"

    rest = read_stream(host, thread_id, turn_id, after=seen[-1]["id"])
    everything = read_stream(host, thread_id, turn_id)  # after the end: replays to done
    key = [(e["id"], e["event"], e["data"]) for e in seen + rest]
    assert key == [(e["id"], e["event"], e["data"]) for e in everything]
    assert rest[0]["id"] == seen[-1]["id"] + 1
    assert_well_formed(everything)
    assert reply_text(seen + rest) == words
    # ?after= works like the header
    assert [e["id"] for e in read_stream(host, thread_id, turn_id, after=3, header=False)] == \
        [e["id"] for e in everything if e["id"] > 3]


def test_two_readers_of_one_turn_each_get_every_event(host, fresh_llm):
    fresh_llm.script(streamed(reply("a b c d e f g h"), chunk_delay=0.2))
    second: list = []
    with httpx.stream("POST", host.base + RUN, content=b"letters", headers=SSE,
                      timeout=60) as r:
        stream = live_events(frames(r))
        first = [next(stream)]
        thread_id, turn_id = first[0]["data"]["thread_id"], first[0]["data"]["turn_id"]
        reader = threading.Thread(target=lambda: second.extend(
            read_stream(host, thread_id, turn_id)))
        reader.start()
        first.extend(stream)
    reader.join(60)
    assert [(e["id"], e["event"], e["data"]) for e in first] == \
        [(e["id"], e["event"], e["data"]) for e in second]
    assert_well_formed(first)


def test_a_retried_attempt_is_announced_never_garbled(host, fresh_llm):
    fresh_llm.script(streamed(reply("this first try breaks off midway"), break_after=3),
                     streamed(reply("the second try is whole")))
    _, items = run_streamed(host, "try twice")
    events = events_only(items)
    assert_well_formed(events)
    attempts = [e["data"] for e in events if e["event"] == "attempt"]
    assert [a["attempt"] for a in attempts] == [1, 2] and attempts[1]["step"] == 1
    restart = next(i for i, e in enumerate(events) if e["event"] == "attempt"
                   and e["data"]["attempt"] == 2)
    before = "".join(e["data"]["text"] for e in events[:restart] if e["event"] == "delta")
    assert before and "this first try breaks off midway".startswith(before)
    assert reply_text(events) == "the second try is whole" == events[-1]["data"]["reply"]


def test_a_durable_retry_of_the_activity_is_a_further_attempt(llm, tmp_path):
    llm.reset()
    host = DevhostProcess(ROOT, tmp_path / "retry.sqlite", app_env(llm, LLM_MAX_ATTEMPTS="1"))
    host.start()
    try:
        llm.script(server_error(502), streamed(reply("after the durable retry")))
        _, items = run_streamed(host, "fail once")
        events = events_only(items)
        assert_well_formed(events)
        attempts = [e["data"] for e in events if e["event"] == "attempt"]
        assert attempts == [{"step": 1, "attempt": 1, "reason": "start"},
                            {"step": 1, "attempt": 2, "reason": "the activity ran again"}]
        assert reply_text(events) == "after the durable retry"
    finally:
        host.kill()


def test_a_failing_model_ends_the_stream_with_the_error_document(host, fresh_llm):
    fresh_llm.script(unauthorized())
    _, items = run_streamed(host, "refused")
    events = events_only(items)
    assert_well_formed(events, closing="error")
    fresh_llm.script(unauthorized())
    plain = host.request("POST", RUN, "refused", {"Content-Type": "text/plain"})
    assert plain.status == 502
    assert events[-1]["data"] == plain.json()  # the same error document as the plain call


def test_a_tool_turn_streams_its_calls_and_results(host, fresh_llm):
    fresh_llm.script(tool_calls(tool_call("lookup_order", {"order_id": "A1001"}, id="call_a")),
                     streamed(reply("Ada's order A1001 was delivered.")))
    _, items = run_streamed(host, "Where is order A1001?")
    events = events_only(items)
    assert_well_formed(events)
    kinds = [e["event"] for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result")
    call = next(e["data"] for e in events if e["event"] == "tool_call")
    result = next(e["data"] for e in events if e["event"] == "tool_result")
    assert call == {"id": "call_a", "name": "lookup_order", "arguments": {"order_id": "A1001"}}
    assert result["id"] == "call_a" and result["ok"] is True
    assert result["result"] == events[-1]["data"]["tool_calls"][0]["result"]
    assert [e["data"]["step"] for e in events if e["event"] == "attempt"] == [1, 2]
    assert reply_text(events) == "Ada's order A1001 was delivered."


def test_a_call_waiting_for_approval_is_streamed_then_continues(host, fresh_llm):
    fresh_llm.script(tool_calls(tool_call("refund_order", {
        "order_id": "A1001", "amount": 5, "reason": "scratched"}, id="call_r")),
        streamed(reply("Refunded 5 EUR.")))
    with httpx.stream("POST", host.base + RUN, content=b"Refund 5 EUR on A1001", headers=SSE,
                      timeout=60) as r:
        events = []
        for frame in live_events(frames(r)):
            events.append(frame)
            if frame["event"] == "approval_pending":
                pending = frame["data"]
                assert pending["id"] == "call_r" and pending["tool"] == "refund_order"
                decided = host.request("POST", pending["approve_url"],
                                       {"approved": True, "reason": "ok", "by": "test"})
                assert decided.status == 200, decided
    assert_well_formed(events)
    kinds = [e["event"] for e in events]
    assert kinds.index("approval_pending") < kinds.index("tool_call") < kinds.index("tool_result")
    assert events[-1]["data"]["reply"] == "Refunded 5 EUR."


def test_refusals_are_json_before_anything_starts(host, fresh_llm):
    empty = host.request("POST", RUN, "   ", SSE)
    assert empty.status == 400 and empty.headers["content-type"].startswith("application/json")
    assert empty.json()["error"]["code"] == "empty_message"
    assert not fresh_llm.requests
    fresh_llm.script(reply("fine"))
    _, items = run_streamed(host, "hello")
    first = events_only(items)[0]["data"]
    base = f"/api/agents/{AGENT}/threads/{first['thread_id']}/turns"
    bad = host.request("GET", f"{base}/{first['turn_id']}/stream?after=abc")
    assert bad.status == 400 and bad.json()["error"]["code"] == "invalid_after"
    missing = host.request("GET", f"{base}/{'0' * 32}/stream")
    assert missing.status == 404 and missing.json()["error"]["code"] == "turn_not_found"


def test_the_plain_curl_flow_is_unchanged(host, fresh_llm):
    """FastAPI mode on devhost: text in, text out, thread header, status URLs on the 202."""
    fresh_llm.script(reply("plain text answer"))
    r = host.request("POST", RUN, "hi", {"Content-Type": "text/plain"})
    assert r.status == 200 and r.text == "plain text answer"
    assert r.headers["content-type"].startswith("text/plain") and r.headers["x-ms-thread-id"]
    fresh_llm.script(reply("later"))
    accepted = host.request("POST", RUN + "?wait_for_response=false", "hi",
                            {"Content-Type": "text/plain"})
    assert accepted.status == 202
    body = accepted.json()
    assert accepted.headers["location"] == body["statusQueryGetUri"]
    assert body["statusQueryGetUri"].startswith(host.base + "/runtime/webhooks/durabletask/")
    assert accepted.headers["retry-after"] == "10" and body["id"].startswith("turn-")
    assert host.request("GET", body["statusQueryGetUri"]).status in (200, 202)


def test_a_turn_on_the_local_model_streams(tmp_path):
    env = {name: "" for name in ("LLM_PROVIDER", "AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL",
                                 "OPENAI_API_KEY")}
    host = DevhostProcess(ROOT, tmp_path / "local.sqlite", env)
    host.start()
    try:
        _, items = run_streamed(host, "Name a colour.", path="/api/agents/triage/run")
        events = events_only(items)
        assert_well_formed(events)
        deltas = [e for e in events if e["event"] == "delta"]
        done = events[-1]["data"]
        assert done["provider"] == "local" and done["reply"].strip()
        assert len(deltas) > 1 and reply_text(events) == done["reply"]
    finally:
        host.kill()
