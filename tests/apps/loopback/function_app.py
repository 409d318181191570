"""Asks devhost the SDK client's hot-path questions twice: through the client as bound (which
devhost answers in-process) and through a copy pointed at the same rpc listener by another
name (so it goes over HTTP), and returns both answers side by side."""
import copy
import json

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def over_http(client):
    other = copy.copy(client)
    bindings = copy.copy(client._orchestration_bindings)
    bindings._rpc_base_url = bindings.rpc_base_url.replace("://127.0.0.1:", "://localhost:")
    assert bindings._rpc_base_url != client._orchestration_bindings.rpc_base_url
    other._orchestration_bindings = bindings
    return other


async def ask(client, op: str, params: dict, suffix: str):
    try:
        if op == "status":
            status = await client.get_status(params["id"])
            return status.to_json() if status else None
        if op == "entity":
            state = await client.read_entity_state(df.EntityId(params["name"], params["key"]))
            return {"exists": state.entity_exists, "state": state.entity_state}
        if op == "start":
            instance_id = params.get("id")
            if instance_id and not params.get("same"):
                instance_id += suffix
            return {"id": await client.start_new(params["name"], instance_id,
                                                 json.loads(params.get("input", "null")))}
        if op == "startwait":  # the start webhook with `timeout`, as api.common makes it
            instance_id = params["id"] + suffix
            url = (f"{client._orchestration_bindings.rpc_base_url}orchestrators/"
                   f"{params['name']}/{instance_id}?timeout={params['timeout']}"
                   "&pollingInterval=0.02")
            code, body = await client._post_async_request(
                url, client._get_json_input(json.loads(params.get("input", "null"))))
            # each answer names its own instance and the host name it was asked by: compare
            # them with the suffix and the name taken out
            text = json.dumps(body).replace(instance_id, params["id"])
            return [code, json.loads(text.replace("://localhost:", "://127.0.0.1:"))]
    except Exception as exc:  # the SDK's exception for an error answer, compared as text
        return {"error": f"{type(exc).__name__}: {exc}"}
    raise ValueError(op)


@app.route(route="compare/{op}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def compare(req: func.HttpRequest, client):
    op, params = req.route_params["op"], dict(req.params)
    answers = {"in_process": await ask(client, op, params, "-in"),
               "over_http": await ask(over_http(client), op, params, "-http")}
    return func.HttpResponse(json.dumps(answers, default=str), mimetype="application/json")


@app.route(route="busy/{id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def busy(req: func.HttpRequest, client):
    """Starts `relay` and polls its status without ever sleeping (fine on Azure, where every
    call is a network round trip): the polls must not starve the orchestration."""
    instance_id = await client.start_new("relay", req.route_params["id"], "busy")
    for polls in range(1, 200_001):
        status = await client.get_status(instance_id)
        if status.runtime_status == df.OrchestrationRuntimeStatus.Completed:
            return func.HttpResponse(json.dumps({"output": status.output, "polls": polls}),
                                     mimetype="application/json")
    return func.HttpResponse(json.dumps({"output": None, "polls": polls}), status_code=504,
                             mimetype="application/json")


@app.orchestration_trigger(context_name="context")
def hello(context: df.DurableOrchestrationContext):
    return f"hello {context.get_input()}"


@app.orchestration_trigger(context_name="context")
def fails(context: df.DurableOrchestrationContext):
    raise ValueError(f"no {context.get_input()}")


@app.orchestration_trigger(context_name="context")
def relay(context: df.DurableOrchestrationContext):
    """Two episodes and an activity in between: more than one turn of the event loop."""
    return (yield context.call_activity("shout", context.get_input()))


@app.activity_trigger(input_name="text")
def shout(text: str) -> str:
    return text.upper()


@app.orchestration_trigger(context_name="context")
def waits(context: df.DurableOrchestrationContext):
    return (yield context.wait_for_external_event("go"))


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext):
    context.set_state(context.get_state(lambda: 0) + (context.get_input() or 1))
