"""One aiohttp application: the app's HTTP triggers, the durable management API and the dashboard.

The management API is served twice from the same handlers: publicly at
`/runtime/webhooks/durabletask/` (the URLs `create_check_status_response` hands out) and at a
per-process secret path that the SDK's client binding uses as its `rpcBaseUrl` (the extension's
loopback-only rpc listener), so requiring keys on the public webhooks never breaks the SDK.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import os
import secrets
import uuid
from pathlib import Path

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict

from . import asgi_http, commands, dashboard_api
from . import protocol as p
from .context import InvocationContext
from .engine import Engine
from .errors import BadRequest, DevhostError, InvalidOperation, NotFound, Unauthorized
from .loader import HttpFunction
from .loopback import Loopback
from .mcp import mount_mcp
from .routes import RouteTemplate

log = logging.getLogger("devhost.http")
WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"
DASHBOARD_DIR = Path(__file__).parent / "dashboard"
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # Azure Functions' request size limit
MAX_URL_BYTES = 4096                   # Azure Functions' URL limit (path + query): else 414
MAX_HEADER_BYTES = 32 * 1024           # Kestrel's total request-header limit: else 431
# aiohttp's own parser limits, raised so that requests between Azure's limits and these reach
# devhost and get a JSON 414/431; beyond them aiohttp answers its plain 400 (cli.serve)
PARSER_LIMITS = {"max_line_size": 64 * 1024, "max_field_size": 64 * 1024}
DEFAULT_PAGE_SIZE = 100                # the extension's page size when `top` is absent
NO_CACHE = {"Cache-Control": "no-cache"}  # the dashboard is edited live; never serve it stale

HOST = web.AppKey("host", object)


class HostState:
    """What the HTTP layer needs besides the engine: keys, hub name, the rpc secret."""

    def __init__(self, engine: Engine, hub: str, route_prefix: str, port: int, bind_host: str,
                 master_key: str | None, function_keys: list[str]):
        self.engine, self.hub, self.route_prefix = engine, hub, route_prefix.strip("/")
        self.bind_host = bind_host
        self.master_key = master_key or None
        self.function_keys = [k for k in function_keys if k]
        self.rpc_token = secrets.token_urlsafe(18)
        loopback = bind_host in ("", "0.0.0.0", "::", "localhost") or bind_host.startswith("127.")
        self.rpc_base = (f"http://{'127.0.0.1' if loopback else bind_host}:{port}"
                         f"/_devhost/rpc/{self.rpc_token}/durabletask/")
        public = f"http://{'localhost' if loopback else bind_host}:{port}{WEBHOOK_PREFIX}"
        engine.invoker.use_client_binding(lambda hub, connection: p.client_binding(
            public, self.rpc_base, hub or self.hub, connection or "Storage", self.master_key))
        # the SDK client's hot-path calls to rpc_base, answered without a socket
        Loopback(engine, self.rpc_base, WEBHOOK_PREFIX, hub, self.master_key).install()
        self.triggers: list[tuple[RouteTemplate, HttpFunction]] = sorted(
            ((RouteTemplate(f.route), f) for f in engine.index.http),
            key=lambda pair: pair[0].sort_key)

    @property
    def keys_enforced(self) -> bool:
        return bool(self.master_key or self.function_keys)

    def key_level(self, request: web.Request) -> str | None:
        """'admin', 'function' or None for the key the request carries (compared as bytes:
        compare_digest refuses non-ASCII text, and any text is a wrong key, not an error)."""
        given = _utf8(request.headers.get("x-functions-key") or request.query.get("code") or "")
        if self.master_key and hmac.compare_digest(given, _utf8(self.master_key)):
            return "admin"
        if any(hmac.compare_digest(given, _utf8(k)) for k in self.function_keys):
            return "function"
        return None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ----------------------------------------------------------------------------------------------
# who may talk to devhost: its own addresses, and pages of its own origin

def _setting_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


class RequestGuard:
    """Refuses what a web page the developer visits could send: a request under a foreign Host
    name (DNS rebinding: evil.example resolving to 127.0.0.1) and a state-changing request
    whose Origin is another site (cross-site POSTs). curl sends no Origin; the dashboard is
    same-origin; the SDK client calls 127.0.0.1; pages on loopback origins are the developer's
    own. Opt-outs: DEVHOST_ALLOW_ANY_HOST=true and
    DEVHOST_ALLOWED_ORIGINS=https://a.example,http://localhost:3000 (or *)."""

    UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, bind_host: str):
        self.any_host = os.environ.get("DEVHOST_ALLOW_ANY_HOST", "").strip().lower() in (
            "1", "true", "yes")
        self.origins = {o.rstrip("/").lower() for o in _setting_list("DEVHOST_ALLOWED_ORIGINS")}
        self.names = {"localhost", bind_host.strip("[]").lower()}

    def host_allowed(self, host_header: str) -> bool:
        """Our own names, and any IP literal (rebinding needs a name the attacker owns)."""
        if self.any_host or not host_header.strip():
            return True  # no Host at all (HTTP/1.0 probes) is no browser's request
        name = _host_name(host_header)
        if name is None:
            return False
        if name in self.names or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        """devhost's own origin, pages served from this machine's loopback (a local frontend
        dev server, the MCP inspector) and the listed ones."""
        origin = origin.rstrip("/").lower()
        if origin in (f"http://{host_header.lower()}", f"https://{host_header.lower()}"):
            return True
        if "*" in self.origins or origin in self.origins:
            return True
        scheme, _, rest = origin.partition("://")
        name = _host_name(rest) if scheme in ("http", "https") else None
        return name is not None and (name == "localhost" or name.endswith(".localhost")
                                     or _is_loopback(name))

    def refusal(self, request: web.Request) -> web.Response | None:
        host_header = request.headers.get("Host", "")
        if not self.host_allowed(host_header):
            return json_error(403, "foreign_host",
                              "devhost refused the request: its Host header names an address "
                              "devhost does not serve (a DNS-rebinding page would look like "
                              "this). Use localhost or an IP address, or set "
                              "DEVHOST_ALLOW_ANY_HOST=true to accept any Host.")
        origin = request.headers.get("Origin")
        if (origin is not None and request.method.upper() in self.UNSAFE_METHODS
                and not self.origin_allowed(origin, host_header)):
            return json_error(403, "foreign_origin",
                              "devhost refused a state-changing request from another site's "
                              "page (its Origin is not devhost's own). To allow a web app "
                              "to call devhost, list its origin in DEVHOST_ALLOWED_ORIGINS "
                              "(comma-separated, or *).")
        return None


