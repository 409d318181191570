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

import inspect
import logging
import sys
import traceback
import typing

from aiohttp import web

from . import asgi

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
                 call) -> web.StreamResponse:
    """Call one HTTP function in FastAPI mode (`call(kwargs)`: the invoker, which logs the
    invocation and applies functionTimeout) and stream its response back, through the
    aiohttp-to-ASGI bridge of devhost/asgi.py (streamed upload, unbuffered response)."""
    from fastapi import Request

    async def app(scope, receive, send):
        # The worker copies the host's route parameters into path_params (sync_route_params).
        scope["path_params"] = dict(route_params)
        kwargs[function.request_param] = Request(scope, receive)
        try:
            response = _as_response(await call(kwargs))
        except Exception as exc:  # noqa: BLE001 - the user's code (logged by the invoker)
            response = _error_response(exc)
        try:
            await response(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - a body iterator that fails mid-stream
            log.error("function '%s' failed while streaming:\n%s", function.name,
                      "".join(traceback.format_exception(exc)))
            # uvicorn aborts the connection: the client sees a truncated body, not a clean end.
            if request.transport is not None:
                request.transport.close()

    return await asgi.asgi_handler(app)(request)
