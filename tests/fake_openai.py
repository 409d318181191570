"""A real OpenAI-compatible HTTP server on loopback, for tests and local demos.

Why a real server (not mocks): the production code talks to the model
through the official ``openai`` client, so the tests should exercise the
same HTTP wire format, headers, timeouts and error bodies.

Usage::

    from tests.fake_openai import FakeOpenAI, rate_limited

    with FakeOpenAI() as server:                 # 127.0.0.1, random free port
        env OPENAI_BASE_URL = server.base_url    # http://127.0.0.1:PORT/v1
        env AZURE_OPENAI_ENDPOINT = server.url   # Azure path works too
        server.script(rate_limited(), "500")     # next two requests fail ...
        ...                                      # ... then the default answer
        server.requests[-1].messages             # what the model was sent
        server.requests[-1].api_key              # "api-key" header (Azure)
        server.requests[-1].authorization        # "Authorization" header

As a pytest fixture::

    @pytest.fixture
    def fake_llm():
        with FakeOpenAI() as server:
            yield server

Endpoints: ``POST /v1/chat/completions``, ``POST /chat/completions`` and
``POST /openai/deployments/{deployment}/chat/completions`` (any query
string, e.g. ``api-version``), plus ``GET /v1/models``.

Tool calls: ``server.script(tool_calls(tool_call("lookup_order", {"order_id": "A1"})))``
answers with an assistant message whose ``tool_calls`` carry the arguments as JSON text and
``finish_reason: "tool_calls"``, exactly as the API does. A script entry may also be a
function ``(RecordedRequest) -> Behaviour`` that decides from what the model was sent (e.g.
answer from the ``tool`` message of the previous step).

Streaming: a request with ``"stream": true`` is answered with Server-Sent Events
(``chat.completion.chunk`` objects; content split into word pieces; tool calls as deltas by
index: first id, type and name with empty arguments, then argument fragments; a finish chunk;
a usage chunk when ``stream_options.include_usage``; ``data: [DONE]``).
``Behaviour.chunk_delay`` spaces the chunks out (a slow model) and
``Behaviour.break_after`` drops the connection after that many chunks (a failed attempt);
``RecordedRequest.chunks`` records ``(time.time(), text)`` of every content piece sent.

Default answer (when no scripted behaviour is queued): a deterministic
``chat.completion`` whose content is ``echo: <last user message> [messages=<N>]``
where N counts every message received (system prompt and history
included), so end-to-end tests can see that the history reached the model.

Run standalone: ``python tests/fake_openai.py --port 8089``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

__all__ = [
    "FakeOpenAI",
    "Behaviour",
    "RecordedRequest",
    "echo_text",
    "reply",
    "error",
    "rate_limited",
    "server_error",
    "content_filter",
    "context_length_exceeded",
    "unauthorized",
    "not_found",
    "sleep",
    "garbage",
    "empty_choices",
    "parse_behaviour",
    "tool_call",
    "tool_calls",
    "streamed",
]


# --------------------------------------------------------------------------- behaviours


@dataclass
class Behaviour:
    """How to answer one request.

    ``status`` 200 with neither ``json_body`` nor ``raw_body`` means a normal
    chat.completion whose content is ``reply`` (or the echo text when None).
    ``delay`` seconds are waited first (to provoke client timeouts).
    """

    status: int = 200
    reply: str | None = None
    finish_reason: str | None = "stop"
    json_body: Any = None
    raw_body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    empty_choices: bool = False
    tool_calls: list[dict] | None = None   # [{"id", "name", "arguments" (dict or JSON text)}]
    chunk_delay: float = 0.0               # streaming: seconds between chunks
    break_after: int | None = None         # streaming: drop the connection after N chunks


def _error_body(message: str, type_: str, code: str | None, **extra) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code, **extra}}


def reply(text: str, finish_reason: str | None = "stop") -> Behaviour:
    """200 with this exact assistant text."""
    return Behaviour(reply=text, finish_reason=finish_reason)


def tool_call(name: str, arguments: dict | str | None = None, id: str | None = None) -> dict:
    """One tool call for ``tool_calls(...)``; the id defaults to a fresh ``call_...``."""
    return {"id": id or f"call_{uuid.uuid4().hex[:24]}", "name": name,
            "arguments": arguments if arguments is not None else {}}


def tool_calls(*calls: dict, content: str | None = None) -> Behaviour:
    """200 whose assistant message asks for these tool calls (``finish_reason: tool_calls``)."""
    return Behaviour(reply=content, tool_calls=list(calls), finish_reason="tool_calls")


def streamed(base: Behaviour | str | None = None, chunk_delay: float = 0.0,
             break_after: int | None = None) -> Behaviour:
    """``base`` (default answer) with streaming options: chunk spacing, a broken stream."""
    behaviour = parse_behaviour(base) if base is not None else Behaviour()
    return Behaviour(**{**behaviour.__dict__, "chunk_delay": float(chunk_delay),
                        "break_after": break_after})


def error(
    status: int,
    message: str | None = None,
    code: str | None = None,
    type_: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> Behaviour:
    """Any HTTP error with OpenAI's ``{"error": {...}}`` body."""
    return Behaviour(
        status=status,
        json_body=_error_body(message or f"fake error {status}", type_, code),
        headers=dict(headers or {}),
    )


