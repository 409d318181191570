"""Starting and stopping what is measured: the fake model, and each system's server process.

Every system is a separate process on loopback, started fresh on empty files, with the same
environment pointing the openai client at its own fresh fake model."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class System:
    key: str
    label: str
    peer: bool            # runs in the peers' venv
    module: str = ""      # python -m <module> (peers); devhost otherwise
    variant: str = ""


SYSTEMS = {s.key: s for s in [
    System("baseline", "baseline (same HTTP front, history in a dict)", True,
           "bench.peers.baseline_server"),
    System("langgraph", "LangGraph {langgraph} + AsyncSqliteSaver", True,
           "bench.peers.langgraph_server", "async"),
    System("langgraph-sync", "LangGraph {langgraph} + SqliteSaver (sync, thread pool)", True,
           "bench.peers.langgraph_server", "sync"),
    System("dbos", "DBOS {dbos} (SQLite, WAL)", True, "bench.peers.dbos_server"),
    System("app", "**this app on devhost**", False),
    System("app-w2", "this app on devhost, FUNCTIONS_WORKER_PROCESS_COUNT=2 (activities in "
           "the worker)", False, variant="2"),
    System("app-w2h", "this app on devhost, FUNCTIONS_WORKER_PROCESS_COUNT=2 + "
           "DEVHOST_WORKER_HANDLES=1 (activities, episodes, entity batches in the worker)",
           False, variant="2h"),
]}


class Process:
    """A child process with its log in the run's folder; killed (SIGKILL) on stop."""

    def __init__(self, argv: list[str], env: dict, log: Path, ready_url: str):
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited with {self.proc.returncode}:\n"
                                   + log.read_text(errors="replace")[-3000:])
            try:
                urllib.request.urlopen(ready_url, timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{argv[:4]} did not answer {ready_url} in 90 s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def start_fake_model(app_python: str, folder: Path) -> tuple[Process, str]:
    port = free_port()
    proc = Process([app_python, str(ROOT / "tests" / "fake_openai.py"), "--port", str(port)],
                   {**os.environ, "PYTHONUNBUFFERED": "1"}, folder / "fake_model.log",
                   f"http://127.0.0.1:{port}/v1/models")
    return proc, f"http://127.0.0.1:{port}/v1"


def model_env(base_url: str) -> dict:
    """The app's own settings for a fake model (tests/conftest.py app_env), given to all."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import app_env
    return app_env(SimpleNamespace(base_url=base_url))


def start_system(system: System, app_python: str, peer_python: str, folder: Path,
                 base_url: str) -> tuple[Process, str, Path | None]:
    """(process, base URL, the app's task hub file or None)."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **model_env(base_url)}
    base = f"http://127.0.0.1:{port}"
    if system.peer:
        argv = [peer_python, "-m", system.module, "--port", str(port), "--data", str(folder),
                "--variant", system.variant]
        return Process(argv, env, folder / "server.log", base + "/health"), base, None
    hub = folder / "hub.sqlite"
    if system.variant:  # app-wN[h]: worker processes (devhost/workers.py)
        env["FUNCTIONS_WORKER_PROCESS_COUNT"] = system.variant.rstrip("h")
        env["DEVHOST_WORKER_HANDLES"] = "1" if system.variant.endswith("h") else "0"
    argv = [app_python, "-m", "devhost", "start", "--app", str(ROOT), "--port", str(port),
            "--db", str(hub)]
    return Process(argv, env, folder / "server.log", base + "/admin/host/status"), base, hub


def peer_versions(peer_python: str) -> dict:
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "('langgraph', 'langgraph-checkpoint-sqlite', 'langchain-openai', 'dbos', 'openai',"
            " 'aiohttp')}))")
    import json
    out = subprocess.run([peer_python, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        stats[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, []))
    return total
