"""Serve an ASGI application from devhost's aiohttp server.

devhost is one aiohttp application; some parts it hosts are ASGI apps (the official `mcp` SDK's
session manager, and a FastAPI app in ASGI mode). `asgi_handler(app)` turns one into an aiohttp
handler that speaks ASGI 3 `http` faithfully: the request body is streamed as it arrives
(`http.request` chunks with `more_body`), the response is streamed as the app sends it (so
Server-Sent Events flush at once), and a client that goes away is reported as `http.disconnect`.
`lifespan(app)` runs an app's ASGI lifespan protocol around devhost's own start and stop.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

log = logging.getLogger("devhost.asgi")
ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]
CHUNK_BYTES = 64 * 1024
DISCONNECT_POLL_SECONDS = 0.1  # aiohttp has no disconnect callback: watch the transport


def build_scope(request: web.Request, root_path: str = "") -> dict[str, Any]:
    """The ASGI `http` scope of an aiohttp request (`root_path`: where the app is mounted)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    # The raw request target (percent-encoded, as ASGI wants): aiohttp's query_string is decoded.
    raw_path, _, raw_query = request.raw_path.partition("?")
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method, "scheme": request.scheme,
        "path": request.path, "raw_path": raw_path.encode("latin-1"),
        "query_string": raw_query.encode("latin-1"), "root_path": root_path,
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": tuple(peer[:2]) if peer else None,
        "server": tuple(sock[:2]) if sock else None,
        "state": {},
    }


class _Exchange:
    """One request/response: the ASGI receive and send callables over aiohttp."""

    def __init__(self, request: web.Request):
        self.request = request
        self.response: web.StreamResponse | None = None
        self.body_done = False
        self.finished = asyncio.Event()   # the app sent the last body chunk
        self.disconnected = False

    def _gone(self) -> bool:
        transport = self.request.transport
        return self.disconnected or transport is None or transport.is_closing()

    async def receive(self) -> dict:
        if not self.body_done:
            chunk = await self.request.content.read(CHUNK_BYTES)  # b"" only at the end
            more = bool(chunk) and not self.request.content.at_eof()
            self.body_done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}
        while not self._gone() and not self.finished.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.finished.wait(), DISCONNECT_POLL_SECONDS)
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for key, value in message.get("headers", []):
                name, text = key.decode("latin-1"), value.decode("latin-1")
                if name.lower() == "content-length":
                    response.content_length = int(text)
                else:
                    response.headers.add(name, text)
            self.response = response
        elif kind == "http.response.body":
            if self.response is None:
                raise RuntimeError("ASGI app sent a body before http.response.start")
            if self.disconnected:  # as uvicorn does: later sends are dropped, receive() says so
                return
            try:
                if not self.response.prepared:
                    await self.response.prepare(self.request)
                body = message.get("body", b"")
                if body:
                    await self.response.write(body)
                if not message.get("more_body", False):
                    await self.response.write_eof()
                    self.finished.set()
            except ConnectionError:  # aiohttp's ClientConnectionResetError included
                self.disconnected = True
                self.finished.set()


def asgi_handler(app: ASGIApp, root_path: str = "") -> Callable[[web.Request],
                                                                   Awaitable[web.StreamResponse]]:
    """An aiohttp handler that runs `app` for each request."""

    async def handle(request: web.Request) -> web.StreamResponse:
        exchange = _Exchange(request)
        await app(build_scope(request, root_path), exchange.receive, exchange.send)
        response = exchange.response
        if response is None:  # the app never answered: an ASGI server answers 500
            log.error("ASGI app %r returned without a response for %s %s", app,
                      request.method, request.path)
            return web.Response(status=500)
        if not response.prepared:  # a start without a body: send the headers anyway
            await response.prepare(request)
            await response.write_eof()
        return response

    return handle


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp):
    """Run the ASGI lifespan protocol: startup before the block, shutdown after it. An app
    that does not speak lifespan (raises on the scope) is served without it, as uvicorn does."""
    to_app: asyncio.Queue = asyncio.Queue()
    from_app: asyncio.Queue = asyncio.Queue()

    async def runner() -> None:
        try:
            await app({"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                       "state": {}}, to_app.get, from_app.put)
        except Exception as exc:  # unsupported lifespan, or a failure during startup
            await from_app.put({"type": "lifespan.unsupported", "error": exc})

    task = asyncio.create_task(runner())
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    if started["type"] == "lifespan.startup.failed":
        task.cancel()
        raise RuntimeError(f"ASGI app failed to start: {started.get('message', '')}")
    try:
        yield
    finally:
        if started["type"] == "lifespan.startup.complete":
            await to_app.put({"type": "lifespan.shutdown"})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(from_app.get(), 10)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
