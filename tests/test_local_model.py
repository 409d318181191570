"""The offline provider: a real gemma-3-270m inference through call_llm_impl.

Not skipped anywhere: the local model is a required dependency of the project.
Run with ``pytest -s`` to see the measured load and generation times.
"""

from __future__ import annotations

import json
import time

from activities import local_model
from activities.llm import call_llm_impl
from activities.local_model import build_prompt

LOCAL_SETTINGS = ["AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", "OPENAI_API_KEY", "LOCAL_MODEL_PATH"]


def test_build_prompt_is_a_plain_transcript():
    prompt = build_prompt(
        [
            {"role": "system", "content": "  You are a pirate.  "},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Arr."},
            {"role": "user", "content": "Where is the gold?\n"},
        ]
    )
    assert prompt == "You are a pirate.\n\nUser: Hi\nAssistant: Arr.\nUser: Where is the gold?\nAssistant:"


def test_build_prompt_without_system_and_with_several_system_messages():
    assert build_prompt([{"role": "user", "content": "Hi"}]) == "User: Hi\nAssistant:"
    prompt = build_prompt(
        [
            {"role": "system", "content": "Rule one."},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Rule two."},
        ]
    )
    assert prompt.startswith("Rule one.\n\nRule two.\n\nUser: Hi")
    assert prompt.endswith("\nAssistant:")


def test_local_model_answers(monkeypatch):
    for name in LOCAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLM_PROVIDER", "local")

    started = time.perf_counter()
    local_model.get_model()
    load_s = time.perf_counter() - started

    request = {
        "agent": {"name": "local", "instructions": "You are a helpful assistant.", "model": None,
                  "temperature": 0.7, "max_output_tokens": 48},
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "turn_id": "local-1",
    }
    started = time.perf_counter()
    result = call_llm_impl(request)
    generate_s = time.perf_counter() - started

    print(
        f"\nlocal model: load {load_s:.2f} s (llama init {local_model.load_seconds:.2f} s), "
        f"generation {generate_s:.2f} s, {result.get('usage')}, reply {result.get('reply')!r}"
    )
    assert result["ok"] is True, result
    assert isinstance(result["reply"], str) and result["reply"].strip()
    assert result["provider"] == "local"
    assert "gemma" in result["model"]
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert result["latency_ms"] > 0


def test_local_model_trims_history_to_fit_context(monkeypatch):
    monkeypatch.setenv("LLM_PROVIDER", "local")
    for name in LOCAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    llm = local_model.get_model()
    long_history = [{"role": "system", "content": "Be brief."}]
    for i in range(200):
        long_history += [
            {"role": "user", "content": f"Tell me fact number {i} about the sea, in detail please."},
            {"role": "assistant", "content": f"Fact {i}: the sea is large, deep, salty and full of fish."},
        ]
    long_history.append({"role": "user", "content": "Last question: is the sea wet?"})
    prompt, n_tokens = local_model._fit_prompt(llm, long_history, 64)
    assert n_tokens <= llm.n_ctx() - 64
    assert prompt.startswith("Be brief.\n\n") and prompt.endswith("User: Last question: is the sea wet?\nAssistant:")


def test_local_model_greedy_is_repeatable(monkeypatch):
    for name in LOCAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLM_PROVIDER", "local")
    request = {
        "agent": {"name": "local", "instructions": "", "temperature": 0, "max_output_tokens": 16},
        "messages": [{"role": "user", "content": "Say hello."}],
        "turn_id": "local-2",
    }
    first, second = call_llm_impl(request), call_llm_impl(request)
    assert first["ok"] and second["ok"]
    assert first["reply"] == second["reply"]


def test_local_prompt_too_long_is_context_length(monkeypatch):
    for name in LOCAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLM_PROVIDER", "local")
    request = {
        "agent": {"name": "local", "instructions": "", "max_output_tokens": 16},
        "messages": [{"role": "user", "content": "sea " * 5000}],
        "turn_id": "local-3",
    }
    result = call_llm_impl(request)
    assert result["ok"] is False
    assert result["error"]["kind"] == "context_length" and result["error"]["status"] == 502


def test_the_echo_of_the_question_is_dropped():
    from activities.local_model import clean_reply

    asked = [{"role": "user", "content": "Which one is best?"}]
    assert clean_reply("Which one is best?\nPython, for its syntax.", asked) == \
        "Python, for its syntax."
    assert clean_reply("Python is best.", asked) == "Python is best."
    assert clean_reply("Which one is best?", asked) == "Which one is best?"  # nothing else said


