"""Every agent is an MCP tool: devhost serves the MCP extension's endpoint from the app's
mcpToolTrigger bindings, driven here by the official `mcp` Python client over loopback."""
from __future__ import annotations

import asyncio
import contextlib
import json

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import APPS, ROOT, DevhostProcess, app_env
from tests.fake_openai import unauthorized

MCP = "/runtime/webhooks/mcp"


@contextlib.asynccontextmanager
async def session(base: str, headers: dict | None = None, path: str = MCP):
    async with httpx2.AsyncClient(headers=headers or {}, timeout=60) as http:
        async with streamable_http_client(base + path, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as client:
                await client.initialize()
                yield client


def run(coro):
    return asyncio.run(coro)


def agent_names() -> list[str]:
    return [a["name"] for a in json.loads((ROOT / "agents.json").read_text())["agents"]]


@pytest.fixture(autouse=True)
def _reset_model(fresh_llm):
    yield


def test_every_agent_is_a_tool_with_message_and_thread_id(agent_host):
    async def scenario():
        async with session(agent_host.base) as client:
            return (await client.list_tools()).tools

    tools = {t.name: t for t in run(scenario())}
    assert sorted(tools) == sorted(agent_names())
    schema = tools["MyDurableAgent"].input_schema
    assert schema["type"] == "object" and schema["required"] == ["message"]
    assert schema["properties"]["message"]["type"] == "string"
    assert schema["properties"]["thread_id"]["type"] == "string"
    assert set(schema["properties"]) == {"message", "thread_id"}
    assert "MyDurableAgent" in tools["MyDurableAgent"].description


def test_two_calls_on_one_thread_the_second_sees_the_first(agent_host, llm):
    async def scenario():
        async with session(agent_host.base) as client:
            first = await client.call_tool("MyDurableAgent", {"message": "My name is Ada."})
            thread_id = first.structured_content["thread_id"]
            second = await client.call_tool("MyDurableAgent",
                                            {"message": "What is my name?",
                                             "thread_id": thread_id})
            return first, second

    first, second = run(scenario())
    assert not first.is_error and not second.is_error
    assert first.content[0].text == "echo: My name is Ada. [messages=2]"
    assert first.structured_content["reply"] == first.content[0].text
    assert json.loads(first.content[1].text) == first.structured_content
    thread_id = first.structured_content["thread_id"]
    assert thread_id.startswith("@dafx-mydurableagent@")
    assert second.structured_content["thread_id"] == thread_id
    assert second.structured_content["thread_messages"] == 4
    sent = llm.requests[-1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "My name is Ada."
    assert sent[2]["content"] == first.content[0].text
    # the MCP thread is an ordinary thread: the HTTP thread API reads it
    thread = agent_host.request("GET", f"/api/agents/MyDurableAgent/threads/{thread_id}").json()
    assert [m["content"] for m in thread["messages"]] == [
        "My name is Ada.", first.content[0].text, "What is my name?", second.content[0].text]


def test_a_missing_message_is_invalid_params_and_starts_nothing(agent_host, llm):
    async def scenario():
        async with session(agent_host.base) as client:
            with pytest.raises(MCPError) as missing:
                await client.call_tool("MyDurableAgent", {"thread_id": "x"})
            wrong_type = await client.call_tool("MyDurableAgent", {"message": 42})
            bad_thread = await client.call_tool("MyDurableAgent",
                                                {"message": "hi", "thread_id": "not-a-thread"})
            unknown = await client.call_tool(
                "MyDurableAgent", {"message": "hi",
                                   "thread_id": "0f8fad5b-d9cb-469f-a165-70867728950e"})
            return missing.value, wrong_type, bad_thread, unknown

    missing, wrong_type, bad_thread, unknown = run(scenario())
    assert missing.code == -32602 and "message" in missing.message
    assert wrong_type.is_error and wrong_type.structured_content["error"]["code"] == \
        "invalid_message"
    assert bad_thread.is_error
    assert bad_thread.structured_content["error"]["code"] == "invalid_thread_id"
    assert "not-a-thread" in bad_thread.content[0].text
    assert unknown.is_error and unknown.structured_content["error"]["status"] == 404
    assert llm.requests == []  # nothing reached the model


def test_a_failing_model_is_a_tool_error_with_the_reason(agent_host, llm):
    llm.script(unauthorized())

    async def scenario():
        async with session(agent_host.base) as client:
            return await client.call_tool("MyDurableAgent", {"message": "hello?"})

    result = run(scenario())
    assert result.is_error
    error = result.structured_content["error"]
    assert error["status"] == 502 and error["code"] == "auth"
    assert "Incorrect API key" in result.content[0].text
    thread_id = result.structured_content["thread_id"]
    # the failed turn is not written to the thread
    thread = agent_host.request("GET", f"/api/agents/MyDurableAgent/threads/{thread_id}")
    assert thread.status == 404 or thread.json()["messages"] == []


def test_legacy_sse_endpoint_serves_the_same_tools(agent_host):
    async def scenario():
        async with sse_client(agent_host.base + MCP + "/sse") as streams:
            async with ClientSession(streams[0], streams[1]) as client:
                await client.initialize()
                names = [t.name for t in (await client.list_tools()).tools]
                result = await client.call_tool("MyDurableAgent", {"message": "over sse"})
                return names, result

    names, result = run(scenario())
    assert sorted(names) == sorted(agent_names())
    assert result.content[0].text == "echo: over sse [messages=2]"


def test_the_mcp_extension_key_is_required_when_keys_are_configured(llm, tmp_path):
    host = DevhostProcess(ROOT, tmp_path / "hub.sqlite", app_env(
        llm, DEVHOST_MASTER_KEY="master-secret", DEVHOST_MCP_EXTENSION_KEY="mcp-secret"))
    host.start()
    try:
        refused = host.request("POST", MCP, {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                               {"Accept": "application/json, text/event-stream"})
        assert refused.status == 401 and "mcp_extension" in refused.text
        wrong = host.request("POST", MCP + "?code=nope", {"jsonrpc": "2.0", "id": 1,
                                                         "method": "ping"})
        assert wrong.status == 401

        async def scenario(headers):
            async with session(host.base, headers) as client:
                return [t.name for t in (await client.list_tools()).tools]

        assert "MyDurableAgent" in run(scenario({"x-functions-key": "mcp-secret"}))
        assert "MyDurableAgent" in run(scenario({"x-functions-key": "master-secret"}))
    finally:
        host.kill()


# -- functions written for Azure's MCP extension (tests/apps/mcp) ------------------------------

@pytest.fixture(scope="module")
def mcp_app_host(tmp_path_factory):
    host = DevhostProcess(APPS / "mcp", tmp_path_factory.mktemp("mcp") / "hub.sqlite")
    host.start()
    yield host
    host.kill()


def test_azure_style_tools_get_the_extension_context(mcp_app_host):
    async def scenario():
        async with session(mcp_app_host.base) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            greeting = await client.call_tool("greet", {"name": "Ada", "times": 2})
            echoed = await client.call_tool("echo_context", {"text": "hi"})
            failed = await client.call_tool("explode", {})
            return tools, greeting, echoed, failed

    tools, greeting, echoed, failed = run(scenario())
    assert tools["greet"].description == "Greets someone."
    assert tools["greet"].input_schema["required"] == ["name"]
    assert tools["greet"].input_schema["properties"]["times"]["type"] == "integer"
    assert greeting.content[0].text == "Hello, Ada! Hello, Ada!"
    context = json.loads(echoed.content[0].text)
    assert context["name"] == "echo_context" and context["arguments"] == {"text": "hi"}
    assert context["transport"]["name"] == "http-streamable"
    assert context["sessionid"] and context["transport"]["sessionId"] == context["sessionid"]
    assert context["clientinfo"]["name"]
    assert failed.is_error and "explode" in failed.content[0].text
    assert "boom" in mcp_app_host.log()  # the traceback is on the console


def test_a_turn_waiting_for_approval_says_so_and_how_to_decide(agent_host, llm):
    from tests.fake_openai import tool_call, tool_calls
    llm.script(tool_calls(tool_call("refund_order", {"order_id": "A1001", "amount": 10.0,
                                                     "reason": "late"})))

    async def scenario():
        async with session(agent_host.base) as client:
            return await client.call_tool("MyDurableAgent", {"message": "refund A1001"})

    result = run(scenario())
    assert not result.is_error
    assert result.structured_content["status"] == "waiting_for_approval"
    pending, = result.structured_content["pending"]
    assert pending["tool"] == "refund_order" and pending["approve_url"] in result.content[0].text
    assert result.structured_content["thread_id"].startswith("@dafx-mydurableagent@")


# -- devhost/asgi.py: the aiohttp -> ASGI bridge the MCP endpoint is served through ------------

@contextlib.contextmanager
def served(asgi_app):
    """`asgi_app` behind devhost's bridge on a real aiohttp server (its own thread and loop)."""
    import socket
    import threading

    from aiohttp import web

    from devhost.asgi import asgi_handler

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", asgi_handler(asgi_app, root_path="/mounted"))
    runner = web.AppRunner(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_the_bridge_streams_both_ways_and_reports_a_disconnect():
    import threading
    seen: dict = {}
    disconnected = threading.Event()

    async def app(scope, receive, send):
        if scope["path"] == "/echo":
            chunks = []
            while True:
                message = await receive()
                chunks.append(message["body"])
                if not message["more_body"]:
                    break
            seen.update(scope={k: scope[k] for k in ("method", "path", "query_string",
                                                     "root_path", "headers")})
            await send({"type": "http.response.start", "status": 201,
                        "headers": [(b"content-type", b"text/plain"), (b"x-app", b"yes")]})
            for part in (b"got ", b"".join(chunks), b" bytes"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:  # an endless stream until the client goes away
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b"data: hello\n\n",
                        "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

    async def body():  # a chunked request body
        yield b"abc"
        yield b"defg"

    async def scenario(base):
        async with httpx2.AsyncClient() as http:
            echoed = await http.post(f"{base}/echo?x=1", content=body(),
                                     headers={"X-Custom": "v"})
            async with http.stream("GET", f"{base}/events") as events:
                first = await events.aiter_bytes().__anext__()
            return echoed, first

    with served(app) as base:
        echoed, first = asyncio.run(scenario(base))
        assert disconnected.wait(30)  # the app learnt that the client left
    assert echoed.status_code == 201 and echoed.text == "got abcdefg bytes"
    assert echoed.headers["x-app"] == "yes"
    assert first == b"data: hello\n\n"
    scope = seen["scope"]
    assert scope["method"] == "POST" and scope["path"] == "/echo"
    assert scope["query_string"] == b"x=1" and scope["root_path"] == "/mounted"
    assert (b"x-custom", b"v") in scope["headers"]


def test_over_legacy_sse_the_context_names_the_sse_transport(mcp_app_host):
    async def scenario():
        async with sse_client(mcp_app_host.base + MCP + "/sse") as streams:
            async with ClientSession(streams[0], streams[1]) as client:
                await client.initialize()
                return await client.call_tool("echo_context", {"text": "via sse"})

    context = json.loads(run(scenario()).content[0].text)
    assert context["arguments"] == {"text": "via sse"}
    assert context["transport"]["name"] == "http-sse"
