"""The SDK client's calls to devhost's own rpc base, answered in-process.

On Azure the worker's durable client calls the Functions host's loopback-only rpc listener. On
devhost that listener is this very process and event loop, so each `get_status` poll of an HTTP
trigger cost a socket round trip through aiohttp both ways (queued behind the SDK's pool of 30
connections) and competed with the turn it was waiting for. The three calls an HTTP trigger makes
on its hot path are answered here by the same commands the management handlers run, with the
same status code and the same JSON body (through JSON text, as the wire would carry it):

    GET  {rpc}instances/{id}              get_status      200 / 202 / 404
    GET  {rpc}entities/{name}/{key}       read_entity_state  200 / 404
    POST {rpc}orchestrators/{name}[/{id}] start_new       202 / 400 / 409
    POST {rpc}orchestrators/{name}[/{id}]?timeout=…  start and wait   200 (output) / 202

The last is the extension's start webhook with `timeout` (its createAndWaitOnNewInstancePostUri):
a poll-free provider waits for the instance to end; here the wait is woken by the commit that
ends it (commands.wait_for_end), exactly as the management handler waits.

Each answer still yields to the loop once, as a call over the wire does (an app polling
get_status without a sleep must not starve the orchestration it waits for). Everything else,
and any call not made on devhost's own event loop (a sync function in a pool thread, an
activity), still goes over HTTP. The app makes the same SDK calls either way.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

from yarl import URL

from . import commands
from . import protocol as p
from .errors import DevhostError

log = logging.getLogger("devhost.loopback")
SDK_CLIENT_MODULE = "azure.durable_functions.models.DurableOrchestrationClient"


class Loopback:
    def __init__(self, engine, rpc_base: str, webhook_prefix: str, hub: str, code: str | None):
        self.engine, self.rpc_base, self.hub, self.code = engine, rpc_base, hub, code
        # the check-status URLs the rpc start answers with: its own origin, public webhooks
        self.public_base = f"{URL(rpc_base).origin()}{webhook_prefix}"
        self.rpc_path = URL(rpc_base).path

    def install(self) -> None:
        """Wrap the SDK client's request helpers (it binds them when a client is built)."""
        import importlib
        module = importlib.import_module(SDK_CLIENT_MODULE)
        get, post = module.get_async_request, module.post_async_request
        get, post = getattr(get, "_devhost_over_http", get), getattr(post, "_devhost_over_http",
                                                                      post)

        async def get_async_request(url: str, function_invocation_id: str = None):
            answer = await self.answer("GET", url, None)
            if answer is None:
                return await get(url, function_invocation_id)
            return answer

        async def post_async_request(url: str, data: Any = None, trace_parent: str = None,
                                     trace_state: str = None,
                                     function_invocation_id: str = None):
            answer = await self.answer("POST", url, data)
            if answer is not None:
                return answer
            return await post(url, data, trace_parent, trace_state, function_invocation_id)

        get_async_request._devhost_over_http = get
        post_async_request._devhost_over_http = post
        module.get_async_request, module.post_async_request = get_async_request, post_async_request

    async def answer(self, method: str, url: str, data: Any) -> list | None:
        """[status, body] as the SDK's helper returns it, or None: go over HTTP."""
        if not url.startswith(self.rpc_base) or not self._on_engine_loop():
            return None
        parsed = URL(url)
        parts = parsed.path[len(self.rpc_path):].split("/")
        route = self._route(method, parts, parsed.query)
        if route is None:
            return None
        waits = None
        try:
            status, body = route(parts, parsed.query, data)
            if asyncio.iscoroutine(body):  # start and wait: the start is done, now the wait
                waits, body = body, None
        except DevhostError as exc:  # none of these three raises InvalidOperation
            status, body = exc.status, p.error_body(exc.message)
        except Exception as exc:
            log.exception("unhandled error serving %s %s", method, parsed.path)
            status, body = 500, p.error_body(f"devhost failed: {type(exc).__name__}: {exc}")
        # A call over the wire yields to the loop: so does each of these, once. A wait yields
        # before it starts, so the answer it is woken with goes back without another detour.
        await asyncio.sleep(0)
        if waits is not None:
            status, body = await waits
        # what the SDK's helper reads back from the wire: JSON, and "" for an empty GET body
        if body is None:
            return [status, "" if method == "GET" else None]
        return [status, json.loads(json.dumps(body))]

    def _on_engine_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.engine.loop
        except (RuntimeError, AttributeError):
            return False

    def _route(self, method: str, parts: list[str], query) -> Callable | None:
        if method == "GET" and len(parts) == 2 and parts[0] == "instances" and parts[1]:
            # with its history the status is read off the loop: over HTTP, as before
            return None if _flag(query, "showHistory", False) else self._get_status
        if method == "GET" and len(parts) == 3 and parts[0] == "entities" and all(parts[1:]):
            return self._read_entity
        if method == "POST" and len(parts) in (2, 3) and parts[0] == "orchestrators" \
                and all(parts[1:]):
            return self._start
        return None

    def _get_status(self, parts, query, _data):
        document = commands.status(self.engine, parts[1],
                                   show_input=_flag(query, "showInput", True))
        if document is None:
            return 404, None
        return p.status_http_code(document), document

    def _read_entity(self, parts, _query, _data):
        state = commands.read_entity(self.engine, parts[1], parts[2])
        return (404, None) if state is None else (200, json.loads(state))

    def _start(self, parts, query, data):
        timeout = _seconds(query, "timeout")  # validated before anything starts
        _seconds(query, "pollingInterval")
        body = b"" if data is None else json.dumps(data).encode()
        row = commands.start(self.engine, parts[1], parts[2] if len(parts) == 3 else None, body,
                             query.get("version"))
        accepted = p.management_urls(self.public_base, row["instance_id"], self.hub,
                                     code=self.code, rewind=False)
        if timeout is None:
            return 202, accepted
        return 202, self._wait(row["instance_id"], timeout, accepted)

    async def _wait(self, instance_id: str, timeout: float, accepted: dict):
        document = await commands.wait_for_end(self.engine, instance_id, timeout)
        if document is None:
            return 202, accepted
        return 200, document["output"] if document["runtimeStatus"] == "Completed" else document


def _seconds(query, name: str) -> float | None:
    value = query.get(name)
    return None if value is None else commands.parse_seconds(name, value)


def _flag(query, name: str, default: bool) -> bool:
    value = query.get(name)
    return default if value is None else value.strip().lower() == "true"
