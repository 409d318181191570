"""The API in FastAPI mode: one adapter between the worker's FastAPI types and our handlers.

Importing `azurefunctions.extensions.http.fastapi` (below) switches EVERY HTTP function of the
app to FastAPI types, in Azure and on devhost alike (docs/streaming.md, section 1): the trigger
argument is a `fastapi.Request` and the return value must be a Starlette `Response`. Rather than
rewrite each handler, `@fastapi_route` (one line under the route decorators) gives the worker
the signature it checks (`req: fastapi.Request`), hands the handler the plain request values it
was written for (a `func.HttpRequest`: method, url text, headers, query, route params, body),
and turns a `func.HttpResponse` result into a Starlette `Response`. A handler that returns a
Starlette response (a `StreamingResponse` for Server-Sent Events) sends it as it is.
"""
from __future__ import annotations

import inspect
from urllib.parse import urlsplit, urlunsplit

import azure.functions as func
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response


async def plain_request(req: Request) -> func.HttpRequest:
    """The values our handlers read, as the func.HttpRequest they were written against."""
    return func.HttpRequest(method=req.method, url=str(req.url), headers=dict(req.headers),
                            params=dict(req.query_params), route_params=dict(req.path_params),
                            body=await req.body())


def starlette_response(result) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, func.HttpResponse):
        headers = dict(result.headers)
        media_type = None if any(k.lower() == "content-type" for k in headers) else result.mimetype
        return Response(content=result.get_body(), status_code=result.status_code,
                        headers=headers, media_type=media_type)
    raise TypeError(f"an HTTP handler returned {type(result).__name__}, not a response")


def fastapi_route(handler):
    """Adapt one HTTP handler `(req: func.HttpRequest, **bindings)` (sync or async) to FastAPI
    mode. The wrapper keeps the handler's name and parameter names (the bindings) and declares
    `req: Request` / `-> Response`, which is what the worker type-checks."""
    parameters = [p.replace(annotation=Request if p.name == "req" else inspect.Parameter.empty)
                  for p in inspect.signature(handler).parameters.values()]

    async def endpoint(req: Request, **bindings) -> Response:
        result = handler(await plain_request(req), **bindings)
        if inspect.isawaitable(result):
            result = await result
        return starlette_response(result)

    endpoint.__name__, endpoint.__qualname__ = handler.__name__, handler.__qualname__
    endpoint.__doc__, endpoint.__module__ = handler.__doc__, handler.__module__
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=Response)
    endpoint.__annotations__ = {"req": Request, "return": Response}
    return endpoint


def check_status_response(client, req: func.HttpRequest, instance_id: str,
                          headers: dict | None = None, extra: dict | None = None) -> Response:
    """The 202 `create_check_status_response` builds (same body, Location and Retry-After, URLs
    on the origin the request came to), from `create_http_management_payload`: that helper
    cannot read a Starlette URL and returns a func.HttpResponse, which FastAPI mode cannot send."""
    payload = dict(client.create_http_management_payload(instance_id))
    origin = urlsplit(req.url)
    for key, value in payload.items():
        if isinstance(value, str) and value.startswith(("http://", "https://")) and origin.netloc:
            parts = urlsplit(value)
            payload[key] = urlunsplit((origin.scheme, origin.netloc, parts.path, parts.query,
                                       parts.fragment))
    body = {**payload, **(extra or {})}
    return JSONResponse(body, status_code=202, headers={
        "Location": payload["statusQueryGetUri"], "Retry-After": "10", **(headers or {})})