def _host_name(host_header: str) -> str | None:
    """The name part of a Host header ('[::1]:7071' → '::1'), lower case; None if malformed."""
    text = host_header.strip().lower()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 0 else None
    name, _, port = text.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def json_error(status: int, code: str, message: str) -> web.Response:
    """devhost's own refusals, in the shape the app's API uses for every error."""
    return web.json_response({"error": {"status": status, "code": code, "message": message}},
                             status=status)


def _header_bytes(request: web.Request) -> int:
    return sum(len(k) + len(v) + 4 for k, v in request.raw_headers)


def guard_middleware(guard: RequestGuard):
    @web.middleware
    async def guard_requests(request: web.Request, handler):
        """Azure's size limits with JSON answers (never echoing the input), then the guard."""
        if len(request.raw_path.encode("utf-8", "surrogateescape")) > MAX_URL_BYTES:
            return json_error(414, "uri_too_long",
                              f"the request URL is longer than {MAX_URL_BYTES} bytes, Azure "
                              "Functions' limit; send large values in the request body")
        if _header_bytes(request) > MAX_HEADER_BYTES:
            return json_error(431, "request_header_fields_too_large",
                              f"the request headers are larger than {MAX_HEADER_BYTES} bytes "
                              "in total, the limit Azure Functions applies")
        return guard.refusal(request) or await handler(request)
    return guard_requests


