"""`GET /api/openapi.json`: the HTTP API as an OpenAPI 3.1 document (a test keeps it true)."""
from __future__ import annotations

import json

import azure.functions as func

from .web import fastapi_route

bp = func.Blueprint()

ERROR = {"$ref": "#/components/schemas/Error"}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "Agent name (case-insensitive)"}
THREAD_ID_PATTERN = (r"^(@dafx-[A-Za-z][A-Za-z0-9_-]{0,63}@)?([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-"
                     r"[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$")
THREAD = {"name": "thread_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": THREAD_ID_PATTERN},
          "description": "`@dafx-<agent>@<uuid>` or the bare uuid"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "Malformed request", 404: "Unknown agent, thread or turn",
            405: "Method not allowed", 409: "The turn was terminated",
            413: "Body over MAX_MESSAGE_BYTES", 415: "Not JSON, text/* or form-urlencoded text", 422: "Idempotency-Key reused for another message",
            502: "The model provider failed", 503: "Rate limited or unavailable",
            504: "The model timed out"}
    return {str(c): _json(ERROR, text[c]) for c in codes}


TURN_RESULT = {"type": "object", "required": ["thread_id", "turn_id", "reply", "usage"],
               "properties": {
                   "thread_id": {"type": "string"}, "turn_id": {"type": "string"},
                   "instance_id": {"type": "string"}, "reply": {"type": "string"},
                   "usage": {"$ref": "#/components/schemas/Usage"},
                   "model": {"type": "string"}, "finish_reason": {"type": ["string", "null"]},
                   "provider": {"type": "string"},
                   "durations_ms": {"type": "object", "properties": {
                       "model": {"type": "number"}, "turn": {"type": "number"}}},
                   "context_messages": {"type": ["integer", "null"]},
                   "thread_messages": {"type": "integer"},
                   "steps": {"type": ["integer", "null"], "description": "model steps"},
                   "output": {"description": "the parsed reply, with response_format"},
                   "tool_calls": {"type": "array", "items": {"type": "object", "properties": {
                       "id": {"type": "string"}, "name": {"type": "string"},
                       "arguments": {}, "result": {}, "error": {"type": "string"},
                       "approval": {"type": ["object", "null"]},
                       "duration_ms": {"type": ["number", "null"]}}}}}}
PENDING = {"type": "array", "items": {"type": "object", "required": ["id", "tool", "approve_url"],
                                      "properties": {"id": {"type": "string"},
                                                     "tool": {"type": "string"},
                                                     "arguments": {},
                                                     "approve_url": {"type": "string"}}}}
TURN_ID = {"name": "turn_id", "in": "path", "required": True, "schema": {"type": "string"}}

