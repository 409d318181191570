"""Provider selection and one OpenAI-compatible chat completion attempt.

Why it is shaped like this:
- ``complete()`` makes exactly ONE attempt and raises an ``LLMError`` whose
  kind says whether retrying can help; ``activities.llm`` owns the retries
  (tenacity inside the activity, then Durable's retry policy). The openai
  client's own retries are therefore disabled (``max_retries=0``).
- Clients are built lazily and cached per process, keyed by configuration:
  importing this module needs no setting, no credential and no network.
- Settings are read with ``os.environ.get("LITERAL")`` so infra tooling can
  find every name by scanning the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from typing import Any, Callable

import openai
from azure.identity import DefaultAzureCredential, get_bearer_token_provider

from .errors import LLMError, LLMPermanentError, LLMTransientError, one_line

log = logging.getLogger(__name__)

PROVIDERS = ("azure_openai", "openai", "local")
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
DEFAULT_AZURE_API_VERSION = "2024-10-21"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_SECONDS = 60.0

_clients: dict[tuple, Any] = {}
# async clients belong to the event loop they were made on: one set per loop
_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = \
    weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()
_announced: set[tuple] = set()
_announce_lock = threading.Lock()


# --------------------------------------------------------------------------- config


def select_provider() -> str:
    """``LLM_PROVIDER`` if set, else inferred from which endpoint settings exist."""
    explicit = (os.environ.get("LLM_PROVIDER") or "").strip().lower()
    if explicit:
        if explicit == "azure":
            return "azure_openai"
        if explicit not in PROVIDERS:
            raise LLMPermanentError(
                "config", f"LLM_PROVIDER={explicit!r} is not one of {', '.join(PROVIDERS)}"
            )
        return explicit
    if os.environ.get("AZURE_OPENAI_ENDPOINT"):
        return "azure_openai"
    if os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        return "openai"
    return "local"


def timeout_seconds() -> float:
    """Per-request timeout of the upstream call (``LLM_TIMEOUT_SECONDS``, default 60)."""
    raw = os.environ.get("LLM_TIMEOUT_SECONDS")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise LLMPermanentError("config", f"LLM_TIMEOUT_SECONDS={raw!r} is not a number") from None
    if value <= 0:
        raise LLMPermanentError("config", f"LLM_TIMEOUT_SECONDS={raw!r} must be positive")
    return value


def resolve_model(provider: str, agent: dict | None = None) -> str:
    """Model (or Azure deployment) name: the agent's ``model`` wins over the env default."""
    agent_model = (agent or {}).get("model")
    if agent_model:
        return str(agent_model)
    if provider == "azure_openai":
        return (
            os.environ.get("AZURE_OPENAI_DEPLOYMENT")
            or os.environ.get("AZURE_OPENAI_DEPLOYMENT_NAME")
            or DEFAULT_MODEL
        )
    if provider == "openai":
        return os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
    from .local_model import MODEL_LABEL

    return MODEL_LABEL


def describe_provider(agent: dict | None = None) -> dict:
    """``{"provider", "model"}`` that a call would use now (no network; for health pages)."""
    provider = select_provider()
    return {"provider": provider, "model": resolve_model(provider, agent)}


def announce_startup() -> None:
    """Say at start which provider and model will answer (no network, no model loading)."""
    try:
        chosen = describe_provider()
    except LLMError as exc:
        _announce(("startup",), f"LLM provider misconfigured: {exc}")
        return
    note = (" - a tiny offline base model for trying the service out, not for answer quality;"
            " set AZURE_OPENAI_ENDPOINT or OPENAI_BASE_URL/OPENAI_API_KEY for real replies"
            if chosen["provider"] == "local" else "")
    _announce(("startup",), f"LLM provider: {chosen['provider']}, model {chosen['model']}{note}")
    if chosen["provider"] == "local":
        try:
            from core.agents import load_catalogue

            with_tools = [a.name for a in load_catalogue().values() if a.tools]
        except Exception:  # a broken catalogue is reported by whoever loads it
            with_tools = []
        if with_tools:
            announce_local_tools(with_tools)


def _announce(key: tuple, message: str) -> None:
    """Say once per process (per provider/model) what serves the replies."""
    with _announce_lock:
        if key in _announced:
            return
        _announced.add(key)
    log.info(message)
    if not logging.getLogger().handlers:  # nobody configured logging: still tell the operator
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- clients


