"""Orchestration versions: the SDK's start_new(version=...), host.json defaultVersion and
sub-orchestration versions must reach context.version."""
import json

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client):
    version = req.params.get("version")
    instance_id = await client.start_new(req.route_params["name"], None, None, version=version)
    return func.HttpResponse(json.dumps({"id": instance_id}), mimetype="application/json")


@app.orchestration_trigger(context_name="context")
def report_version(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator("child_version", None, None, "3.0")
    default_child = yield context.call_sub_orchestrator("child_version")
    return {"self": context.version, "child": child, "default_child": default_child}


@app.orchestration_trigger(context_name="context")
def child_version(context: df.DurableOrchestrationContext):
    return context.version
    yield  # noqa
