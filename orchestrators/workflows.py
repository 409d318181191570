"""Multi-agent workflows: orchestrators that compose agent turns, served by
`POST /api/workflows/{name}/run` (api/workflows.py).

A workflow is an ordinary orchestrator registered with `@workflow(name, description,
input_schema)`: the API validates the JSON input against the schema (jsonschema) before
anything starts, and lists the catalogue at `GET /api/workflows`. Each step is an agent turn
run by orchestrators.agent_call, so every step's thread is an ordinary thread.

Two samples: `route` (a triage agent labels the request with a structured reply, the agent
named by the label answers) and `panel` (several agents answer at once, a judge names the
winner with a structured reply).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import azure.durable_functions as df

from orchestrators.agent_call import AgentTurnFailed, run_agent, run_agents

bp = df.Blueprint()


@dataclass(frozen=True)
class Workflow:
    name: str
    orchestrator: str
    description: str
    input_schema: dict = field(default_factory=dict)


WORKFLOWS: dict[str, Workflow] = {}


def workflow(name: str, description: str, input_schema: dict):
    """Register an orchestrator function as the workflow `name`."""
    def register(fn):
        WORKFLOWS[name.lower()] = Workflow(name, fn.__name__, description, input_schema)
        return bp.orchestration_trigger(context_name="context")(fn)
    return register


def find_workflow(name: str) -> Workflow | None:
    return WORKFLOWS.get(name.lower())


def structured(result: dict, agent: str) -> dict:
    """The structured reply of a turn run with a response_format (a step fails without it)."""
    output = result.get("output")
    if not isinstance(output, dict):
        raise AgentTurnFailed(agent, "invalid_structured_output", 502,
                              "the turn returned no structured output")
    return output


def step(name: str, agent: str, result: dict) -> dict:
    """What a workflow reports about one of its turns (enough to open the thread)."""
    return {"step": name, "agent": agent, "thread_id": result["thread_id"],
            "turn_id": result["turn_id"]}


def json_schema_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True,
                                                   "schema": schema}}


# -- route: triage, then the specialist the label names --------------------------------------

ROUTE_TRIAGE = "triage"
ROUTE_SPECIALISTS = {"billing": "billing", "technical": "tech-support"}  # label -> agent
ROUTE_LABEL = json_schema_format("route_label", {
    "type": "object", "additionalProperties": False, "required": ["label"],
    "properties": {"label": {"type": "string", "enum": sorted(ROUTE_SPECIALISTS)}}})
MESSAGE_INPUT = {"type": "object", "additionalProperties": False, "required": ["message"],
                 "properties": {"message": {"type": "string", "minLength": 1,
                                            "maxLength": 32768, "pattern": r"\S"}}}


@workflow("route", "A triage agent labels the request (billing or technical); the specialist "
          "agent for that label answers it.", MESSAGE_INPUT)
def workflow_route(context: df.DurableOrchestrationContext):
    message = context.get_input()["message"]
    triage = yield from run_agent(context, ROUTE_TRIAGE, message, response_format=ROUTE_LABEL)
    label = structured(triage, ROUTE_TRIAGE)["label"]
    if label not in ROUTE_SPECIALISTS:
        raise AgentTurnFailed(ROUTE_TRIAGE, "invalid_label", 502, f"unknown label {label!r}")
    answer = yield from run_agent(context, ROUTE_SPECIALISTS[label], message)
    return {"label": label, "agent": ROUTE_SPECIALISTS[label], "reply": answer["reply"],
            "thread_id": answer["thread_id"],
            "steps": [step("triage", ROUTE_TRIAGE, triage),
                      step("answer", ROUTE_SPECIALISTS[label], answer)]}


# -- panel: fan out to the panellists, a judge names the winner ------------------------------

PANELISTS = ("optimist", "skeptic", "pragmatist")
PANEL_JUDGE = "judge"
PANEL_VERDICT = json_schema_format("panel_verdict", {
    "type": "object", "additionalProperties": False, "required": ["winner", "reason"],
    "properties": {"winner": {"type": "string", "enum": list(PANELISTS)},
                   "reason": {"type": "string", "maxLength": 300}}})
QUESTION_INPUT = {"type": "object", "additionalProperties": False, "required": ["question"],
                  "properties": {"question": {"type": "string", "minLength": 1,
                                              "maxLength": 32768, "pattern": r"\S"}}}


def judge_prompt(question: str, answers: dict[str, str]) -> str:
    candidates = "\n\n".join(f"[{name}]\n{reply}" for name, reply in answers.items())
    return (f"Question:\n{question}\n\nCandidate answers:\n\n{candidates}\n\n"
            f"Name the best answer's author (one of: {', '.join(answers)}) and say why.")


@workflow("panel", "Several agents answer the question in parallel; a judge agent names the "
          "best answer.", QUESTION_INPUT)
def workflow_panel(context: df.DurableOrchestrationContext):
    question = context.get_input()["question"]
    results = yield from run_agents(context, [(name, question) for name in PANELISTS])
    answers = {name: result["reply"] for name, result in zip(PANELISTS, results)}
    verdict = yield from run_agent(context, PANEL_JUDGE, judge_prompt(question, answers),
                                   response_format=PANEL_VERDICT)
    choice = structured(verdict, PANEL_JUDGE)
    if choice.get("winner") not in answers:
        raise AgentTurnFailed(PANEL_JUDGE, "invalid_winner", 502,
                              f"the judge named {choice.get('winner')!r}, not a panellist")
    return {"winner": choice["winner"], "reason": choice.get("reason", ""),
            "answer": answers[choice["winner"]], "answers": answers,
            "steps": [step(name, name, result) for name, result in zip(PANELISTS, results)]
            + [step("judge", PANEL_JUDGE, verdict)]}
