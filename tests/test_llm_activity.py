"""The call_llm activity against a real OpenAI-compatible server on loopback.

The real ``openai`` client talks HTTP to ``tests.fake_openai``; only the
Entra ID credential (a third-party boundary needing a cloud login) is faked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import re
import socket
import time

import pytest
from azure.core.credentials import AccessToken

from activities import llm, providers
from activities.errors import LLMTransientError, parse_error_text
from activities.llm import call_llm_async, call_llm_impl
from tests.fake_openai import (
    FakeOpenAI,
    content_filter,
    context_length_exceeded,
    error,
    not_found,
    rate_limited,
    reply,
    server_error,
    sleep,
    unauthorized,
)

SETTINGS = [
    "LLM_PROVIDER", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_API_VERSION",
    "AZURE_OPENAI_DEPLOYMENT", "AZURE_OPENAI_DEPLOYMENT_NAME", "AZURE_CLIENT_ID", "OPENAI_BASE_URL",
    "OPENAI_API_KEY", "OPENAI_MODEL", "LLM_TIMEOUT_SECONDS", "LLM_MAX_ATTEMPTS",
    "LLM_RETRY_BASE_SECONDS", "LLM_RETRY_MAX_WAIT_SECONDS", "LLM_RETRY_AFTER_MAX_SECONDS",
    "OPENAI_API_VERSION", "AZURE_OPENAI_AD_TOKEN",
]
WRAPPED = "Activity function 'call_llm' failed: LLMTransientError: {}\n  File \"x.py\", line 1, in <module>"


def make_request(*user_turns: str, model=None, temperature=None, max_output_tokens=None) -> dict:
    messages = [{"role": "system", "content": "You are terse."}]
    for i, text in enumerate(user_turns):
        if i:
            messages.append({"role": "assistant", "content": f"answer {i}"})
        messages.append({"role": "user", "content": text})
    return {
        "agent": {
            "name": "tester",
            "instructions": "You are terse.",
            "model": model,
            "temperature": temperature,
            "max_output_tokens": max_output_tokens,
        },
        "messages": messages,
        "turn_id": "turn-1",
    }


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("LLM_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setenv("LLM_RETRY_MAX_WAIT_SECONDS", "0.05")
    providers.reset_clients()
    yield
    providers.reset_clients()


@pytest.fixture
def sleeps(monkeypatch):
    """Record the in-activity backoff waits (and still wait them)."""
    seen: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        seen.append(seconds)
        await asyncio.sleep(min(seconds, 0.1))

    monkeypatch.setattr(llm, "sleep", fake_sleep)
    return seen


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def openai_server(server, monkeypatch):
    monkeypatch.setenv("LLM_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    return server


# --------------------------------------------------------------------------- success


def test_success_shape_and_usage(openai_server):
    result = call_llm_impl(make_request("hello there", temperature=0.2, max_output_tokens=50))

    assert result["ok"] is True
    assert result["reply"] == "echo: hello there [messages=2]"
    assert result["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert result["model"] == "gpt-4o-mini"
    assert result["finish_reason"] == "stop"
    assert result["provider"] == "openai"
    assert result["attempts"] == 1
    assert isinstance(result["latency_ms"], float) and result["latency_ms"] > 0
    [seen] = openai_server.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.authorization == "Bearer sk-test-123"
    assert seen.body["temperature"] == 0.2 and seen.body["max_tokens"] == 50


def test_history_reaches_the_model(openai_server):
    request = make_request("first question", "second question", "third question")
    result = call_llm_impl(request)

    assert result["reply"] == "echo: third question [messages=6]"
    assert openai_server.requests[0].messages == request["messages"]


def test_model_defaults_and_agent_override(openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    assert call_llm_impl(make_request("a"))["model"] == "env-model"
    assert call_llm_impl(make_request("a", model="agent-model"))["model"] == "agent-model"
    assert [r.body["model"] for r in openai_server.requests] == ["env-model", "agent-model"]
    assert "temperature" not in openai_server.requests[0].body  # unset means provider default


def test_client_built_once_and_provider_announced_once(openai_server, caplog, monkeypatch):
    monkeypatch.setattr(providers, "_announced", set())
    caplog.set_level(logging.INFO, logger="activities.providers")

    async def two_calls_on_one_loop() -> int:
        await call_llm_async(make_request("a"))
        await call_llm_async(make_request("b"))
        return len(providers._async_clients[asyncio.get_running_loop()])

    assert asyncio.run(two_calls_on_one_loop()) == 1
    announcements = [r for r in caplog.records if r.getMessage().startswith("LLM provider:")]
    assert [r.getMessage() for r in announcements] == [
        f"LLM provider: openai (base_url {openai_server.base_url}, model gpt-4o-mini)"
    ]


# --------------------------------------------------------------------------- transient


def test_429_then_success_honours_retry_after(openai_server, sleeps):
    openai_server.script(rate_limited(retry_after="0"))
    result = call_llm_impl(make_request("hi"))

    assert result["ok"] and result["attempts"] == 2
    assert len(openai_server.requests) == 2
    assert sleeps == [0.0]


def test_retry_after_ms_header_wins(openai_server, sleeps):
    openai_server.script(rate_limited(retry_after="7", retry_after_ms="20"))
    assert call_llm_impl(make_request("hi"))["ok"]
    assert sleeps == [pytest.approx(0.02)]


def test_500_500_then_success(openai_server, sleeps):
    openai_server.script("500", server_error(500))
    result = call_llm_impl(make_request("hi"))

    assert result["ok"] and result["attempts"] == 3
    assert len(openai_server.requests) == 3
    assert len(sleeps) == 2 and all(0 <= s <= 0.05 for s in sleeps)  # jittered, capped backoff


def test_exhausted_retries_raise_parseable_transient_error(openai_server):
    openai_server.script(*[rate_limited(retry_after="0")] * 3)
    with pytest.raises(LLMTransientError) as caught:
        call_llm_impl(make_request("hi"))

    text = str(caught.value)
    assert text.startswith("[rate_limited:503] upstream answered 429")
    assert text.endswith("after 3 attempts")
    kind, status, message = parse_error_text(WRAPPED.format(text))
    assert (kind, status) == ("rate_limited", 503)
    assert message.startswith("upstream answered 429") and message.endswith("after 3 attempts")
    assert len(openai_server.requests) == 3


def test_503_exhausted_is_unavailable(openai_server, monkeypatch):
    monkeypatch.setenv("LLM_MAX_ATTEMPTS", "2")
    openai_server.script("503", "503")
    with pytest.raises(LLMTransientError) as caught:
        call_llm_impl(make_request("hi"))
    assert parse_error_text(str(caught.value))[:2] == ("server_error", 503)
    assert caught.value.upstream_status == 503
    assert len(openai_server.requests) == 2


def test_long_retry_after_is_not_slept(openai_server, sleeps):
    openai_server.script(rate_limited(retry_after="120"))
    with pytest.raises(LLMTransientError) as caught:
        call_llm_impl(make_request("hi"))
    assert sleeps == []
    assert len(openai_server.requests) == 1
    assert "asked to wait 120 s" in str(caught.value) and str(caught.value).endswith("after 1 attempt")


def test_timeout_is_classified(openai_server, monkeypatch):
    monkeypatch.setenv("LLM_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("LLM_MAX_ATTEMPTS", "1")
    openai_server.script(sleep(3))
    started = time.monotonic()
    with pytest.raises(LLMTransientError) as caught:
        call_llm_impl(make_request("hi"))
    elapsed = time.monotonic() - started

    assert 0.9 <= elapsed < 2.5
    kind, status, message = parse_error_text(WRAPPED.format(caught.value))
    assert (kind, status) == ("timeout", 504)
    assert message == "upstream did not answer in time after 1 attempt"


def test_garbage_is_invalid_response_and_retried(openai_server):
    openai_server.script("garbage")
    result = call_llm_impl(make_request("hi"))
    assert result["ok"] and result["attempts"] == 2

    openai_server.script("garbage", "garbage", "garbage")
    with pytest.raises(LLMTransientError) as caught:
        call_llm_impl(make_request("hi"))
    assert parse_error_text(str(caught.value))[:2] == ("invalid_response", 502)


def test_empty_choices_is_invalid_response_and_retried(openai_server):
    openai_server.script("empty_choices")
    result = call_llm_impl(make_request("hi"))
    assert result["ok"] and result["attempts"] == 2
    assert len(openai_server.requests) == 2


def test_connection_refused_is_transient(monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("LLM_MAX_ATTEMPTS", "2")
    with pytest.raises(LLMTransientError) as caught:
        call_llm_impl(make_request("hi"))
    assert str(caught.value).startswith("[connection:503] could not reach upstream")
    assert str(caught.value).endswith("after 2 attempts")


# --------------------------------------------------------------------------- permanent


@pytest.mark.parametrize(
    "behaviour, kind, upstream",
    [
        (content_filter(), "content_filter", 400),
        (context_length_exceeded(), "context_length", 400),
        (unauthorized(), "auth", 401),
        (error(403, "forbidden"), "auth", 403),
        (not_found(), "not_found", 404),
        (error(400, "Invalid value for 'temperature'"), "bad_request", 400),
        (error(429, "You exceeded your current quota", "insufficient_quota"), "rate_limited", 429),
    ],
)
def test_non_retryable_failures_return_ok_false_after_one_request(openai_server, behaviour, kind, upstream):
    openai_server.script(behaviour)
    result = call_llm_impl(make_request("hi"))

    assert result["ok"] is False
    err = result["error"]
    assert err["kind"] == kind
    assert err["status"] == (503 if kind == "rate_limited" else 502)
    assert err["upstream_status"] == upstream
    assert err["message"].startswith(f"upstream answered {upstream}") and "\n" not in err["message"]
    assert len(openai_server.requests) == 1


def test_content_filtered_completion_is_content_filter(openai_server):
    openai_server.script(reply("", finish_reason="content_filter"))
    result = call_llm_impl(make_request("hi"))
    assert result["ok"] is False
    assert result["error"]["kind"] == "content_filter" and result["error"]["upstream_status"] == 200
    assert len(openai_server.requests) == 1


def test_bad_input_is_not_sent(openai_server):
    result = call_llm_impl({"agent": {}, "messages": [{"role": "robot", "content": "x"}]})
    assert result == {
        "ok": False,
        "error": {
            "kind": "bad_request",
            "status": 500,
            "message": "call_llm message 0 needs a role in ('system', 'user', 'assistant', 'tool')",
            "upstream_status": None,
        },
    }
    assert openai_server.requests == []


def test_bad_provider_setting_is_config_error(monkeypatch):
    monkeypatch.setenv("LLM_PROVIDER", "bard")
    result = call_llm_impl(make_request("hi"))
    assert result["ok"] is False
    assert result["error"]["kind"] == "config" and result["error"]["status"] == 500


# --------------------------------------------------------------------------- azure


def test_azure_with_api_key(server, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-42")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "chat-deployment")
    result = call_llm_impl(make_request("hello azure"))

    assert result["ok"] and result["provider"] == "azure_openai"
    assert result["model"] == "chat-deployment"
    [seen] = server.requests
    assert seen.path == "/openai/deployments/chat-deployment/chat/completions"
    assert seen.query["api-version"] == "2024-10-21"
    assert seen.api_key == "azure-key-42"
    assert seen.authorization is None


def test_azure_without_key_sends_entra_bearer_token(server, monkeypatch):
    created = []

    class FakeCredential:
        """Stands in for DefaultAzureCredential (a cloud login is not available offline)."""

        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.scopes = []
            created.append(self)

        def get_token(self, *scopes, **kwargs):
            self.scopes.extend(scopes)
            return AccessToken("entra-token-xyz", int(time.time()) + 3600)

    monkeypatch.setattr(providers, "DefaultAzureCredential", FakeCredential)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT_NAME", "dep-by-name")
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    monkeypatch.setenv("AZURE_OPENAI_API_VERSION", "2025-01-01-preview")
    result = call_llm_impl(make_request("hi", model="agent-deployment"))

    assert result["ok"] and result["provider"] == "azure_openai"
    [credential] = created
    assert credential.kwargs == {"managed_identity_client_id": "11111111-2222-3333-4444-555555555555"}
    assert credential.scopes == ["https://cognitiveservices.azure.com/.default"]
    [seen] = server.requests
    assert seen.authorization == "Bearer entra-token-xyz"
    assert seen.api_key is None
    assert seen.path == "/openai/deployments/agent-deployment/chat/completions"  # agent model wins
    assert seen.query["api-version"] == "2025-01-01-preview"


# --------------------------------------------------------------------------- selection & plumbing


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "local"),
        ({"OPENAI_API_KEY": "k"}, "openai"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "openai"),
        ({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "OPENAI_API_KEY": "k"}, "azure_openai"),
        ({"LLM_PROVIDER": "local", "AZURE_OPENAI_ENDPOINT": "https://x"}, "local"),
        ({"LLM_PROVIDER": "OpenAI"}, "openai"),
        ({"LLM_PROVIDER": "azure_openai"}, "azure_openai"),
    ],
)
def test_provider_auto_selection(monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert providers.select_provider() == expected


def test_azure_without_endpoint_is_config_error(monkeypatch):
    monkeypatch.setenv("LLM_PROVIDER", "azure_openai")
    result = call_llm_impl(make_request("hi"))
    assert result["error"]["kind"] == "config"
    assert "AZURE_OPENAI_ENDPOINT" in result["error"]["message"]


def test_blueprint_registers_activity_call_llm(openai_server):
    function = llm.call_llm.build()
    assert function.get_function_name() == "call_llm"
    [binding] = function.get_bindings()
    assert binding.type == "activityTrigger" and binding.name == "request"
    user_function = function.get_user_function()
    assert asyncio.iscoroutinefunction(user_function)  # runs on the worker's loop, no thread
    result = asyncio.run(user_function(make_request("via blueprint")))
    assert result["ok"] and result["reply"].startswith("echo: via blueprint")


def test_parse_error_text_without_tag():
    assert parse_error_text("Activity function 'call_llm' failed: KeyError: 'x'\nTraceback...") == (
        "unknown",
        500,
        "Activity function 'call_llm' failed: KeyError: 'x'",
    )
    assert parse_error_text(None) == ("unknown", 500, "unknown error")


def test_errors_survive_pickling():
    err = LLMTransientError("timeout", "slow", upstream_status=504)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == "[timeout:504] slow" and copy.upstream_status == 504


# --------------------------------------------------------------------------- tools


from tests.fake_openai import streamed, tool_call, tool_calls  # noqa: E402

CALC_TOOL = {"type": "function", "function": {
    "name": "calculate", "description": "Evaluate arithmetic.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                   "required": ["expression"]}}}


def tool_request(*extra_messages, **fields) -> dict:
    request = make_request("what is 6*7?")
    request["messages"] += list(extra_messages)
    request["tools"] = [CALC_TOOL]
    request.update(fields)
    return request


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_come_back_with_their_json_arguments(openai_server, stream):
    openai_server.script(tool_calls(tool_call("calculate", {"expression": "6*7"}, id="call_a"),
                                    tool_call("calculate", {"expression": "2+2"}, id="call_b")))
    deltas: list[str] = []
    result = call_llm_impl(tool_request(), on_delta=deltas.append if stream else None)

    assert result["ok"] and result["finish_reason"] == "tool_calls" and result["reply"] == ""
    assert result["tool_calls"] == [
        {"id": "call_a", "name": "calculate", "arguments": '{"expression": "6*7"}'},
        {"id": "call_b", "name": "calculate", "arguments": '{"expression": "2+2"}'},
    ]
    assert deltas == []
    [seen] = openai_server.requests
    assert seen.tools == [CALC_TOOL]
    assert seen.stream is stream
    if stream:
        assert seen.body["stream_options"] == {"include_usage": True}
    assert result["usage"]["total_tokens"] > 0  # from the usage chunk when streamed


def test_tool_history_reaches_the_model_in_the_wire_shape(openai_server):
    request = tool_request(
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_a", "name": "calculate", "arguments": '{"expression": "6*7"}'}]},
        {"role": "tool", "tool_call_id": "call_a", "content": {"expression": "6*7", "result": 42}},
    )
    openai_server.script(reply("6*7 is 42."))
    result = call_llm_impl(request)

    assert result["ok"] and result["reply"] == "6*7 is 42." and result["tool_calls"] == []
    sent = openai_server.requests[0].messages[-2:]
    assert sent == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "calculate", "arguments": '{"expression": "6*7"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"expression": "6*7", "result": 42}'},
    ]


def test_openai_shaped_tool_calls_in_history_pass_unchanged(openai_server):
    call = {"id": "c9", "type": "function", "function": {"name": "calculate", "arguments": "{}"}}
    request = tool_request({"role": "assistant", "content": None, "tool_calls": [call]},
                           {"role": "tool", "tool_call_id": "c9", "content": "42"})
    assert call_llm_impl(request)["ok"]
    assert openai_server.requests[0].messages[-2]["tool_calls"] == [call]


def test_malformed_tool_messages_are_refused_before_sending(openai_server):
    result = call_llm_impl(tool_request({"role": "tool", "content": "42"}))
    assert result["ok"] is False and "needs its tool_call_id" in result["error"]["message"]
    result = call_llm_impl(tool_request(tools="calculate"))
    assert result["ok"] is False and "'tools' must be a list" in result["error"]["message"]
    assert openai_server.requests == []


def test_a_tool_call_without_a_name_is_invalid_response(openai_server):
    broken = {"id": "x", "object": "chat.completion", "model": "m", "choices": [{
        "index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}}]}
    from tests.fake_openai import Behaviour

    openai_server.script(Behaviour(json_body=broken), Behaviour(json_body=broken),
                         Behaviour(json_body=broken))
    with pytest.raises(LLMTransientError, match="invalid_response.*no function name"):
        call_llm_impl(tool_request())


def test_a_script_may_answer_from_the_request(openai_server):
    """The fake decides from what it was sent: a chain where step 2 uses step 1's result."""
    def answer(record):
        last = record.messages[-1]
        if last["role"] == "tool":
            return reply(f"the result is {json.loads(last['content'])['result']}")
        return tool_calls(tool_call("calculate", {"expression": "6*7"}, id="call_1"))

    openai_server.default = answer
    first = call_llm_impl(tool_request())
    assert first["tool_calls"][0]["id"] == "call_1"
    second = call_llm_impl(tool_request(
        {"role": "assistant", "content": None, "tool_calls": first["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"result": 42})}))
    assert second["reply"] == "the result is 42"


# --------------------------------------------------------------------------- streaming


def test_streaming_gives_the_same_result_as_a_plain_call(openai_server):
    plain = call_llm_impl(make_request("stream me please"))
    deltas: list[str] = []
    restarts: list = []
    streamed_result = call_llm_impl(make_request("stream me please"), on_delta=deltas.append,
                                    on_restart=lambda *a: restarts.append(a))

    same = ("reply", "tool_calls", "usage", "model", "finish_reason", "provider", "attempts")
    assert {k: streamed_result[k] for k in same} == {k: plain[k] for k in same}
    assert "".join(deltas) == plain["reply"] and len(deltas) > 1 and restarts == []
    request = openai_server.requests[-1]
    assert request.stream and [piece for _, piece in request.chunks] == deltas


def test_streamed_chunks_arrive_while_the_model_is_still_writing(openai_server):
    openai_server.script(streamed(reply("one two three four"), chunk_delay=0.3))
    received: list[tuple[float, str]] = []
    result = call_llm_impl(make_request("slow"), on_delta=lambda t: received.append((time.time(), t)))

    assert result["reply"] == "one two three four"
    sent = openai_server.requests[-1].chunks
    assert [t for _, t in received] == [t for _, t in sent] == ["one", " two", " three", " four"]
    # order, not timing: the first piece was in our hands before the model sent its last one
    assert received[0][0] < sent[-1][0]


def test_a_broken_stream_is_retried_and_the_restart_signalled(openai_server, sleeps):
    openai_server.script(streamed(reply("alpha beta gamma"), break_after=3))
    events: list = []
    result = call_llm_impl(make_request("x"), on_delta=lambda t: events.append(("delta", t)),
                           on_restart=lambda n, why: events.append(("restart", n, why)))

    assert result["ok"] and result["attempts"] == 2
    echo = "echo: x [messages=2]"
    assert result["reply"] == echo
    restart = events.index(next(e for e in events if e[0] == "restart"))
    assert events[:restart] == [("delta", "alpha"), ("delta", " beta")]
    assert events[restart][:2] == ("restart", 2) and "connection" in events[restart][2]
    assert "".join(e[1] for e in events[restart + 1:]) == echo


def test_streamed_tool_calls_are_assembled_from_fragments(openai_server):
    long_arguments = {"expression": "(1 + 2) * 3 - 4 / 5 + sqrt(16) * 2 ** 8"}
    openai_server.script(tool_calls(tool_call("calculate", long_arguments, id="call_long"),
                                    tool_call("calculate", {"expression": "1"}, id="call_short"),
                                    content="Let me compute."))
    deltas: list[str] = []
    result = call_llm_impl(tool_request(), on_delta=deltas.append)
    assert "".join(deltas) == "Let me compute." == result["reply"]
    assert [json.loads(c["arguments"]) for c in result["tool_calls"]] == [long_arguments,
                                                                          {"expression": "1"}]
    assert [c["id"] for c in result["tool_calls"]] == ["call_long", "call_short"]


def test_streamed_errors_are_classified_like_plain_ones(openai_server):
    openai_server.script(unauthorized())
    result = call_llm_impl(make_request("x"), on_delta=lambda t: None)
    assert result["ok"] is False and result["error"]["kind"] == "auth"


# --------------------------------------------------------------------------- structured replies


PERSON = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"], "additionalProperties": False}}}


def test_response_format_passes_through_and_output_is_parsed(openai_server):
    openai_server.script(reply('{"name": "Ada", "age": 36}'))
    result = call_llm_impl({**make_request("who?"), "response_format": PERSON})
    assert result["ok"] and result["output"] == {"name": "Ada", "age": 36}
    assert openai_server.requests[0].response_format == PERSON
    assert result["attempts"] == 1


def test_an_invalid_reply_gets_one_repair_that_is_told_what_was_wrong(openai_server):
    openai_server.script(reply('{"name": "Ada", "age": "old"}'), reply('{"name": "Ada", "age": 36}'))
    restarts: list = []
    result = call_llm_impl({**make_request("who?"), "response_format": PERSON},
                           on_delta=lambda t: None, on_restart=lambda *a: restarts.append(a))
    assert result["ok"] and result["output"] == {"name": "Ada", "age": 36}
    assert result["attempts"] == 2 and len(openai_server.requests) == 2
    repair = openai_server.requests[1].messages
    assert repair[-2] == {"role": "assistant", "content": '{"name": "Ada", "age": "old"}'}
    assert repair[-1]["role"] == "user"
    assert "at 'age': 'old' is not of type 'integer'" in repair[-1]["content"]
    assert restarts and restarts[0][0] == 2
    assert result["usage"]["total_tokens"] > 0


def test_still_invalid_after_the_repair_is_502_invalid_structured_output(openai_server):
    openai_server.script(reply("I think Ada."), reply('{"name": "Ada"}'))
    result = call_llm_impl({**make_request("who?"), "response_format": PERSON})
    assert result["ok"] is False
    assert result["error"]["kind"] == "invalid_structured_output"
    assert result["error"]["status"] == 502
    assert result["error"]["message"] == "the reply does not match the schema: 'age' is a required property"
    assert len(openai_server.requests) == 2


def test_json_object_mode_and_code_fences(openai_server):
    openai_server.script(reply('```json\n{"a": [1, 2]}\n```'), reply("[1, 2]"), reply("still no"))
    ok = call_llm_impl({**make_request("x"), "response_format": {"type": "json_object"}})
    assert ok["output"] == {"a": [1, 2]}
    bad = call_llm_impl({**make_request("x"), "response_format": {"type": "json_object"}})
    assert bad["error"]["kind"] == "invalid_structured_output"
    assert bad["error"]["message"].startswith("the reply is not valid JSON")


def test_tool_calls_skip_structured_validation(openai_server):
    openai_server.script(tool_calls(tool_call("calculate", {"expression": "1"})))
    result = call_llm_impl(tool_request(response_format=PERSON))
    assert result["ok"] and result["output"] is None and len(result["tool_calls"]) == 1


def test_a_bad_response_format_is_refused_before_sending(openai_server):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}
    result = call_llm_impl({**make_request("x"), "response_format": bad})
    assert result["ok"] is False and "is not a valid JSON Schema" in result["error"]["message"]
    assert openai_server.requests == []


def test_check_response_format_normalises_and_explains():
    from core.structured import check_response_format

    assert check_response_format({"type": "json_object"}) == {"type": "json_object"}
    assert check_response_format({"type": "json_schema", "json_schema": {
        "name": "p", "schema": {"type": "object"}}}) == {"type": "json_schema", "json_schema": {
            "name": "p", "schema": {"type": "object"}, "strict": False}}
    cases = [
        ("json", "must be an object"),
        ({"type": "text"}, "must be 'json_schema' or 'json_object'"),
        ({"type": "json_schema"}, "json_schema must be an object"),
        ({"type": "json_schema", "json_schema": {"schema": {}}}, "name must be 1-64"),
        ({"type": "json_schema", "json_schema": {"name": "p"}}, "schema must be a JSON Schema object"),
        ({"type": "json_schema", "json_schema": {"name": "p", "schema": {
            "type": "object", "properties": {"a": {"type": "strin"}}}}},
         "is not a valid JSON Schema at 'properties/a/type'"),
        ({"type": "json_schema", "json_schema": {"name": "p", "schema": {}, "strict": "yes"}},
         "strict must be true or false"),
        ({"type": "json_schema", "json_schema": {"name": "p", "schema": {}, "extra": 1}},
         "unknown keys in response_format.json_schema: ['extra']"),
        ({"type": "json_object", "schema": {}}, "takes no other keys"),
    ]
    for value, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_response_format(value)
