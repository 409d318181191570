"""The app tests/test_devhost_hardening.py drives: call_http with headers, failures to log."""
import azure.functions as func
import azure.durable_functions as df

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="poke", methods=["POST", "GET"])
def poke(req: func.HttpRequest) -> str:
    return "poked"


@app.route(route="sizes", methods=["GET"])
def sizes(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"{len(req.url)} {sum(len(v) for v in req.headers.values())}")


@app.orchestration_trigger(context_name="context")
def http_call(context: df.DurableOrchestrationContext):
    """context.call_http with the method, uri and headers given as input."""
    spec = context.get_input()
    response = yield context.call_http(spec.get("method", "GET"), spec["uri"],
                                       headers=spec.get("headers"))
    return {"status": response["statusCode"], "content": response["content"]}


@app.activity_trigger(input_name="what")
def fails(what: str) -> str:
    raise ValueError(f"boom: {what}")


@app.activity_trigger(input_name="what")
def works(what: str) -> str:
    return f"worked: {what}"


@app.orchestration_trigger(context_name="context")
def retries_a_failure(context: df.DurableOrchestrationContext):
    """A failing activity retried once (two failed invocations), then caught."""
    yield context.call_activity("works", "first")
    try:
        yield context.call_activity_with_retry("fails", df.RetryOptions(10, 2), "twice")
    except Exception:
        return "caught"


@app.orchestration_trigger(context_name="context")
def raises(context: df.DurableOrchestrationContext):
    yield context.call_activity("works", "before")
    raise RuntimeError("the orchestrator gave up")


@app.entity_trigger(context_name="context", entity_name="Faulty")
def faulty_entity(context: df.DurableEntityContext):
    if context.operation_name == "explode":
        raise KeyError("no such fuse")
    context.set_state((context.get_state(lambda: 0) or 0) + 1)


@app.orchestration_trigger(context_name="context")
def waits(context: df.DurableOrchestrationContext):
    return (yield context.wait_for_external_event("Go"))


@app.orchestration_trigger(context_name="context")
def quick(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("works", context.get_input()))
