"""The app's functions through the real SDK's replay and entity handles, with handcrafted
histories and batches (no host), plus the pure modules they share."""
from __future__ import annotations

import json
import uuid

import pytest

from api.turn_request import Problem, parse_run_request
from core import conversation
from core.agents import CatalogueError, find_agent, parse_catalogue
from core.threads import ThreadIdError, format_thread_id, parse_thread_id
from entities.thread import bp as thread_bp
from orchestrators.agent_turn import agent_turn

ORCHESTRATOR = agent_turn.build().get_user_function()
ENTITY = thread_bp._function_builders[0].build().get_user_function()
KEY = "0b0f5a86-0d3f-4b39-9f5a-3d0f54d2b0a1"
THREAD = f"@dafx-mydurableagent@{KEY}"
TURN_INPUT = {"agent": "MyDurableAgent", "thread_key": KEY, "thread_id": THREAD,
              "message": "Which one is best?", "turn_id": "t1", "new_thread": False}
T0 = "2026-11-22T10:00:00.0000000Z"


def ev(kind: int, event_id: int = -1, ts: str = T0, **fields) -> dict:
    return {"EventType": kind, "EventId": event_id, "IsPlayed": False, "Timestamp": ts, **fields}


def start_events() -> list[dict]:
    text = json.dumps(TURN_INPUT)
    return [ev(12), ev(0, Name="agent_turn", Version="", Input=text,
                       OrchestrationInstance={"InstanceId": "i1", "ExecutionId": "x1"})]


def run(history: list[dict]) -> dict:
    document = json.dumps({"history": history, "input": json.dumps(TURN_INPUT),
                           "instanceId": "i1", "isReplaying": False, "parentInstanceId": None,
                           "upperSchemaVersion": 1, "upperSchemaVersionNew": 2})
    try:
        return json.loads(ORCHESTRATOR(document))
    except Exception as exc:  # the SDK reports orchestrator failures by raising
        return json.loads(str(exc).split("$OutOfProcData$:", 1)[1])


def entity_call(event_id: int, request_id: str, operation: str) -> dict:
    return ev(14, event_id, InstanceId=f"@dafx-mydurableagent@{KEY}", Name="op",
              Input=json.dumps({"op": operation, "id": request_id}))


def entity_answer(request_id: str, result, ts: str = T0) -> dict:
    return ev(15, ts=ts, Name=request_id, Input=json.dumps({"result": json.dumps(result)}))


HISTORY_WINDOW = [{"role": "user", "content": "Name three languages"},
                  {"role": "assistant", "content": "Python, Java, Go"}]
ANSWER = {"ok": True, "reply": "Python", "usage": {"prompt_tokens": 30, "completion_tokens": 2,
                                                   "total_tokens": 32},
          "model": "m", "finish_reason": "stop", "latency_ms": 12.5, "provider": "openai"}


GRANTED = {"granted": True, "history": None}


def test_turn_first_takes_the_thread_lease_which_returns_the_context():
    state = run(start_events())
    assert state["isDone"] is False
    (action,) = state["actions"][0]
    assert action["actionType"] == 7 and action["operation"] == "acquire"
    assert action["instanceId"] == f"@dafx-mydurableagent@{KEY}"
    request = json.loads(action["input"])
    assert request["create"] is False and request["budget_tokens"] > 0
    assert request["turn_id"] == "t1" and request["instance_id"] == "i1"
    assert request["now"].startswith("2026-11-22T10:00:00")


def test_a_queued_turn_waits_for_its_grant_then_asks_again():
    history = start_events() + [ev(13), entity_call(0, "r1", "acquire"), ev(12),
                                entity_answer("r1", {"granted": False,
                                                     "holder": {"turnId": "t0",
                                                                "instanceId": "i0"}})]
    state = run(history)
    waits = state["actions"][0][1]
    assert waits["actionType"] == 11  # WhenAny(grant event, recheck timer)
    kinds = sorted(a["actionType"] for a in waits["compoundActions"])
    assert kinds == [5, 6]
    event = next(a for a in waits["compoundActions"] if a["actionType"] == 6)
    assert event["externalEventName"] == "turn_granted"
    granted = run(history + [ev(13), ev(10, 1, FireAt="2026-11-22T10:00:05.0000000Z"), ev(12),
                             ev(15, Name="turn_granted", Input=json.dumps("t1"))])
    again = granted["actions"][0][2]
    assert again["actionType"] == 7 and again["operation"] == "acquire"


