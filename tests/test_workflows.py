"""Multi-agent workflows over HTTP on devhost with the fake model: `route` (triage with a
structured label, then the specialist), `panel` (fan-out, a judge names the winner), their
refusals and failures, and that a replayed (or crashed and resumed) workflow never starts a
turn twice."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT, DevhostProcess, app_env, wait_for_status
from tests.fake_openai import Behaviour, reply, sleep, unauthorized

AGENTS = {a["name"]: a for a in json.loads((ROOT / "agents.json").read_text())["agents"]}
INSTANCES = "/runtime/webhooks/durabletask/instances"


def agent_of(request) -> str | None:
    """Which agent the model was called for (its system prompt is the agent's instructions)."""
    system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
    return next((name for name, agent in AGENTS.items()
                 if system.startswith(agent["instructions"])), None)


def answering(replies: dict):
    """A fake-model behaviour that answers per agent (a Behaviour or text), else the echo."""
    def answer(request):
        chosen = replies.get(agent_of(request))
        if callable(chosen) and not isinstance(chosen, Behaviour):
            chosen = chosen(request)
        if chosen is None:
            return Behaviour()
        return chosen if isinstance(chosen, Behaviour) else reply(chosen)
    return answer


@pytest.fixture
def model(fresh_llm):
    """The module's fake model; its default answer is restored after each test."""
    yield fresh_llm
    fresh_llm.default = Behaviour()


def requests_for(llm, agent: str) -> list:
    return [r for r in llm.requests if agent_of(r) == agent]


def turn_instances(host, thread_id: str) -> list[str]:
    key = thread_id.rsplit("@", 1)[1]
    docs = host.request("GET", f"{INSTANCES}?instanceIdPrefix=turn-{key}-").json()
    return [d["instanceId"] for d in docs]


def test_workflows_are_listed_with_their_input_schemas(agent_host):
    r = agent_host.request("GET", "/api/workflows")
    assert r.status == 200
    listed = {w["name"]: w for w in r.json()["workflows"]}
    assert set(listed) == {"route", "panel"}
    assert listed["route"]["input_schema"]["required"] == ["message"]
    assert listed["panel"]["input_schema"]["required"] == ["question"]
    assert listed["panel"]["run_url"] == "/api/workflows/panel/run"


@pytest.mark.parametrize("label,specialist", [("billing", "billing"),
                                              ("technical", "tech-support")])
def test_route_hands_the_request_to_the_labelled_specialist(agent_host, model, label,
                                                            specialist):
    model.default = answering({"triage": json.dumps({"label": label})})
    message = f"Please help with my {label} problem"
    r = agent_host.request("POST", "/api/workflows/route/run", {"message": message})
    assert r.status == 200, r
    out = r.json()
    assert out["label"] == label and out["agent"] == specialist
    assert out["reply"] == f"echo: {message} [messages=2]"

    triage, = requests_for(model, "triage")
    schema = triage.response_format["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["billing", "technical"]
    answered, = requests_for(model, specialist)
    assert answered.messages[-1]["content"] == message
    assert len(model.requests) == 2

    steps = {s["step"]: s for s in out["steps"]}
    assert steps["triage"]["agent"] == "triage" and steps["answer"]["agent"] == specialist
    assert out["thread_id"] == steps["answer"]["thread_id"]
    # each step is an ordinary thread, readable through the thread API
    for s in out["steps"]:
        thread = agent_host.request("GET", f"/api/agents/{s['agent']}/threads/{s['thread_id']}")
        assert thread.status == 200, thread
        assert [m["role"] for m in thread.json()["messages"]] == ["user", "assistant"]
        assert turn_instances(agent_host, s["thread_id"]) == [
            f"turn-{s['thread_id'].rsplit('@', 1)[1]}-{s['turn_id']}"]


def test_panel_asks_everyone_at_once_and_the_judge_names_the_winner(agent_host, model):
    model.default = answering({
        "optimist": "It will be great.", "skeptic": "It may fail in three ways.",
        "pragmatist": "Try it small first.",
        "judge": json.dumps({"winner": "pragmatist", "reason": "actionable"})})
    r = agent_host.request("POST", "/api/workflows/panel/run",
                           {"question": "Should we rewrite it?"})
    assert r.status == 200, r
    out = r.json()
    assert out["winner"] == "pragmatist" and out["reason"] == "actionable"
    assert out["answer"] == "Try it small first."
    assert out["answers"] == {"optimist": "It will be great.",
                              "skeptic": "It may fail in three ways.",
                              "pragmatist": "Try it small first."}
    # fan-out then fan-in: the judge was asked last, and saw every answer with its author
    assert [agent_of(r) for r in model.requests][-1] == "judge"
    assert sorted(agent_of(r) for r in model.requests[:3]) == ["optimist", "pragmatist",
                                                               "skeptic"]
    judge, = requests_for(model, "judge")
    prompt = judge.messages[-1]["content"]
    for name, answer in out["answers"].items():
        assert f"[{name}]\n{answer}" in prompt
    assert judge.response_format["json_schema"]["schema"]["properties"]["winner"]["enum"] == [
        "optimist", "skeptic", "pragmatist"]
    # one turn per step, never two
    assert [s["step"] for s in out["steps"]] == ["optimist", "skeptic", "pragmatist", "judge"]
    for s in out["steps"]:
        assert len(turn_instances(agent_host, s["thread_id"])) == 1


def test_a_failed_step_is_502_naming_the_step(agent_host, model):
    model.default = answering({"triage": unauthorized()})
    r = agent_host.request("POST", "/api/workflows/route/run", {"message": "refund me"})
    assert r.status == 502, r
    error = r.json()["error"]
    assert error["code"] == "workflow_step_failed" and error["status"] == 502
    assert error["step"] == "triage" and error["kind"] == "auth"
    assert "step 'triage'" in error["message"] and "Incorrect API key" in error["message"]
    assert [agent_of(r) for r in model.requests] == ["triage"]  # no specialist was asked
    assert r.headers["x-ms-workflow-instance-id"].startswith("workflow-route-")


def test_an_invalid_structured_reply_fails_the_triage_step(agent_host, model):
    model.default = answering({"triage": '{"label": "weather"}'})
    r = agent_host.request("POST", "/api/workflows/route/run", {"message": "is it sunny?"})
    assert r.status == 502, r
    error = r.json()["error"]
    assert error["step"] == "triage" and error["kind"] == "invalid_structured_output"
    assert len(requests_for(model, "triage")) == 2  # the reply and its one repair attempt
    assert requests_for(model, "billing") == [] and requests_for(model, "tech-support") == []


def test_unknown_workflow_is_404(agent_host):
    r = agent_host.request("POST", "/api/workflows/nope/run", {"message": "hi"})
    assert r.status == 404
    assert r.json()["error"] == {"status": 404, "code": "workflow_not_found",
                                 "message": "no workflow named 'nope'"}


@pytest.mark.parametrize("body,where", [
    (b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"", "JSON object"),
    ({"question": "wrong key"}, "message"), ({"message": ""}, "message"),
    ({"message": "   "}, "message"), ({"message": 7}, "message"),
    ({"message": "hi", "extra": 1}, "extra")])
def test_bad_input_is_400_and_starts_nothing(agent_host, model, body, where):
    before = len(agent_host.request("GET", INSTANCES).json())
    r = agent_host.request("POST", "/api/workflows/route/run", body,
                           {"Content-Type": "application/json"})
    assert r.status == 400, r
    error = r.json()["error"]
    assert error["status"] == 400 and error["code"] in ("invalid_json", "invalid_input")
    assert where in error["message"]
    assert len(agent_host.request("GET", INSTANCES).json()) == before
    assert model.requests == []


def test_no_wait_answers_202_with_status_urls(agent_host, model):
    model.default = answering({"triage": json.dumps({"label": "billing"})})
    r = agent_host.request("POST", "/api/workflows/route/run?wait_for_response=false",
                           {"message": "my invoice"})
    assert r.status == 202, r
    urls = r.json()
    doc = wait_for_status(agent_host, urls["id"])
    assert doc["runtimeStatus"] == "Completed" and doc["output"]["label"] == "billing"


def test_a_crash_mid_workflow_never_doubles_a_turn(llm, tmp_path):
    """SIGKILL while the judge's model call is in flight; after the restart the workflow
    replays, the judge's turn resumes, and every step still has exactly one turn."""
    llm.reset()
    calls = {"judge": 0}

    def judge(request):
        calls["judge"] += 1
        verdict = reply(json.dumps({"winner": "skeptic", "reason": "careful"}))
        return sleep(60, verdict) if calls["judge"] == 1 else verdict

    llm.default = answering({"judge": judge})
    host = DevhostProcess(ROOT, tmp_path / "hub.sqlite", app_env(llm))
    try:
        host.start()
        r = host.request("POST", "/api/workflows/panel/run?wait_for_response=false",
                         {"question": "Ship on Friday?"})
        assert r.status == 202, r
        instance_id = r.json()["id"]
        llm.wait_for_requests(4, timeout=30)  # three panellists, then the judge (sleeping)
        assert agent_of(llm.requests[-1]) == "judge"
        host.kill()
        host.start()
        doc = wait_for_status(host, instance_id, timeout=60)
        assert doc["runtimeStatus"] == "Completed", doc
        out = doc["output"]
        assert out["winner"] == "skeptic"
        for s in out["steps"]:
            assert len(turn_instances(host, s["thread_id"])) == 1, s
        turns = [d for d in host.request("GET", f"{INSTANCES}?instanceIdPrefix=turn-").json()]
        assert len(turns) == 4
        # the panellists were asked once each; only the interrupted model call ran again
        assert sorted(agent_of(r) for r in llm.requests) == [
            "judge", "judge", "optimist", "pragmatist", "skeptic"]
    finally:
        host.kill()
        llm.default = Behaviour()


def test_a_failed_panellist_names_that_panellist_and_the_judge_is_not_asked(agent_host, model):
    model.default = answering({"skeptic": unauthorized()})
    r = agent_host.request("POST", "/api/workflows/panel/run", {"question": "Go?"})
    assert r.status == 502, r
    error = r.json()["error"]
    assert error["step"] == "skeptic" and error["kind"] == "auth"
    assert requests_for(model, "judge") == []