def _client_settings(provider: str, timeout: float) -> tuple:
    """The settings a client is built from; also its cache key."""
    if provider == "azure_openai":
        endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise LLMPermanentError("config", "LLM_PROVIDER=azure_openai needs AZURE_OPENAI_ENDPOINT")
        api_version = os.environ.get("AZURE_OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION
        api_key = os.environ.get("AZURE_OPENAI_API_KEY") or None
        client_id = os.getenv("AZURE_CLIENT_ID") or None
        return (provider, endpoint, api_version, api_key, client_id, timeout)
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    api_key = os.environ.get("OPENAI_API_KEY") or "not-needed"
    return (provider, base_url, api_key, timeout)


def _get_client(provider: str, timeout: float, asynchronous: bool = False):
    """A cached client for these settings: the sync one, or the async one of the running
    event loop (an async client cannot move between loops)."""
    key = _client_settings(provider, timeout)
    with _clients_lock:
        cache = _async_clients.setdefault(asyncio.get_running_loop(), {}) if asynchronous \
            else _clients
        client = cache.get(key)
        if client is None:
            client = cache[key] = _build_client(key, asynchronous)
        return client


def _build_client(settings: tuple, asynchronous: bool):
    if settings[0] == "azure_openai":
        _, endpoint, api_version, api_key, client_id, timeout = settings
        return _build_azure_client(endpoint, api_version, api_key, client_id, timeout,
                                   asynchronous)
    _, base_url, api_key, timeout = settings
    kind = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return kind(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)


def _build_azure_client(endpoint, api_version, api_key, client_id, timeout,
                        asynchronous: bool = False):
    kind = openai.AsyncAzureOpenAI if asynchronous else openai.AzureOpenAI
    common = dict(azure_endpoint=endpoint, api_version=api_version, max_retries=0, timeout=timeout)
    if api_key:
        return kind(api_key=api_key, **common)
    # Keyless: Entra ID token from managed identity / developer login.
    credential = DefaultAzureCredential(managed_identity_client_id=client_id)
    token_provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)
    if asynchronous:  # the credential caches tokens; a fetch must not block the loop
        sync_provider = token_provider

        async def token_provider() -> str:
            return await asyncio.to_thread(sync_provider)
    return kind(azure_ad_token_provider=token_provider, **common)


async def close_loop_clients() -> None:
    """Close the async clients of the running loop (before a short-lived loop ends)."""
    with _clients_lock:
        clients = list(_async_clients.pop(asyncio.get_running_loop(), {}).values())
    for client in clients:
        await client.close()


def reset_clients() -> None:
    """Forget cached clients (tests; after rotating a key)."""
    with _clients_lock:
        _clients.clear()
        _async_clients.clear()


# --------------------------------------------------------------------------- the call


def complete(agent: dict, messages: list[dict], *, tools: list[dict] | None = None,
             response_format: dict | None = None,
             on_delta: Callable[[str], None] | None = None) -> dict:
    """One attempt. Returns ``{"reply", "tool_calls", "usage", "model", "finish_reason",
    "provider"}``; ``tool_calls`` is ``[{"id", "name", "arguments" (JSON text)}]`` (empty when
    the model answered in text; ``finish_reason`` is then ``"tool_calls"``).

    ``tools`` (OpenAI tool schemas) and ``response_format`` (``core.structured`` shapes) are
    passed through to OpenAI-compatible servers; the local model ignores tools (announced
    once) and honours response_format with a JSON-schema grammar.

    Streaming: with ``on_delta`` the call streams (``stream=True`` with
    ``stream_options.include_usage`` for OpenAI-compatible servers, llama.cpp's stream for the
    local model) and ``on_delta(text)`` is called with each piece of reply text as it arrives,
    in order; the result is assembled from the stream and is exactly what the same call without
    ``on_delta`` returns (content, tool calls from their deltas, usage, finish reason). Text
    already passed to ``on_delta`` belongs to THIS attempt: when an attempt fails and is
    retried, the caller is told through ``activities.llm``'s ``on_restart`` (this function
    makes one attempt only).

    Raises ``LLMTransientError`` / ``LLMPermanentError`` (see ``activities.errors``).
    """
    provider = select_provider()
    if provider == "local":
        from . import local_model

        if tools:
            announce_local_tools()
        return local_model.complete(agent, messages, response_format=response_format,
                                    on_delta=on_delta)

    model, params = _prepare(provider, agent, messages, tools, response_format)
    client = _get_client(provider, timeout_seconds())
    with upstream_errors():
        if on_delta is not None:
            return _stream(client, params, on_delta, provider=provider, requested_model=model)
        raw = client.chat.completions.with_raw_response.create(**params)
        body_text = raw.http_response.text
    return parse_completion(body_text, provider=provider, requested_model=model)


