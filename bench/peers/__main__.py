"""`python -m bench.peers`: issue 13's table from one run on this machine.

For each system in turn (fresh processes, fresh files, a fresh fake model): sequential turns on
short threads (p50, p99), `--concurrency` threads at once (turns/s, CPU per turn), and one thread
taken to `--growth` turns (the per-turn cost at its end against its start). Then, for this app, a
timeline of one turn read from the task hub, and with `--profile` a py-spy profile of devhost
under the concurrent load (not during the measured phases).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.peers import load, systems, timeline

DEFAULT_PEER_VENV = os.environ.get("BENCH_PEER_VENV", "/work/bench-venv")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ensure_peer_venv(venv: Path) -> str:
    """The peers' interpreter, creating their venv from requirements-bench.txt if missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the peers' venv {venv} (requirements-bench.txt) ...", flush=True)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)],
                       check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r",
                        str(systems.ROOT / "requirements-bench.txt")], check=True)
    return str(python)


def measure(chosen: list[systems.System], args, app_python: str, peer_python: str,
            folder: Path) -> list[dict]:
    """Start every chosen system (each with its own fresh fake model), drive them interleaved,
    then read the app's task hub and (with --profile) record one system under load."""
    with contextlib.ExitStack() as stack:
        started = []
        for system in chosen:
            place = folder / system.key
            place.mkdir(parents=True)
            model, base_url = systems.start_fake_model(app_python, place)
            stack.callback(model.stop)
            server, base, hub = systems.start_system(system, app_python, peer_python, place,
                                                     base_url)
            stack.callback(server.stop)
            started.append((system, model, server, base, hub))
        cpu: dict[str, list[float]] = {s.key: [0.0, 0.0, 0.0] for s in chosen}
        marks: dict[str, tuple] = {}
        procs = {s.key: (server.pid, model.pid) for s, model, server, _, _ in started}

        async def sample(key: str, when: str) -> None:
            server_pid, model_pid = procs[key]
            now = (systems.cpu_seconds(server_pid), systems.cpu_seconds(model_pid),
                   sum(os.times()[:2]))
            if when == "start":
                marks[key] = now
            else:
                for i, (a, b) in enumerate(zip(marks[key], now)):
                    cpu[key][i] += b - a

        async def run() -> list[load.Driver]:
            async with contextlib.AsyncExitStack() as clients:
                drivers = [await clients.enter_async_context(load.Driver(
                    s.key, base, args.concurrency, sample)) for s, _, _, base, _ in started]
                await load.run_interleaved(
                    drivers, latency_threads=args.latency_threads,
                    latency_rounds=args.latency_rounds, concurrent_turns=args.concurrent_turns,
                    growth_turns=args.growth)
                return drivers

        figures = []
        for driver, (system, _, server, base, hub) in zip(asyncio.run(run()), started):
            results = driver.results
            turns = len(results.concurrent)
            figure = {
                "system": system.key, "latency": [r.ms for r in results.latency],
                "concurrent": [r.ms for r in results.concurrent],
                "turns_per_second": turns / results.concurrent_seconds,
                "growth": [r.ms for r in results.growth],
                "growth_messages_seen": results.growth[-1].messages_seen if results.growth else 0,
                "cpu_ms_per_turn": {name: value * 1000 / turns for name, value in
                                    zip(("server", "model", "client"), cpu[system.key])},
            }
            if hub is not None:
                figure["timeline"] = timeline.turn_timeline(hub, results.latency)
                figure["timeline_loaded"] = timeline.turn_timeline(hub, results.concurrent)
            if args.profile and system.key == args.profile_system:
                figure["profile"] = profile(server.pid, base, args)
            figures.append(figure)
        return figures


def profile(pid: int, base: str, args) -> dict:
    """py-spy on devhost while the concurrent load runs again (outside the measured phases)."""
    py_spy = str(Path(args.peer_venv) / "bin" / "py-spy")
    out = Path(args.profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", "250", "--format",
                            "raw", "--output", str(out), "--nonblocking", "--threads",
                            *(["--idle"] if args.profile_idle else [])],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.0)  # py-spy attaches
    rate = asyncio.run(load.drive(base, args.concurrency, args.profile_turns))
    spy.send_signal(2)
    log = spy.communicate(timeout=60)[0].decode(errors="replace")
    if spy.returncode not in (0, None) and not out.exists():
        raise RuntimeError(f"py-spy failed: {log[-2000:]}")
    return {"file": str(out), "turns_per_second": rate}


def ms(value: float) -> str:
    return f"{value:.1f} ms"