def test_the_seed_conversation_with_the_offline_model_through_devhost(tmp_path):
    """What `make run` serves by default: no provider configured → the local model."""
    import re

    from conftest import ROOT, DevhostProcess, thread_state

    env = {name: "" for name in ("LLM_PROVIDER", "AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL",
                                 "OPENAI_API_KEY")}
    host = DevhostProcess(ROOT, tmp_path / "local.sqlite", env)
    host.start()
    try:
        first = host.request("POST", "/api/agents/MyDurableAgent/run",
                             "What are three popular programming languages?",
                             {"Content-Type": "text/plain"}, timeout=120)
        assert first.status == 200, first
        assert first.text.strip() and first.headers["content-type"].startswith("text/plain")
        thread_id = first.headers["x-ms-thread-id"]
        assert re.match(r"^@dafx-mydurableagent@[0-9a-f-]{36}$", thread_id)
        second = host.request("POST", f"/api/agents/MyDurableAgent/run?thread_id={thread_id}",
                              "Which one is best for beginners?",
                              {"Content-Type": "text/plain"}, timeout=120)
        assert second.status == 200 and second.text.strip(), second
        messages = thread_state(host, thread_id)["messages"]
        assert len(messages) == 4
        assert {m["model"] for m in messages if m["role"] == "assistant"} == {
            "gemma-3-270m (local)"}
        print(f"\nlocal model replies: {first.text[:80]!r} / {second.text[:80]!r}")
    finally:
        host.kill()


# --------------------------------------------------------------------------- tools, JSON, streaming


def _local(monkeypatch):
    for name in LOCAL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLM_PROVIDER", "local")


def test_build_prompt_shows_tool_history_as_transcript_lines():
    prompt = build_prompt([
        {"role": "user", "content": "6*7?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "name": "calculate", "arguments": "{}"}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"result": 42}'},
    ])
    assert prompt == ('User: 6*7?\nAssistant: (called calculate)\nTool result: {"result": 42}\n'
                      "Assistant:")


def test_the_local_model_gives_schema_valid_json(monkeypatch):
    """Constrained decoding (llama.cpp's JSON-schema grammar) on the real tiny model."""
    import jsonschema

    _local(monkeypatch)
    schema = {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30},
        "continent": {"type": "string", "enum": ["Europe", "Asia", "Africa", "America", "Oceania"]},
        "is_capital": {"type": "boolean"}},
        "required": ["city", "continent", "is_capital"], "additionalProperties": False}
    request = {
        "agent": {"name": "local", "instructions": "", "temperature": 0, "max_output_tokens": 32},
        "messages": [{"role": "user", "content": "Tell me about Paris."}],
        "turn_id": "local-json",
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "city", "schema": schema, "strict": True}},
    }
    started = time.perf_counter()
    result = call_llm_impl(request)
    print(f"\nlocal JSON reply in {time.perf_counter() - started:.1f} s: {result.get('reply')!r}")
    assert result["ok"] is True, result
    jsonschema.validate(result["output"], schema)  # the test's own check, not the activity's
    assert json.loads(result["reply"]) == result["output"]
    assert result["attempts"] == 1  # the grammar made the first reply valid: no repair needed


def test_the_local_model_streams_pieces_that_add_up_to_the_reply(monkeypatch):
    _local(monkeypatch)
    request = {
        "agent": {"name": "local", "instructions": "", "temperature": 0, "max_output_tokens": 24},
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "turn_id": "local-stream",
    }
    plain = call_llm_impl(request)
    pieces: list[str] = []
    streamed = call_llm_impl(request, on_delta=pieces.append)
    assert streamed["ok"] and len(pieces) > 1
    assert "".join(pieces) == streamed["reply"] == plain["reply"]  # greedy: same text either way
    assert streamed["usage"]["completion_tokens"] > 0


def test_the_local_model_ignores_tools_and_says_so_once(monkeypatch, caplog):
    import logging

    from activities import providers

    _local(monkeypatch)
    monkeypatch.setattr(providers, "_announced", set())
    caplog.set_level(logging.INFO, logger="activities.providers")
    request = {
        "agent": {"name": "local", "instructions": "", "temperature": 0, "max_output_tokens": 8},
        "messages": [{"role": "user", "content": "What is 6*7?"}],
        "tools": [{"type": "function", "function": {"name": "calculate", "parameters": {
            "type": "object", "properties": {"expression": {"type": "string"}}}}}],
        "turn_id": "local-tools",
    }
    first, second = call_llm_impl(request), call_llm_impl(request)
    assert first["ok"] and second["ok"]
    assert first["tool_calls"] == [] and first["finish_reason"] != "tool_calls"
    notes = [r.getMessage() for r in caplog.records if "cannot call tools" in r.getMessage()]
    assert len(notes) == 1