async def acomplete(agent: dict, messages: list[dict], *, tools: list[dict] | None = None,
                    response_format: dict | None = None,
                    on_delta: Callable[[str], None] | None = None) -> dict:
    """``complete()`` for an event loop: a plain call to an OpenAI-compatible server is made
    with the async client, on the loop (no thread hand-off, no GIL contest with it); the local
    model and streamed calls run ``complete()`` in a thread. Same result, same errors."""
    provider = select_provider()
    if provider == "local" or on_delta is not None:
        return await asyncio.to_thread(complete, agent, messages, tools=tools,
                                       response_format=response_format, on_delta=on_delta)
    model, params = _prepare(provider, agent, messages, tools, response_format)
    client = _get_client(provider, timeout_seconds(), asynchronous=True)
    with upstream_errors():
        raw = await client.chat.completions.with_raw_response.create(**params)
        body_text = raw.http_response.text
    return parse_completion(body_text, provider=provider, requested_model=model)


def _prepare(provider: str, agent: dict, messages: list[dict], tools, response_format
             ) -> tuple[str, dict]:
    """(model, request parameters) of one call, and the provider announced once."""
    model = resolve_model(provider, agent)
    if provider == "azure_openai":
        auth = "api key" if os.environ.get("AZURE_OPENAI_API_KEY") else "Entra ID token"
        where = f"endpoint {os.environ.get('AZURE_OPENAI_ENDPOINT')}, deployment {model}, {auth}"
    else:
        where = f"base_url {os.environ.get('OPENAI_BASE_URL') or 'https://api.openai.com/v1'}, model {model}"
    _announce((provider, model), f"LLM provider: {provider} ({where})")

    # messages (and tools, response_format) go in extra_body, merged over the request body as
    # is: the client's typed transform of `messages` is O(messages) pure-Python work, most of a
    # call on long threads.
    body: dict[str, Any] = {"messages": wire_messages(messages)}
    if tools:
        body["tools"] = tools
    if response_format:
        body["response_format"] = response_format
    params: dict[str, Any] = {"model": model, "messages": [], "extra_body": body}
    if agent.get("temperature") is not None:
        params["temperature"] = float(agent["temperature"])
    if agent.get("max_output_tokens"):
        params["max_tokens"] = int(agent["max_output_tokens"])
    return model, params


@contextlib.contextmanager
def upstream_errors():
    """Whatever the call raises, as our transient/permanent LLMError kinds."""
    try:
        yield
    except openai.APIError as exc:
        raise map_openai_error(exc) from exc
    except LLMError:
        raise
    except ValueError as exc:  # undecodable body
        raise LLMTransientError("invalid_response", f"upstream sent an unreadable response: {exc}") from exc
    except Exception as exc:  # token acquisition (azure-identity) fails outside openai's hierarchy
        if type(exc).__module__.startswith(("azure.identity", "azure.core")):
            raise LLMPermanentError("auth", f"could not get an Entra ID token: {exc}") from exc
        if type(exc).__module__.startswith(("httpx", "httpcore")):  # the stream broke off
            if "Timeout" in type(exc).__name__:
                raise LLMTransientError("timeout", "upstream stopped sending in time") from exc
            raise LLMTransientError("connection", f"the stream broke off: {one_line(exc, 200)}") from exc
        raise


def announce_local_tools(agents: list[str] | None = None) -> None:
    """Say once that the offline model answers without the agents' tools (no fake calls)."""
    who = f" ({', '.join(agents)})" if agents else ""
    _announce(("local", "tools"), f"LLM provider: local - agents with tools{who} answer without "
              "them: the offline base model cannot call tools; configure Azure OpenAI or an "
              "OpenAI-compatible server to use tools")