def error_response(status: int, message: str) -> web.Response:
    return web.json_response(p.error_body(message), status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except InvalidOperation as exc:
        # the extension lets the client's InvalidOperationException escape: a 500 with its text
        log.warning("%s %s: %s (answered 500, as Azure does)", request.method, request.path,
                    exc.message)
        return web.json_response({"Message": "Something went wrong while processing your "
                                             "request",
                                  "ExceptionMessage": exc.message,
                                  "ExceptionType": "System.InvalidOperationException"},
                                 status=500)
    except DevhostError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status >= 400 and not exc.text.startswith("{"):
            return error_response(exc.status, exc.reason)
        raise
    except Exception as exc:  # never a traceback wall for the client; log it for the person
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(500, f"devhost failed: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------------------------
# management API

def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.strip().lower() == "true"


def _int_query(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest(f"query parameter '{name}' must be a non-negative integer")
    return int(value)


def _seconds_query(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    return None if value is None else commands.parse_seconds(name, value)


def _public_base(request: web.Request) -> str:
    return f"{request.url.origin()}{WEBHOOK_PREFIX}"


def encode_page_token(last: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(last)).encode()).decode()


def decode_page_token(token: str | None) -> tuple[float, str] | None:
    """The (created time, instance id) a continuation token names; None for the first page."""
    if not token:
        return None
    try:
        created, instance_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(created), str(instance_id)
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest("x-ms-continuation-token is not one devhost handed out") from None


def check_status_response(request: web.Request, instance_id: str) -> web.Response:
    host: HostState = request.app[HOST]
    payload = p.management_urls(_public_base(request), instance_id, host.hub,
                                code=host.master_key, rewind=False)
    return web.json_response(payload, status=202, headers={
        "Location": payload["statusQueryGetUri"], "Retry-After": "10"})


def status_response(document: dict | None, request: web.Request) -> web.Response:
    if document is None:
        return web.Response(status=404)
    if p.status_http_code(document) == 202:
        return web.json_response(document, status=202, headers={
            "Location": str(request.url), "Retry-After": "5"})
    return web.json_response(document, status=200)


def management_routes(rpc: bool) -> web.RouteTableDef:
    """The same handlers serve the public webhooks and the SDK's rpc base; only the rpc start
    honours `?version=` (the extension's public start ignores it)."""
    routes = web.RouteTableDef()

    def engine_of(request: web.Request) -> Engine:
        return request.app[HOST].engine

    @routes.post("/orchestrators/{functionName}")
    @routes.post("/orchestrators/{functionName}/{instanceId}")
    async def start(request: web.Request) -> web.Response:
        engine = engine_of(request)
        timeout = _seconds_query(request, "timeout")  # validated before anything starts
        _seconds_query(request, "pollingInterval")
        row = commands.start(engine, request.match_info["functionName"],
                             request.match_info.get("instanceId"), await request.read(),
                             request.query.get("version") if rpc else None)
        if timeout is None:
            return check_status_response(request, row["instance_id"])
        document = await commands.wait_for_end(engine, row["instance_id"], timeout)
        if document is None:
            return check_status_response(request, row["instance_id"])
        if document["runtimeStatus"] == "Completed":
            return web.json_response(document["output"])
        return web.json_response(document)

    @routes.get("/instances")
    @routes.get("/instances/")
    async def list_instances(request: web.Request) -> web.Response:
        """One page, as the extension answers: `top` rows (100 when absent) and always an
        `x-ms-continuation-token` header, empty on the last page. The token names the last
        row handed out, so instances created or purged between pages shift nothing."""
        q = request.query
        top = _int_query(request, "top")
        if top is not None and top < 1:
            raise BadRequest("query parameter 'top' must be at least 1")
        top = DEFAULT_PAGE_SIZE if top is None else top
        after = decode_page_token(request.headers.get("x-ms-continuation-token"))
        docs, last = await commands.fetch_statuses(
            engine_of(request), created_from=q.get("createdTimeFrom"),
            created_to=q.get("createdTimeTo"), statuses=q.get("runtimeStatus"),
            prefix=q.get("instanceIdPrefix"), show_input=_flag(request, "showInput", True),
            top=top, after=after)
        token = encode_page_token(last) if last else ""
        return web.json_response(docs, headers={"x-ms-continuation-token": token})

    @routes.delete("/instances")
    @routes.delete("/instances/")
    async def purge_many(request: web.Request) -> web.Response:
        q = request.query
        deleted = await commands.purge_by(
            engine_of(request), created_from=q.get("createdTimeFrom"),
            created_to=q.get("createdTimeTo"), statuses=q.get("runtimeStatus"))
        return web.json_response({"instancesDeleted": deleted}, status=200 if deleted else 404)

    @routes.get("/instances/{instanceId}")
    async def get_status(request: web.Request) -> web.Response:
        document = await commands.fetch_status(
            engine_of(request), request.match_info["instanceId"],
            show_input=_flag(request, "showInput", True),
            show_history=_flag(request, "showHistory", False),
            show_history_output=_flag(request, "showHistoryOutput", False))
        return status_response(document, request)

    @routes.delete("/instances/{instanceId}")
    async def purge(request: web.Request) -> web.Response:
        deleted = commands.purge(engine_of(request), request.match_info["instanceId"])
        if not deleted:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": deleted})

    @routes.post("/instances/{instanceId}/raiseEvent/{eventName}")
    async def raise_event(request: web.Request) -> web.Response:
        body = await request.read()
        if body and not request.content_type.lower().endswith("json"):
            raise BadRequest("Only application/json request content is supported")
        data_text = None
        if body.strip():
            try:
                data_text = json.dumps(json.loads(body))
            except (ValueError, RecursionError):
                raise BadRequest("Invalid JSON content") from None
        commands.raise_event(engine_of(request), request.match_info["instanceId"],
                             request.match_info["eventName"], data_text)
        return web.Response(status=202)

    @routes.post("/instances/{instanceId}/{operation}")
    async def lifecycle(request: web.Request) -> web.Response:
        engine, instance_id = engine_of(request), request.match_info["instanceId"]
        operation = request.match_info["operation"].lower()
        reason = request.query.get("reason")
        if operation == "restart":
            row = commands.restart(engine, instance_id,
                                   _flag(request, "restartWithNewInstanceId", True))
            return check_status_response(request, row["instance_id"])
        if operation == "rewind":  # it may replay the orchestrator first: a coroutine
            await commands.rewind(engine, instance_id, reason)
            return web.Response(status=202)
        actions = {"terminate": commands.terminate, "suspend": commands.suspend,
                   "resume": commands.resume}
        if operation not in actions:
            raise NotFound(f"unknown instance operation '{operation}'")
        actions[operation](engine, instance_id, reason)
        return web.Response(status=202)

    @routes.get("/entities")
    @routes.get("/entities/")
    @routes.get("/entities/{name}")
    async def list_entities(request: web.Request) -> web.Response:
        top = _int_query(request, "top") or 100
        return web.json_response(commands.list_entities(
            engine_of(request), request.match_info.get("name"), top,
            _int_query(request, "skip") or 0))

    @routes.get("/entities/{name}/{key}")
    async def read_entity(request: web.Request) -> web.Response:
        state = commands.read_entity(engine_of(request), request.match_info["name"],
                                     request.match_info["key"])
        if state is None:
            return web.Response(status=404)
        return web.Response(text=state, content_type="application/json")

    @routes.post("/entities/{name}/{key}")
    @routes.delete("/entities/{name}/{key}")
    async def signal_entity(request: web.Request) -> web.Response:
        body = await request.text()
        if request.method == "DELETE":
            operation, input_text = "delete", None
        else:
            operation = request.query.get("op", "")
            if not body:
                input_text = None
            elif request.content_type.lower().endswith("json"):
                try:
                    json.loads(body)
                except (ValueError, RecursionError):
                    raise BadRequest("Invalid JSON content") from None
                input_text = body
            else:
                input_text = json.dumps(body)
        commands.signal_entity(engine_of(request), request.match_info["name"],
                               request.match_info["key"], operation, input_text)
        return web.Response(status=202)

    return routes


def management_app(host: HostState, require_key: bool) -> web.Application:
    @web.middleware
    async def system_key(request: web.Request, handler):
        if require_key and host.master_key and host.key_level(request) != "admin":
            raise Unauthorized("the durable management API needs the master key "
                               "(?code= or x-functions-key) when keys are configured")
        return await handler(request)

    sub = web.Application(middlewares=[errors_middleware, system_key],
                          client_max_size=MAX_REQUEST_BYTES)
    sub[HOST] = host
    sub.add_routes(management_routes(rpc=not require_key))
    return sub


# ----------------------------------------------------------------------------------------------
# the app's HTTP triggers

def build_request(request: web.Request, body: bytes, route_params: dict) -> func.HttpRequest:
    params = {k: request.query.get(k) for k in request.query.keys()}
    return func.HttpRequest(method=request.method, url=str(request.url),
                            headers=dict(request.headers), params=params,
                            route_params=route_params, body=body)


def to_web_response(result) -> web.Response:
    """The worker's conversion of a function's return value into the host's HTTP response."""
    if result is None:
        return web.Response(status=204)
    if isinstance(result, func.HttpResponse):
        headers = CIMultiDict()
        for key, value in result.headers.items():
            headers.add(key, value)
        if "content-type" not in headers:
            headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}"
        return web.Response(status=int(result.status_code), body=result.get_body(),
                            headers=headers)
    if isinstance(result, (str, bytes)):
        return web.Response(status=200, body=result if isinstance(result, bytes) else
                            result.encode(), content_type="text/plain", charset="utf-8")
    return web.json_response(result)


async def handle_trigger(request: web.Request) -> web.StreamResponse:
    host: HostState = request.app[HOST]
    path = request.path
    prefix = f"/{host.route_prefix}" if host.route_prefix else ""
    if prefix and not (path.lower() == prefix.lower() or path.lower().startswith(prefix.lower() + "/")):
        raise NotFound(f"no function at {path}")
    relative = path[len(prefix):]
    allowed: list[str] = []
    for template, function in host.triggers:
        values = template.match(relative)
        if values is None:
            continue
        if function.methods and request.method.upper() not in function.methods:
            allowed.extend(m for m in function.methods if m not in allowed)
            continue
        return await invoke_http_function(request, host, function, values)
    if allowed:
        response = error_response(405, f"method {request.method} is not allowed for {path}")
        response.headers["Allow"] = ", ".join(allowed)
        return response
    raise NotFound(f"no function at {path}")


async def invoke_http_function(request: web.Request, host: HostState, function: HttpFunction,
                               route_params: dict) -> web.StreamResponse:
    if host.keys_enforced and function.auth_level != "anonymous":
        level = host.key_level(request)
        if level is None or (function.auth_level == "admin" and level != "admin"):
            raise Unauthorized(f"function '{function.name}' needs a "
                               f"{'master' if function.auth_level == 'admin' else 'function'} "
                               "key (?code= or the x-functions-key header)")
    kwargs = {}
    invocation = InvocationContext(function.name)
    if function.client_param:
        kwargs[function.client_param] = p.client_binding(
            _public_base(request), host.rpc_base, function.client_hub or host.hub,
            function.client_connection or "Storage", code=host.master_key)
    if asgi_http.enabled():  # the app imports the FastAPI extension: every HTTP function streams
        return await asgi_http.invoke(
            request, function, route_params, kwargs,
            lambda arguments: host.engine.invoker.call_http(function, arguments, invocation))
    body = await request.read()
    kwargs[function.request_param] = build_request(request, body, route_params)
    ok, result = await host.engine.invoker.run_http(function, kwargs, invocation)
    if not ok:  # the user's code failed: Azure answers 500 with an empty body
        return web.Response(status=500)
    return to_web_response(result)


# ----------------------------------------------------------------------------------------------
# the application

def build_app(host: HostState) -> web.Application:
    app = web.Application(middlewares=[guard_middleware(RequestGuard(host.bind_host)),
                                       errors_middleware], client_max_size=MAX_REQUEST_BYTES)
    app[HOST] = host
    app.add_subapp(WEBHOOK_PREFIX, management_app(host, require_key=True))
    app.add_subapp(f"/_devhost/rpc/{host.rpc_token}/durabletask",
                   management_app(host, require_key=False))

    async def host_status(_: web.Request) -> web.Response:
        return web.json_response({"state": "Running", "hub": host.hub,
                                  "counts": host.engine.store.counts(),
                                  "statusWaiters": host.engine.waiter_count(),
                                  "stuck": len(host.engine.stuck),
                                  "id": str(uuid.uuid5(uuid.NAMESPACE_URL, host.rpc_base))})

    async def dashboard(_: web.Request) -> web.FileResponse:
        return web.FileResponse(DASHBOARD_DIR / "index.html", headers=NO_CACHE)

    async def dashboard_file(request: web.Request) -> web.FileResponse:
        path = (DASHBOARD_DIR / request.match_info["file"]).resolve()
        if path.parent != DASHBOARD_DIR.resolve() or not path.is_file():
            raise NotFound(f"no dashboard file {request.match_info['file']}")
        return web.FileResponse(path, headers=NO_CACHE)

    app.router.add_get("/admin/host/status", host_status)
    app.router.add_get("/_devhost/", dashboard)
    app.router.add_get("/_devhost", dashboard)
    app.router.add_get("/_devhost/static/{file}", dashboard_file)
    dashboard_api.register(app, host)  # the dashboard's read endpoints, /_devhost/api/...
    mount_mcp(app, host)  # /runtime/webhooks/mcp, when the app has MCP tool triggers
    app.router.add_route("*", r"/{tail:[\s\S]*}", handle_trigger)  # any path, newlines too
    return app
