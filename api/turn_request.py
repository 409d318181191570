"""Parsing and validating `POST /api/agents/{name}/run`: pure, so every refusal is unit-tested.

A refused request raises Problem (status, code, message) before anything is started."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024


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


def max_message_bytes() -> int:
    raw = os.environ.get("MAX_MESSAGE_BYTES")
    return int(raw) if raw and raw.isdigit() else DEFAULT_MAX_MESSAGE_BYTES


def _bool_query(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise Problem(400, "invalid_parameter", f"query parameter '{name}' must be true or false")


def _from_json(body: bytes) -> tuple[str, str | None, bool | None]:
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
    return message, thread_id, wait


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
    body_thread, body_wait = None, None
    if is_json:
        message, body_thread, body_wait = _from_json(body)
    else:
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
    return TurnRequest(message, query_thread or body_thread or None, wait, wants_json)
