"""Shared fixtures: real devhost processes on loopback ports, each with its own SQLite file."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevhostProcess:
    """`python -m devhost start` in a subprocess; restartable on the same database."""

    def __init__(self, app_dir: Path, db: Path, env: dict | None = None, port: int | None = None):
        self.app_dir, self.db = Path(app_dir), Path(db)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.db.with_suffix(".log")

    def start(self, timeout: float = 60) -> "DevhostProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devhost", "start", "--app", str(self.app_dir),
             "--port", str(self.port), "--db", str(self.db)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"devhost exited with {self.proc.returncode}:\n{self.log()}")
            try:
                urllib.request.urlopen(self.base + "/admin/host/status", timeout=1).read()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"devhost did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGINT (Ctrl-C): the clean shutdown path."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else 0

    # -- tiny HTTP client (urllib: no dependency on our own code) ------------------------------
    def request(self, method: str, path: str, body: bytes | str | dict | list | None = None,
                headers: dict | None = None, timeout: float = 60):
        data = body
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        url = path if path.startswith("http") else self.base + path
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, dict(e.headers), e.read())


class Response:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.body = status, body
        self.headers = {k.lower(): v for k, v in headers.items()}

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:300]!r}>"


def wait_for_status(host: DevhostProcess, instance_id: str, statuses=("Completed", "Failed",
                    "Terminated"), timeout: float = 30, query: str = "") -> dict:
    deadline = time.time() + timeout
    doc = None
    while time.time() < deadline:
        r = host.request("GET", f"/runtime/webhooks/durabletask/instances/{instance_id}{query}")
        doc = r.json() if r.status in (200, 202) else None
        if doc and doc["runtimeStatus"] in statuses:
            return doc
        time.sleep(0.02)
    raise AssertionError(f"instance {instance_id} did not reach {statuses}: {doc}")


@pytest.fixture
def devhost_factory(tmp_path):
    started: list[DevhostProcess] = []

    def make(app: str | Path, env: dict | None = None, db: Path | None = None,
             port: int | None = None) -> DevhostProcess:
        app_dir = APPS / app if isinstance(app, str) and not Path(app).is_absolute() else Path(app)
        host = DevhostProcess(app_dir, db or tmp_path / f"hub{len(started)}.sqlite", env, port)
        started.append(host)
        return host

    yield make
    for host in started:
        host.kill()


@pytest.fixture(scope="module")
def module_patterns_host(tmp_path_factory):
    """The patterns app on one task hub shared by a whole test module (faster than per test)."""
    root = tmp_path_factory.mktemp("patterns")
    flaky = root / "flaky"
    flaky.mkdir()
    process = DevhostProcess(APPS / "patterns", root / "hub.sqlite", env={"FLAKY_DIR": str(flaky)})
    process.start()
    yield process
    process.kill()


@pytest.fixture
def patterns_host(devhost_factory, tmp_path):
    """The patterns app on a fresh task hub."""
    flaky_dir = tmp_path / "flaky"
    flaky_dir.mkdir()
    host = devhost_factory("patterns", env={"FLAKY_DIR": str(flaky_dir)})
    return host.start()


# -- the agent app (repo root) against a fake OpenAI-compatible server ---------------------------

def app_env(llm: FakeOpenAI, **extra) -> dict:
    return {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "test",
            "OPENAI_MODEL": "fake-model", "LLM_RETRY_BASE_SECONDS": "0.01",
            "LLM_RETRY_MAX_WAIT_SECONDS": "0.05", **extra}


@pytest.fixture(scope="module")
def llm():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def agent_host(llm, tmp_path_factory):
    host = DevhostProcess(ROOT, tmp_path_factory.mktemp("agent") / "hub.sqlite", app_env(llm))
    host.start()
    yield host
    host.kill()


@pytest.fixture
def fresh_llm(llm):
    """The module's fake model with no scripted answers and no recorded requests."""
    llm.reset()
    return llm


def thread_state(host: DevhostProcess, thread_id: str):
    key = thread_id.rsplit("@", 1)[1]
    r = host.request("GET", f"/runtime/webhooks/durabletask/entities/dafx-mydurableagent/{key}")
    return r.json() if r.status == 200 else None


