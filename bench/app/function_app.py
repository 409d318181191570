"""Benchmark workloads: five sequential activities, and fan-out/fan-in."""
import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="n")
def step(n: int) -> int:
    return n + 1


@app.orchestration_trigger(context_name="context")
def five_steps(context: df.DurableOrchestrationContext):
    value = 0
    for _ in range(5):
        value = yield context.call_activity("step", value)
    return value


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input()
    results = yield context.task_all([context.call_activity("step", i) for i in range(count)])
    return sum(results)
