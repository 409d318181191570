"""Every Durable Functions pattern devhost must run, written as an ordinary v2 app."""
import json
import os
from datetime import timedelta

import azure.functions as func
import azure.durable_functions as df

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
FLAKY_DIR = os.environ.get("FLAKY_DIR", "/tmp")


@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client):
    body = req.get_body()
    payload = json.loads(body) if body else None
    instance_id = await client.start_new(req.route_params["functionName"], None, payload)
    return client.create_check_status_response(req, instance_id)


@app.route(route="wait/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start_wait(req: func.HttpRequest, client):
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["functionName"], None,
                                         json.loads(body) if body else None)
    return await client.wait_for_completion_or_create_check_status_response(
        req, instance_id, timeout_in_milliseconds=20000, retry_interval_in_milliseconds=50)


@app.route(route="client/{op}/{instance_id?}", methods=["POST", "GET"])
@app.durable_client_input(client_name="client")
async def client_ops(req: func.HttpRequest, client):
    """Drives the SDK client's rpc calls so tests cover them."""
    op, iid = req.route_params["op"], req.route_params.get("instance_id")
    if op == "status":
        s = await client.get_status(iid, show_history=True, show_history_output=True)
        return func.HttpResponse(json.dumps(s.to_json() if s else None, default=str),
                                 mimetype="application/json")
    if op == "raise":
        await client.raise_event(iid, req.params["name"], json.loads(req.get_body() or b"null"))
    elif op == "terminate":
        await client.terminate(iid, "by test")
    elif op == "signal":
        await client.signal_entity(df.EntityId("Counter", iid), "add", int(req.params["n"]))
    elif op == "read":
        r = await client.read_entity_state(df.EntityId("Counter", iid))
        return func.HttpResponse(json.dumps({"exists": r.entity_exists, "state": r.entity_state}),
                                 mimetype="application/json")
    elif op == "all":
        items = await client.get_status_all()
        return func.HttpResponse(json.dumps(len(items)), mimetype="application/json")
    elif op == "purge":
        r = await client.purge_instance_history(iid)
        return func.HttpResponse(json.dumps(r.instances_deleted), mimetype="application/json")
    return func.HttpResponse(status_code=204)


@app.route(route="hello/{name:alpha}", methods=["GET"])
def hello_http(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"hello {req.route_params['name']}")


@app.route(route="secret", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def secret(req: func.HttpRequest) -> str:
    return "secret"


# --- chaining ---------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    results = []
    for city in ["Tokyo", "Seattle", "London"]:
        results.append((yield context.call_activity("say_hello", city)))
    return results


@app.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    return f"Hello {city}!"


@app.activity_trigger(input_name="n")
async def double(n: int) -> int:
    return n * 2


# --- fan-out / fan-in -------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input() or 10
    tasks = [context.call_activity("double", i) for i in range(count)]
    results = yield context.task_all(tasks)
    return sum(results)


# --- retries ----------------------------------------------------------------------------------
@app.activity_trigger(input_name="spec")
def flaky(spec: dict) -> str:
    """Fails until it has been called `fail_times` times (counted in a file: survives restarts)."""
    path = os.path.join(FLAKY_DIR, f"flaky-{spec['key']}")
    calls = int(open(path).read()) + 1 if os.path.exists(path) else 1
    with open(path, "w") as f:
        f.write(str(calls))
    if calls <= spec["fail_times"]:
        raise ValueError(f"attempt {calls} failed")
    return f"ok after {calls}"


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50,
                              max_number_of_attempts=spec.get("attempts", 3))
    try:
        return (yield context.call_activity_with_retry("flaky", options, spec))
    except Exception as exc:
        if spec.get("catch"):
            return "caught: " + str(exc).split("\n")[0]
        raise


@app.orchestration_trigger(context_name="context")
def parallel_retries(context: df.DurableOrchestrationContext):
    key = context.get_input()
    options = df.RetryOptions(10, 3)
    tasks = [context.call_activity_with_retry("flaky", options, {"key": f"{key}-{i}", "fail_times": i % 3})
             for i in range(4)]
    tasks.append(context.call_activity("double", 21))
    return (yield context.task_all(tasks))


# --- timers, monitor, external events --------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def monitor(context: df.DurableOrchestrationContext):
    polls = 0
    while polls < 3:
        polls += 1
        context.set_custom_status({"polls": polls})
        yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=100))
    return polls


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    timeout = context.get_input() or 5
    deadline = context.current_utc_datetime + timedelta(seconds=timeout)
    timer = context.create_timer(deadline)
    event = context.wait_for_external_event("Approval")
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"approved": event.result}
    return "timed out"


# --- sub-orchestrations ----------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    a = yield context.call_sub_orchestrator("chain")
    b = yield context.call_sub_orchestrator("fan_out", 5, f"{context.instance_id}-child")
    return {"chain": a, "fan_out": b}


@app.orchestration_trigger(context_name="context")
def failing_child(context: df.DurableOrchestrationContext):
    raise ValueError("child broke")
    yield  # noqa


@app.orchestration_trigger(context_name="context")
def parent_of_failing(context: df.DurableOrchestrationContext):
    try:
        yield context.call_sub_orchestrator("failing_child")
    except Exception as exc:
        return "parent caught: " + str(exc)[:80]


# --- eternal ---------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def eternal(context: df.DurableOrchestrationContext):
    n = context.get_input() or 0
    if n >= 5:
        return n
    yield context.call_activity("double", n)
    context.continue_as_new(n + 1)


