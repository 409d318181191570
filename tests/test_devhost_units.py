"""Unit tests of devhost's pure modules: routes, protocol, store, config (and commands' parsers)."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.DurableEntityContext import DurableEntityContext
from azure.durable_functions.models.DurableOrchestrationContext import \
    DurableOrchestrationContext

from devhost import commands, config, protocol as p, routes, store as store_mod
from devhost.errors import BadRequest, ConfigError, DatabaseError

ET, AT = p.EventType, p.ActionType


# ==============================================================================================
# routes
# ==============================================================================================

@pytest.mark.parametrize("template, path, expected", [
    ("hello/{name}", "hello/bob", {"name": "bob"}),
    ("hello/{name}", "/hello/bob/", {"name": "bob"}),
    ("hello/{name}", "hello", None),
    ("hello/{name}", "hello/bob/extra", None),
    ("Hello/World", "hello/world", {}),                       # literals: case-insensitive
    ("HELLO/{Name}", "hello/Bob", {"Name": "Bob"}),           # values keep their case
    ("items/{id?}", "items", {}),
    ("items/{id?}", "items/7", {"id": "7"}),
    ("items/{page=1}", "items", {"page": "1"}),               # default when missing
    ("items/{page=1}", "items/3", {"page": "3"}),
    ("files/{*rest}", "files/a/b/c.txt", {"rest": "a/b/c.txt"}),
    ("files/{*rest}", "files", {}),
    ("", "", {}),
    ("{id:int}", "42", {"id": "42"}),
    ("{id:int}", "-42", {"id": "-42"}),
    ("{id:int}", "4.2", None),
    ("{id:int}", "2147483648", None),                         # int is 32-bit
    ("{id:long}", "2147483648", {"id": "2147483648"}),
    ("{x:alpha}", "abcXYZ", {"x": "abcXYZ"}),
    ("{x:alpha}", "abc1", None),
    ("{g:guid}", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", {"g": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}),
    ("{g:guid}", "not-a-guid", None),
    ("{b:bool}", "TRUE", {"b": "TRUE"}),
    ("{b:bool}", "yes", None),
    ("{n:min(3)}", "3", {"n": "3"}),
    ("{n:min(3)}", "2", None),
    ("{n:max(3)}", "4", None),
    ("{n:range(1,5)}", "5", {"n": "5"}),
    ("{n:range(1,5)}", "6", None),
    ("{s:minlength(3)}", "ab", None),
    ("{s:maxlength(3)}", "abcd", None),
    ("{s:length(3)}", "abc", {"s": "abc"}),
    ("{s:length(3)}", "abcd", None),
    ("{s:length(2,4)}", "abcd", {"s": "abcd"}),
    ("{s:length(2,4)}", "abcde", None),
    ("{s:regex(^a+b$)}", "aaab", {"s": "aaab"}),
    ("{s:regex(^a+b$)}", "AAAB", {"s": "AAAB"}),              # regex: case-insensitive
    ("{s:regex(^a+b$)}", "aaabc", None),
    ("{id:int:min(10)}", "9", None),                          # constraints chain
    ("{id:int:min(10)}", "10", {"id": "10"}),
    ("{id:int?}", "", {}),
    ("{id:int?}", "x", None),
    ("{id:int=5}", "", {"id": "5"}),
    ("report/{year:int}-{month:int}", "report/2024-05", {"year": "2024", "month": "05"}),
])
def test_route_matching(template, path, expected):
    assert routes.RouteTemplate(template).match(path) == expected


def test_route_values_can_contain_encoded_characters():
    assert routes.RouteTemplate("a/{x}").match("a/hello world") == {"x": "hello world"}


def test_unknown_constraint_is_refused():
    with pytest.raises(ValueError):
        routes.RouteTemplate("{x:frobnicate}")


def test_route_specificity_ordering():
    templates = ["{*all}", "items/{id}", "items/special", "items/{id}/{sub?}", "{a}/{b}",
                 "items/{*rest}"]
    ordered = [t.template for t in sorted(map(routes.RouteTemplate, templates),
                                          key=lambda t: t.sort_key)]
    assert ordered.index("items/special") < ordered.index("items/{id}")
    assert ordered.index("items/{id}") < ordered.index("items/{id}/{sub?}")
    assert ordered.index("items/{id}") < ordered.index("{a}/{b}")
    assert ordered[-2:] == ["items/{*rest}", "{*all}"]  # catch-alls last, literal one first

    def first_match(path):
        for t in sorted(map(routes.RouteTemplate, templates), key=lambda t: t.sort_key):
            if t.match(path) is not None:
                return t.template

    assert first_match("items/special") == "items/special"
    assert first_match("ITEMS/Special") == "items/special"
    assert first_match("items/7") == "items/{id}"
    assert first_match("items/7/x") == "items/{id}/{sub?}"
    assert first_match("other/thing") == "{a}/{b}"
    assert first_match("items/7/x/y") == "items/{*rest}"
    assert first_match("x/y/z") == "{*all}"


# ==============================================================================================
# protocol
# ==============================================================================================

def test_flatten_actions_nested_compounds():
    a = {"actionType": AT.CallActivity, "functionName": "a"}
    b = {"actionType": AT.CallActivity, "functionName": "b"}
    timer = {"actionType": AT.CreateTimer, "fireAt": "2024-01-01T00:00:00.000000Z"}
    wait = {"actionType": AT.WaitForExternalEvent, "externalEventName": "E"}
    retry = {"actionType": AT.CallActivityWithRetry, "functionName": "r"}
    state = [[a,
              {"actionType": AT.WhenAny, "compoundActions": [
                  {"actionType": AT.WhenAll, "compoundActions": [b, retry]},
                  timer, wait]},
              {"actionType": AT.WhenAll, "compoundActions": []},
              {"actionType": AT.CallEntity, "instanceId": "@c@k"}]]
    flat = p.flatten_actions(state)
    assert [x["actionType"] for x in flat] == [AT.CallActivity, AT.CallActivity,
                                               AT.CallActivityWithRetry, AT.CreateTimer,
                                               AT.WaitForExternalEvent, AT.CallEntity]
    assert flat[0] is a and flat[1] is b
    # V1 shape: one list per yield; a bare action also works
    assert p.flatten_actions([[a], [b, timer]]) == [a, b, timer]
    assert p.flatten_actions([a]) == [a]
    assert p.flatten_actions([]) == [] and p.flatten_actions(None) == []


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)),
    ("2024-05-01T10:00:00.123Z", datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)),
    ("2024-05-01T10:00:00.123456Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2024-05-01T10:00:00.1234567Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2024-05-01T10:00:00.1Z", datetime(2024, 5, 1, 10, 0, 0, 100000, tzinfo=timezone.utc)),
    ("2024-05-01T12:00:00.5+02:00", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)),
    ("2024-05-01T04:30:00.0000000-05:30", datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)),
    ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)),  # naive = UTC
    ("  2024-05-01T10:00:00.000z ", datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)),
])
def test_parse_time(text, expected):
    parsed = p.parse_time(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None


def test_parse_time_rejects_garbage():
    with pytest.raises(ValueError):
        p.parse_time("yesterday")


def test_time_formats():
    moment = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert p.history_time(moment) == "2024-05-01T10:00:00.1234560Z"  # 7 digits
    assert p.status_time(moment) == "2024-05-01T10:00:00Z"          # whole seconds
    assert p.parse_time(p.history_time(moment)) == moment
    plus2 = moment.astimezone(timezone(timedelta(hours=2)))
    assert p.history_time(plus2) == "2024-05-01T10:00:00.1234560Z"


def _history() -> list[dict]:
    t = "2024-05-01T10:00:0{}.0000000Z".format
    return [
        p.event(ET.OrchestratorStarted, t(0)),
        p.execution_started(t(0), "orch", '{"a": 1}', "i1", "x1", None),
        p.event(ET.TaskScheduled, t(0), 0, Name="act", Version="", Input='"in0"'),
        p.event(ET.TaskScheduled, t(0), 1, Name="pending_act", Version="", Input='"in1"'),
        p.event(ET.TimerCreated, t(0), 2, FireAt=t(5)),
        p.event(ET.SubOrchestrationInstanceCreated, t(0), 3, Name="child", Version="",
                InstanceId="kid", Input='"cin"'),
        p.event(ET.EventSent, t(0), 4, InstanceId="@counter@k", Name="op",
                Input='{"op": "add", "id": "r1"}'),
        p.event(ET.OrchestratorCompleted, t(0)),
        p.event(ET.OrchestratorStarted, t(5)),
        p.task_completed(t(1), 0, '"out0"'),
        p.timer_fired(t(5), 2, t(5)),
        p.event(ET.SubOrchestrationInstanceFailed, t(3), TaskScheduledId=3,
                Reason="child failed", Details="details"),
        p.event_raised(t(4), "r1", '{"result": "3"}'),
        p.event(ET.ExecutionTerminated, t(5), Input="bye"),
        p.event(ET.ExecutionCompleted, t(5), OrchestrationStatus="Completed",
                Result='{"done": true}'),
    ]


def test_render_history_merges_and_drops():
    rendered = p.render_history(_history(), show_input=True, show_output=True)
    assert [e["EventType"] for e in rendered] == [
        "ExecutionStarted", "TaskScheduled", "TimerCreated", "EventSent", "TaskCompleted",
        "TimerFired", "SubOrchestrationInstanceFailed", "EventRaised", "ExecutionTerminated",
        "ExecutionCompleted"]
    by_kind = {e["EventType"]: e for e in rendered}
    started = by_kind["ExecutionStarted"]
    assert started["FunctionName"] == "orch" and started["Input"] == '{"a": 1}'
    assert not {"Name", "OrchestrationInstance", "ParentInstance", "Version"} & set(started)
    pending = by_kind["TaskScheduled"]  # no completion: stays, without Version
    assert pending["Name"] == "pending_act" and "Version" not in pending
    done = by_kind["TaskCompleted"]
    assert done == {"EventType": "TaskCompleted", "Timestamp": "2024-05-01T10:00:01.0000000Z",
                    "FunctionName": "act", "ScheduledTime": "2024-05-01T10:00:00.0000000Z",
                    "Result": "out0", "Input": '"in0"'}
    failed = by_kind["SubOrchestrationInstanceFailed"]
    assert failed["FunctionName"] == "child" and failed["InstanceId"] == "kid"
    assert failed["Reason"] == "child failed" and failed["Details"] == "details"
    assert "TaskScheduledId" not in failed
    assert "TimerId" not in by_kind["TimerFired"] and by_kind["TimerFired"]["FireAt"]
    assert by_kind["TimerCreated"]["FireAt"] == "2024-05-01T10:00:05.0000000Z"
    assert by_kind["EventRaised"]["Name"] == "r1"
    assert by_kind["ExecutionTerminated"]["Input"] == "bye"
    assert by_kind["ExecutionCompleted"] == {
        "EventType": "ExecutionCompleted", "Timestamp": "2024-05-01T10:00:05.0000000Z",
        "OrchestrationStatus": "Completed", "Result": {"done": True}}
    for e in rendered:
        assert not {"EventId", "IsPlayed"} & set(e)


def test_render_history_without_input_or_output():
    rendered = p.render_history(_history(), show_input=False, show_output=False)
    assert all("Input" not in e for e in rendered)
    assert all("Result" not in e for e in rendered)
    assert len(rendered) == 10


def test_context_document_is_accepted_by_the_sdk():
    t0 = "2024-05-01T10:00:00.0000000Z"
    old = [p.event(ET.OrchestratorStarted, t0),
           p.execution_started(t0, "orch", '"Tokyo"', "i1", "x1",
                               {"OrchestrationInstance": {"InstanceId": "parent-1"}}),
           p.event(ET.TaskScheduled, t0, 0, Name="hello", Version="", Input='"Tokyo"'),
           p.event(ET.OrchestratorCompleted, t0)]
    stored = [p.stored_event(e) for e in old]
    assert [s.replayed for s in stored] == [True, True, False, False]
    assert all(json.loads(s.text)["IsPlayed"] is True for s in stored)
    assert [(s.kind, s.task_id) for s in stored] == [(ET.OrchestratorStarted, None),
                                                    (ET.ExecutionStarted, None),
                                                    (ET.TaskScheduled, 0),
                                                    (ET.OrchestratorCompleted, None)]
    history_texts = [s.text for s in stored if s.replayed]
    t1 = "2024-05-01T10:00:02.1234567Z"
    new = [p.event(ET.OrchestratorStarted, t1), p.task_completed(t1, 0, '"Hello Tokyo"')]
    # the input as the Python client stores it: a JSON string holding JSON text
    input_json = json.dumps('"Tokyo"')
    document = p.context_document(history_texts, new, input_json, "i1", "parent-1")
    parsed = json.loads(document)
    assert set(parsed) == {"history", "input", "instanceId", "isReplaying", "parentInstanceId",
                           "upperSchemaVersion", "upperSchemaVersionNew"}
    assert parsed["input"] == '"Tokyo"'
    assert [e["IsPlayed"] for e in parsed["history"]] == [True, True, False, False]
    ctx = DurableOrchestrationContext.from_json(document)
    assert ctx.instance_id == "i1"
    assert ctx.parent_instance_id == "parent-1"
    assert ctx.is_replaying is True
    assert ctx.get_input() == "Tokyo"
    assert len(ctx.histories) == 4
    # current_utc_datetime = the first OrchestratorStarted (the replay clock starts there)
    assert ctx.current_utc_datetime.replace(tzinfo=None) == datetime(2024, 5, 1, 10, 0, 0)

    def orch(context):
        return (yield context.call_activity("hello", context.get_input()))

    state = json.loads(df.Orchestrator.create(orch)(document))
    assert state["isDone"] is True and state["output"] == "Hello Tokyo"
    (action,) = p.flatten_actions(state["actions"])
    assert action["actionType"] == AT.CallActivity and action["functionName"] == "hello"

    first = p.context_document([], old[:2], input_json, "i1", None)
    assert json.loads(first)["isReplaying"] is False
    state = json.loads(df.Orchestrator.create(orch)(first))
    assert state["isDone"] is False
    assert [a["functionName"] for a in p.flatten_actions(state["actions"])] == ["hello"]


def test_context_document_input_forms():
    started = [p.event(ET.OrchestratorStarted, "2024-05-01T10:00:00.0000000Z"),
               p.execution_started("2024-05-01T10:00:00.0000000Z", "o", None, "i", "x", None)]

    def input_of(input_json):
        return DurableOrchestrationContext.from_json(
            p.context_document([], started, input_json, "i", None))

    assert input_of(None).get_input() is None
    assert input_of('{"a": 1}').get_input() == {"a": 1}       # raw object (curl)
    assert input_of(json.dumps('{"a": 1}')).get_input() == {"a": 1}  # the Python client
    with pytest.raises(Exception):                           # raw array: raises, as in Azure
        input_of("[1, 2]").get_input()


def test_entity_batch_document():
    ops = [{"name": "add", "input": '"5"', "is_signal": 1},
           {"name": "get", "input": None, "is_signal": 0}]
    document = p.entity_batch_document("counter", "k@1", "10", ops)
    parsed = json.loads(document)
    assert set(parsed) == {"self", "exists", "state", "batch"}
    assert parsed["self"] == {"name": "counter", "key": "k@1"}
    assert parsed["exists"] is True and parsed["state"] == "10"
    assert parsed["batch"] == [{"name": "add", "input": '"5"', "isSignal": True},
                               {"name": "get", "input": None, "isSignal": False}]
    ctx, batch = DurableEntityContext.from_json(document)
    assert ctx.entity_name == "counter" and ctx.entity_key == "k@1" and len(batch) == 2

    def counter(context):
        value = context.get_state(lambda: 0)
        if context.operation_name == "add":
            value += context.get_input()
        context.set_state(value)
        context.set_result(value)

    out = json.loads(df.Entity.create(counter)(document))
    assert out["entityExists"] is True and out["entityState"] == "15"
    assert [r["result"] for r in out["results"]] == ["15", "15"]
    fresh = json.loads(p.entity_batch_document("counter", "new", None, ops[:1]))
    assert fresh["exists"] is False and fresh["state"] is None


def test_entity_ids():
    assert p.entity_id("Counter", "Key@With@Ats") == "@counter@Key@With@Ats"
    assert p.split_entity_id("@counter@Key@With@Ats") == ("counter", "Key@With@Ats")
    for bad in ("counter@k", "@counter", ""):
        with pytest.raises(ValueError):
            p.split_entity_id(bad)


def test_entity_response_and_orchestrator_input():
    ok = p.entity_response("t", "req-1", "5", False)
    assert ok["EventType"] == ET.EventRaised and ok["Name"] == "req-1"
    assert json.loads(ok["Input"]) == {"result": "5"}
    err = p.entity_response("t", "req-2", '"boom"', True)
    assert json.loads(err["Input"]) == {"result": '"boom"', "exceptionType": "Error"}
    assert p.orchestrator_entity_input("3") == '"3"'
    assert p.orchestrator_entity_input(None) is None


def test_parse_orchestrator_result():
    assert p.parse_orchestrator_result('{"isDone": true, "output": 1}', None)["output"] == 1
    marker = RuntimeError("boom" + p.OUT_OF_PROC_MARKER + json.dumps(
        {"isDone": False, "actions": [[]], "error": "boom"}))
    assert p.parse_orchestrator_result(None, marker)["error"] == "boom"
    plain = p.parse_orchestrator_result(None, KeyError("x"))
    assert plain["error"] == "KeyError: 'x'" and plain["isDone"] is False


def test_client_binding_and_management_urls():
    binding = json.loads(p.client_binding("http://h:1/runtime/webhooks/durabletask",
                                          "http://127.0.0.1:1/rpc/", "Hub", code="sekret"))
    assert binding["taskHubName"] == "Hub" and binding["rpcBaseUrl"].endswith("/")
    urls = binding["managementUrls"]
    assert urls["id"] == "INSTANCEID"
    assert urls["statusQueryGetUri"] == ("http://h:1/runtime/webhooks/durabletask/instances/"
                                         "INSTANCEID?taskHub=Hub&connection=Storage&code=sekret")
    assert urls["terminatePostUri"].startswith(
        "http://h:1/runtime/webhooks/durabletask/instances/INSTANCEID/terminate?reason={text}&")
    assert all("INSTANCEID" in v for v in urls.values())
    assert "code=sekret" in binding["creationUrls"]["createNewInstancePostUri"]


def test_status_document():
    row = {"name": "orch", "instance_id": "i1", "status": "Completed", "input_raw": '{"a": 1}',
           "custom_status": '"working"', "output": "[1, 2]", "created_at": 1714557600.9,
           "updated_at": 1714557602.2}
    doc = p.status_document(row)
    assert doc == {"name": "orch", "instanceId": "i1", "runtimeStatus": "Completed",
                   "input": {"a": 1}, "customStatus": "working", "output": [1, 2],
                   "createdTime": "2024-05-01T10:00:00Z",
                   "lastUpdatedTime": "2024-05-01T10:00:02Z"}
    hidden = p.status_document(row, show_input=False)
    assert "input" in hidden and hidden["input"] is None  # correction 5
    assert "historyEvents" in p.status_document(row, history=[])


def test_failure_messages():
    assert p.activity_failure_reason("flaky", ValueError("nope")) == \
        "Activity function 'flaky' failed: ValueError: nope"
    assert p.orchestrator_failure_output("o", "bad") == "Orchestrator function 'o' failed: bad"
    assert p.unknown_function_message("x", "activity", ["b", "a"]) == (
        "The function 'x' doesn't exist, is disabled, or is not an activity function. "
        "Additional info: The following are the known activity functions: 'a', 'b'.")


# ==============================================================================================
# commands' pure parsers
# ==============================================================================================

@pytest.mark.parametrize("good", ["abc", "a" * 256, "with space", "ünï", "a:b-c_d.e"])
def test_valid_instance_ids(good):
    assert commands.validate_instance_id(good) == good


@pytest.mark.parametrize("bad", ["", "a" * 257, "@x", "a/b", "a\\b", "a?b", "a#b", "a\x00b",
                                 "a\nb", "a\x7fb"])
def test_invalid_instance_ids(bad):
    with pytest.raises(BadRequest):
        commands.validate_instance_id(bad)


def test_decode_start_input():
    assert commands.decode_start_input(b"") == (None, None)
    assert commands.decode_start_input(b"  ") == (None, None)
    assert commands.decode_start_input(b'{"a": 1}') == ('{"a": 1}', '{"a": 1}')
    # the Python client's form: a JSON string holding JSON text
    assert commands.decode_start_input(b'"{\\"a\\": 1}"') == ('{"a": 1}', '"{\\"a\\": 1}"')
    with pytest.raises(BadRequest):
        commands.decode_start_input(b"{nope")


# ==============================================================================================
# store
# ==============================================================================================

TABLES = {"meta", "instances", "history", "inbox", "activities", "entities", "entity_ops"}


def _instance_row(instance_id: str = "i1", **extra) -> dict:
    return {"instance_id": instance_id, "name": "orch", "execution_id": "x1",
            "status": "Pending", "engine_state": "{}", "created_at": 1.0, "updated_at": 1.0,
            **extra}


def test_migration_on_an_empty_file(tmp_path):
    path = tmp_path / "sub" / "dir" / "hub.sqlite"
    s = store_mod.Store(path)
    s.close()
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchall()
    con.close()
    assert TABLES <= tables
    assert version == [(str(store_mod.SCHEMA_VERSION),)]
    # reopening keeps the data and does not migrate again
    s = store_mod.Store(path)
    with s.transaction():
        s.put_instance(_instance_row())
    s.close()
    s = store_mod.Store(path)
    assert s.get_instance("i1")["name"] == "orch"
    s.close()


def test_transaction_rollback_leaves_nothing(tmp_path):
    s = store_mod.Store(tmp_path / "hub.sqlite")
    with pytest.raises(RuntimeError):
        with s.transaction():
            s.put_instance(_instance_row())
            s.append_history("i1", [('{"EventType": 0}', True, 0, None)])
            s.add_inbox("i1", "x1", "{}", 0.0)
            s.add_activity("i1", "x1", 0, "act", None)
            s.add_entity_op("@c@k", "add", "1", True)
            raise RuntimeError("boom")
    assert s.get_instance("i1") is None
    assert s.history("i1") == [] and s.inbox("i1") == []
    assert s.all_activities() == [] and s.entities_with_ops() == []
    # nested transactions join the outer one: an inner failure undoes the outer work too
    with pytest.raises(KeyError):
        with s.transaction():
            s.put_instance(_instance_row("outer"))
            with s.transaction():
                s.put_instance(_instance_row("inner"))
                raise KeyError("inner")
    assert s.get_instance("outer") is None and s.get_instance("inner") is None
    # and the store is usable afterwards
    with s.transaction():
        s.put_instance(_instance_row("after"))
    assert s.get_instance("after") is not None
    s.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "newer.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    con.commit()
    con.close()
    with pytest.raises(DatabaseError) as info:
        store_mod.Store(path)
    assert "999" in info.value.message


def test_corrupt_file_is_a_database_error(tmp_path):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(b"definitely not sqlite " * 100)
    with pytest.raises(DatabaseError) as info:
        store_mod.Store(path)
    assert str(path) in info.value.message


def test_history_append_and_delete_instance(tmp_path):
    s = store_mod.Store(tmp_path / "hub.sqlite")
    with s.transaction():
        s.put_instance(_instance_row())
        s.append_history("i1", [('{"EventType": 12, "n": 1}', True, 12, None)])
        s.append_history("i1", [('{"EventType": 4, "n": 2}', False, 4, 0),
                                ('{"EventType": 5, "n": 3}', True, 5, 0)])
        s.add_inbox("i1", "x1", "{}", 0.0)
        s.add_activity("i1", "x1", 0, "act", None)
    assert [e["n"] for e in s.history("i1")] == [1, 2, 3]
    texts, keys = s.replay_history("i1")
    assert [json.loads(t)["n"] for t in texts] == [1, 3]  # only what replays need
    assert keys == [(12, None), (4, 0), (5, 0)]  # and every event's key, for the bookkeeping
    with s.transaction():
        s.replace_history("i1", [('{"EventType": 0, "n": 9}', True, 0, None)])
    assert [e["n"] for e in s.history("i1")] == [9]
    with s.transaction():
        assert s.delete_instance("i1") == 1
        assert s.delete_instance("i1") == 0
    assert s.history("i1") == [] and s.inbox("i1") == [] and s.all_activities() == []
    s.close()


# The schema-1 layout as the first devhost release created it (history without `replayed`).
FIRST_RELEASE_SCHEMA_1 = """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    INSERT INTO meta VALUES ('schema_version', '1');
    CREATE TABLE instances (instance_id TEXT PRIMARY KEY, name TEXT NOT NULL,
        execution_id TEXT NOT NULL, status TEXT NOT NULL, input TEXT, input_raw TEXT,
        output TEXT, custom_status TEXT, parent_instance_id TEXT, parent_execution_id TEXT,
        parent_task_id INTEGER, engine_state TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL, updated_at REAL NOT NULL);
    CREATE INDEX instances_created ON instances(created_at);
    CREATE TABLE history (instance_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
        PRIMARY KEY (instance_id, seq)) WITHOUT ROWID;
    CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL,
        execution_id TEXT, event TEXT NOT NULL, visible_at REAL NOT NULL);
    CREATE INDEX inbox_instance ON inbox(instance_id, id);
    CREATE INDEX inbox_visible ON inbox(visible_at);
    CREATE TABLE activities (id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL,
        execution_id TEXT NOT NULL, task_id INTEGER NOT NULL, name TEXT NOT NULL, input TEXT,
        created_at REAL NOT NULL);
    CREATE INDEX activities_instance ON activities(instance_id);
    CREATE TABLE entities (entity_id TEXT PRIMARY KEY, name TEXT NOT NULL, key TEXT NOT NULL,
        state TEXT, updated_at REAL NOT NULL);
    CREATE TABLE entity_ops (id INTEGER PRIMARY KEY AUTOINCREMENT, entity_id TEXT NOT NULL,
        name TEXT NOT NULL, input TEXT, is_signal INTEGER NOT NULL, caller_instance TEXT,
        caller_execution TEXT, request_id TEXT, visible_at REAL NOT NULL);
    CREATE INDEX entity_ops_entity ON entity_ops(entity_id, id);
