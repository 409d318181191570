"""`devhost start`: load the app, open the task hub, serve until Ctrl-C."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from .config import load_host_config
from .engine import Engine
from .errors import DevhostError, ListenError
from .http import PARSER_LIMITS, HostState, build_app
from .loader import apply_local_settings, import_app, index_app
from .store import Store
from .timer_triggers import TimerTriggers
from .workers import WorkerPool


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devhost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="run a Function app locally")
    start.add_argument("--app", default=".", help="the app folder (host.json, function_app.py)")
    start.add_argument("--port", type=int, default=int(os.environ.get("DEVHOST_PORT", 7071)))
    start.add_argument("--host", default=os.environ.get("DEVHOST_HOST", "127.0.0.1"))
    start.add_argument("--db", help="task hub SQLite file (default: APP/.devhost/<hub>.sqlite)")
    start.add_argument("--verbose", action="store_true",
                       default=os.environ.get("DEVHOST_VERBOSE", "").lower() in ("1", "true"),
                       help="log every dispatch and successful invocation (DEVHOST_VERBOSE=1)")
    return parser.parse_args(argv)


def describe_functions(host: HostState, base_url: str) -> str:
    """The function list `func start` prints."""
    index = host.engine.index
    lines = ["Functions:", ""]
    prefix = f"/{host.route_prefix}" if host.route_prefix else ""
    for _, f in sorted(host.triggers, key=lambda t: t[1].name.lower()):
        methods = ",".join(f.methods) if f.methods else "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS"
        lines.append(f"        {f.name}: [{methods}] {base_url}{prefix}/{f.route}")
    for kind, names in (("orchestrationTrigger", [n for n, _ in index.orchestrators.values()]),
                        ("activityTrigger", [a.name for a in index.activities.values()]),
                        ("entityTrigger", [n for n, _ in index.entities.values()])):
        for name in sorted(names, key=str.lower):
            lines.append(f"        {name}: {kind}")
    for timer in index.timers:
        lines.append(f"        {timer.name}: timerTrigger ({timer.schedule})")
    for tool in index.mcp_tools:
        lines.append(f"        {tool.name}: mcpToolTrigger (tool '{tool.binding['toolName']}')")
    if index.mcp_tools:
        lines.append(f"\n        MCP server endpoint: {base_url}/runtime/webhooks/mcp"
                     f"\n        MCP server legacy SSE endpoint: {base_url}/runtime/webhooks/mcp/sse")
    for name, kind in index.unsupported:
        lines.append(f"        {name}: {kind} (not run by devhost)")
    return "\n".join(lines)


# The event loop releases the GIL in every SQLite call; a pool thread running Python then
# keeps it up to the switch interval (5 ms by default) before the loop gets it back.
GIL_SWITCH_SECONDS = 0.0005
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def serve(args: argparse.Namespace) -> None:
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    app_dir = Path(args.app).resolve()
    # --db is a path the person typed in their shell: resolve it before the import below
    # makes the app folder the working directory
    given_db = Path(args.db).resolve() if args.db else None
    apply_local_settings(app_dir)
    config = load_host_config(app_dir)
    index = index_app(import_app(app_dir))
    db_path = given_db or app_dir / ".devhost" / f"{config.hub_name}.sqlite"
    os.environ["DEVHOST_TASK_HUB_PATH"] = str(db_path)  # core/journal.py keeps its file beside it
    store = Store(db_path)
    engine = Engine(store, index, config)
    function_keys = [k.strip() for k in os.environ.get("DEVHOST_FUNCTION_KEYS", "").split(",")]
    host = HostState(engine, config.hub_name, config.route_prefix, args.port, args.host,
                     os.environ.get("DEVHOST_MASTER_KEY"), function_keys)
    timers = TimerTriggers(engine)  # schedules are checked before anything is served
    if config.worker_process_count > 1:  # ready before anything is served or re-run
        pool = await WorkerPool(config.worker_process_count, app_dir, config.max_activities,
                                args.verbose).start()
        engine.invoker.attach_workers(pool, config.worker_handles)
    runner = web.AppRunner(build_app(host), access_log=None, handle_signals=False,
                           **PARSER_LIMITS)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        engine.invoker.shutdown()
        raise ListenError(f"cannot listen on {args.host}:{args.port}: "
                          f"{exc.strerror or exc}") from exc
    await engine.start()
    timers.start()
    shown_host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
    base_url = f"http://{shown_host}:{args.port}"
    print(describe_functions(host, base_url), flush=True)
    print(f"\nTask hub '{config.hub_name}' in {db_path}", flush=True)
    print(f"Dashboard: {base_url}/_devhost/", flush=True)
    print("Keys: " + ("enforced for function/admin routes" if host.keys_enforced
                      else "not configured (every route is open, like Core Tools)"), flush=True)
    print("devhost is ready. Ctrl-C stops it.", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("devhost: stopping (in-flight work finishes or resumes at the next start)", flush=True)
    await timers.stop()
    await engine.stop()
    await runner.cleanup()
    store.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=LOG_FORMAT)
    try:
        asyncio.run(serve(args))
    except DevhostError as exc:
        print(f"devhost: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    # Activities still running in worker threads must not keep the process alive: their work
    # items are still queued in the store and run again at the next start.
    sys.stdout.flush()
    os._exit(0)
