"""One extra Python worker process (FUNCTIONS_WORKER_PROCESS_COUNT >= 2): `python -m
devhost.worker --app DIR --fd N`, started by workers.py.

It loads the same app with the same loader as devhost, and runs what devhost sends it on the
inherited socket: activities (a sync one in a pool sized like devhost's activity pool, an async
one on this loop) and, when devhost sends them, orchestrator episodes and entity batches. It
answers with results or failure details; devhost writes the console lines and keeps
functionTimeout. It exits when devhost goes away: end of stream on the socket, or (Linux) the
parent-death signal, so a SIGKILLed devhost leaves no worker behind.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from . import sdk_speedups, wire
from .config import HostConfig
from .invoker import Invoker, failure_details, orchestrator_outcome
from .loader import apply_local_settings, import_app, index_app

log = logging.getLogger("devhost.worker")
PR_SET_PDEATHSIG = 1
OK = {"ok": True}


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when devhost dies (Linux), even if devhost had no time to say so."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: end of stream on the socket still stops us
        pass
    if os.getppid() != parent_pid:  # devhost died before the prctl took effect
        os._exit(1)


class Worker:
    def __init__(self, invoker: Invoker):
        self.invoker = invoker
        self.tasks: dict[int, asyncio.Task] = {}

    async def serve(self, sock: socket.socket) -> None:
        reader, self.writer = await asyncio.open_connection(sock=sock)
        self.writer.write(wire.encode({"ready": os.getpid()}))
        while (frame := await wire.read(reader)) is not None:
            message, body = frame
            if "cancel" in message:  # functionTimeout expired in devhost
                task = self.tasks.get(message["cancel"])
                if task is not None:
                    task.cancel()
                continue
            task = asyncio.ensure_future(self.answer(message, body))
            self.tasks[message["id"]] = task
            task.add_done_callback(lambda _, i=message["id"]: self.tasks.pop(i, None))

    async def answer(self, message: dict, body: str | None) -> None:
        reply_body = None
        try:
            reply, reply_body = await self.run(message, body)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a failure of this worker's own, not of the user's code
            log.exception("worker failed to run %s '%s'", message.get("kind"),
                          message.get("name"))
            reply = {"broken": f"{type(exc).__name__}: {exc}"}
        self.writer.write(wire.encode({**reply, "id": message["id"]}, reply_body))

    async def run(self, message: dict, body: str | None) -> tuple[dict, str | None]:
        """(answer header, answer body): `ok` with the text as body, or the failure."""
        kind, name, index, invoker = (message["kind"], message["name"], self.invoker.index,
                                      self.invoker)
        if kind == "activity":
            try:
                return OK, await invoker.call_activity_here(
                    index.activity(name), body, message["client"], message["invocation_id"],
                    None)
            except Exception as exc:  # user code: devhost turns it into TaskFailed
                return {"failure": failure_details(exc)}, None
        if kind == "orchestrator":
            returned, raised = await invoker.run_handle(
                invoker.orchestrator_pool, index.orchestrator(name)[1], body, message["size"],
                f"orchestrator '{name}'")
            if raised is None:
                return OK, returned
            result, cause_traceback = orchestrator_outcome(returned, raised)
            return {"result": result, "traceback": cause_traceback}, None
        if kind == "entity":
            returned, raised = await invoker.run_handle(
                invoker.entity_pool, index.entity(name)[1], body, message["size"],
                f"entity '{name}'")
            if raised is None:
                return OK, returned
            return {"failure": failure_details(raised)}, None
        raise ValueError(f"unknown invocation kind {kind!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devhost.worker")
    parser.add_argument("--app", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches devhost, which stops us
    from .cli import GIL_SWITCH_SECONDS, LOG_FORMAT
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT)
    sock = socket.socket(fileno=args.fd)
    app_dir = Path(args.app)
    apply_local_settings(app_dir)
    index = index_app(import_app(app_dir))
    sdk_speedups.install()
    # functionTimeout is devhost's to enforce: none here
    invoker = Invoker(index, HostConfig(max_activities=args.threads, max_orchestrators=args.threads,
                                        max_entities=args.threads))
    try:
        asyncio.run(Worker(invoker).serve(sock))
    except BaseException:  # devhost reports the worker's exit; say why here
        log.exception("worker stopped")
    finally:
        sys.stdout.flush()
        os._exit(0)  # activity threads still running must not keep a worker of a gone host


if __name__ == "__main__":
    main()
