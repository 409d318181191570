"""`python -m bench.stream_bench`: what streaming a durable turn costs, against the model's own
chunk timing (the fake OpenAI-compatible server records when it sent each chunk).

- time to first delta: the client's receive time of the first `delta` event minus the time the
  fake model sent its first content chunk (and, for scale, minus the time the POST was sent);
- per-event overhead: for every content chunk, client receive time minus model send time
  (the whole path: provider stream → LLM activity → journal → SSE reader → HTTP → client);
- the same turn not streamed: the LLM activity then makes one plain call, which the fake model
  answers at once (its chunk spacing applies to streamed calls only), so this row is the
  durable turn without streaming, not a slow model.
Both clocks are time.time() on this machine. Prints one table; no thresholds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import httpx2 as httpx  # noqa: E402

from conftest import DevhostProcess, app_env  # noqa: E402
from bench.__main__ import pct  # noqa: E402
from tests.fake_openai import FakeOpenAI, reply, streamed  # noqa: E402

RUN = "/api/agents/MyDurableAgent/run"


def streamed_turn(host: DevhostProcess) -> tuple[float, list[tuple[float, str]]]:
    """(POST sent at, [(received at, delta text)])."""
    sent = time.time()
    deltas = []
    event = None
    with httpx.stream("POST", host.base + RUN, content=b"go", timeout=120, headers={
            "Accept": "text/event-stream", "Content-Type": "text/plain"}) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "delta":
                deltas.append((time.time(), json.loads(line[6:])["text"]))
    return sent, deltas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    args = parser.parse_args()
    text = " ".join(f"word{i}" for i in range(args.words))
    with FakeOpenAI() as llm, tempfile.TemporaryDirectory() as tmp:
        host = DevhostProcess(ROOT, Path(tmp) / "hub.sqlite", app_env(llm))
        host.start()
        try:
            first_after_model, first_after_post, per_event, plain = [], [], [], []
            for _ in range(args.turns):
                llm.reset()
                llm.script(streamed(reply(text), chunk_delay=args.chunk_delay))
                sent, deltas = streamed_turn(host)
                chunks = llm.requests[-1].chunks
                assert "".join(t for _, t in deltas) == text, "deltas do not add up to the reply"
                first_after_model.append((deltas[0][0] - chunks[0][0]) * 1000)
                first_after_post.append((deltas[0][0] - sent) * 1000)
                # deltas may merge pieces (a journal write in flight): match each chunk to the
                # delta that carried its last character
                received, position, cursor = [], 0, 0
                for at, piece in deltas:
                    position += len(piece)
                    received.append((position, at))
                for sent_at, piece in chunks:
                    cursor += len(piece)
                    at = next(a for p, a in received if p >= cursor)
                    per_event.append((at - sent_at) * 1000)
                llm.script(streamed(reply(text), chunk_delay=args.chunk_delay))
                started = time.perf_counter()
                r = host.request("POST", RUN, "go", {"Content-Type": "text/plain"})
                assert r.status == 200 and r.text == text
                plain.append((time.perf_counter() - started) * 1000)
            model_ms = args.words * args.chunk_delay * 1000
            print(f"stream bench: {args.turns} turns, {args.words} chunks each, "
                  f"{args.chunk_delay * 1000:.0f} ms apart (the model takes ~{model_ms:.0f} ms)")
            print(f"{'':38} {'p50':>9} {'p95':>9}")
            for name, values in (
                    ("first delta after model's first chunk", first_after_model),
                    ("first delta after POST", first_after_post),
                    ("per-event overhead (chunk -> client)", per_event),
                    ("whole turn, not streamed (plain call)", plain)):
                print(f"{name:38} {statistics.median(values):8.1f}ms {pct(values, 0.95):8.1f}ms")
        finally:
            host.kill()


if __name__ == "__main__":
    main()
