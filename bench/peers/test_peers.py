"""The bench's own machinery on real processes: the baseline server (it needs only aiohttp and
openai, so the app's venv runs it), devhost on the app, a fake model each. Not in `make test`
(testpaths is tests/); run `.venv/bin/python -m pytest bench/peers/test_peers.py`."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from aiohttp import web

from bench.peers import load, profile_summary, systems, timeline

PY = sys.executable


@pytest.fixture
def model(tmp_path):
    proc, base_url = systems.start_fake_model(PY, tmp_path)
    yield base_url
    proc.stop()


def drive(base: str, key: str, *, concurrency: int = 3, growth: int = 4) -> load.Driver:
    async def run() -> load.Driver:
        async with load.Driver(key, base, concurrency) as driver:
            await load.run_interleaved([driver], latency_threads=2, latency_rounds=2,
                                       concurrent_turns=2, growth_turns=growth)
            return driver
    return asyncio.run(run())


def test_baseline_keeps_the_history_and_every_phase_is_recorded(model, tmp_path):
    server, base, hub = systems.start_system(systems.SYSTEMS["baseline"], PY, PY, tmp_path, model)
    try:
        results = drive(base, "baseline").results
    finally:
        server.stop()
    assert hub is None
    assert len(results.latency) == 4 and len(results.concurrent) == 3 * 2
    # system prompt + 2 messages per earlier turn + this one: the whole history reached the model
    assert [r.messages_seen for r in results.growth] == [2, 4, 6, 8]
    assert len({r.thread for r in results.growth}) == 1


def test_a_reply_that_is_not_the_models_answer_fails_the_run():
    async def wrong(request: web.Request) -> web.Response:
        return web.Response(text="echo: something else [messages=2]",
                            headers={"x-ms-thread-id": "t"})

    async def run() -> None:
        app = web.Application()
        app.router.add_post(load.ROUTE, wrong)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with load.Driver("wrong", f"http://127.0.0.1:{port}", 1) as driver:
                await driver.growth_turn(0)
        finally:
            await runner.cleanup()
    with pytest.raises(RuntimeError, match="not the model's answer"):
        asyncio.run(run())


def test_a_history_that_does_not_grow_fails_the_check():
    records = [load.TurnRecord("t", 1.0, 0.0, 0.0, 2, None),
               load.TurnRecord("t", 1.0, 0.0, 0.0, 2, None)]
    with pytest.raises(RuntimeError, match="did not grow"):
        load.check_history(records)


def test_the_apps_turn_timeline_is_read_from_its_task_hub(model, tmp_path):
    server, base, hub = systems.start_system(systems.SYSTEMS["app"], PY, PY, tmp_path, model)
    try:
        results = drive(base, "app", concurrency=2, growth=3).results
        line = timeline.turn_timeline(hub, results.latency)
    finally:
        server.stop()
    assert line["turns"] + (line["of"] - line["turns"]) == len(results.latency) == 4
    labels = line["labels"]
    assert labels[0].startswith("instance created") and labels[-1].startswith("client has read")
    assert "TaskScheduled call_llm" in labels and "TaskCompleted" in labels
    assert line["episodes"] >= 2
    at = dict(zip(labels, line["median_ms"]))
    assert at["TaskScheduled call_llm"] <= at["TaskCompleted"] <= at[labels[-1]]


def test_profile_summary_counts_self_inclusive_children_and_callers(tmp_path):
    raw = tmp_path / "p.txt"
    raw.write_text(
        "thread (1): MainThread;main (devhost/cli.py:1);Engine._episode (devhost/engine.py:2);"
        "dumps (json/__init__.py:3) 6\n"
        "thread (1): MainThread;main (devhost/cli.py:1);Engine._episode (devhost/engine.py:9);"
        "_call_handle (devhost/engine.py:4);dumps (json/__init__.py:3) 3\n"
        "thread (2): activity_0;call_llm (activities/llm.py:5) 1\n")
    text = profile_summary.summarise(raw, top=5)
    assert "10 samples" in text
    assert "      9  90.0%  dumps (json/__init__.py)" in text          # self: leaf frames
    assert "      9  90.0%  Engine._episode (devhost/engine.py)" in text  # lines merged
    split = profile_summary.children(raw, "Engine._episode")
    assert "6  66.7%  dumps" in split and "3  33.3%  _call_handle" in split
    who = profile_summary.callers(raw, "dumps", "devhost/")
    assert "6  66.7%  Engine._episode" in who and "3  33.3%  _call_handle" in who
    jobs = profile_summary.breakdown(raw)
    assert "3  30.0%  episode: SDK orchestrator code" in jobs
    assert "6  60.0%  episode: the rest" in jobs and "1  10.0%  activity call_llm" in jobs
