"""A timer trigger that starts an orchestration every second (a common Durable pattern)."""
import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", run_on_startup=True)
@app.durable_client_input(client_name="client")
async def tick(timer: func.TimerRequest, client) -> None:
    await client.start_new("ticked", None, {"past_due": timer.past_due})


@app.orchestration_trigger(context_name="context")
def ticked(context: df.DurableOrchestrationContext):
    return context.get_input()
    yield  # noqa
