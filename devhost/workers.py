"""devhost's extra Python worker processes (FUNCTIONS_WORKER_PROCESS_COUNT = N >= 2).

As in Azure, where the Functions host spreads invocations over N Python worker processes:
devhost's own process stays worker #1 (HTTP, MCP and timer triggers need its loop and its
in-process SDK-client answers), and N-1 `devhost.worker` processes take the invocations sent
here, each to the one with the least in flight. They do not share the GIL with devhost's event
loop and SQLite commits, which is what caps one process's throughput.

A worker that dies fails its in-flight calls with WorkerDied (the invoker re-runs an activity,
the engine retries an episode or batch as any failure of its own) and is started again.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from . import wire
from .errors import DevhostError

log = logging.getLogger("devhost.workers")
START_TIMEOUT_SECONDS = 120
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class WorkerDied(Exception):
    """The worker running an invocation exited before it answered."""


class _Worker:
    def __init__(self, number: int):
        self.number = number
        self.proc: subprocess.Popen | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.pid: int | None = None

    def __str__(self) -> str:
        return f"worker #{self.number} (pid {self.pid})"


class WorkerPool:
    def __init__(self, count: int, app_dir: Path, threads: int, verbose: bool):
        self.app_dir, self.threads, self.verbose = app_dir, threads, verbose
        self.workers = [_Worker(n) for n in range(2, count + 1)]
        self._ids = itertools.count(1)
        self._ready: list[_Worker] = []
        self._available: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()
        self.closing = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> "WorkerPool":
        """Start every worker and wait until each has loaded the app."""
        self._available = asyncio.Event()
        results = await asyncio.gather(*(self._start(w) for w in self.workers),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            self.close()
            raise DevhostError(f"a Python worker process did not start: {failed[0]}")
        log.info("%d Python worker processes ready (FUNCTIONS_WORKER_PROCESS_COUNT=%d): pids %s",
                 len(self.workers), len(self.workers) + 1, ", ".join(str(w.pid) for w in
                                                                    self.workers))
        return self

    async def _start(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT,
                                                           os.environ.get("PYTHONPATH")]))}
        argv = [sys.executable, "-m", "devhost.worker", "--app", str(self.app_dir),
                "--fd", str(theirs.fileno()), "--parent", str(os.getpid()),
                "--threads", str(self.threads)] + (["--verbose"] if self.verbose else [])
        try:
            worker.proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], env=env,
                                           cwd=self.app_dir)
        finally:
            theirs.close()
        worker.pid = worker.proc.pid
        reader, worker.writer = await asyncio.open_connection(sock=ours)
        try:
            hello = await asyncio.wait_for(wire.read(reader), START_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            hello = None
        if not hello or "ready" not in hello[0]:
            worker.proc.kill()
            raise DevhostError(f"{worker} did not load the app (exit code "
                               f"{worker.proc.poll()}; its output is above)")
        self._ready.append(worker)
        self._available.set()
        self._spawn(self._read(worker, reader))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Stop every worker (devhost is stopping): end of stream, then SIGTERM and SIGKILL."""
        self.closing = True
        for worker in self.workers:
            if worker.writer is not None:
                worker.writer.close()
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(2)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()

    # -- calls --------------------------------------------------------------------------------

    async def call(self, message: dict, body: str | None = None) -> tuple[dict, str | None]:
        """Send one invocation to the least busy worker; its answer header and body
        (WorkerDied if the worker died first)."""
        while not self._ready:
            if self.closing:  # the work stays queued in the store for the next start
                raise asyncio.CancelledError()
            self._available.clear()
            await self._available.wait()
        worker = min(self._ready, key=lambda w: len(w.pending))
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        worker.pending[call_id] = future
        worker.writer.write(wire.encode({**message, "id": call_id}, body))
        try:
            answer = await future
        except asyncio.CancelledError:  # functionTimeout: an async activity can be cancelled
            if worker.pending.pop(call_id, None) is not None and not worker.writer.is_closing():
                worker.writer.write(wire.encode({"cancel": call_id}))
            raise
        if "broken" in answer[0]:
            raise RuntimeError(f"{worker}: {answer[0]['broken']}")
        return answer

    async def _read(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        while (answer := await wire.read(reader)) is not None:
            future = worker.pending.pop(answer[0].get("id"), None)
            if future is not None and not future.done():
                future.set_result(answer)
        self._ready.remove(worker)
        worker.writer.close()
        lost, worker.pending = worker.pending, {}
        code = await asyncio.get_running_loop().run_in_executor(None, worker.proc.wait)
        for future in lost.values():
            if future.done():
                continue
            if self.closing:  # not lost: still queued in the store for the next start
                future.cancel()
            else:
                future.set_exception(WorkerDied(f"{worker} exited with code {code}"))
        if self.closing:
            return
        log.warning("%s exited with code %s with %d invocation(s) in flight: starting it again",
                    worker, code, len(lost))
        while not self.closing:
            try:
                await self._start(worker)
                return
            except Exception as exc:
                log.error("%s could not be started again (%s): retrying in 1 s", worker, exc)
                await asyncio.sleep(1)
