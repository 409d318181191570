"""`context.call_http` performed as a built-in activity, like the extension's HttpActivity."""
from __future__ import annotations

import asyncio
import json
import os

import aiohttp
from yarl import URL

MAX_POLLS = 100
# A response body is held in memory and then in the orchestration history: refuse big ones
# clearly instead of exhausting memory (DEVHOST_HTTP_MAX_RESPONSE_BYTES overrides).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Headers that carry someone's credentials: never sent to a host the caller did not name.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie",
                                "x-functions-key"})


class ResponseTooLarge(RuntimeError):
    pass


def max_response_bytes() -> int:
    value = os.environ.get("DEVHOST_HTTP_MAX_RESPONSE_BYTES", "")
    return int(value) if value.strip().isdigit() else DEFAULT_MAX_RESPONSE_BYTES


def _origin(url: URL) -> tuple:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def headers_for(target: URL, first: URL, headers: dict[str, str]) -> dict[str, str]:
    """The request headers for `target`: all of them on the first request's scheme, host and
    port; without credentials anywhere else (a 202's Location may name any host)."""
    if _origin(target) == _origin(first):
        return headers
    return {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> str:
    """The body as text, refusing one larger than `limit` bytes without reading it all."""
    if response.content_length is not None and response.content_length > limit:
        raise ResponseTooLarge(f"call_http: the response from {response.url} is "
                               f"{response.content_length} bytes, over devhost's limit of "
                               f"{limit} (DEVHOST_HTTP_MAX_RESPONSE_BYTES)")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body.extend(chunk)
        if len(body) > limit:
            raise ResponseTooLarge(f"call_http: the response from {response.url} is over "
                                   f"devhost's limit of {limit} bytes "
                                   "(DEVHOST_HTTP_MAX_RESPONSE_BYTES)")
    return body.decode(response.charset or "utf-8", errors="replace")


def _headers(response: aiohttp.ClientResponse) -> dict:
    merged: dict = {}
    for key in response.headers.keys():
        values = response.headers.getall(key)
        merged[key] = values[0] if len(values) == 1 else list(values)
    return merged


async def perform_http_call(request: dict) -> str:
    """Run the request; follow `202 + Location` polling inside the one task (the extension
    schedules extra timers for that, which would put Python's task ids out of step).
    Returns the DurableHttpResponse JSON text the SDK expects as the task result."""
    if request.get("tokenSource"):
        raise RuntimeError("call_http with a managed-identity token_source cannot run locally: "
                           "devhost has no managed identity; pass an Authorization header")
    method = (request.get("method") or "GET").upper()
    uri = request.get("uri")
    if not uri:
        raise ValueError("call_http needs a uri")
    headers = request.get("headers") or {}
    flat_headers = {k: v if isinstance(v, str) else ", ".join(v) for k, v in headers.items()}
    content = request.get("content")
    timeout = aiohttp.ClientTimeout(total=float(request.get("timeout") or 100))
    limit = max_response_bytes()
    first = URL(uri)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.request(method, uri, headers=flat_headers,
                                   data=content.encode() if isinstance(content, str) else None) as r:
            status, got_headers, body = r.status, _headers(r), await _read_body(r, limit)
            current = r.url
        polls = 0
        while (status == 202 and request.get("asynchronousPatternEnabled", True)
               and "Location" in got_headers and polls < MAX_POLLS):
            polls += 1
            retry_after = got_headers.get("Retry-After", "1")
            await asyncio.sleep(float(retry_after) if str(retry_after).isdigit() else 1.0)
            location = current.join(URL(str(got_headers["Location"])))
            async with session.get(location, headers=headers_for(location, first, flat_headers)) as r:
                status, got_headers, body = r.status, _headers(r), await _read_body(r, limit)
                current = r.url
    return json.dumps({"statusCode": status, "headers": got_headers, "content": body or None})
