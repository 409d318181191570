"""Issue 9: the turn as a loop of durable steps with tools and human approval, on devhost over
HTTP, with the fake OpenAI-compatible server asking for tool calls the way the real API does.

Side effects are read from the tools' own records (tests/test_tools_kit.py's kit_runs.jsonl,
the sample refund ledger), so "ran exactly once" is asserted from the tool's side."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from conftest import ROOT, DevhostProcess, app_env, wait_for_status
from test_tools_kit import kit_runs
from tests.fake_openai import FakeOpenAI, reply, tool_call, tool_calls

RUN = "/api/agents/{agent}/run"
W = "/runtime/webhooks/durabletask"
HISTORY = "?showHistory=true&showHistoryOutput=true"
TOOLS = ["calculate", "lookup_order", "refund_order", "kit_wait", "kit_fail", "kit_echo"]


def agents_file(path) -> str:
    path.write_text(json.dumps({"agents": [
        {"name": "MyDurableAgent", "instructions": "You run tools.", "tools": TOOLS,
         "require_approval": ["refund_order"], "max_steps": 4, "max_tool_calls": 6},
        {"name": "Hasty", "instructions": "Approvals time out fast.",
         "tools": ["refund_order", "kit_echo"], "require_approval": ["refund_order"],
         "approval_timeout_seconds": 2}]}))
    return str(path)


def tool_env(llm, tmp, **extra) -> dict:
    data = tmp / "tools-data"
    data.mkdir(exist_ok=True)
    return app_env(llm, AGENTS_FILE=agents_file(tmp / "agents.json"),
                   TOOLS_MODULES="tests.test_tools_kit", TOOLS_DATA_DIR=str(data), **extra)


@pytest.fixture(scope="module")
def tool_llm():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def tools_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tool-turns")


@pytest.fixture(scope="module")
def host(tool_llm, tools_dir):
    process = DevhostProcess(ROOT, tools_dir / "hub.sqlite", tool_env(tool_llm, tools_dir))
    process.start()
    yield process
    process.kill()


@pytest.fixture(autouse=True)
def _reset(request):
    if "tool_llm" in request.fixturenames:
        request.getfixturevalue("tool_llm").reset()
    yield


def data_dir(tmp) -> str:
    return str(tmp / "tools-data")


def post(host, message, agent="MyDurableAgent", thread_id=None, wait=True, **body):
    doc = {"message": message, **body}
    if thread_id:
        doc["thread_id"] = thread_id
    if not wait:
        doc["wait_for_response"] = False
    return host.request("POST", RUN.format(agent=agent), doc)


def thread(host, thread_id, agent="MyDurableAgent") -> dict:
    return host.request("GET", f"/api/agents/{agent}/threads/{thread_id}").json()


def activities_run(host, instance_id) -> list[str]:
    """The activities of an instance's history, in order (the status API folds each
    TaskScheduled into its completion, as the extension does), without the stream journal's
    stream_publish / stream_finish (api/stream.py)."""
    doc = host.request("GET", f"{W}/instances/{instance_id}{HISTORY}").json()
    return [e["FunctionName"] for e in doc["historyEvents"]
            if e["EventType"] in ("TaskCompleted", "TaskFailed")
            and e["FunctionName"] not in ("stream_publish", "stream_finish")]


def last_tool_message(record) -> dict:
    return json.loads(next(m for m in reversed(record.messages) if m["role"] == "tool")["content"])


def refunds(tmp) -> list[dict]:
    path = tmp / "tools-data" / "refunds.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def refund_attempts(tmp) -> list[dict]:
    path = tmp / "tools-data" / "refund_attempts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# -- the loop --------------------------------------------------------------------------------------

def test_one_tool_call_then_a_text_answer(host, tool_llm):
    tool_llm.script(tool_calls(tool_call("calculate", {"expression": "6 * 7"}, id="call_calc")),
                    lambda record: reply(f"the answer is {last_tool_message(record)['result']}"))
    r = post(host, "what is six times seven?")
    assert r.status == 200, r
    doc = r.json()
    assert doc["reply"] == "the answer is 42" and doc["steps"] == 2
    (call,) = doc["tool_calls"]
    assert call["id"] == "call_calc" and call["name"] == "calculate"
    assert call["arguments"] == {"expression": "6 * 7"} and call["result"]["result"] == 42
    assert call["approval"] is None and call["duration_ms"] >= 0
    first, second = tool_llm.requests
    assert {t["function"]["name"] for t in first.tools} == set(TOOLS)
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "tool"]
    assert second.messages[2]["tool_calls"][0]["id"] == "call_calc"
    assert second.messages[3]["tool_call_id"] == "call_calc"
    stored = thread(host, doc["thread_id"])["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["function"]["name"] == "calculate"
    assert json.loads(stored[2]["content"])["result"] == 42
    assert activities_run(host, doc["instance_id"]) == ["call_llm", "calculate", "call_llm"]

    # the next turn's model sees the whole exchange, in OpenAI shapes
    follow = post(host, "and again?", thread_id=doc["thread_id"])
    assert follow.status == 200, follow
    sent = tool_llm.requests[-1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant",
                                         "user"]


def test_calls_of_one_step_run_in_parallel_as_activities_named_after_the_tool(host, tool_llm,
                                                                            tools_dir):
    labels = [f"p-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    tool_llm.script(tool_calls(*[tool_call("kit_wait", {"seconds": 0.5, "label": label})
                                 for label in labels]), reply("all done"))
    r = post(host, "wait three times")
    assert r.status == 200, r
    doc = r.json()
    assert [c["result"]["label"] for c in doc["tool_calls"]] == labels
    runs = [x for x in kit_runs("kit_wait", data_dir(tools_dir)) if x["label"] in labels]
    events = [x["event"] for x in sorted(runs, key=lambda x: x["at"])]
    assert events == ["start"] * 3 + ["end"] * 3  # all started before any finished
    assert activities_run(host, doc["instance_id"]) == \
        ["call_llm"] + ["kit_wait"] * 3 + ["call_llm"]


def test_a_chain_where_the_second_call_uses_the_first_result(host, tool_llm, tools_dir):
    def second(record):
        order = last_tool_message(record)
        return tool_calls(tool_call("calculate", {"expression": f"{order['total']} * 2"}))

    tool_llm.script(tool_calls(tool_call("lookup_order", {"order_id": "A1001"})), second,
                    lambda record: reply(f"twice is {last_tool_message(record)['result']}"))
    r = post(host, "double order A1001")
    assert r.status == 200, r
    doc = r.json()
    total = doc["tool_calls"][0]["result"]["total"]
    assert doc["tool_calls"][1]["arguments"] == {"expression": f"{total} * 2"}
    assert doc["reply"] == f"twice is {doc['tool_calls'][1]['result']['result']}"
    assert doc["steps"] == 3


def test_a_tool_that_raises_gives_the_model_an_error_it_can_answer(host, tool_llm, tools_dir):
    key = f"fail-{uuid.uuid4().hex[:6]}"
    before = len(kit_runs("kit_fail", data_dir(tools_dir)))
    tool_llm.script(tool_calls(tool_call("kit_fail", {"message": key}, id="call_fail")),
                    lambda record: reply(f"sorry: {last_tool_message(record)['error']}"))
    r = post(host, "try the failing tool")
    assert r.status == 200, r
    doc = r.json()
    (call,) = doc["tool_calls"]
    assert key in call["error"] and "result" not in call
    assert doc["reply"].startswith("sorry: ") and key in doc["reply"]
    assert len(kit_runs("kit_fail", data_dir(tools_dir))) - before == 2  # its retry policy


def test_past_max_steps_the_turn_fails_and_nothing_is_written(host, tool_llm):
    start = post(host, "hello")
    thread_id = start.json()["thread_id"]
    tool_llm.script(*[tool_calls(tool_call("kit_echo", {"value": i})) for i in range(4)])
    r = post(host, "loop forever", thread_id=thread_id)
    assert r.status == 422, r
    assert r.json()["error"]["code"] == "max_steps_exceeded"
    doc = thread(host, thread_id)
    assert [m["content"] for m in doc["messages"] if m["role"] == "user"] == ["hello"]
    assert doc["in_progress"] is None  # the lease was given back


def test_past_max_tool_calls_the_turn_fails_before_running_them(host, tool_llm, tools_dir):
    marker = f"many-{uuid.uuid4().hex[:6]}"
    tool_llm.script(tool_calls(*[tool_call("kit_wait", {"seconds": 0, "label": marker})
                                 for _ in range(7)]))
    r = post(host, "seven calls")
    assert r.status == 422 and r.json()["error"]["code"] == "max_tool_calls_exceeded", r
    assert [x for x in kit_runs("kit_wait", data_dir(tools_dir)) if x["label"] == marker] == []


def test_an_invalid_response_format_is_refused_before_anything_starts(host, tool_llm):
    r = post(host, "structured", response_format={"type": "json_schema"})
    assert r.status == 400 and r.json()["error"]["code"] == "invalid_response_format", r
    assert tool_llm.requests == []


def test_response_format_reaches_the_model_and_output_is_returned(host, tool_llm):
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "strict": True, "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
        "additionalProperties": False}}}
    tool_llm.script(reply('{"n": 7}'))
    r = post(host, "give me seven", response_format=fmt)
    assert r.status == 200, r
    assert r.json()["output"] == {"n": 7}
    assert tool_llm.requests[0].body["response_format"]["type"] == "json_schema"


# -- approvals ---------------------------------------------------------------------------------

def refund_script(llm, call_id: str, amount: float = 5.0):
    llm.script(tool_calls(tool_call("refund_order", {"order_id": "A1001", "amount": amount,
                                                     "reason": "late"}, id=call_id)),
               lambda record: reply(f"refund: {json.dumps(last_tool_message(record))}"))


def decide(host, pending: dict, approved: bool, reason: str = "", **extra):
    return host.request("POST", pending["approve_url"], {"approved": approved, "reason": reason,
                                                         **extra})


def test_approve_runs_the_tool_and_keeps_the_decision(host, tool_llm, tools_dir):
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    refund_script(tool_llm, call_id)
    r = post(host, "refund A1001 by 5")
    assert r.status == 202, r
    body = r.json()
    assert body["status"] == "waiting_for_approval" and r.headers["x-ms-thread-id"]
    (pending,) = body["pending"]
    assert pending["id"] == call_id and pending["tool"] == "refund_order"
    assert pending["arguments"] == {"order_id": "A1001", "amount": 5.0, "reason": "late"}
    assert pending["approve_url"].startswith(host.base) and pending["approve_url"].endswith(
        f"/turns/{body['turn_id']}/approvals/{call_id}")
    assert body["statusQueryGetUri"] and body["id"].endswith(body["turn_id"])
    turn_url = f"/api/agents/MyDurableAgent/threads/{body['thread_id']}/turns/{body['turn_id']}"
    shown = host.request("GET", turn_url).json()
    assert shown["state"] == "waiting_for_approval" and shown["pending"] == body["pending"]
    assert not [a for a in refund_attempts(tools_dir) if a["key"] == call_id]  # not run yet

    bad = host.request("POST", pending["approve_url"], {"approved": "yes"})
    assert bad.status == 400 and bad.json()["error"]["code"] == "invalid_body"
    unknown = host.request("POST", pending["approve_url"].replace(call_id, "call_nope"),
                           {"approved": True})
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "call_not_found"
    ok = decide(host, pending, True, "customer waited two weeks", by="ana")
    assert ok.status == 200, ok
    assert ok.json()["approved"] is True and ok.json()["by"] == "ana"
    again = decide(host, pending, False, "changed my mind")
    assert again.status == 409 and again.json()["error"]["code"] == "already_decided"

    doc = wait_for_status(host, body["id"])
    assert doc["runtimeStatus"] == "Completed", doc
    result = doc["output"]
    (call,) = result["tool_calls"]
    assert call["result"]["refunded"] is True
    assert call["approval"]["approved"] is True and call["approval"]["by"] == "ana"
    assert call["approval"]["reason"] == "customer waited two weeks" and call["approval"]["at"]
    assert [x["key"] for x in refunds(tools_dir)].count(call_id) == 1
    stored = thread(host, body["thread_id"])["messages"]
    tool_message = next(m for m in stored if m["role"] == "tool")
    assert tool_message["approval"]["by"] == "ana"
    after = decide(host, pending, True)
    assert after.status == 409  # the finished turn keeps the decision


def test_deny_tells_the_model_why_and_the_tool_never_runs(host, tool_llm, tools_dir):
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    refund_script(tool_llm, call_id)
    r = post(host, "refund please")
    assert r.status == 202, r
    (pending,) = r.json()["pending"]
    assert decide(host, pending, False, "not eligible").status == 200
    doc = wait_for_status(host, r.json()["id"])
    assert doc["runtimeStatus"] == "Completed"
    (call,) = doc["output"]["tool_calls"]
    assert call["approval"]["approved"] is False and "not eligible" in call["error"]
    assert "not eligible" in doc["output"]["reply"]  # the model was told
    assert not [a for a in refund_attempts(tools_dir) if a["key"] == call_id]


def test_an_approval_that_times_out_is_a_denial(host, tool_llm, tools_dir):
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    refund_script(tool_llm, call_id)
    r = post(host, "refund, nobody answers", agent="Hasty")
    assert r.status == 202, r
    (pending,) = r.json()["pending"]
    doc = wait_for_status(host, r.json()["id"], timeout=30)
    assert doc["runtimeStatus"] == "Completed"
    (call,) = doc["output"]["tool_calls"]
    assert call["approval"]["timed_out"] is True and call["approval"]["approved"] is False
    late = decide(host, pending, True)
    assert late.status == 409 and late.json()["error"]["code"] == "approval_timed_out"
    assert not [a for a in refund_attempts(tools_dir) if a["key"] == call_id]


def test_a_later_turn_queues_behind_a_turn_waiting_for_approval(host, tool_llm):
    first = post(host, "start")
    thread_id = first.json()["thread_id"]
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    refund_script(tool_llm, call_id)
    waiting = post(host, "refund", thread_id=thread_id)
    assert waiting.status == 202, waiting
    queued = post(host, "after the refund", thread_id=thread_id, wait=False)
    assert queued.status == 202
    key = thread_id.rsplit("@", 1)[1]
    state = lambda: host.request("GET", f"{W}/entities/dafx-mydurableagent/{key}").json()  # noqa
    deadline = time.time() + 20
    while not state()["waiting"] and time.time() < deadline:
        time.sleep(0.05)
    current = state()
    assert current["lease"]["turnId"] == waiting.json()["turn_id"]  # the waiting turn keeps it
    assert [w["turnId"] for w in current["waiting"]] == [queued.headers["x-ms-turn-id"]]
    assert decide(host, waiting.json()["pending"][0], True).status == 200
    done = wait_for_status(host, queued.json()["id"])
    assert done["runtimeStatus"] == "Completed"
    users = [m["content"] for m in thread(host, thread_id)["messages"] if m["role"] == "user"]
    assert users == ["start", "refund", "after the refund"]


# -- crashes -----------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_sigkill_while_a_tool_runs_after_another_completed(tmp_path):
    with FakeOpenAI() as llm:
        db = tmp_path / "crash.sqlite"
        host = DevhostProcess(ROOT, db, tool_env(llm, tmp_path))
        host.start()
        started = [host]
        llm.script(tool_calls(tool_call("kit_echo", {"value": "before"}, id="call_echo")),
                   tool_calls(tool_call("kit_wait", {"seconds": 4, "label": "crash"},
                                        id="call_wait")),
                   reply("finished"))
        try:
            r = post(host, "echo then wait", wait=False)
            assert r.status == 202
            deadline = time.time() + 30
            while not kit_runs("kit_wait", data_dir(tmp_path)) and time.time() < deadline:
                time.sleep(0.02)
            assert [x["event"] for x in kit_runs("kit_wait", data_dir(tmp_path))] == ["start"]
            host.kill()  # kit_echo completed, kit_wait in flight
            host = DevhostProcess(ROOT, db, tool_env(llm, tmp_path), port=host.port)
            started.append(host)
            host.start()
            doc = wait_for_status(host, r.json()["id"], timeout=90)
            assert doc["runtimeStatus"] == "Completed", doc
            assert doc["output"]["reply"] == "finished"
            assert len(kit_runs("kit_echo", data_dir(tmp_path))) == 1  # completed: exactly once
            waits = kit_runs("kit_wait", data_dir(tmp_path))
            assert [x["event"] for x in waits].count("end") >= 1  # in flight: at least once
            assert [x["event"] for x in waits].count("start") >= 2
            messages = thread(host, doc["output"]["thread_id"])["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant",
                                                     "tool", "assistant"]
        finally:
            for process in started:
                process.kill()


@pytest.mark.timeout(180)
def test_sigkill_while_an_approval_is_pending(tmp_path):
    with FakeOpenAI() as llm:
        db = tmp_path / "crash.sqlite"
        host = DevhostProcess(ROOT, db, tool_env(llm, tmp_path))
        host.start()
        started = [host]
        llm.script(tool_calls(tool_call("kit_echo", {"value": 1}, id="call_first")),
                   tool_calls(tool_call("refund_order", {"order_id": "A1005", "amount": 3,
                                                         "reason": "crash test"},
                                        id="call_refund")),
                   reply("refunded"))
        try:
            r = post(host, "echo, then refund")
            assert r.status == 202, r
            (pending,) = r.json()["pending"]
            host.kill()
            host = DevhostProcess(ROOT, db, tool_env(llm, tmp_path), port=host.port)
            started.append(host)
            host.start()
            turn = host.request("GET", pending["approve_url"].split("/approvals/")[0]).json()
            assert turn["state"] == "waiting_for_approval"  # still waiting after the restart
            assert decide(host, pending, True, "ok after restart").status == 200
            doc = wait_for_status(host, r.json()["id"], timeout=60)
            assert doc["runtimeStatus"] == "Completed", doc
            assert len(kit_runs("kit_echo", data_dir(tmp_path))) == 1
            assert [a["key"] for a in refund_attempts(tmp_path)] == ["call_refund"]
            assert [x["key"] for x in refunds(tmp_path)] == ["call_refund"]
            messages = thread(host, doc["output"]["thread_id"])["messages"]
            assert [m["role"] for m in messages].count("tool") == 2
            assert len({m.get("tool_call_id") for m in messages if m["role"] == "tool"}) == 2
        finally:
            for process in started:
                process.kill()