# --- entities --------------------------------------------------------------------------------
@app.entity_trigger(context_name="context", entity_name="Counter")
def counter(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    op = context.operation_name
    if op == "add":
        value += context.get_input()
    elif op == "reset":
        value = 0
    elif op == "fail":
        raise ValueError("counter refused")
    context.set_state(value)
    context.set_result(value)


@app.orchestration_trigger(context_name="context")
def counting(context: df.DurableOrchestrationContext):
    key = context.get_input()
    entity = df.EntityId("Counter", key)
    context.signal_entity(entity, "add", 1)
    for _ in range(3):
        yield context.call_entity(entity, "add", 10)
    try:
        yield context.call_entity(entity, "fail")
    except Exception as exc:
        failed = str(exc)
    final = yield context.call_entity(entity, "get")
    return {"final": final, "failed": failed}


# --- failures --------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def broken(context: df.DurableOrchestrationContext):
    yield context.call_activity("say_hello", "x")
    raise RuntimeError("orchestrator broke")


@app.orchestration_trigger(context_name="context")
def calls_missing(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("no_such_activity", 1))


@app.orchestration_trigger(context_name="context")
def long_wait(context: df.DurableOrchestrationContext):
    """Waits for an event: used by suspend/resume/terminate tests."""
    value = yield context.wait_for_external_event("Go")
    result = yield context.call_activity("say_hello", str(value))
    return result


# --- added for tests/test_devhost_*.py (management, crash and SDK-context checks) -------------
import time  # noqa: E402


@app.activity_trigger(input_name="step")
def slow_step(step: dict) -> str:
    """A slow step that leaves a trace per execution (at-least-once: may appear twice)."""
    time.sleep(0.3)
    with open(os.path.join(FLAKY_DIR, f"slow-{step['key']}"), "a") as f:
        f.write(f"{step['i']}\n")
    return f"step {step['i']}"


@app.orchestration_trigger(context_name="context")
def slow_steps(context: df.DurableOrchestrationContext):
    """Five sequential slow activities, each followed by an entity add: the crash test."""
    key = context.get_input()
    entity = df.EntityId("Counter", key)
    results = []
    for i in range(5):
        results.append((yield context.call_activity("slow_step", {"key": key, "i": i})))
        yield context.call_entity(entity, "add", 1)
    total = yield context.call_entity(entity, "get")
    return {"results": results, "total": total}


@app.orchestration_trigger(context_name="context")
def flaky_once(context: df.DurableOrchestrationContext):
    """One flaky call without retry: fails the instance (rewind tests)."""
    return (yield context.call_activity("flaky", context.get_input()))


@app.orchestration_trigger(context_name="context")
def parent_of_flaky(context: df.DurableOrchestrationContext):
    """An uncaught failing sub-orchestration (rewind of a sub-orchestration)."""
    spec = context.get_input()
    child = yield context.call_sub_orchestrator("flaky_once", spec, f"{context.instance_id}-kid")
    return {"child": child}


@app.orchestration_trigger(context_name="context")
def echo(context: df.DurableOrchestrationContext):
    """Returns its input as the SDK hands it over (input decoding tests)."""
    return context.get_input()
    yield  # noqa


@app.orchestration_trigger(context_name="context")
def whoami(context: df.DurableOrchestrationContext):
    """What the SDK context says about this instance."""
    return {"instanceId": context.instance_id, "parent": context.parent_instance_id,
            "input": context.get_input()}
    yield  # noqa


@app.orchestration_trigger(context_name="context")
def parent_asks(context: df.DurableOrchestrationContext):
    return (yield context.call_sub_orchestrator("whoami", {"n": 1}, f"{context.instance_id}-w"))


@app.orchestration_trigger(context_name="context")
def status_then_wait(context: df.DurableOrchestrationContext):
    """Custom status while waiting for "Go", another one when done."""
    context.set_custom_status({"stage": "waiting", "n": [1, 2]})
    value = yield context.wait_for_external_event("Go")
    context.set_custom_status({"stage": "done"})
    return value


@app.entity_trigger(context_name="context", entity_name="Register")
def register(context: df.DurableEntityContext):
    """A value holder that supports the built-in 'delete' operation (DELETE entities/...)."""
    op = context.operation_name
    if op == "set":
        context.set_state(context.get_input())
    elif op == "delete":
        context.destruct_on_exit()
        return
    context.set_result(context.get_state(lambda: None))


@app.orchestration_trigger(context_name="context")
def sub_retry(context: df.DurableOrchestrationContext):
    """A failing sub-orchestration retried by the host (optionally with a fixed child id)."""
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50,
                              max_number_of_attempts=spec.get("attempts", 3))
    child_id = f"{context.instance_id}-kid" if spec.get("fixed_id") else None
    try:
        return (yield context.call_sub_orchestrator_with_retry("flaky_once", options, spec,
                                                               child_id))
    except Exception as exc:
        return "gave up: " + str(exc).split("\n")[0]


@app.orchestration_trigger(context_name="context")
def calls_missing_entity(context: df.DurableOrchestrationContext):
    return (yield context.call_entity(df.EntityId("NoSuchEntity", "k"), "get"))


@app.orchestration_trigger(context_name="context")
def http_caller(context: df.DurableOrchestrationContext):
    """context.call_http against a URL given as input (devhost's built-in HTTP activity)."""
    response = yield context.call_http("GET", context.get_input())  # the parsed response dict
    return {"status": response["statusCode"], "content": response["content"],
            "type": response["headers"].get("Content-Type")}
