"""`python bench/dashboard_bench.py`: is the dashboard fast with thousands of instances in the hub?

Starts devhost with the patterns app, fills the task hub with N orchestrations through the
management API (default 5,000 `chain` runs: three activities each, so a real history per
instance), plus one fan-out of 100 activities (a ~200-event history). Then drives Debian's
Chromium with Playwright and measures, from navigation start (performance.now() in the page),
the first frame in which
- the Orchestrations list shows its first page of rows, and
- that instance's Timeline shows all its bars,
each over several fresh page loads; and, as a baseline, the HTTP time of the reads behind them.
Prints numbers; asserts nothing about them.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conftest import APPS, DevhostProcess  # noqa: E402

WEBHOOKS = "/runtime/webhooks/durabletask"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"]


async def fill(base: str, count: int, concurrency: int = 32) -> float:
    """Start `count` chain orchestrations and wait until the hub has finished them all."""
    started = time.perf_counter()
    queue = iter(range(count))
    async with aiohttp.ClientSession() as session:
        async def worker():
            for _ in queue:
                async with session.post(f"{base}{WEBHOOKS}/orchestrators/chain") as r:
                    assert r.status == 202, await r.text()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        while True:
            async with session.get(f"{base}/_devhost/api/instances?status=Completed&top=1") as r:
                if (await r.json())["total"] >= count:
                    break
            await asyncio.sleep(0.5)
    return time.perf_counter() - started


def http_ms(url: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        urllib.request.urlopen(url, timeout=60).read()
        out.append((time.perf_counter() - t) * 1000)
    return out


def line(label: str, values: list[float]) -> str:
    return (f"{label:<52} median {statistics.median(values):7.1f} ms   min {min(values):7.1f}"
            f"   max {max(values):7.1f}   (n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--fan-out", type=int, default=100)
    parser.add_argument("--loads", type=int, default=7, help="page loads per figure")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        flaky = Path(tmp) / "flaky"
        flaky.mkdir()
        host = DevhostProcess(APPS / "patterns", Path(tmp) / "hub.sqlite", {"FLAKY_DIR": str(flaky)})
        host.start()
        try:
            seconds = asyncio.run(fill(host.base, args.instances))
            r = host.request("POST", "/api/orchestrators/fan_out", str(args.fan_out),
                             {"Content-Type": "application/json"})
            big = r.json()["id"]
            while host.request("GET", f"{WEBHOOKS}/instances/{big}").status != 200:
                time.sleep(0.05)
            tl = host.request("GET", f"/_devhost/api/instances/{big}/timeline").json()
            rendered = len(host.request("GET", f"{WEBHOOKS}/instances/{big}?showHistory=true")
                           .json()["historyEvents"])
            total = host.request("GET", "/_devhost/api/instances?top=1").json()["total"]
            print(f"hub: {total:,} instances (filled in {seconds:.1f} s); timeline instance: "
                  f"{tl['events']} stored history events ({rendered} in the management API's "
                  f"history), {len(tl['rows'])} bars")

            print(line("HTTP  GET /_devhost/api/instances?top=25",
                       http_ms(f"{host.base}/_devhost/api/instances?top=25", 20)))
            print(line("HTTP  GET .../instances?name=chain&status=Completed&page=100",
                       http_ms(f"{host.base}/_devhost/api/instances?name=chain&status=Completed"
                               "&page=100", 20)))
            print(line("HTTP  GET /_devhost/api/instances/{id}/timeline",
                       http_ms(f"{host.base}/_devhost/api/instances/{big}/timeline", 20)))
            print(line("HTTP  GET /_devhost/api/changes?since=<now>",
                       http_ms(f"{host.base}/_devhost/api/changes?since={time.time()}", 20)))

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

                def first_frame(url: str, condition: str) -> float:
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    page = context.new_page()
                    page.goto(url, wait_until="commit")
                    ms = page.wait_for_function(f"() => ({condition}) && performance.now()",
                                                polling="raf", timeout=60_000).json_value()
                    context.close()
                    return ms

                shells, lists, timelines = [], [], []
                for _ in range(args.loads):
                    shells.append(first_frame(f"{host.base}/_devhost/#/instances",
                                              "document.querySelector('main')"))
                    lists.append(first_frame(f"{host.base}/_devhost/#/instances",
                                             "document.querySelectorAll('tbody tr').length === 25"))
                    timelines.append(first_frame(
                        f"{host.base}/_devhost/#/instances/{big}",
                        f"document.querySelectorAll('.tl-rows > li').length === {len(tl['rows'])}"))
                browser.close()
            print(line("baseline  page shell painted (index.html, no data)", shells))
            print(line(f"page  list, first paint of 25 rows ({total:,} in the hub)", lists))
            print(line(f"page  timeline, first paint of {len(tl['rows'])} bars "
                       f"({tl['events']} events)", timelines))
        finally:
            host.kill()


if __name__ == "__main__":
    main()
