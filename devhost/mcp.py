"""The Functions MCP extension's endpoint, served from the app's `mcpToolTrigger` bindings.

Like the extension: streamable HTTP at `/runtime/webhooks/mcp` and the legacy SSE pair at
`/runtime/webhooks/mcp/sse` + `/runtime/webhooks/mcp/message`; the tool list built from each
binding's `toolName`, `description` and `toolProperties` (the same input schema the extension
builds); a missing required argument is a JSON-RPC invalid-params error with the extension's
text; the function gets the extension's context JSON (`name`, `arguments`, `sessionid`,
`clientinfo`, `transport`); its return value becomes text content, or with `useResultSchema`
the rich McpToolResult it describes; a function that raises is a tool error, as the SDK
behind the extension reports it. With a master key or `DEVHOST_MCP_EXTENSION_KEY` configured,
the endpoint needs that key (`x-functions-key` or `?code=`): Azure's `mcp_extension` system key.

The protocol itself is the official `mcp` SDK's (lowlevel Server + StreamableHTTPSessionManager
for streamable HTTP, SseServerTransport for the legacy pair), served through devhost/asgi.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import os
import traceback
from typing import Any

import mcp_types as types
from aiohttp import web
from mcp.server.lowlevel import Server
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from .asgi import asgi_handler
from .loader import McpToolFunction

log = logging.getLogger("devhost.mcp")
MCP_PREFIX = "/runtime/webhooks/mcp"
KEY_SETTING = "DEVHOST_MCP_EXTENSION_KEY"
SERVER_NAME = "Azure Functions MCP server"  # the extension's default McpOptions.ServerName


def input_schema(binding: dict) -> dict:
    """The extension's PropertyBasedToolInputSchema: properties from toolProperties, and
    `required` always present."""
    raw = binding.get("toolProperties")
    properties = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or [])
    schema: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for prop in properties:
        name = prop.get("propertyName")
        if not name:
            continue
        kind: dict[str, Any] = {"type": prop.get("propertyType") or "string"}
        if prop.get("enumValues"):
            kind["enum"] = list(prop["enumValues"])
        entry = {"type": "array", "items": kind} if prop.get("isArray") else dict(kind)
        entry["description"] = prop.get("description") or ""
        schema["properties"][name] = entry
        if prop.get("isRequired") and name not in schema["required"]:
            schema["required"].append(name)
    return schema


def to_call_result(tool: McpToolFunction, value: Any) -> types.CallToolResult:
    """What the extension makes of a function's return value."""
    if value is None:
        return types.CallToolResult(content=[])
    if not tool.binding.get("useResultSchema"):
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(value))])
    if not isinstance(value, str):
        raise ValueError("Expected JSON string.")
    wrapper = json.loads(value)
    kind = str(wrapper.get("type", ""))
    if kind.lower() == "call_tool_result":
        return types.CallToolResult.model_validate(json.loads(wrapper["content"]))
    if kind.lower() == "multi_content_result":
        blocks = json.loads(wrapper["content"])
    else:
        blocks = [json.loads(wrapper["content"])]
    structured = wrapper.get("structuredContent")
    return types.CallToolResult.model_validate({
        "content": blocks,
        **({"structuredContent": json.loads(structured)} if structured else {})})