def report(all_figures: list[dict], versions: dict, args, load_before: float) -> str:
    names = {"langgraph": versions.get("langgraph", "?"), "dbos": versions.get("dbos", "?")}
    labels = {key: s.label.format(**names) for key, s in systems.SYSTEMS.items()}
    base = next((f for f in all_figures if f["system"] == "baseline"), None)
    base_p50 = pct(base["latency"], .5) if base else None
    lines = [f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; p50/p99 over "
             f"{args.latency_threads * args.latency_rounds} sequential turns "
             f"({args.latency_threads} threads, turns {2}-{args.latency_rounds + 1}); turns/s at "
             f"{args.concurrency} concurrent threads x {args.concurrent_turns} turns", "",
             "| system | p50 | over a no-durability baseline | p99 | turns/s |",
             "|---|---|---|---|---|"]
    for f in all_figures:
        p50 = pct(f["latency"], .5)
        over = "—" if f["system"] == "baseline" or base_p50 is None else \
            f"+{p50 - base_p50:.1f} ms"
        if f["system"] == "app":
            over = f"**{over}**"
        lines.append(f"| {labels[f['system']]} | {ms(p50)} | {over} | "
                     f"{ms(pct(f['latency'], .99))} | {f['turns_per_second']:.0f} |")
    lines += ["", f"per-turn cost from turn 1 to turn {args.growth} on one thread (median of the first "
                  "10 turns -> median of the last 10; then the same minus the baseline's, i.e. the "
                  "growth of the durability overhead alone):"]
    base_growth = base["growth"] if base and len(base["growth"]) >= 20 else None
    for f in all_figures:
        g = f["growth"]
        if len(g) < 20:
            continue
        head, tail = statistics.median(g[:10]), statistics.median(g[-10:])
        line = (f"  {labels[f['system']].strip('*'):50} {head:6.1f} -> {tail:6.1f} ms "
                f"({tail / head:5.2f}x)")
        if base_growth and f["system"] != "baseline":
            over_head = head - statistics.median(base_growth[:10])
            over_tail = tail - statistics.median(base_growth[-10:])
            line += f"   over baseline {over_head:+6.1f} -> {over_tail:+6.1f} ms"
        line += f"   [model sent {f['growth_messages_seen']} messages at turn {len(g)}]"
        lines.append(line)
    lines += ["", f"under the {args.concurrency}-thread load: latency p50 / p99, and CPU per "
                  "turn (server process tree / fake model / load generator):"]
    for f in all_figures:
        c = f["cpu_ms_per_turn"]
        lines.append(f"  {labels[f['system']].strip('*'):55} {ms(pct(f['concurrent'], .5)):>9}"
                     f" / {ms(pct(f['concurrent'], .99)):>9}   CPU {c['server']:5.1f} / "
                     f"{c['model']:4.1f} / {c['client']:4.1f} ms")
    lines += ["", f"machine load average (1 min) at the start and the end: {load_before:.1f}, "
                  f"{os.getloadavg()[0]:.1f} (2 cores: other work inflates every system's "
                  "latency alike, measured interleaved; CPU per turn does not depend on it)"]
    app = next((f for f in all_figures if f["system"] == "app"), None)
    if app and app.get("timeline"):
        lines += ["", timeline.describe(app["timeline"], "one sequential turn")]
    if app and app.get("timeline_loaded"):
        lines += ["", timeline.describe(app["timeline_loaded"],
                                        f"one turn under the {args.concurrency}-thread load")]
    for f in all_figures:
        if f.get("profile"):
            lines += ["", f"py-spy profile of {f['system']} under the same {args.concurrency}-thread "
                          f"load ({f['profile']['turns_per_second']:.0f} turns/s while sampled): "
                          f"{f['profile']['file']}  (python -m bench.peers.profile_summary FILE)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="baseline,langgraph,dbos,app",
                        help="comma-separated, from: " + ", ".join(systems.SYSTEMS))
    parser.add_argument("--latency-threads", type=int, default=20)
    parser.add_argument("--latency-rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--concurrent-turns", type=int, default=10)
    parser.add_argument("--growth", type=int, default=300)
    parser.add_argument("--peer-venv", default=DEFAULT_PEER_VENV,
                        help="the peers' venv (created from requirements-bench.txt if missing)")
    parser.add_argument("--profile", help="py-spy raw (collapsed) profile of devhost to write")
    parser.add_argument("--profile-system", default="app", help="which system py-spy records")
    parser.add_argument("--profile-idle", action="store_true", help="py-spy --idle")
    parser.add_argument("--profile-turns", type=int, default=30)
    parser.add_argument("--json", help="also write the raw figures here")
    args = parser.parse_args()

    chosen = [systems.SYSTEMS[k.strip()] for k in args.systems.split(",") if k.strip()]
    peer_python = ensure_peer_venv(Path(args.peer_venv)) if any(s.peer for s in chosen) \
        else sys.executable
    versions = systems.peer_versions(peer_python) if peer_python != sys.executable else {}
    started, load_before = time.time(), os.getloadavg()[0]
    print("measuring " + ", ".join(s.key for s in chosen) + " (interleaved) ...", file=sys.stderr,
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        figures = measure(chosen, args, sys.executable, peer_python, Path(tmp))
    print(report(figures, versions, args, load_before))
    print(f"\n(one run, {time.time() - started:.0f} s; peers: "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")")
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
