"""The one load generator every system gets: an aiohttp client posting chat turns to
`/api/agents/MyDurableAgent/run`, checking each reply came from the fake model for this very
message with the history attached (the fake echoes `echo: <message> [messages=N]`).

The systems are measured interleaved, not one after the other: turn k of the sequential phases
goes to every system before turn k+1 goes to any, and the concurrent phase runs in two halves,
in order and then in reverse order. On a machine shared with other work, a busy minute then
slows every system alike instead of whichever happened to be running.
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import aiohttp

ROUTE = "/api/agents/MyDurableAgent/run"
ECHO = re.compile(r"^echo: (?P<message>.*) \[messages=(?P<count>\d+)\]$", re.S)


@dataclass
class TurnRecord:
    thread: str
    ms: float
    sent: float          # wall clock (time.time()) when the request left
    received: float      # wall clock when the whole reply was read
    messages_seen: int   # how many messages the model was sent
    turn_id: str | None  # the app's x-ms-turn-id (None for the peers)


@dataclass
class Results:
    latency: list[TurnRecord] = field(default_factory=list)
    concurrent: list[TurnRecord] = field(default_factory=list)
    concurrent_seconds: float = 0.0
    growth: list[TurnRecord] = field(default_factory=list)


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str):
        self.session, self.url = session, base + ROUTE

    async def turn(self, thread: str | None, message: str) -> TurnRecord:
        url = self.url if thread is None else f"{self.url}?thread_id={thread}"
        sent, start = time.time(), time.perf_counter()
        async with self.session.post(url, data=message.encode(),
                                     headers={"Content-Type": "text/plain"}) as r:
            body = await r.text()
            ms = (time.perf_counter() - start) * 1000
            if r.status != 200:
                raise RuntimeError(f"turn failed: {r.status} {body[:300]}")
            thread_id = r.headers["x-ms-thread-id"]
            turn_id = r.headers.get("x-ms-turn-id")
        echo = ECHO.match(body)
        if not echo or echo["message"] != message:
            raise RuntimeError(f"the reply is not the model's answer to {message!r}: {body[:200]!r}")
        return TurnRecord(thread_id, ms, sent, time.time(), int(echo["count"]), turn_id)


def check_history(records: list[TurnRecord]) -> None:
    """Turns on one thread must show the model a growing conversation (history reached it)."""
    if len(records) > 1 and records[1].messages_seen <= records[0].messages_seen:
        raise RuntimeError(f"the second turn's prompt did not grow: "
                           f"{records[0].messages_seen} then {records[1].messages_seen} messages")


class Driver:
    """One system's client and the threads it keeps, phase by phase."""

    def __init__(self, key: str, base: str, concurrency: int, on_concurrent=None):
        self.key, self.base, self.concurrency = key, base, concurrency
        self.on_concurrent = on_concurrent  # async (key, "start"|"end")
        self.results = Results()
        self.threads: list[str] = []
        self.workers: list[str] = []
        self.long_thread: str | None = None

    async def __aenter__(self) -> "Driver":
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency * 2),
            timeout=aiohttp.ClientTimeout(total=120))
        self.client = Client(self.session, self.base)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def warm_up(self, latency_threads: int) -> None:
        for i in range(3):  # imports, caches, connections
            first = await self.client.turn(None, f"warm-up {i}")
            for k in range(3):
                await self.client.turn(first.thread, f"warm-up {i}.{k}")
        self.threads = [(await self.client.turn(None, f"hello {t}")).thread
                        for t in range(latency_threads)]

        async def opener(w: int) -> str:
            first = await self.client.turn(None, f"worker {w} opens")
            await self.client.turn(first.thread, f"worker {w} warms up")
            return first.thread
        self.workers = await asyncio.gather(*[opener(w) for w in range(self.concurrency)])

    async def latency_turn(self, t: int, rnd: int) -> None:
        self.results.latency.append(await self.client.turn(self.threads[t], f"latency {t}.{rnd}"))

    async def concurrent(self, first: int, turns: int) -> None:
        async def worker(w: int, thread: str) -> list[TurnRecord]:
            return [await self.client.turn(thread, f"worker {w} turn {k}")
                    for k in range(first, first + turns)]
        if self.on_concurrent:
            await self.on_concurrent(self.key, "start")
        start = time.perf_counter()
        done = await asyncio.gather(*[worker(w, t) for w, t in enumerate(self.workers)])
        self.results.concurrent_seconds += time.perf_counter() - start
        if self.on_concurrent:
            await self.on_concurrent(self.key, "end")
        for records in done:
            self.results.concurrent.extend(records)

    async def growth_turn(self, k: int) -> None:
        record = await self.client.turn(self.long_thread,
                                        f"long thread turn {k}: " + "lorem ipsum " * 8)
        self.long_thread = record.thread
        self.results.growth.append(record)


async def run_interleaved(drivers: list[Driver], *, latency_threads: int, latency_rounds: int,
                          concurrent_turns: int, growth_turns: int) -> None:
    for d in drivers:
        await d.warm_up(latency_threads)
    for rnd in range(latency_rounds):
        for t in range(latency_threads):
            for d in drivers:
                await d.latency_turn(t, rnd)
    half = concurrent_turns // 2
    for d in drivers:
        await d.concurrent(0, half)
    for d in reversed(drivers):
        await d.concurrent(half, concurrent_turns - half)
    for k in range(growth_turns):
        for d in drivers:
            await d.growth_turn(k)
    for d in drivers:
        check_history(d.results.growth)


async def drive(base: str, concurrency: int, turns: int) -> float:
    """Only a concurrent load (for profiling): returns turns per second."""
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = Client(session, base)

        async def worker(w: int) -> None:
            thread = (await client.turn(None, f"profiled worker {w}")).thread
            for k in range(turns):
                await client.turn(thread, f"profiled worker {w} turn {k}")
        start = time.perf_counter()
        await asyncio.gather(*[worker(w) for w in range(concurrency)])
        return concurrency * (turns + 1) / (time.perf_counter() - start)
