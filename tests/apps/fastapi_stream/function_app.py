"""An app in FastAPI mode: it imports azurefunctions.extensions.http.fastapi, so on Azure (and on
devhost) every HTTP function receives a FastAPI Request and may return a StreamingResponse."""
import asyncio
import json

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, StreamingResponse
from fastapi import HTTPException

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# Per stream name: the order in which things happened inside this process, and the gate the
# client opens (POST /release/{name}) once it has read the first chunk.
_journal: dict[str, list[str]] = {}
_gates: dict[str, asyncio.Event] = {}


def _gate(name: str) -> asyncio.Event:
    return _gates.setdefault(name, asyncio.Event())


@app.route(route="stream/{name}", methods=["GET"])
async def stream(req: Request) -> StreamingResponse:
    name = req.path_params["name"]
    count = int(req.query_params.get("count", "3"))
    log = _journal.setdefault(name, [])

    async def chunks():
        for i in range(count):
            log.append(f"yield {i}")
            yield f"id: {i + 1}\nevent: delta\ndata: {json.dumps({'text': f'chunk {i} '})}\n\n"
            if i == 0:  # the rest only after the client says it holds chunk 0
                await asyncio.wait_for(_gate(name).wait(), 60)
        log.append("finished")
        yield "event: done\ndata: {}\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@app.route(route="stream_fails", methods=["GET"])
async def stream_fails(req: Request) -> StreamingResponse:
    async def chunks():
        yield "data: one\n\n"
        raise RuntimeError("the body iterator failed")

    return StreamingResponse(chunks(), media_type="text/event-stream")


@app.route(route="release/{name}", methods=["POST"])
async def release(req: Request) -> JSONResponse:
    name = req.path_params["name"]
    _journal.setdefault(name, []).append("released")
    _gate(name).set()
    return JSONResponse({"released": name})


@app.route(route="journal/{name}", methods=["GET"])
async def journal(req: Request) -> JSONResponse:
    return JSONResponse(_journal.get(req.path_params["name"], []))


@app.route(route="echo/{word}", methods=["POST"])
async def echo(req: Request):
    """Streamed upload read chunk by chunk; a plain dict return is JSON-encoded by FastAPI."""
    size, chunks = 0, 0
    async for chunk in req.stream():
        size += len(chunk)
        chunks += 1 if chunk else 0
    return {"word": req.path_params["word"], "q": req.query_params.get("q"),
            "header": req.headers.get("x-test"), "method": req.method, "bytes": size,
            "url": str(req.url)}


@app.route(route="sync/{n}", methods=["GET"])
def sync_square(req: Request) -> dict:
    n = int(req.path_params["n"])
    return {"square": n * n}


@app.route(route="missing", methods=["GET"])
async def missing(req: Request):
    raise HTTPException(status_code=404, detail="nothing here")


@app.route(route="boom", methods=["GET"])
async def boom(req: Request):
    raise RuntimeError("the function failed")


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: Request, client) -> JSONResponse:
    """The durable client binding works in FastAPI mode; create_check_status_response does not
    (it needs a func.HttpRequest), so the 202 is built from the management payload."""
    instance_id = await client.start_new(req.path_params["name"], None, await req.json())
    payload = client.create_http_management_payload(instance_id)
    return JSONResponse(payload, status_code=202,
                        headers={"Location": payload["statusQueryGetUri"], "Retry-After": "1"})


@app.orchestration_trigger(context_name="context")
def greet(context: df.DurableOrchestrationContext):
    name = context.get_input()
    return (yield context.call_activity("say_hello", name))


@app.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    return f"hello {name}"


# --- the stream journal behind an SSE endpoint, as the agent API will use it -------------------
from core.journal import journal, sse_stream  # noqa: E402  (the repo's journal; devhost runs from the repo)


@app.route(route="turns/{turn}/events", methods=["POST"])
async def publish(req: Request) -> JSONResponse:
    body = await req.json()
    turn = req.path_params["turn"]
    if body.get("finish"):
        event_id = await asyncio.to_thread(journal().finish, turn, body["kind"], body.get("data"))
    else:
        event_id = await asyncio.to_thread(journal().append, turn, body["kind"], body.get("data"))
    return JSONResponse({"id": event_id})


@app.route(route="turns/{turn}/stream", methods=["GET"])
async def follow(req: Request):
    after = req.headers.get("last-event-id") or req.query_params.get("after")
    if after is not None and not after.isdigit():
        return JSONResponse({"error": {"status": 400, "code": "invalid_after",
                                       "message": "after must be a non-negative integer"}},
                            status_code=400)
    return StreamingResponse(sse_stream(journal(), req.path_params["turn"], after,
                                        heartbeat_seconds=5),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