def test_turn_calls_the_llm_with_retry_and_the_windowed_history():
    history = start_events() + [ev(13), entity_call(0, "r1", "acquire"), ev(12),
                                entity_answer("r1", {"granted": True, "history": HISTORY_WINDOW})]
    state = run(history)
    retry = state["actions"][0][1]
    assert retry["actionType"] == 12  # the SDK wraps a with-retry task in a WhenAll
    call = retry["compoundActions"][0]
    assert call["actionType"] == 1 and call["functionName"] == "call_llm"
    assert call["retryOptions"]["maxNumberOfAttempts"] == 3
    sent = json.loads(call["input"])
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][-1]["content"] == "Which one is best?"
    assert sent["agent"]["name"] == "MyDurableAgent" and sent["turn_id"] == "t1"


def test_turn_writes_the_completed_exchange_then_returns_the_result_document():
    t2 = "2026-11-22T10:00:02.0000000Z"
    history = start_events() + [ev(13), entity_call(0, "r1", "acquire"), ev(12),
                                entity_answer("r1", {"granted": True, "history": HISTORY_WINDOW}),
                                ev(4, 1, Name="call_llm"),
                                ev(13), ev(12, ts=t2),
                                ev(5, ts=t2, TaskScheduledId=1, Result=json.dumps(ANSWER))]
    state = run(history)
    write = state["actions"][0][2]
    assert write["actionType"] == 7 and write["operation"] == "append_turn"
    record = json.loads(write["input"])
    assert record["turn_id"] == "t1" and record["reply"] == "Python"
    assert record["durations"] == {"model": 12.5, "turn": 2000.0}

    done = run(history + [ev(13), entity_call(2, "r2", "append_turn"), ev(12, ts=t2),
                          entity_answer("r2", {"appended": True, "message_count": 4,
                                               "next": None}, t2)])
    assert done["isDone"] is True
    output = done["output"]
    assert output["reply"] == "Python" and output["thread_id"] == THREAD
    assert output["usage"]["total_tokens"] == 32 and output["thread_messages"] == 4
    assert output["context_messages"] == 2


def test_a_permanent_model_error_fails_the_turn_without_writing_it():
    refused = {"ok": False, "error": {"kind": "content_filter", "status": 502,
                                      "message": "blocked by the content filter"}}
    history = start_events() + [ev(13), entity_call(0, "r1", "acquire"), ev(12),
                                entity_answer("r1", {"granted": True, "history": []}),
                                ev(4, 1, Name="call_llm"), ev(13),
                                ev(12), ev(5, TaskScheduledId=1, Result=json.dumps(refused))]
    state = run(history)
    release = state["actions"][0][2]
    assert release["operation"] == "release"  # gives the lease back, writes nothing
    released = run(history + [ev(13), entity_call(2, "r2", "release"), ev(12),
                              entity_answer("r2", {"next": None})])
    assert released["error"] == "[content_filter:502] blocked by the content filter"
    assert all(a.get("operation") != "append_turn" for a in released["actions"][0])


# -- the thread entity through the SDK's entity handle -----------------------------------------

def batch(state, *operations) -> dict:
    ops = [{"name": name, "input": None if value is None else json.dumps(json.dumps(value)),
            "isSignal": False} for name, value in operations]
    document = {"self": {"name": "dafx-mydurableagent", "key": KEY}, "exists": state is not None,
                "state": state, "batch": ops}
    return json.loads(ENTITY(json.dumps(document)))


def turn_record(turn_id: str, message: str = "hi", reply: str = "hello") -> dict:
    return {"agent": "MyDurableAgent", "thread_id": THREAD, "turn_id": turn_id,
            "message": message, "reply": reply,
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            "model": "m", "durations": {"model": 1.0, "turn": 2.0},
            "started_at": "2026-11-22T10:00:00+00:00", "completed_at": "2026-11-22T10:00:01+00:00",
            "lease_until": "2026-11-22T10:10:00+00:00"}


