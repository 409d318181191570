"""A small app for key enforcement, an empty route prefix and a %SETTING% hub name."""
import azure.functions as func
import azure.durable_functions as df

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="secret", methods=["GET"])
def secret(req: func.HttpRequest) -> str:
    return "secret"


@app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def open_route(req: func.HttpRequest) -> str:
    return "open"


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> str:
    return "admin"


@app.route(route="run/{name}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def run(req: func.HttpRequest, client):
    """Starts and waits through the SDK client: every call goes over the rpc base URL."""
    instance_id = await client.start_new(req.route_params["name"], None, "Oslo")
    return await client.wait_for_completion_or_create_check_status_response(
        req, instance_id, timeout_in_milliseconds=20000, retry_interval_in_milliseconds=50)


@app.route(route="start/{name}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client):
    instance_id = await client.start_new(req.route_params["name"], None, "Oslo")
    return client.create_check_status_response(req, instance_id)


@app.orchestration_trigger(context_name="context")
def greet(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("hello", context.get_input()))


@app.activity_trigger(input_name="city")
def hello(city: str) -> str:
    return f"Hello {city}!"