def rate_limited(retry_after: str | float | None = "0", retry_after_ms: str | float | None = None) -> Behaviour:
    """429 with ``Retry-After`` (seconds) and/or ``retry-after-ms`` headers."""
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return error(429, "Rate limit reached for requests", "rate_limit_exceeded", "requests", headers)


def server_error(status: int = 500) -> Behaviour:
    """5xx (500, 502, 503, ...)."""
    return error(status, f"The server had an error while processing your request ({status})", None, "server_error")


def content_filter() -> Behaviour:
    """400 as Azure OpenAI sends when the prompt trips the content filter."""
    body = _error_body(
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
        "invalid_request_error",
        "content_filter",
        status=400,
        innererror={"code": "ResponsibleAIPolicyViolation", "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}},
    )
    return Behaviour(status=400, json_body=body)


def context_length_exceeded() -> Behaviour:
    """400 ``context_length_exceeded``."""
    return error(
        400,
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
        "context_length_exceeded",
    )


def unauthorized() -> Behaviour:
    """401 invalid key."""
    return error(401, "Incorrect API key provided.", "invalid_api_key", "invalid_request_error")


def not_found() -> Behaviour:
    """404 unknown model / deployment."""
    return error(404, "The API deployment for this resource does not exist.", "DeploymentNotFound")


def sleep(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait ``seconds`` before answering (default answer unless ``then``)."""
    base = then or Behaviour()
    return Behaviour(**{**base.__dict__, "delay": float(seconds)})


def garbage() -> Behaviour:
    """200 whose body is not JSON (a broken proxy, a truncated answer)."""
    return Behaviour(raw_body=b"<html>this is not json{", content_type="application/json")


def empty_choices() -> Behaviour:
    """200 chat.completion with ``choices: []``."""
    return Behaviour(empty_choices=True)


_SHORTHANDS = {
    "429": rate_limited,
    "rate_limited": rate_limited,
    "content_filter": content_filter,
    "context_length": context_length_exceeded,
    "context_length_exceeded": context_length_exceeded,
    "401": unauthorized,
    "unauthorized": unauthorized,
    "404": not_found,
    "not_found": not_found,
    "garbage": garbage,
    "empty_choices": empty_choices,
    "ok": Behaviour,
}


def parse_behaviour(spec: "str | Behaviour | Callable[[RecordedRequest], Behaviour]"):
    """Behaviour from a shorthand: ``"429"``, ``"500"``, ``"503"`` (any 5xx),
    ``"401"``, ``"404"``, ``"content_filter"``, ``"context_length"``,
    ``"garbage"``, ``"empty_choices"``, ``"ok"``, ``"sleep:2.5"``."""
    if isinstance(spec, Behaviour) or callable(spec):
        return spec
    text = str(spec).strip()
    if text.startswith("sleep:"):
        return sleep(float(text.split(":", 1)[1]))
    if text in _SHORTHANDS:
        return _SHORTHANDS[text]()
    if text.isdigit() and 500 <= int(text) <= 599:
        return server_error(int(text))
    if text.isdigit():
        return error(int(text))
    raise ValueError(f"unknown fake OpenAI behaviour {spec!r}")


# --------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One request as the server saw it (headers keyed in lower case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    deployment: str | None
    received_at: float
    chunks: list = field(default_factory=list)  # streaming: (time.time(), content piece) sent

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def tools(self) -> list[dict]:
        return list((self.body or {}).get("tools") or []) if isinstance(self.body, dict) else []

    @property
    def response_format(self) -> dict | None:
        return (self.body or {}).get("response_format") if isinstance(self.body, dict) else None

    @property
    def messages(self) -> list[dict]:
        return list((self.body or {}).get("messages") or []) if isinstance(self.body, dict) else []

    @property
    def model(self) -> str | None:
        if self.deployment:
            return self.deployment
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def api_key(self) -> str | None:
        return self.headers.get("api-key")


def echo_text(messages: list[dict]) -> str:
    """The default reply for these messages."""
    last_user = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return f"echo: {last_user} [messages={len(messages)}]"


def _words(text: Any) -> int:
    return len(str(text or "").split())


# --------------------------------------------------------------------------- server


class FakeOpenAI:
    """OpenAI-compatible server in a background thread with its own event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, default: Behaviour | str | None = None):
        self.host = host
        self._requested_port = port
        self.default = parse_behaviour(default) if default is not None else Behaviour()
        self._queue: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.port: int | None = None

    # -- addresses
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (use as ``AZURE_OPENAI_ENDPOINT``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (use as ``OPENAI_BASE_URL``)."""
        return self.url + "/v1"

    # -- scripting and inspection
    def script(self, *behaviours: Behaviour | str) -> "FakeOpenAI":
        """Queue behaviours for the next requests, in order; then the default applies."""
        parsed = [parse_behaviour(b) for b in behaviours]
        with self._lock:
            self._queue.extend(parsed)
        return self

    enqueue = script

    @property
    def pending(self) -> int:
        """Scripted behaviours not used yet."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every chat request received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    def reset(self) -> None:
        """Forget recorded requests and queued behaviours."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return self.requests
            time.sleep(0.01)
        raise TimeoutError(f"expected {count} requests, got {len(self.requests)}")

    # -- lifecycle
    def start(self) -> "FakeOpenAI":
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._setup(sock))
            except BaseException as exc:  # report to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread = None
            raise RuntimeError(f"fake OpenAI server failed to start: {failure[0]!r}")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            self._stopping.set()  # wake handlers that are sleeping
            await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- aiohttp internals
    async def _setup(self, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            deployment=request.match_info.get("deployment"),
            received_at=time.time(),
        )
        with self._lock:
            self._requests.append(record)
            behaviour = self._queue.popleft() if self._queue else self.default
        if not isinstance(behaviour, Behaviour):  # a function of the request
            behaviour = parse_behaviour(behaviour(record))

        if behaviour.delay:
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=behaviour.delay)
            except asyncio.TimeoutError:
                pass
        headers = dict(behaviour.headers)
        if behaviour.raw_body is not None:
            return web.Response(
                status=behaviour.status, body=behaviour.raw_body, content_type=behaviour.content_type, headers=headers
            )
        if behaviour.json_body is not None:
            return web.json_response(behaviour.json_body, status=behaviour.status, headers=headers)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return web.json_response(
                _error_body("'messages' is a required property", "invalid_request_error", None), status=400
            )
        completion = self._completion(record, behaviour)
        if behaviour.empty_choices:
            completion["choices"] = []
        if record.stream and behaviour.status == 200:
            return await self._stream(request, record, behaviour, completion, headers)
        return web.json_response(completion, status=behaviour.status, headers=headers)

    async def _stream(self, request: web.Request, record: RecordedRequest, behaviour: Behaviour,
                      completion: dict, headers: dict) -> web.StreamResponse:
        """The completion as the API streams it: chat.completion.chunk events, then [DONE]."""
        response = web.StreamResponse(status=200, headers={
            **headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        base = {"id": completion["id"], "object": "chat.completion.chunk",
                "created": completion["created"], "model": completion["model"],
                "system_fingerprint": "fp_fake"}
        choice = (completion["choices"] or [None])[0]
        events: list[tuple[dict, str | None]] = []  # (chunk, content piece)

        def chunk(delta: dict | None, finish_reason=None, **extra) -> dict:
            choices = [] if delta is None else [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            return {**base, "choices": choices, **extra}

        if choice is not None:
            message = choice["message"]
            events.append((chunk({"role": "assistant", "content": "", "refusal": None}), None))
            for piece in _pieces(message.get("content") or ""):
                events.append((chunk({"content": piece}), piece))
            for index, call in enumerate(message.get("tool_calls") or []):
                events.append((chunk({"tool_calls": [{
                    "index": index, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}]}), None))
                for fragment in _fragments(call["function"]["arguments"]):
                    events.append((chunk({"tool_calls": [{
                        "index": index, "function": {"arguments": fragment}}]}), None))
            events.append((chunk({}, choice["finish_reason"]), None))
        if ((record.body or {}).get("stream_options") or {}).get("include_usage"):
            events.append((chunk(None, usage=completion["usage"]), None))
        try:
            for number, (event, piece) in enumerate(events):
                if behaviour.break_after is not None and number >= behaviour.break_after:
                    request.transport.close()  # the connection drops mid-stream
                    return response
                if number and behaviour.chunk_delay:
                    try:
                        await asyncio.wait_for(self._stopping.wait(), timeout=behaviour.chunk_delay)
                    except asyncio.TimeoutError:
                        pass
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
                if piece is not None:
                    record.chunks.append((time.time(), piece))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):  # the client went away
            pass
        return response

    @staticmethod
    def _completion(record: RecordedRequest, behaviour: Behaviour) -> dict:
        messages = record.messages
        if behaviour.tool_calls is not None:
            text = behaviour.reply  # None: an assistant turn that only calls tools
            message = {"role": "assistant", "content": text, "refusal": None, "tool_calls": [
                {"id": c.get("id") or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                 "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(
                     c.get("arguments"), str) else json.dumps(c.get("arguments") or {})}}
                for c in behaviour.tool_calls]}
        else:
            text = behaviour.reply if behaviour.reply is not None else echo_text(messages)
            message = {"role": "assistant", "content": text}
        prompt_tokens = max(1, sum(_words(m.get("content")) for m in messages))
        completion_tokens = _words(text) + sum(
            _words(c["function"]["arguments"]) for c in message.get("tool_calls") or [])
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": record.model or "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": behaviour.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _pieces(text: str) -> list[str]:
    """Content as the API streams it: word-sized pieces that add up to the text."""
    import re

    return re.findall(r"\s*\S+|\s+$", text) if text else []


def _fragments(arguments: str, size: int = 8) -> list[str]:
    return [arguments[i:i + size] for i in range(0, len(arguments), size)] or [""]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run the fake OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with FakeOpenAI(args.host, args.port) as server:
        print(f"OPENAI_BASE_URL={server.base_url}  AZURE_OPENAI_ENDPOINT={server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