LEASE = {"now": "2026-11-22T10:00:00+00:00", "lease_until": "2026-11-22T10:10:00+00:00"}


def acquire_request(turn_id: str, create: bool = True, **extra) -> dict:
    return {"agent": "MyDurableAgent", "thread_id": THREAD, "budget_tokens": 500,
            "turn_id": turn_id, "instance_id": f"i-{turn_id}", "create": create,
            **LEASE, **extra}


def test_entity_creates_the_thread_only_when_asked():
    absent = batch(None, ("acquire", acquire_request("a", create=False)))
    assert json.loads(absent["results"][0]["result"]) == {"granted": False, "missing": True}
    assert absent["entityExists"] is False  # a refused read must not create the entity
    created = batch(None, ("acquire", acquire_request("a")))
    assert created["entityExists"] is True
    state = json.loads(created["entityState"])
    assert state["schemaVersion"] == 1 and state["threadId"] == THREAD and state["messages"] == []
    assert state["lease"]["turnId"] == "a"


def test_entity_queues_turns_and_hands_the_lease_over_in_order():
    out = batch(None, ("acquire", acquire_request("a")), ("acquire", acquire_request("b")),
                ("acquire", acquire_request("c")), ("acquire", acquire_request("b")),
                ("append_turn", {**turn_record("a"), "lease_until": LEASE["lease_until"]}))
    results = [json.loads(r["result"]) for r in out["results"]]
    assert [r["granted"] for r in results[:4]] == [True, False, False, False]
    assert results[1]["holder"]["turnId"] == "a"
    assert results[4]["next"] == {"turnId": "b", "instanceId": "i-b"}
    state = json.loads(out["entityState"])
    assert state["lease"]["turnId"] == "b" and [w["turnId"] for w in state["waiting"]] == ["c"]
    freed = batch(out["entityState"], ("release", {"turn_id": "b", **LEASE}))
    assert json.loads(freed["results"][0]["result"])["next"]["turnId"] == "c"
    later = batch(freed["entityState"], ("acquire", acquire_request(
        "d", now="2026-11-22T11:00:00+00:00")))
    assert json.loads(later["results"][0]["result"])["granted"] is False  # c still holds it


def test_entity_append_is_idempotent_per_turn_id():
    first = batch(None, ("acquire", acquire_request("a")))
    out = batch(first["entityState"], ("append_turn", turn_record("a")),
                ("append_turn", turn_record("a")),
                ("append_turn", turn_record("b", "second", "again")))
    results = [json.loads(r["result"]) for r in out["results"]]
    assert [r["appended"] for r in results] == [True, False, True]
    assert [r["message_count"] for r in results] == [2, 2, 4]
    state = json.loads(out["entityState"])
    assert [m["content"] for m in state["messages"]] == ["hi", "hello", "second", "again"]
    assert state["totals"] == {"turns": 2, "prompt_tokens": 10, "completion_tokens": 6,
                               "total_tokens": 16}
    got = batch(out["entityState"], ("get", None))
    assert json.loads(got["results"][0]["result"])["messages"][3]["content"] == "again"
    deleted = batch(out["entityState"], ("delete", None))
    assert deleted["entityExists"] is False
    repeat = batch(out["entityState"], ("acquire", acquire_request("a")))
    done = json.loads(repeat["results"][0]["result"])
    assert done["granted"] is False and done["done"]["reply"] == "hello"  # never re-run


def test_entity_rejects_unknown_operations():
    out = batch(None, ("explode", None))
    assert out["results"][0]["isError"] is True
    assert "unknown thread operation" in out["results"][0]["result"]


# -- pure modules -------------------------------------------------------------------------------

