"""Temporary proof for issue 13: compare the bookkeeping derived from history
(decide.bookkeeping) with the stored `engine_state`, at every episode and every rewind.

On when DEVHOST_CHECK_BOOKKEEPING names a file: one JSON line per comparison is appended to it
(`ok` true or false, and what differed). DEVHOST_RECORD_EPISODES names a second file that
receives, after each commit, the execution's full history, the SDK's actions and the stored
state (fixtures for tests/test_decide_bookkeeping.py are cut from it).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from . import protocol as p
from .decide import UNNUMBERED, Attempt, Bookkeeping, Effects

log = logging.getLogger("devhost.bookkeeping_check")
CHECK_ENV, RECORD_ENV = "DEVHOST_CHECK_BOOKKEEPING", "DEVHOST_RECORD_EPISODES"
AT = p.ActionType


def enabled() -> bool:
    return bool(os.environ.get(CHECK_ENV))


def stored_view(state: dict, actions: list[p.Action]) -> dict:
    """engine_state in the shape both sides share: actions_seen as a count of id-taking
    actions, retry records without the keys a re-scheduled attempt carries over from its
    timer, timers the current actions have not cancelled."""
    seen = sum(1 for a in actions[:state["actions_seen"]] if a.kind not in UNNUMBERED)
    return {"next_id": state["next_id"], "scheduled": seen,
            "retries": {k: {f: v for f, v in r.items() if f not in ("exhausted", "failed_task")}
                        for k, r in state["retries"].items()},
            "retry_timers": state["retry_timers"],
            "timers": {k: v for k, v in state["timers"].items()
                       if not (int(k) < len(actions) and actions[int(k)].is_canceled)}}


def derived_view(bk: Bookkeeping, actions: list[p.Action], index, cfg) -> dict:
    def record(attempt: Attempt) -> dict:
        action = actions[attempt.position]
        if action.kind == AT.CallActivityWithRetry:
            return {"kind": "activity", "name": index.activity(action.function_name).name,
                    "input": action.input, "attempt": attempt.number,
                    "options": action.retry_options}
        return {"kind": "orchestrator", "name": index.orchestrator(action.function_name)[0],
                "input": action.input, "attempt": attempt.number,
                "options": action.retry_options, "instance_id": action.instance_id,
                "version": action.version or cfg.default_version}

    return {"next_id": bk.next_id, "scheduled": bk.scheduled,
            "retries": {str(k): record(a) for k, a in bk.retries.items()},
            "retry_timers": {str(k): {**record(t.failed), "exhausted": t.exhausted,
                                      "failed_task": t.failed_task}
                             for k, t in bk.retry_timers.items()},
            "timers": {str(k): v for k, v in bk.timers.items() if not actions[k].is_canceled}}


def effects_view(fx: Effects, pending_timers: set[int]) -> dict:
    """Effects without the random entity request ids; cancellations as the timer rows they
    delete (a timer cancelled in an earlier episode has no row left)."""
    def unrandom(e: dict) -> dict:
        if e["EventType"] == p.EventType.EventSent:
            request = json.loads(e["Input"])
            request.pop("id", None)
            return {**e, "Input": request}
        return e

    return {"history": [unrandom(e) for e in fx.history], "activities": fx.activities,
            "timers": [(t, f.isoformat()) for t, f in fx.timers],
            "cancelled": sorted(set(fx.cancelled_timers) & pending_timers),
            "entity_ops": [{k: v for k, v in op.items() if k != "request_id"}
                           for op in fx.entity_ops],
            "children": fx.children, "failure": fx.failure}


def report(where: str, instance_id: str, stored: Any, derived: Any, **extra) -> bool:
    ok = stored == derived
    line: dict[str, Any] = {"where": where, "instance": instance_id, "ok": ok, **extra}
    if not ok:
        line.update(stored=stored, derived=derived)
        log.error("bookkeeping check failed at %s for '%s': stored %s, derived %s", where,
                  instance_id, stored, derived)
    with open(os.environ[CHECK_ENV], "a") as out:
        out.write(json.dumps(line, default=str) + "\n")
    return ok


def record_episode(instance_id: str, name: str, history: list[dict], result: dict | None,
                   state: dict, where: str = "commit") -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    with open(path, "a") as out:
        out.write(json.dumps({"where": where, "instance": instance_id, "name": name,
                              "history": history,
                              "actions": (result or {}).get("actions"),
                              "engine_state": state}) + "\n")
