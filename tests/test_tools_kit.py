"""Test-only tools for tool-loop and crash tests, loaded into a devhost app with the setting
`TOOLS_MODULES=tests.test_tools_kit` (never shipped: tests/ is not deployed).

Every execution is recorded in TOOLS_DATA_DIR/kit_runs.jsonl (`kit_runs()` reads it), so a
test can assert "ran exactly once" or "ran again after the crash" from the side effect:
- `kit_wait(seconds, label)`: records `start`, sleeps, records `end` (a tool to crash in);
- `kit_fail(message)`: always raises (2 attempts, 100 ms apart);
- `kit_flaky(failures)`: raises on its first `failures` executions per call id, then answers;
- `kit_echo(value)`: returns what it got.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.tools import tool


def _log_path() -> Path:
    from tools.orders import data_dir

    return data_dir() / "kit_runs.jsonl"


def _record(tool_name: str, event: str, key: str, **extra) -> None:
    with open(_log_path(), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"tool": tool_name, "event": event, "key": key, "pid": os.getpid(),
                                 "at": time.time(), **extra}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def kit_runs(tool_name: str | None = None, data_dir: str | Path | None = None) -> list[dict]:
    """The recorded executions (of one kit tool), oldest first."""
    path = Path(data_dir) / "kit_runs.jsonl" if data_dir else _log_path()
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if tool_name is None or r["tool"] == tool_name]


@tool(timeout_seconds=300, max_attempts=1)
async def kit_wait(seconds: float, label: str = "", idempotency_key: str = "") -> dict:
    """Wait this many seconds, then answer (records its start and end).

    Args:
        seconds: how long to wait.
        label: any text, echoed back.
    """
    import asyncio

    _record("kit_wait", "start", idempotency_key, label=label)
    await asyncio.sleep(seconds)
    _record("kit_wait", "end", idempotency_key, label=label)
    return {"waited": seconds, "label": label}


@tool(max_attempts=2, first_retry_ms=100)
def kit_fail(message: str = "boom", idempotency_key: str = "") -> dict:
    """Always fails with this message.

    Args:
        message: the error text.
    """
    _record("kit_fail", "run", idempotency_key)
    raise RuntimeError(message)


@tool(max_attempts=3, first_retry_ms=100)
def kit_flaky(failures: int = 1, idempotency_key: str = "") -> dict:
    """Fails on its first executions for a call, then succeeds.

    Args:
        failures: how many executions of one call fail before one succeeds.
    """
    done = sum(1 for r in kit_runs("kit_flaky") if r["key"] == idempotency_key)
    _record("kit_flaky", "run", idempotency_key)
    if done < failures:
        raise RuntimeError(f"flaky failure {done + 1} of {failures}")
    return {"succeeded_after": done}


@tool
def kit_echo(value: Any = None) -> dict:
    """Return the value given.

    Args:
        value: anything JSON.
    """
    _record("kit_echo", "run", "")
    return {"value": value}


def test_tools_modules_setting_adds_these_tools_to_the_app(tmp_path):
    script = ("import function_app, json; print(json.dumps(sorted(f.get_function_name() for f in "
              "function_app.app.get_functions() if f.get_trigger().type == 'activityTrigger')))")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TOOLS_MODULES": "tests.test_tools_kit", "TOOLS_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    names = json.loads(out.strip().splitlines()[-1])
    assert {"kit_wait", "kit_fail", "kit_flaky", "kit_echo", "refund_order"} <= set(names)


def test_the_kit_records_every_execution(tmp_path, monkeypatch):
    import asyncio

    import pytest

    from activities.errors import ToolError
    from activities.tools import run_tool

    monkeypatch.setenv("TOOLS_DATA_DIR", str(tmp_path))

    def call(name, arguments, call_id="k1"):
        return asyncio.run(run_tool(name, {"call_id": call_id, "arguments": arguments}))

    assert call("kit_wait", {"seconds": 0.01, "label": "x"}) == {"waited": 0.01, "label": "x"}
    assert [r["event"] for r in kit_runs("kit_wait")] == ["start", "end"]
    with pytest.raises(ToolError, match="raised RuntimeError: flaky failure 1 of 1"):
        call("kit_flaky", {"failures": 1})
    assert call("kit_flaky", {"failures": 1}) == {"succeeded_after": 1}
    with pytest.raises(ToolError, match=r"\[tool_failed:500\] tool 'kit_fail' raised RuntimeError: no"):
        call("kit_fail", {"message": "no"})
    assert len(kit_runs("kit_flaky")) == 2 and len(kit_runs("kit_fail", tmp_path)) == 1