def test_context_window_keeps_the_newest_whole_turns_within_budget():
    messages = []
    for i in range(10):
        messages.append({"role": "user", "content": f"question {i} " + "x" * 40})
        messages.append({"role": "assistant", "content": f"answer {i}",
                         "usage": {"completion_tokens": 10}})
    window = conversation.context_window(messages, 60)
    assert window[0]["role"] == "user"
    assert window[-1] == {"role": "assistant", "content": "answer 9"}
    assert sum(conversation.estimate_tokens(m) for m in messages[-len(window):]) <= 60
    assert len(conversation.context_window(messages, 10_000)) == 20
    assert conversation.context_window(messages, 0) == []


def test_thread_ids_parse_both_forms_and_refuse_others():
    key = str(uuid.uuid4())
    assert parse_thread_id(format_thread_id("MyDurableAgent", key), "MyDurableAgent") == key
    assert parse_thread_id(key.upper(), "mydurableagent") == key
    assert parse_thread_id(key.replace("-", ""), "MyDurableAgent") == key
    with pytest.raises(ThreadIdError) as other:
        parse_thread_id(f"@dafx-someone@{key}", "MyDurableAgent")
    assert other.value.status == 404
    for bad in ("", "abc", f"@dafx-mydurableagent@{key}x", f"dafx-mydurableagent@{key}"):
        with pytest.raises(ThreadIdError) as malformed:
            parse_thread_id(bad, "MyDurableAgent")
        assert malformed.value.status == 400


def test_catalogue_validation():
    agents = parse_catalogue({"agents": [{"name": "Helper", "instructions": "Be brief.",
                                          "temperature": 0.2, "max_output_tokens": 64}]})
    assert agents["helper"].max_output_tokens == 64
    assert find_agent("MYDURABLEAGENT").name == "MyDurableAgent"
    for bad in ({}, {"agents": []}, {"agents": [{"name": "1bad"}]},
                {"agents": [{"name": "a", "temperature": 5}]},
                {"agents": [{"name": "a"}, {"name": "A"}]},
                {"agents": [{"name": "a", "colour": "red"}]}):
        with pytest.raises(CatalogueError):
            parse_catalogue(bad)


def test_run_request_parsing_rules():
    text = parse_run_request("POST", {"Content-Type": "text/plain"}, {"thread_id": "t"}, b"hi")
    assert (text.message, text.thread_id, text.wait, text.wants_json) == ("hi", "t", True, False)
    as_json = parse_run_request("POST", {"content-type": "application/json; charset=utf-8"},
                                {"wait_for_response": "false"}, b'{"message": "m"}')
    assert as_json.wants_json and not as_json.wait
    body_wins = parse_run_request("POST", {"Content-Type": "application/json"},
                                  {"wait_for_response": "false"},
                                  b'{"message": "m", "wait_for_response": true}')
    assert body_wins.wait
    with pytest.raises(Problem) as refused:
        parse_run_request("PUT", {}, {}, b"hi")
    assert refused.value.status == 405 and refused.value.headers == {"Allow": "POST"}


def test_context_window_never_splits_a_tool_call_from_its_result():
    call = {"id": "call_1", "type": "function",
            "function": {"name": "lookup_order", "arguments": '{"order_id": "A1001"}'}}
    messages = [{"role": "user", "content": "old " * 40, "turnId": "a"},
                {"role": "assistant", "content": "old answer", "turnId": "a"},
                {"role": "user", "content": "look it up", "turnId": "b"},
                {"role": "assistant", "content": "", "tool_calls": [call], "turnId": "b"},
                {"role": "tool", "tool_call_id": "call_1", "name": "lookup_order",
                 "content": '{"total": 5}', "turnId": "b", "approval": None},
                {"role": "assistant", "content": "it is 5", "turnId": "b",
                 "usage": {"completion_tokens": 3}}]
    for budget in range(0, 200):
        window = conversation.context_window(messages, budget)
        assert not window or window[0]["role"] == "user", (budget, window)
        ids = {c["id"] for m in window for c in m.get("tool_calls", [])}
        results = {m["tool_call_id"] for m in window if m["role"] == "tool"}
        assert ids == results, (budget, window)
    full = conversation.context_window(messages, 10_000)
    assert full[3] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert full[4] == {"role": "tool", "tool_call_id": "call_1", "name": "lookup_order",
                       "content": '{"total": 5}'}  # wire shape: our metadata dropped
