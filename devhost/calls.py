"""`context.call_http` performed as a built-in activity, like the extension's HttpActivity."""
from __future__ import annotations

import asyncio
import json

import aiohttp

MAX_POLLS = 100


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
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.request(method, uri, headers=flat_headers,
                                   data=content.encode() if isinstance(content, str) else None) as r:
            status, got_headers, body = r.status, _headers(r), await r.text()
        polls = 0
        while (status == 202 and request.get("asynchronousPatternEnabled", True)
               and "Location" in got_headers and polls < MAX_POLLS):
            polls += 1
            retry_after = got_headers.get("Retry-After", "1")
            await asyncio.sleep(float(retry_after) if str(retry_after).isdigit() else 1.0)
            async with session.get(got_headers["Location"], headers=flat_headers) as r:
                status, got_headers, body = r.status, _headers(r), await r.text()
    return json.dumps({"statusCode": status, "headers": got_headers, "content": body or None})
