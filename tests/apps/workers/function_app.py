"""Which process runs what, with FUNCTIONS_WORKER_PROCESS_COUNT: pids and a killable activity."""
import json
import os
import time

import azure.functions as func
import azure.durable_functions as df

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
MARKS = os.environ.get("MARKS_DIR", "/tmp")


@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client):
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["functionName"], None,
                                         json.loads(body) if body else None)
    return client.create_check_status_response(req, instance_id)


@app.route(route="pid", methods=["GET"])
def http_pid(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(os.getpid()), mimetype="application/json")


@app.activity_trigger(input_name="n")
def sync_pid(n: int) -> dict:
    return {"n": n, "pid": os.getpid()}


@app.activity_trigger(input_name="n")
async def async_pid(n: int) -> dict:
    return {"n": n, "pid": os.getpid()}


@app.orchestration_trigger(context_name="context")
def pids(context: df.DurableOrchestrationContext):
    count = context.get_input() or 6
    tasks = [context.call_activity("sync_pid" if i % 2 else "async_pid", i) for i in range(count)]
    return (yield context.task_all(tasks))


@app.activity_trigger(input_name="key")
def killable(key: str) -> dict:
    """Records each run's pid; the first run then waits (for the test to SIGKILL its worker)."""
    path = os.path.join(MARKS, f"killable-{key}")
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    runs = open(path).read().split()
    if len(runs) == 1:
        time.sleep(60)
    return {"runs": len(runs), "pid": os.getpid()}


@app.orchestration_trigger(context_name="context")
def kill_me(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("killable", context.get_input()))


@app.activity_trigger(input_name="instance_id")
@app.durable_client_input(client_name="client")
async def own_status(instance_id: str, client) -> dict:
    """The activity's SDK client calls devhost's rpc base (over HTTP from a worker)."""
    status = await client.get_status(instance_id)
    return {"status": status.runtime_status.value, "pid": os.getpid()}


@app.orchestration_trigger(context_name="context")
def asks_own_status(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("own_status", context.instance_id))


@app.orchestration_trigger(context_name="context")
def orchestrator_pid(context: df.DurableOrchestrationContext):
    """Where the episode ran (replay-safe enough for a test: one episode only)."""
    return os.getpid()
