"""host.json functionTimeout applies to every function: activities (sync and async), HTTP."""
import asyncio
import time

import azure.functions as func
import azure.durable_functions as df

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="seconds")
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds}"


@app.activity_trigger(input_name="seconds")
async def sleepy_async(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@app.orchestration_trigger(context_name="context")
def naps(context: df.DurableOrchestrationContext):
    results = []
    for name in ("sleepy", "sleepy_async"):
        for seconds in (0.05, 2):
            try:
                results.append((yield context.call_activity(name, seconds)))
            except Exception as exc:
                results.append(str(exc).split("\n")[0].rstrip())
    return results


@app.route(route="nap/{seconds}", methods=["GET"])
async def nap_http(req: func.HttpRequest) -> str:
    """functionTimeout bounds HTTP functions too (the invoker applies it to every trigger)."""
    await asyncio.sleep(float(req.route_params["seconds"]))
    return "rested"