"""


def test_task_hub_from_the_first_schema_1_layout(tmp_path):
    """A hub written by an earlier devhost that also called itself schema 1 (its history table
    has no `replayed` column) must be migrated, or refused with a DatabaseError at open — not
    accepted and then failing on the first history write or replay."""
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(FIRST_RELEASE_SCHEMA_1)
    con.execute("INSERT INTO history VALUES ('i1', 0, ?)",
                (json.dumps({"EventType": 12, "EventId": -1, "IsPlayed": True,
                             "Timestamp": "2024-05-01T10:00:00.0000000Z"}),))
    con.commit()
    con.close()
    try:
        s = store_mod.Store(path)
    except DatabaseError:
        return  # refused readably at start-up: acceptable
    try:
        texts, keys = s.replay_history("i1")
        assert len(texts) == 1 and keys == [(12, None)]  # still replayed, keyed by migration
        with s.transaction():
            s.append_history("i1", [p.stored_event(p.event(ET.OrchestratorCompleted, "t")),
                                    p.stored_event(p.task_completed("t", 0, None))])
        assert len(s.history("i1")) == 3 and len(s.replay_history("i1")[0]) == 2
    finally:
        s.close()


def test_query_instances(tmp_path):
    s = store_mod.Store(tmp_path / "hub.sqlite")
    with s.transaction():
        for i, (iid, status) in enumerate([("a_1", "Completed"), ("ab", "Running"),
                                           ("a%", "Failed"), ("b1", "Completed")]):
            s.put_instance(_instance_row(iid, status=status, created_at=100.0 + i))
    ids = lambda **kw: [r["instance_id"] for r in s.query_instances(**kw)]  # noqa: E731
    assert ids() == ["b1", "a%", "ab", "a_1"]  # newest first
    assert ids(prefix="a_") == ["a_1"]          # '_' and '%' are literal in a prefix
    assert ids(prefix="a%") == ["a%"]
    assert ids(statuses=["Completed"]) == ["b1", "a_1"]
    assert ids(created_from=101.0, created_to=102.0) == ["a%", "ab"]
    assert ids(limit=2) == ["b1", "a%"] and ids(limit=2, offset=2) == ["ab", "a_1"]
    s.close()


def test_entities_in_the_store(tmp_path):
    s = store_mod.Store(tmp_path / "hub.sqlite")
    with s.transaction():
        s.put_entity("@counter@k", "counter", "k", "5")
        s.add_entity_op("@counter@k", "add", '"1"', True)
        s.add_entity_op("@counter@k", "later", None, True, visible_at=4e9)
    assert s.get_entity("@counter@k")["state"] == "5"
    assert [o["name"] for o in s.entity_ops("@counter@k", 10)] == ["add"]  # not yet visible
    with s.transaction():
        s.put_entity("@counter@k", "counter", "k", None)  # no state: the entity is gone
    assert s.get_entity("@counter@k") is None
    s.close()


# ==============================================================================================
# config
# ==============================================================================================

def _app(tmp_path, host_json=None, settings=None):
    if host_json is not None:
        (tmp_path / "host.json").write_text(
            host_json if isinstance(host_json, str) else json.dumps(host_json), encoding="utf-8")
    if settings is not None:
        (tmp_path / "local.settings.json").write_text(json.dumps(settings))
    return tmp_path


def test_config_defaults(tmp_path):
    cfg = config.load_host_config(_app(tmp_path, {"version": "2.0"}), env={})
    assert cfg.route_prefix == "api" and cfg.hub_name == "TestHubName"
    assert cfg.function_timeout is None and cfg.max_activities == 10
    missing = config.load_host_config(tmp_path / "nowhere", env={})
    assert missing.route_prefix == "api"


@pytest.mark.parametrize("prefix, expected", [("", ""), ("/v1/", "v1"), ("x/y", "x/y"),
                                              (None, "")])
def test_route_prefix(tmp_path, prefix, expected):
    cfg = config.load_host_config(
        _app(tmp_path, {"extensions": {"http": {"routePrefix": prefix}}}), env={})
    assert cfg.route_prefix == expected


def test_hub_name_setting_expansion(tmp_path):
    app = _app(tmp_path, {"extensions": {"durableTask": {"hubName": "%HUB%"}}})
    assert config.load_host_config(app, env={"HUB": "MyHub"}).hub_name == "MyHub"
    app = _app(tmp_path, {"extensions": {"durableTask": {"hubName": "Pre%A%Mid%B%"}}})
    assert config.load_host_config(app, env={"A": "1", "B": "2"}).hub_name == "Pre1Mid2"
    app = _app(tmp_path, {"extensions": {"durableTask": {"hubName": "Plain"}}})
    assert config.load_host_config(app, env={}).hub_name == "Plain"


@pytest.mark.parametrize("text, seconds", [("00:05:00", 300), ("01:00:00", 3600),
                                           ("1.02:03:04", 93784), ("00:00:01.5", 1.5),
                                           ("-1", None), ("", None)])
def test_function_timeout(tmp_path, text, seconds):
    cfg = config.load_host_config(_app(tmp_path, {"functionTimeout": text}), env={})
    assert cfg.function_timeout == seconds


@pytest.mark.parametrize("host_json", [
    '{"version": "2.0",',
    "[1, 2]",
    {"functionTimeout": "five minutes"},
    {"extensions": {"durableTask": {"maxConcurrentActivityFunctions": "many"}}},
    {"extensions": {"durableTask": {"maxConcurrentActivityFunctions": 0}}},
])
def test_bad_host_json(tmp_path, host_json):
    with pytest.raises(ConfigError):
        config.load_host_config(_app(tmp_path, host_json), env={})


def test_host_json_with_bom_and_limits(tmp_path):
    (tmp_path / "host.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"extensions": {
        "durableTask": {"maxConcurrentActivityFunctions": 3, "maxEntityOperationBatchSize": 7,
                        "maxOrchestrationActions": 9}}}).encode())
    cfg = config.load_host_config(tmp_path, env={})
    assert (cfg.max_activities, cfg.max_entity_batch, cfg.max_orchestration_actions) == (3, 7, 9)


def test_local_settings(tmp_path):
    app = _app(tmp_path, settings={"Values": {"A": "x", "N": 5, "B": True, "Z": None}})
    assert config.load_local_settings(app) == {"A": "x", "N": "5", "B": "True", "Z": ""}
    assert config.load_local_settings(tmp_path / "nowhere") == {}
    _app(tmp_path, settings={"Values": ["not", "an", "object"]})
    with pytest.raises(ConfigError):
        config.load_local_settings(tmp_path)


def test_a_schema_3_hub_gets_its_history_keyed(tmp_path):
    """Schema 4 keeps each history event's type and task id in columns (the bookkeeping reads
    only those); a hub from schema 3 gets them filled in from the stored events."""
    path = tmp_path / "old.sqlite"
    store_mod.Store(path).close()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("ALTER TABLE history DROP COLUMN kind")
    con.execute("ALTER TABLE history DROP COLUMN task_id")
    con.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    t = "2024-05-01T10:00:00.0000000Z"
    events = [p.event(ET.OrchestratorStarted, t), p.event(ET.TaskScheduled, t, 0, Name="a"),
              p.event(ET.TimerCreated, t, 1, FireAt=t), p.event(ET.EventSent, t, 2, Input="{}"),
              p.task_failed(t, 0, "no", ""), p.timer_fired(t, 1, t), p.event_raised(t, "e", None)]
    for seq, e in enumerate(events):
        text, replayed, _, _ = p.stored_event(e)
        con.execute("INSERT INTO history VALUES ('i1', ?, ?, ?)", (seq, text, int(replayed)))
    con.close()
    s = store_mod.Store(path)
    try:
        texts, keys = s.replay_history("i1")
        assert keys == [p.event_key(e) for e in events] == [
            (ET.OrchestratorStarted, None), (ET.TaskScheduled, 0), (ET.TimerCreated, 1),
            (ET.EventSent, 2), (ET.TaskFailed, 0), (ET.TimerFired, 1), (ET.EventRaised, None)]
        assert len(texts) == 5  # OrchestratorStarted, EventSent and the three completions
    finally:
        s.close()
