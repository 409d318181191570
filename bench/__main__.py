"""`python -m bench`: devhost and agent-turn figures, each with a baseline measured in the same run.

- SQLite WAL commit (the storage floor) and an HTTP round trip to devhost (the transport floor).
- Five sequential activities: start→completion latency p50/p99 and throughput.
- Fan-out/fan-in of 1,000 activities.
- One agent turn (POST /run → 200) against a zero-latency fake model, vs calling that model
  directly with the same openai client: the overhead durability adds to a turn.
- A 1,000-turn thread: turn latency at the end against the start (state compaction at work).
- Listing the threads of an agent with 10,000 threads (the sharded index; seeded with entity
  signals, not turns): first and last page latency, and the largest index shard.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conftest import DevhostProcess  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402

WEBHOOKS = "/runtime/webhooks/durabletask"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values_ms: list[float]) -> str:
    return (f"p50 {pct(values_ms, .5):8.2f} ms   p99 {pct(values_ms, .99):8.2f} ms   "
            f"mean {statistics.mean(values_ms):8.2f} ms   (n={len(values_ms)})")


def sqlite_commit_floor(samples: int = 2000) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.sqlite", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        times = []
        for i in range(samples):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (v) VALUES (?)", (str(i),))
            db.execute("COMMIT")
            times.append((time.perf_counter() - start) * 1000)
        db.close()
    return times


async def http_floor(session: aiohttp.ClientSession, base: str, samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        async with session.get(base + "/admin/host/status") as r:
            await r.read()
        times.append((time.perf_counter() - start) * 1000)
    return times


async def run_orchestration(session, base: str, name: str, payload=None) -> float:
    """Start through the webhook with a server-side wait: returns start→completion ms."""
    start = time.perf_counter()
    # The Python client's encoding: the input travels as a JSON string holding JSON text.
    async with session.post(f"{base}{WEBHOOKS}/orchestrators/{name}?timeout=120",
                            json=json.dumps(payload)) as r:
        body = await r.json()
        if r.status != 200 or (isinstance(body, dict) and "runtimeStatus" in body):
            raise RuntimeError(f"{name} did not complete: {r.status} {str(body)[:300]}")
    return (time.perf_counter() - start) * 1000


async def devhost_figures(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        host = DevhostProcess(ROOT / "bench" / "app", Path(tmp) / "bench.sqlite")
        host.start()
        try:
            async with aiohttp.ClientSession() as session:
                base = host.base
                await run_orchestration(session, base, "five_steps")  # warm up
                floor = await http_floor(session, base, 200)
                latencies = [await run_orchestration(session, base, "five_steps")
                             for _ in range(args.sequential)]
                start = time.perf_counter()
                await asyncio.gather(*[run_orchestration(session, base, "five_steps")
                                       for _ in range(args.concurrent)])
                throughput = args.concurrent / (time.perf_counter() - start)
                fan = [await run_orchestration(session, base, "fan_out", args.fan_out)
                       for _ in range(args.fan_out_runs)]
        finally:
            host.kill()
    return {"http_floor": floor, "five_steps": latencies, "throughput": throughput, "fan": fan}


async def agent_figures(args) -> dict:
    with FakeOpenAI() as llm, tempfile.TemporaryDirectory() as tmp:
        env = {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": llm.base_url,
               "OPENAI_API_KEY": "bench", "OPENAI_MODEL": "fake"}
        host = DevhostProcess(ROOT, Path(tmp) / "agent.sqlite", env)
        host.start()
        try:
            import openai
            client = openai.OpenAI(base_url=llm.base_url, api_key="bench", max_retries=0)
            direct = []
            for _ in range(args.turns):
                start = time.perf_counter()
                client.chat.completions.create(model="fake", messages=[
                    {"role": "user", "content": "hello"}])
                direct.append((time.perf_counter() - start) * 1000)
            async with aiohttp.ClientSession() as session:
                run = f"{host.base}/api/agents/MyDurableAgent/run"
                async with session.post(run, data="warm up") as r:
                    thread = r.headers["x-ms-thread-id"]
                turns = []
                for _ in range(args.turns):
                    start = time.perf_counter()
                    async with session.post(f"{run}?thread_id={thread}", data="hello") as r:
                        await r.read()
                        assert r.status == 200, r.status
                    turns.append((time.perf_counter() - start) * 1000)
                long_turns = await long_thread(session, host.base, args.long_thread)
        finally:
            host.kill()
    return {"direct": direct, "turns": turns, "long": long_turns}


async def long_thread(session, base: str, count: int) -> list[float]:
    """`count` turns on one thread; checks the thread API reads back every message."""
    run = f"{base}/api/agents/MyDurableAgent/run"
    times, thread = [], None
    if count == 0:
        return times
    for i in range(count):
        url = f"{run}?thread_id={thread}" if thread else run
        start = time.perf_counter()
        async with session.post(url, data=f"message {i}: " + "lorem ipsum " * 10) as r:
            await r.read()
            assert r.status == 200, r.status
            thread = r.headers["x-ms-thread-id"]
        times.append((time.perf_counter() - start) * 1000)
    async with session.get(f"{base}/api/agents/MyDurableAgent/threads/{thread}") as r:
        doc = await r.json()
    assert doc["message_count"] == 2 * count and len(doc["messages"]) == 2 * count, doc.keys()
    return times


async def listing_figures(args) -> dict:
    """GET /threads?limit=20 on an agent whose index lists `args.listing_threads` threads."""
    import random
    import uuid

    from entities.thread_index import index_entity

    if not args.listing_threads:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
               "OPENAI_API_KEY": "bench", "OPENAI_MODEL": "fake"}
        host = DevhostProcess(ROOT, Path(tmp) / "listing.sqlite", env)
        host.start()
        try:
            async with aiohttp.ClientSession() as session:
                gate = asyncio.Semaphore(32)
                shards: dict[str, int] = {}

                async def touch(i: int) -> None:
                    key = str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4))
                    shard = index_entity("MyDurableAgent", key).key
                    shards[shard] = shards.get(shard, 0) + 1
                    entry = {"key": key, "thread_id": f"@dafx-mydurableagent@{key}",
                             "updated_at": f"2026-01-01T00:00:{i // 1000:02d}.{i % 1000:03d}",
                             "messages": 2}
                    # the Python client's encoding: a JSON string holding JSON text
                    async with gate, session.post(
                            f"{host.base}{WEBHOOKS}/entities/agent_threads/{shard}?op=touch",
                            json=json.dumps(entry)) as r:
                        assert r.status == 202, r.status

                await asyncio.gather(*[touch(i) for i in range(args.listing_threads)])
                listing = f"{host.base}/api/agents/MyDurableAgent/threads"
                total = 0
                for _ in range(600):  # the signals are applied asynchronously
                    async with session.get(f"{listing}?limit=1") as r:
                        total = (await r.json())["total"]
                    if total == args.listing_threads:
                        break
                    await asyncio.sleep(0.1)
                assert total == args.listing_threads, total
                first, last = [], []
                for samples, offset in ((first, 0), (last, args.listing_threads - 20)):
                    for _ in range(30):
                        start = time.perf_counter()
                        async with session.get(f"{listing}?limit=20&offset={offset}") as r:
                            page = await r.json()
                        samples.append((time.perf_counter() - start) * 1000)
                        assert len(page["threads"]) == 20
                sizes = []
                for shard in shards:
                    async with session.get(
                            f"{host.base}{WEBHOOKS}/entities/agent_threads/{shard}") as r:
                        sizes.append(len(await r.read()))
        finally:
            host.kill()
    return {"listing_first": first, "listing_last": last, "shard_bytes": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--fan-out", type=int, default=1000)
    parser.add_argument("--fan-out-runs", type=int, default=3)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--long-thread", type=int, default=1000)
    parser.add_argument("--listing-threads", type=int, default=10_000)
    parser.add_argument("--only-listing", action="store_true",
                        help="measure only the 10,000-thread listing")
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()

    listing = asyncio.run(listing_figures(args))
    if listing:
        sizes = listing["shard_bytes"]
        print(f"agent     listing an agent with {args.listing_threads:,} threads, 20 a page: "
              f"first page {summary(listing['listing_first'])}")
        print(f"          last page  {summary(listing['listing_last'])}")
        print(f"          index: {len(sizes)} shards, largest {max(sizes) / 1024:.0f} kB, "
              f"all {sum(sizes) / 1024:.0f} kB (one entity would hold all of it)")
    if args.only_listing:
        return
    commit = sqlite_commit_floor()
    dev = asyncio.run(devhost_figures(args))
    agent = asyncio.run(agent_figures(args))
    commit_p50 = pct(commit, .5)
    http_p50 = pct(dev["http_floor"], .5)
    five_p50 = pct(dev["five_steps"], .5)
    fan_mean = statistics.mean(dev["fan"])
    turn_p50, direct_p50 = pct(agent["turns"], .5), pct(agent["direct"], .5)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"baseline  SQLite WAL commit            {summary(commit)}")
    print(f"baseline  HTTP round trip to devhost   {summary(dev['http_floor'])}")
    print(f"devhost   five sequential activities   {summary(dev['five_steps'])}")
    print(f"          = {five_p50 / commit_p50:,.0f}x a commit, {five_p50 / http_p50:,.1f}x an "
          f"HTTP round trip (p50)")
    print(f"devhost   throughput, {args.concurrent} concurrent five-step orchestrations: "
          f"{dev['throughput']:.1f} orchestrations/s")
    print(f"devhost   fan-out/fan-in of {args.fan_out} activities: mean {fan_mean:.0f} ms "
          f"({args.fan_out / fan_mean * 1000:,.0f} activities/s), runs "
          + ", ".join(f"{v:.0f}" for v in dev["fan"]) + " ms")
    print(f"baseline  model call made directly     {summary(agent['direct'])}")
    print(f"agent     one turn, POST /run → 200    {summary(agent['turns'])}")
    print(f"          durability overhead per turn (p50): {turn_p50 - direct_p50:.2f} ms, "
          f"{turn_p50 / direct_p50:.1f}x the bare model call")
    long_turns = agent["long"]
    head, tail = long_turns[:10], long_turns[-10:]
    if long_turns:
        print(f"agent     {len(long_turns)}-turn thread: turns 1-10 mean {statistics.mean(head):.1f} ms,"
              f" last 10 mean {statistics.mean(tail):.1f} ms "
              f"({statistics.mean(tail) / statistics.mean(head):.2f}x); all "
              f"{2 * len(long_turns)} messages read back")
    if args.json:
        Path(args.json).write_text(json.dumps({"commit": commit, **dev, **agent}))


if __name__ == "__main__":
    main()