def wire_messages(messages: list[dict]) -> list[dict]:
    """Messages in the chat completions wire shape: an assistant message's ``tool_calls`` may
    be given as ``[{"id", "name", "arguments"}]`` (our result shape) or in OpenAI's shape."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if m.get("role") == "assistant" and calls:
            m = {**m, "tool_calls": [
                c if "function" in c else
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": c.get("arguments") or "{}"}}
                for c in calls]}
        out.append(m)
    return out


def _stream(client, params: dict, on_delta, *, provider: str, requested_model: str) -> dict:
    """One streamed attempt: forward text deltas, assemble the same result as a plain call."""
    stream = client.chat.completions.create(
        **params, stream=True, stream_options={"include_usage": True})
    content: list[str] = []
    calls: dict[int, dict] = {}
    finish_reason = None
    usage: dict = {}
    model = None
    with stream:
        for chunk in stream:
            model = model or getattr(chunk, "model", None)
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage.model_dump()
            for choice in chunk.choices or ():  # Azure sends filter results with no choices
                if choice.index:
                    continue
                delta = choice.delta
                if delta is not None and delta.content:
                    content.append(delta.content)
                    on_delta(delta.content)
                for call in (delta.tool_calls or ()) if delta is not None else ():
                    slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                    if call.id:
                        slot["id"] = call.id
                    if call.function is not None:
                        slot["name"] += call.function.name or ""
                        slot["arguments"] += call.function.arguments or ""
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
    if finish_reason is None and not content and not calls:
        raise LLMTransientError("invalid_response", "the stream ended without a reply")
    message = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(calls.items())]
    document = {"model": model, "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
    return parse_completion(json.dumps(document), provider=provider, requested_model=requested_model)


def parse_completion(body: str, *, provider: str, requested_model: str) -> dict:
    """Read a chat.completion JSON body; anything malformed is ``invalid_response``."""
    try:
        data = json.loads(body)
    except ValueError:
        raise LLMTransientError(
            "invalid_response", f"upstream sent a non-JSON response: {one_line(body, 120)!r}"
        ) from None
    if not isinstance(data, dict):
        raise LLMTransientError("invalid_response", "upstream response is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LLMTransientError("invalid_response", "upstream response has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise LLMTransientError("invalid_response", "upstream message content is not text")
    finish_reason = choice.get("finish_reason")
    if finish_reason == "content_filter":
        raise LLMPermanentError(
            "content_filter", "the reply was withheld by the provider's content filter", upstream_status=200
        )
    tool_calls = _tool_calls(message.get("tool_calls"))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt_tokens = _int(usage.get("prompt_tokens"))
    completion_tokens = _int(usage.get("completion_tokens"))
    total_tokens = _int(usage.get("total_tokens")) or prompt_tokens + completion_tokens
    return {
        "reply": content or "",
        "tool_calls": tool_calls,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total_tokens,
        },
        "model": str(data.get("model") or requested_model),
        "finish_reason": "tool_calls" if tool_calls else finish_reason,
        "provider": provider,
    }


def _tool_calls(raw) -> list[dict]:
    """``[{"id", "name", "arguments"}]`` from the message's ``tool_calls`` (function calls only)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise LLMTransientError("invalid_response", "upstream tool_calls is not a list")
    calls = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not function["name"]:
            raise LLMTransientError("invalid_response", f"upstream tool call {i} has no function name")
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):  # some servers send an object, not JSON text
            arguments = json.dumps(arguments)
        calls.append({"id": str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"), "name": function["name"],
                      "arguments": arguments if isinstance(arguments, str) and arguments else "{}"})
    return calls


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


# --------------------------------------------------------------------------- errors


def retry_after_seconds(headers) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_fields(exc: openai.APIStatusError) -> tuple[str, str]:
    """(code, message) from the upstream error body, tolerant of odd shapes."""
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", "") or ""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        code = code or inner.get("code")
        message = inner.get("message") or message
        innererror = inner.get("innererror")
        if isinstance(innererror, dict) and innererror.get("code") == "ResponsibleAIPolicyViolation":
            code = code or "content_filter"
    return (str(code) if code is not None else ""), one_line(message, 300)


def map_openai_error(exc: openai.APIError) -> LLMError:
    """Translate an openai exception into our transient/permanent error kinds."""
    if isinstance(exc, openai.APITimeoutError):
        return LLMTransientError("timeout", "upstream did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return LLMTransientError("connection", f"could not reach upstream: {one_line(cause, 200)}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code, detail = _error_fields(exc)
        what = f"upstream answered {status}" + (f" ({detail})" if detail else "")
        lowered = f"{code} {detail}".lower()
        headers = exc.response.headers if exc.response is not None else None
        if status == 429:
            if code == "insufficient_quota":  # billing problem: waiting will not help
                return LLMPermanentError("rate_limited", what, upstream_status=status)
            return LLMTransientError(
                "rate_limited", what, upstream_status=status, retry_after=retry_after_seconds(headers)
            )
        if status in (408, 504):
            return LLMTransientError("timeout", what, upstream_status=status)
        if status == 409 or status >= 500:
            return LLMTransientError(
                "server_error",
                what,
                status=503 if status == 503 else 502,
                upstream_status=status,
                retry_after=retry_after_seconds(headers),
            )
        if "content_filter" in lowered or "content management policy" in lowered:
            return LLMPermanentError("content_filter", what, upstream_status=status)
        if (
            "context_length_exceeded" in lowered
            or "maximum context length" in lowered
            or status == 413
        ):
            return LLMPermanentError("context_length", what, upstream_status=status)
        if status in (401, 403):
            return LLMPermanentError("auth", what, upstream_status=status)
        if status == 404:
            return LLMPermanentError("not_found", what + " - check the model or deployment name", upstream_status=status)
        return LLMPermanentError("bad_request", what, upstream_status=status)
    if isinstance(exc, openai.APIResponseValidationError):
        return LLMTransientError("invalid_response", f"upstream response did not validate: {one_line(exc, 200)}")
    return LLMTransientError("invalid_response", f"unexpected upstream failure: {one_line(exc, 200)}")
