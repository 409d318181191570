"""Structured replies: the `response_format` request shape and validation of the model's reply.

OpenAI's two shapes are accepted:
`{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"?}}` (the reply
must be JSON valid against the schema) and `{"type": "json_object"}` (any JSON object).
`check_response_format` normalises one or raises ValueError with a message fit for a 400;
`validate_reply` parses and validates a reply with a real JSON Schema validator (jsonschema).
Pure Python, so the API, the orchestrator and the LLM activity share it.
"""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def check_response_format(value: Any) -> dict:
    """The normalised response_format, or ValueError saying what is wrong with it."""
    if not isinstance(value, dict):
        raise ValueError("response_format must be an object such as "
                         '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}')
    kind = value.get("type")
    if kind == "json_object":
        if set(value) - {"type"}:
            raise ValueError(f"response_format of type json_object takes no other keys, got "
                             f"{sorted(set(value) - {'type'})}")
        return {"type": "json_object"}
    if kind != "json_schema":
        raise ValueError(f"response_format.type must be 'json_schema' or 'json_object', got "
                         f"{kind!r}")
    if set(value) - {"type", "json_schema"}:
        raise ValueError(f"unknown keys in response_format: {sorted(set(value) - {'type', 'json_schema'})}")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise ValueError("response_format.json_schema must be an object with name and schema")
    unknown = set(spec) - {"name", "schema", "strict", "description"}
    if unknown:
        raise ValueError(f"unknown keys in response_format.json_schema: {sorted(unknown)}")
    name = spec.get("name")
    if not isinstance(name, str) or not SCHEMA_NAME.match(name):
        raise ValueError("response_format.json_schema.name must be 1-64 letters, digits, '_' "
                         "or '-'")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise ValueError("response_format.json_schema.schema must be a JSON Schema object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValueError("response_format.json_schema.schema is not a valid JSON Schema"
                         + (f" at '{where}'" if where else "") + f": {exc.message}") from None
    strict = spec.get("strict", False)
    if not isinstance(strict, bool):
        raise ValueError("response_format.json_schema.strict must be true or false")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise ValueError("response_format.json_schema.description must be a string")
    out = {"name": name, "schema": schema, "strict": strict}
    if description:
        out["description"] = description
    return {"type": "json_schema", "json_schema": out}


def schema_of(response_format: dict) -> dict | None:
    """The JSON Schema a reply must satisfy (None for json_object: any object)."""
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"]["schema"]
    return None


def validate_reply(response_format: dict, text: str) -> tuple[Any, str | None]:
    """(parsed value, None) when the reply fits, else (None, one-line reason).

    Tolerates a Markdown code fence around the JSON (small models like to add one).
    """
    body = (text or "").strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        preview = body[:80] + ("…" if len(body) > 80 else "")
        return None, f"the reply is not valid JSON ({exc.msg} at position {exc.pos}): {preview!r}"
    schema = schema_of(response_format)
    if schema is None:
        if not isinstance(value, dict):
            return None, f"the reply must be a JSON object, not {type(value).__name__}"
        return value, None
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return value, None
    where = "/".join(str(p) for p in error.absolute_path)
    return None, ("the reply does not match the schema"
                  + (f" at '{where}'" if where else "") + f": {error.message}")


def instruction(response_format: dict) -> str:
    """What to tell a model that cannot take response_format natively (the local base model)."""
    schema = schema_of(response_format)
    if schema is None:
        return "Answer with a single JSON object and nothing else."
    return ("Answer with a single JSON value that matches this JSON Schema, and nothing else:\n"
            + json.dumps(schema, separators=(",", ":")))


def repair_message(problem: str, response_format: dict) -> dict:
    """The user message of the one repair attempt: what was wrong, and what is wanted."""
    return {"role": "user", "content": (
        f"Your last reply was rejected: {problem}. " + instruction(response_format))}


__all__ = ["check_response_format", "validate_reply", "schema_of", "instruction",
           "repair_message"]