class McpEndpoint:
    """One MCP server for the app's tools, with its session manager and legacy SSE pair."""

    def __init__(self, host, tools: list[McpToolFunction]):
        self.host, self.tools = host, {t.binding["toolName"]: t for t in tools}
        self.key = os.environ.get(KEY_SETTING) or None
        self.server = Server(SERVER_NAME, version="1.0.0", on_list_tools=self.list_tools,
                             on_call_tool=self.call_tool)
        self.manager = StreamableHTTPSessionManager(self.server)
        self.sse = SseServerTransport(f"{MCP_PREFIX}/message")

    # -- protocol handlers ----------------------------------------------------------------
    async def list_tools(self, ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(name=name, description=tool.binding.get("description") or None,
                       input_schema=input_schema(tool.binding))
            for name, tool in self.tools.items()])

    async def call_tool(self, ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = self.tools.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: '{params.name}'")
        arguments = dict(params.arguments or {})
        missing = [name for name in input_schema(tool.binding)["required"]
                   if arguments.get(name) is None]
        if missing:
            raise MCPError(types.INVALID_PARAMS, "One or more required tool properties are "
                           f"missing values. Please provide: {', '.join(missing)}")
        context = self.invocation_context(ctx, params.name, arguments)
        try:
            value = await self.invoke(tool, context)
            return to_call_result(tool, value)
        except Exception as exc:  # the user's function failed: a tool error, details logged
            log.error("MCP tool function '%s' failed:\n%s", tool.name,
                      "".join(traceback.format_exception(exc)))
            return types.CallToolResult(is_error=True, content=[types.TextContent(
                type="text", text=f"An error occurred invoking '{params.name}'.")])

    def invocation_context(self, ctx, name: str, arguments: dict) -> dict:
        """The ToolInvocationContext JSON the extension hands the worker."""
        request = getattr(ctx, "request", None)
        headers = dict(request.headers) if request is not None and hasattr(request, "headers") \
            else {}
        session_id = next((v for k, v in headers.items() if k.lower() == "mcp-session-id"), None)
        client_info = None
        with contextlib.suppress(Exception):
            info = ctx.session.client_params.client_info
            client_info = info.model_dump(mode="json", by_alias=True, exclude_none=True)
        path = request.url.path if request is not None and hasattr(request, "url") else ""
        transport = {"name": "http-sse" if path.endswith("/message") else "http-streamable",
                     "sessionId": session_id, "properties": {"headers": headers}}
        return {"name": name, "arguments": arguments, "sessionid": session_id,
                "clientinfo": client_info, "transport": transport}

    async def invoke(self, tool: McpToolFunction, context: dict) -> Any:
        annotation = tool.context_annotation
        as_text = annotation in (str, "str", None, inspect.Parameter.empty)
        kwargs: dict[str, Any] = {tool.context_param: json.dumps(context) if as_text
                                  else context}
        return await self.host.engine.invoker.run_mcp_tool(tool, kwargs)

    # -- HTTP -------------------------------------------------------------------------------
    def authorised(self, request: web.Request) -> bool:
        accepted = [k for k in (self.host.master_key, self.key) if k]
        if not accepted:
            return True
        given = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return any(hmac.compare_digest(given, k) for k in accepted)

    def guarded(self, app):
        handler = asgi_handler(app)

        async def handle(request: web.Request) -> web.StreamResponse:
            if not self.authorised(request):
                return web.json_response({"error": "the MCP endpoint needs the mcp_extension "
                                          f"system key ({KEY_SETTING}) or the master key, as "
                                          "?code= or x-functions-key"}, status=401)
            return await handler(request)
        return handle

    async def _sse(self, scope, receive, send) -> None:
        async with self.sse.connect_sse(scope, receive, send) as (read, write):
            await self.server.run(read, write, self.server.create_initialization_options())

    def mount(self, app: web.Application) -> None:
        streamable = self.guarded(self.manager.handle_request)
        app.router.add_route("*", MCP_PREFIX, streamable)
        app.router.add_route("*", MCP_PREFIX + "/", streamable)
        app.router.add_get(MCP_PREFIX + "/sse", self.guarded(self._sse))
        app.router.add_post(MCP_PREFIX + "/message", self.guarded(self.sse.handle_post_message))

        async def running(_: web.Application):
            # The manager's anyio task group lives in a task of its own, entered and left there.
            ready, stop = asyncio.Event(), asyncio.Event()

            async def serve() -> None:
                async with self.manager.run():
                    ready.set()
                    await stop.wait()
            task = asyncio.create_task(serve())
            await ready.wait()
            yield
            stop.set()
            await task
        app.cleanup_ctx.append(running)


def mount_mcp(app: web.Application, host) -> McpEndpoint | None:
    """Serve the MCP endpoint if the app has MCP tool triggers."""
    tools = host.engine.index.mcp_tools
    if not tools:
        return None
    endpoint = McpEndpoint(host, tools)
    endpoint.mount(app)
    return endpoint
