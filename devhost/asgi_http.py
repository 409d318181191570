"""FastAPI mode ("HTTP v2"): what the Python worker does when the app imports
`azurefunctions.extensions.http.fastapi` (docs/streaming.md, section 1).

The rule is app-wide, as in the worker: once the extension is imported, EVERY HTTP function gets a
`fastapi.Request` (route parameters in `path_params`) instead of a `func.HttpRequest`, and its
return value is sent the way the extension's FastAPI catch-all route sends it: a Starlette
`Response` as itself (a `StreamingResponse` chunk by chunk, as the body iterator yields), anything
else JSON-encoded by FastAPI. A `func.HttpRequest`/`func.HttpResponse` annotation is refused at
load time with the worker's own message, because such an app does not index on Azure.

Apps that do not import the extension never reach this module: they keep `func.HttpRequest`.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import traceback
import typing

from aiohttp import web

log = logging.getLogger("devhost.http")


def enabled() -> bool:
    """The worker's test: HttpV2FeatureChecker.http_v2_enabled(), i.e. a web extension's module
    was imported (looked up in sys.modules, so plain apps need neither the extension nor FastAPI)."""
    base = sys.modules.get("azurefunctions.extensions.base")
    if base is None:
        return False
    return bool(base.HttpV2FeatureChecker.http_v2_enabled())


def check_functions(index) -> None:
    """Refuse what the worker refuses when HTTP v2 is on (bindings/meta.py
    _check_http_input_type_annotation / _check_http_output_type_annotation)."""
    if not enabled() or not index.http:
        return
    from azurefunctions.extensions.base import RequestTrackerMeta, ResponseTrackerMeta

    from .errors import AppLoadError
    for function in index.http:
        try:
            hints = typing.get_type_hints(function.fn)
        except Exception:  # noqa: BLE001 - unresolvable hints: fall back to the raw annotations
            hints = dict(getattr(function.fn, "__annotations__", {}))
        anno = hints.get(function.request_param)
        if anno is not None and not RequestTrackerMeta.check_type(anno):
            raise AppLoadError(
                f"cannot load the {function.name} function: type of {function.request_param} "
                f"binding in function.json \"httpTrigger\" does not match its Python annotation "
                f"\"{getattr(anno, '__name__', anno)}\" (the app imports "
                "azurefunctions.extensions.http.fastapi, so every HTTP function receives a "
                "FastAPI Request: see docs/streaming.md)")
        returns = hints.get("return")
        if returns is not None and inspect.isclass(returns) and not ResponseTrackerMeta.check_type(returns):
            raise AppLoadError(
                f"cannot load the {function.name} function: Python return annotation "
                f"\"{returns.__name__}\" does not match binding type \"http\" (FastAPI mode "
                "accepts FastAPI responses, str, dict, list, int, float, bool and pydantic models)")


class _Connection:
    """ASGI receive/send over one aiohttp request/response pair."""

    def __init__(self, request: web.Request):
        self.request = request
        self.response: web.StreamResponse | None = None
        self.body_done = False
        self.closed = asyncio.Event()

    async def receive(self) -> dict:
        if not self.body_done:
            chunk = await self.request.content.readany()  # streamed upload, as on Azure
            self.body_done = not chunk or self.request.content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not self.body_done}
        await self.closed.wait()  # Starlette listens for the disconnect while it streams
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for name, value in message.get("headers", []):
                response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            self.response = response
            await response.prepare(self.request)
        elif kind == "http.response.body":
            assert self.response is not None, "http.response.body before http.response.start"
            body = message.get("body", b"")
            try:
                if body:
                    await self.response.write(body)  # sent now: no buffering of the stream
                if not message.get("more_body", False):
                    await self.response.write_eof()
                    self.closed.set()
            except ConnectionError:  # the client went away: tell the app, stop streaming
                self.closed.set()
                raise


def build_scope(request: web.Request, route_params: dict) -> dict:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport else None
    sock = transport.get_extra_info("sockname") if transport else None
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method, "scheme": request.scheme,
        "path": request.path, "raw_path": request.raw_path.split("?", 1)[0].encode(),
        "query_string": request.query_string.encode(), "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": tuple(peer[:2]) if peer else None, "server": tuple(sock[:2]) if sock else None,
        # The worker copies the host's route parameters into path_params (sync_route_params).
        "path_params": dict(route_params),
    }


def _as_response(result):
    """What FastAPI's route does with a non-Response return value: JSON via jsonable_encoder."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse
    from starlette.responses import Response
    if isinstance(result, Response):
        return result
    return JSONResponse(jsonable_encoder(result))


def _error_response(exc: BaseException):
    """FastAPI's handlers: HTTPException → its status and {"detail"}; anything else → 500."""
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, PlainTextResponse
    if isinstance(exc, HTTPException):
        if exc.status_code in (204, 304):
            from starlette.responses import Response
            return Response(status_code=exc.status_code, headers=exc.headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse("Internal Server Error", status_code=500)


async def invoke(request: web.Request, function, route_params: dict, kwargs: dict,
                 run_sync, invocation_id: str) -> web.StreamResponse:
    """Call one HTTP function in FastAPI mode and stream its response back."""
    from fastapi import Request

    connection = _Connection(request)
    scope = build_scope(request, route_params)
    kwargs[function.request_param] = Request(scope, connection.receive)
    try:
        if function.is_async:
            result = await function.fn(**kwargs)
        else:
            result = await run_sync(lambda: function.fn(**kwargs))
        response = _as_response(result)
    except Exception as exc:  # noqa: BLE001 - the user's code: log like the worker, answer like FastAPI
        log.error("function '%s' failed (invocation %s):\n%s", function.name, invocation_id,
                  "".join(traceback.format_exception(exc)))
        response = _error_response(exc)
    try:
        await response(scope, connection.receive, connection.send)
    except ConnectionError:
        log.info("function '%s': the client closed the stream (invocation %s)",
                 function.name, invocation_id)
    except Exception as exc:  # noqa: BLE001 - a body iterator that fails mid-stream
        log.error("function '%s' failed while streaming (invocation %s):\n%s", function.name,
                  invocation_id, "".join(traceback.format_exception(exc)))
        if connection.response is None:
            await _error_response(exc)(scope, connection.receive, connection.send)
    finally:
        connection.closed.set()
    if connection.response is None:  # the ASGI app sent nothing at all
        return web.Response(status=500)
    return connection.response
