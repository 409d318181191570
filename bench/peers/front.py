"""The HTTP front every peer server shares: aiohttp, the same route and reply shape as the app's
`POST /api/agents/MyDurableAgent/run[?thread_id=...]` (text in, text out, `x-ms-thread-id`), so
one load generator drives every system the same way. Only aiohttp and the stdlib: it is imported
from the peers' venv.
"""
from __future__ import annotations

import argparse
import os
import uuid
from typing import Awaitable, Callable

from aiohttp import web

ROUTE = "/api/agents/MyDurableAgent/run"
# The app's agent (agents.json): the same system prompt reaches the model from every system.
INSTRUCTIONS = "You are a helpful assistant that can answer questions and provide information."
MODEL = os.environ.get("OPENAI_MODEL", "fake-model")

Turn = Callable[[str, str, bool], Awaitable[str]]  # (thread id, message, is new) -> reply


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="folder for this system's files")
    parser.add_argument("--variant", default="")
    return parser.parse_args()


def serve(turn: Turn, port: int, on_startup=(), on_cleanup=()) -> None:
    """Serve `turn` on 127.0.0.1:port until killed; GET /health answers once it is ready."""
    async def run(request: web.Request) -> web.Response:
        message = await request.text()
        thread = request.query.get("thread_id")
        is_new = thread is None
        thread = thread or uuid.uuid4().hex
        reply = await turn(thread, message, is_new)
        return web.Response(text=reply, headers={"x-ms-thread-id": thread})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(ROUTE, run)
    app.router.add_get("/health", health)
    app.on_startup.extend(on_startup)
    app.on_cleanup.extend(on_cleanup)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
