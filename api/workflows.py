"""Workflows over HTTP: `GET /api/workflows` lists them, `POST /api/workflows/{name}/run` starts
one with a JSON input (validated against the workflow's JSON Schema before anything starts)
and waits like `run`: 200 with the workflow's output, or 202 with the standard status URLs.
A failed workflow is 502 naming the failing step (the agent whose turn failed) and its reason.
"""
from __future__ import annotations

import json
import re
import uuid

import azure.durable_functions as df
import azure.functions as func
import jsonschema

from activities.errors import parse_error_text
from orchestrators.workflows import WORKFLOWS, find_workflow

from .common import json_response, problem_response, runtime_status, wait_for_instance
from .run import accepted_response, turn_wait_seconds
from .turn_request import Problem, max_message_bytes
from .web import fastapi_route

bp = df.Blueprint()
FAILED_STEP = re.compile(r"agent '([^']+)' failed: (\[[a-z_]+:\d{3}\].*)", re.S)


def describe(workflow) -> dict:
    return {"name": workflow.name, "description": workflow.description,
            "input_schema": workflow.input_schema,
            "run_url": f"/api/workflows/{workflow.name}/run"}


@bp.route(route="workflows", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@fastapi_route
def http_list_workflows(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"workflows": [describe(w) for w in WORKFLOWS.values()]})


def parse_input(req: func.HttpRequest, schema: dict) -> dict:
    body = req.get_body() or b""
    if len(body) > max_message_bytes():
        raise Problem(413, "body_too_large", f"the body is larger than {max_message_bytes()} "
                      "bytes")
    try:
        data = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        raise Problem(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Problem(400, "invalid_input", "the body must be a JSON object")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data),
                    key=jsonschema.exceptions.relevance)
    if errors:
        raise Problem(400, "invalid_input", "; ".join(
            f"{'/'.join(str(p) for p in e.absolute_path) or 'input'}: {e.message}"
            for e in errors[:3]))
    return data


def wants_wait(req: func.HttpRequest) -> bool:
    value = req.params.get("wait_for_response")
    if value is None:
        return True
    if value.strip().lower() not in ("true", "false"):
        raise Problem(400, "invalid_wait_for_response", "wait_for_response must be true or false")
    return value.strip().lower() == "true"


def failed_response(workflow, output: object, headers: dict) -> func.HttpResponse:
    """502 naming the step (the agent whose turn failed) and that turn's reason."""
    text = str(output or "")
    match = FAILED_STEP.search(text)
    if match:
        step = match.group(1)
        kind, status, message = parse_error_text(match.group(2))
        problem = Problem(502, "workflow_step_failed", f"workflow '{workflow.name}' failed at "
                          f"step '{step}': {kind} ({status}): {message}")
    else:  # the workflow's own code failed, not a turn
        step, kind = None, "unknown"
        _, _, message = parse_error_text(text.split(" failed: ", 1)[-1])
        problem = Problem(502, "workflow_failed", f"workflow '{workflow.name}' failed: {message}")
    body = problem.to_json()
    body["error"].update(step=step, kind=kind)
    return json_response(body, problem.status, headers)


@bp.route(route="workflows/{name}/run", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@fastapi_route
async def http_run_workflow(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    try:
        name = req.route_params.get("name", "")
        workflow = find_workflow(name)
        if workflow is None:
            raise Problem(404, "workflow_not_found", f"no workflow named '{name}'")
        data = parse_input(req, workflow.input_schema)
        wait = wants_wait(req)
    except Problem as problem:
        return problem_response(problem)

    instance_id = f"workflow-{workflow.name.lower()}-{uuid.uuid4().hex}"
    await client.start_new(workflow.orchestrator, instance_id, data)
    headers = {"x-ms-workflow-instance-id": instance_id}
    if not wait:
        return accepted_response(client, req, instance_id, headers)
    status = await wait_for_instance(client, instance_id, turn_wait_seconds())
    runtime = runtime_status(status)
    if runtime == "Completed":
        return json_response(status.output, 200, headers)
    if runtime == "Failed":
        return failed_response(workflow, status.output, headers)
    if runtime in ("Terminated", "Canceled"):
        return problem_response(Problem(409, "workflow_terminated",
                                        f"the workflow was {runtime.lower()}"), headers)
    return accepted_response(client, req, instance_id, headers)
