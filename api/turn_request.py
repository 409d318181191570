"""Parsing and validating `POST /api/agents/{name}/run`: pure, so every refusal is unit-tested.

A refused request raises Problem (status, code, message) before anything is started."""
from __future__ import annotations

import json
from dataclasses import dataclass

from core import settings

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024
MAX_IDEMPOTENCY_KEY = 255
TEXT_TYPES = ("application/x-www-form-urlencoded",)  # what `curl -d` sends without -H


class Problem(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def to_json(self) -> dict:
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}


@dataclass
class TurnRequest:
    message: str
    thread_id: str | None
    wait: bool
    wants_json: bool
    idempotency_key: str | None = None
    response_format: dict | None = None


def max_message_bytes() -> int:
    return settings.integer("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)


def parse_idempotency_key(raw: str | None) -> str | None:
    """The key of an `Idempotency-Key` header: any printable ASCII (space included) up to 255
    characters, bare or as a structured-header string (`"..."` with \\" and \\\\ escapes,
    as the IETF draft writes it), so `"k"` and `k` are the same key. 400 for empty, over-long,
    non-ASCII or control characters."""
    if raw is None:
        return None
    key = raw.strip(" \t")
    if len(key) >= 2 and key[0] == key[-1] == '"':
        body, key, escaped = key[1:-1], "", False
        for char in body:
            if escaped:
                if char not in '"\\':
                    raise _bad_key('in a quoted key only \\" and \\\\ are escapes')
                key, escaped = key + char, False
            elif char == "\\":
                escaped = True
            elif char == '"':
                raise _bad_key('a quote inside a quoted key must be escaped as \\"')
            else:
                key += char
        if escaped:
            raise _bad_key("the quoted key ends in a lone backslash")
    if not key:
        raise _bad_key("the key is empty")
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise _bad_key(f"the key is {len(key)} characters; the limit is {MAX_IDEMPOTENCY_KEY}")
    if any(not " " <= char <= "~" for char in key):
        raise _bad_key("the key holds a control or non-ASCII character")
    return key


def _bad_key(why: str) -> Problem:
    return Problem(400, "invalid_idempotency_key",
                   f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters, "
                   f"bare or quoted: {why}")


def _bool_query(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise Problem(400, "invalid_parameter", f"query parameter '{name}' must be true or false")


def check_response_format(value: object) -> dict:
    """The run request's `response_format`, normalised by core.structured (tools-foundation's
    contract); 400 invalid_response_format when it is not one the providers accept."""
    try:
        from core.structured import check_response_format as check
    except ImportError:  # before structured replies exist: accept only the OpenAI shapes
        def check(candidate):
            if not isinstance(candidate, dict) or candidate.get("type") not in (
                    "json_object", "json_schema", "text"):
                raise ValueError("response_format must be an object whose type is text, "
                                 "json_object or json_schema")
            return candidate
    try:
        return check(value)
    except ValueError as exc:
        raise Problem(400, "invalid_response_format", str(exc)) from None


def _from_json(body: bytes) -> tuple[str, str | None, bool | None, dict | None]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise Problem(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Problem(400, "invalid_body", "the JSON body must be an object like "
                                           '{"message": "..."}')
    message = data.get("message")
    if not isinstance(message, str):
        raise Problem(400, "invalid_message", "'message' is required and must be a string")
    thread_id = data.get("thread_id")
    if thread_id is not None and not isinstance(thread_id, str):
        raise Problem(400, "invalid_thread_id", "'thread_id' must be a string")
    wait = data.get("wait_for_response")
    if wait is not None and not isinstance(wait, bool):
        raise Problem(400, "invalid_parameter", "'wait_for_response' must be true or false")
    response_format = data.get("response_format")
    if response_format is not None:
        response_format = check_response_format(response_format)
    return message, thread_id, wait, response_format


def _unsupported(why: str) -> Problem:
    return Problem(415, "unsupported_media_type",
                   f"{why}: send application/json ({{\"message\": \"...\"}}), text/* or "
                   "application/x-www-form-urlencoded (the body is the message)")


def parse_run_request(method: str, headers: dict, params: dict, body: bytes) -> TurnRequest:
    if method.upper() != "POST":
        raise Problem(405, "method_not_allowed", f"use POST to run an agent, not {method}",
                      {"Allow": "POST"})
    limit = max_message_bytes()
    if len(body) > limit:
        raise Problem(413, "message_too_large",
                      f"the request body is {len(body)} bytes; the limit is {limit}")
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    is_json = content_type == "application/json" or content_type.endswith("+json")
    body_thread, body_wait, response_format = None, None, None
    if is_json:
        message, body_thread, body_wait, response_format = _from_json(body)
    elif content_type and not content_type.startswith("text/") and content_type not in TEXT_TYPES:
        raise _unsupported(f"Content-Type '{content_type[:100]}' is not accepted")
    else:
        if b"\x00" in body:
            raise _unsupported("the text body holds NUL bytes: it looks binary")
        try:
            message = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, "invalid_encoding", "the message must be UTF-8 text") from None
    if not message.strip():
        raise Problem(400, "empty_message", "the message is empty")
    query_thread = params.get("thread_id")
    if query_thread is not None and not query_thread.strip():
        raise Problem(400, "invalid_thread_id", "thread_id is empty: omit it to start a thread")
    if query_thread is not None and body_thread is not None and query_thread != body_thread:
        raise Problem(400, "conflicting_thread_id",
                      "thread_id in the query and in the body disagree")
    query_wait = _bool_query(params.get("wait_for_response"), "wait_for_response")
    wait = body_wait if body_wait is not None else query_wait if query_wait is not None else True
    wants_json = is_json or "application/json" in lowered.get("accept", "").lower()
    return TurnRequest(message, query_thread or body_thread or None, wait, wants_json,
                       response_format=response_format)