STREAM_EVENTS = ("With Accept: text/event-stream: Server-Sent Events, each with an id: turn, "
                 "attempt, delta, tool_call, tool_result, approval_pending, then done (the "
                 "result document) or error (the error document); ': keep-alive' comments")

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "Durable agents", "version": "1.0.0",
             "description": "Chat agents whose every turn is a Durable Functions orchestration "
                            "and whose threads are durable entities."},
    "security": [{"functionKeyQuery": []}, {"functionKeyHeader": []}],
    "paths": {
        "/api/agents/{name}/run": {"post": {
            "summary": "Run one turn of a conversation",
            "parameters": [
                NAME,
                {"name": "thread_id", "in": "query",
                 "schema": {"type": "string", "pattern": THREAD_ID_PATTERN},
                 "description": "Continue this thread (omit to start a new one)"},
                {"name": "wait_for_response", "in": "query",
                 "schema": {"type": "boolean", "default": True}},
                {"name": "Idempotency-Key", "in": "header",
                 "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"},
                 "description": "A repeat with the same key returns the same turn: printable "
                                "ASCII up to 255 characters, bare or as a quoted "
                                "structured-header string"}],
            "requestBody": {"required": True, "content": {
                "text/plain": {"schema": {"type": "string", "minLength": 1}},
                "application/x-www-form-urlencoded": {"schema": {"type": "string"}},
                "application/json": {"schema": {
                    "type": "object", "required": ["message"], "properties": {
                        "message": {"type": "string", "minLength": 1},
                        "thread_id": {"type": "string", "pattern": THREAD_ID_PATTERN},
                        "wait_for_response": {"type": "boolean"},
                        "response_format": {"type": "object", "description":
                                            "OpenAI's json_schema or json_object shape"}}}}}},
            "responses": {
                "200": {"description": "The reply (text/plain for text requests, the result "
                                       "document for JSON requests or Accept: application/json)",
                        "headers": {"x-ms-thread-id": {"schema": {"type": "string"}},
                                    "x-ms-turn-id": {"schema": {"type": "string"}}},
                        "content": {"text/plain": {"schema": {"type": "string"}},
                                    "application/json": {"schema": TURN_RESULT},
                                    "text/event-stream": {"schema": {
                                        "type": "string", "description": STREAM_EVENTS}}}},
                "202": _json({"$ref": "#/components/schemas/CheckStatus"},
                             "Still running: poll statusQueryGetUri; a turn waiting for "
                             "approval adds status, thread_id, turn_id and pending"),
                **_errors(400, 404, 405, 409, 413, 415, 422, 502, 503, 504)}}},
        "/api/agents": {"get": {
            "summary": "Configured agents and their models",
            "responses": {"200": _json({"type": "object", "properties": {"agents": {
                "type": "array", "items": {"type": "object"}}}}, "The agents")}}},
        "/api/agents/{name}/threads": {"get": {
            "summary": "The agent's threads, newest first",
            "parameters": [NAME,
                           {"name": "limit", "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 100}},
                           {"name": "offset", "in": "query",
                            "schema": {"type": "integer", "minimum": 0,
                                       "maximum": 1_000_000_000}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "threads": {"type": "array"}, "total": {"type": "integer"},
                "next_offset": {"type": ["integer", "null"]}}}, "A page of threads"),
                **_errors(400, 404)}}},
        "/api/agents/{name}/threads/{thread_id}": {
            "get": {"summary": "One conversation with per-reply usage and totals",
                    "parameters": [NAME, THREAD],
                    "responses": {"200": _json({"$ref": "#/components/schemas/Thread"},
                                               "The thread"), **_errors(400, 404)}},
            "delete": {"summary": "Forget the thread and purge its turn histories",
                       "parameters": [NAME, THREAD],
                       "responses": {"200": _json({"type": "object"}, "Deleted"),
                                     **_errors(400, 404)}}},
        "/api/agents/{name}/threads/{thread_id}/turns/{turn_id}": {"get": {
            "summary": "One turn's status and result (and the calls waiting for approval)",
            "parameters": [NAME, THREAD, TURN_ID],
            "responses": {"200": _json({"type": "object", "required": ["status", "turn_id"],
                                        "properties": {"pending": PENDING}},
                                       "The turn"), **_errors(400, 404)}}},
        "/api/agents/{name}/threads/{thread_id}/turns/{turn_id}/stream": {"get": {
            "summary": "The turn's events as Server-Sent Events: replay after an id, then live",
            "parameters": [NAME, THREAD, TURN_ID,
                           {"name": "Last-Event-ID", "in": "header",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
                            "description": "Replay the events after this id"},
                           {"name": "after", "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                            "description": "Same as Last-Event-ID (the header wins)"}],
            "responses": {"200": {"description": STREAM_EVENTS, "content": {
                "text/event-stream": {"schema": {"type": "string"}}}},
                **_errors(400, 404)}}},
        "/api/agents/{name}/threads/{thread_id}/turns/{turn_id}/approvals/{call_id}": {"post": {
            "summary": "Approve or deny a tool call that waits for a person",
            "parameters": [NAME, THREAD, TURN_ID,
                           {"name": "call_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["approved"], "additionalProperties": False,
                "properties": {"approved": {"type": "boolean"},
                               "reason": {"type": "string", "maxLength": 2000},
                               "by": {"type": "string", "maxLength": 200}}}}}},
            "responses": {"200": _json({"type": "object", "required": ["call_id", "approved"]},
                                       "Decided: the turn recorded this decision"),
                          "202": _json({"type": "object"}, "Sent; not yet recorded"),
                          "409": _json(ERROR, "Already decided or timed out"),
                          **_errors(400, 404)}}},
        "/api/health": {"get": {"summary": "Liveness, agents and model provider",
                                "security": [],
                                "responses": {"200": _json({"type": "object"}, "Healthy")}}},
        "/api/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": _json({"type": "object"},
                                                                 "OpenAPI 3.1")}}},
    },
    "components": {
        "securitySchemes": {
            "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["status", "code", "message"], "properties": {
                    "status": {"type": "integer"}, "code": {"type": "string"},
                    "message": {"type": "string"}}}}},
            "Usage": {"type": "object", "properties": {
                "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"}}},
            "CheckStatus": {"type": "object", "required": ["id", "statusQueryGetUri"],
                            "properties": {"id": {"type": "string"},
                                           "statusQueryGetUri": {"type": "string"}}},
            "Thread": {"type": "object",
                       "required": ["thread_id", "agent", "messages", "totals"],
                       "properties": {"thread_id": {"type": "string"},
                                      "agent": {"type": "string"},
                                      "messages": {"type": "array"},
                                      "totals": {"type": "object"},
                                      "message_count": {"type": "integer"}}}}},
}


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@fastapi_route
def http_openapi(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(DOCUMENT), mimetype="application/json")
