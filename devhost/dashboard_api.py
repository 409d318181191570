"""Read endpoints the dashboard needs beyond the durable management API, under /_devhost/api/.

The management API answers Azure's documents (and must keep answering exactly those), so what the
dashboard needs on top lives here, read-only: a filtered, counted list of instances for paging
through thousands; a per-instance timeline built from the raw history (the management API drops
the episode markers and the timer/entity ids needed to pair events); a changes-since-cursor feed
so an open page refreshes only what changed; and metrics over the last N minutes. SQL stays in
store.py (section `# -- dashboard reads`).

Errors use the app's JSON shape {"error": {"status", "code", "message"}}.
"""
from __future__ import annotations

import json
import math
import time
from typing import Any

from aiohttp import web

from . import protocol as p
from .protocol import EventType as ET

PREFIX = "/_devhost/api"
TURN_ORCHESTRATOR = "agent_turn"       # the app's turn orchestration (metrics: turns, latency)
MODEL_ACTIVITY = "call_llm"            # the app's model call
STATUSES = ("Running", "Pending", "Suspended", "ContinuedAsNew", "Completed", "Failed",
            "Terminated")
MAX_TOP = 500
MAX_MINUTES = 24 * 60


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "code": code, "message": message}},
                             status=status)


# ----------------------------------------------------------------------------------------------
# query parsing

def _int(query, name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, "invalid_query", f"'{name}' must be an integer from {low} to {high}")
    return int(text)


def _time(query, name: str) -> float | None:
    """An ISO 8601 time (a bare date-time is UTC) → epoch seconds."""
    text = query.get(name)
    if not text:
        return None
    try:
        return p.parse_time(text).timestamp()
    except ValueError:
        raise ApiError(400, "invalid_query",
                       f"'{name}' must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None


def _statuses(query) -> list[str] | None:
    text = query.get("status") or ""
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        raise ApiError(400, "invalid_query", f"unknown status {unknown[0]!r}; one of "
                       + ", ".join(STATUSES))
    return wanted or None


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else p.status_time(p.from_epoch(seconds))


def _ms(text: str | None) -> float | None:
    """History timestamp → epoch milliseconds."""
    if not text:
        return None
    try:
        return p.parse_time(text).timestamp() * 1000
    except ValueError:
        return None


def _decode(text: Any) -> Any:
    return p.decode_json_text(text) if isinstance(text, str) else text


# ----------------------------------------------------------------------------------------------
# the instance list

def list_instances(store, query) -> dict:
    top = _int(query, "top", 25, 1, MAX_TOP)
    page = _int(query, "page", 1, 1, 10**9)
    rows, total = store.dashboard_instances(
        name=(query.get("name") or "").strip() or None, statuses=_statuses(query),
        created_from=_time(query, "createdFrom"), created_to=_time(query, "createdTo"),
        prefix=query.get("prefix") or None, limit=top, offset=(page - 1) * top)
    return {"instances": [{"instanceId": r["instance_id"], "name": r["name"],
                           "runtimeStatus": r["status"], "createdTime": _iso(r["created_at"]),
                           "lastUpdatedTime": _iso(r["updated_at"]),
                           "parentInstanceId": r["parent_instance_id"]} for r in rows],
            "total": total, "page": page, "top": top,
            "pages": max(1, math.ceil(total / top)), "names": store.dashboard_names()}


# ----------------------------------------------------------------------------------------------
# the timeline

def _entity_target(scheduler_id: str) -> dict | None:
    try:
        name, key = p.split_entity_id(scheduler_id)
    except ValueError:
        return None
    return {"name": name, "key": key, "id": scheduler_id}


def build_timeline(row: dict, events: list[dict], now_ms: float) -> dict:
    """One row per activity call / sub-orchestration / timer / external event / entity
    operation, each with start and end (epoch ms), status, input, output or error; retried
    attempts are separate rows (attempt n), retry delays are marked; plus the episode starts.

    Pairs events the way DTFx does: completions by TaskScheduledId, timers by TimerId, entity
    responses by the request id the EventSent carried (the EventRaised is named by it)."""
    rows: list[dict] = []
    episodes: list[float] = []
    by_task: dict[int, dict] = {}
    by_timer: dict[int, dict] = {}
    by_request: dict[str, dict] = {}
    failed_attempts: dict[tuple, int] = {}    # (kind, name, input) → attempts failed so far
    idle_since: float | None = None           # when the last episode ended (waits start here)
    episode_events: list[dict] = []           # the rows touched by the current episode
    start_ms = end_ms = None
    lifecycle: list[dict] = []

    def add(kind: str, at: float | None, **fields) -> dict:
        item = {"kind": kind, "start": at, "end": None, "status": "running", "input": None,
                "output": None, "error": None, "seq": len(rows), **fields}
        rows.append(item)
        episode_events.append(item)
        return item

    for e in events:
        kind = e.get("EventType")
        at = _ms(e.get("Timestamp"))
        if kind == ET.ExecutionStarted:
            start_ms = at
        elif kind == ET.OrchestratorStarted:
            episodes.append(at)
            episode_events = []
        elif kind == ET.OrchestratorCompleted:
            idle_since = at
        elif kind in (ET.TaskScheduled, ET.SubOrchestrationInstanceCreated):
            is_sub = kind == ET.SubOrchestrationInstanceCreated
            name = e.get("Name") or ""
            key = ("sub" if is_sub else "activity", name, e.get("Input"))
            attempt = failed_attempts.get(key, 0) + 1
            if attempt > 1:  # the retry timer that fired just before this attempt
                for timer in reversed(episode_events):
                    if timer["kind"] in ("timer", "retry") and timer["status"] == "fired":
                        timer.update(kind="retry", name=f"retry delay before attempt {attempt}")
                        break
            item = add("suborchestration" if is_sub else
                       ("http" if name == p.HTTP_ACTIVITY_NAME else "activity"), at,
                       name=name, input=_decode(e.get("Input")), attempt=attempt, key=key)
            if is_sub:
                item["instanceId"] = e.get("InstanceId")
            by_task[e.get("EventId")] = item
        elif kind in (ET.TaskCompleted, ET.SubOrchestrationInstanceCompleted,
                      ET.TaskFailed, ET.SubOrchestrationInstanceFailed):
            item = by_task.pop(e.get("TaskScheduledId"), None)
            if item is None:
                continue
            item["end"] = at
            episode_events.append(item)
            if kind in (ET.TaskCompleted, ET.SubOrchestrationInstanceCompleted):
                item.update(status="completed", output=_decode(e.get("Result")))
                failed_attempts.pop(item["key"], None)
            else:
                item.update(status="failed", error=e.get("Reason") or "failed",
                            details=e.get("Details"))
                failed_attempts[item["key"]] = item["attempt"]
        elif kind == ET.TimerCreated:
            item = add("timer", at, name="durable timer", fireAt=e.get("FireAt"),
                       input={"fireAt": e.get("FireAt")})
            by_timer[e.get("EventId")] = item
        elif kind == ET.TimerFired:
            item = by_timer.pop(e.get("TimerId"), None)
            if item is not None:
                item.update(end=at, status="fired")
                episode_events.append(item)
        elif kind == ET.EventSent:
            request = _decode(e.get("Input"))
            target = _entity_target(e.get("InstanceId") or "")
            if target and isinstance(request, dict):
                signal = bool(request.get("signal"))
                item = add("signal" if signal else "entity", at,
                           name=f"{request.get('op')} {target['id']}",
                           operation=request.get("op"), entity=target,
                           input=_decode(request.get("input")), requestId=request.get("id"))
                if signal:
                    item.update(end=at, status="sent")
                else:
                    by_request[request.get("id")] = item
            else:
                add("event", at, name=f"event {e.get('Name')} → {e.get('InstanceId')}",
                    input=request, end=at, status="sent")
        elif kind == ET.EventRaised:
            name = e.get("Name") or ""
            data = _decode(e.get("Input"))
            item = by_request.pop(name, None)
            if item is not None:  # an entity's answer to this orchestration's call
                body = data if isinstance(data, dict) else {}
                result = _decode(body.get("result"))
                item["end"] = at
                if body.get("exceptionType"):
                    item.update(status="failed", error=result if isinstance(result, str)
                                else json.dumps(result), output=None)
                else:
                    item.update(status="completed", output=result)
                episode_events.append(item)
                continue
            by = data.get("by") if isinstance(data, dict) else None
            add("event", idle_since if idle_since is not None else at, name=name, input=None,
                output=data, end=at, status="received", raisedBy=by if isinstance(by, str)
                else None, raisedAt=e.get("Timestamp"))
        elif kind == ET.ExecutionCompleted:
            end_ms = at
            if e.get("OrchestrationStatus") not in (None, "Completed"):
                failure = e.get("FailureDetails") or {}
                lifecycle.append({"kind": "failed", "at": at, "text": failure.get(
                    "ErrorMessage") or _decode(e.get("Result"))})
        elif kind == ET.ExecutionTerminated:
            end_ms = at
            lifecycle.append({"kind": "terminated", "at": at, "text": _decode(e.get("Input"))})
        elif kind == ET.ExecutionSuspended:
            lifecycle.append({"kind": "suspended", "at": at, "text": _decode(e.get("Reason"))})
        elif kind == ET.ExecutionResumed:
            lifecycle.append({"kind": "resumed", "at": at, "text": _decode(e.get("Reason"))})
        elif kind == ET.ContinueAsNew:
            lifecycle.append({"kind": "continued as new", "at": at, "text": None})

    finished = row["status"] in p.TERMINAL_STATUSES
    custom = _decode(row.get("custom_status"))
    if not finished and isinstance(custom, dict) and custom.get("pending"):
        since = idle_since if idle_since is not None else now_ms
        for pending in custom["pending"]:
            if isinstance(pending, dict):
                add("event", since, name=f"approval:{pending.get('id')}",
                    input={"tool": pending.get("tool"), "arguments": pending.get("arguments")},
                    status="waiting", waitingFor=pending.get("tool"))
    for item in rows:
        item.pop("key", None)
        if item["end"] is None and item["status"] == "running":
            if finished:
                item["status"] = "cancelled" if item["kind"] == "timer" else "abandoned"
            elif item["kind"] == "timer":
                item["status"] = "waiting"
    start_ms = start_ms if start_ms is not None else row["created_at"] * 1000
    if end_ms is None:
        end_ms = row["updated_at"] * 1000 if finished else now_ms
    return {"instanceId": row["instance_id"], "name": row["name"], "runtimeStatus": row["status"],
            "customStatus": custom, "start": start_ms, "end": max(end_ms, start_ms),
            "now": now_ms, "finished": finished, "rows": rows, "episodes": episodes,
            "lifecycle": lifecycle, "events": len(events),
            "parentInstanceId": row.get("parent_instance_id")}


# ----------------------------------------------------------------------------------------------
# metrics

def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def metrics(engine, minutes: int, now: float) -> dict:
    store = engine.store
    since = now - minutes * 60
    counts = store.counts()
    finished = store.dashboard_finished_since(since)
    turn_ms, model_ms, failures = [], [], []
    per_minute = [0] * minutes
    turns = 0
    for r in finished:
        if r["status"] == "Failed":
            failures.append({"instanceId": r["instance_id"], "name": r["name"],
                             "at": _iso(r["updated_at"]), "error": _decode(r["output"])})
        if r["name"] != TURN_ORCHESTRATOR:
            continue
        if r["status"] == "Completed":
            turns += 1
            slot = min(minutes - 1, int((r["updated_at"] - since) // 60))
            per_minute[slot] += 1
        output = _decode(r["output"])
        durations = output.get("durations_ms") if isinstance(output, dict) else None
        durations = durations if isinstance(durations, dict) else {}
        if r["status"] == "Completed":
            turn = durations.get("turn")
            turn_ms.append(float(turn) if isinstance(turn, (int, float))
                           else (r["updated_at"] - r["created_at"]) * 1000)
            if isinstance(durations.get("model"), (int, float)):
                model_ms.append(float(durations["model"]))
    # What the engine has in flight right now (read-only views of its bookkeeping).
    running_activities = len(getattr(engine, "_running_activities", ()))
    busy = getattr(engine, "_busy", {})
    instances = counts["instances"]
    return {
        "minutes": minutes, "since": _iso(since), "now": _iso(now),
        "orchestrations": {"pending": instances.get("Pending", 0),
                           "running": instances.get("Running", 0),
                           "suspended": instances.get("Suspended", 0),
                           "byStatus": instances,
                           "activeByName": store.dashboard_active_by_name(),
                           "inEpisode": len(busy.get("instance", ()))},
        "activities": {"queued": max(0, counts["pendingActivities"] - running_activities),
                       "running": running_activities},
        "entityOperations": {"queued": counts["pendingEntityOperations"],
                             "entitiesRunning": len(busy.get("entity", ()))},
        "turns": {"completed": turns, "perMinute": per_minute,
                  "ratePerMinute": round(turns / minutes, 2),
                  "latencyMs": {"p50": percentile(turn_ms, 50), "p95": percentile(turn_ms, 95),
                                "count": len(turn_ms)},
                  "modelLatencyMs": {"p50": percentile(model_ms, 50),
                                     "p95": percentile(model_ms, 95), "count": len(model_ms)}},
        "failures": {"count": len(failures), "recent": failures[-10:][::-1]},
    }


# ----------------------------------------------------------------------------------------------
# routes

def register(app: web.Application, host) -> None:
    """Add the dashboard's read endpoints to the devhost application (before its catch-all)."""
    engine = host.engine

    def guarded(handler):
        """The master key when keys are configured (as for the management API); ApiError →
        the JSON error shape."""
        async def serve(request: web.Request) -> web.Response:
            if host.master_key and host.key_level(request) != "admin":
                return error_body(401, "unauthorized", "the dashboard API needs the master key "
                                  "(?code= or x-functions-key) when keys are configured")
            try:
                return await handler(request)
            except ApiError as exc:
                return error_body(exc.status, exc.code, exc.message)
        return serve

    async def instances(request: web.Request) -> web.Response:
        return web.json_response(list_instances(engine.store, request.query))

    async def timeline(request: web.Request) -> web.Response:
        instance_id = request.match_info["instanceId"]
        row = engine.store.get_instance(instance_id)
        if row is None:
            raise ApiError(404, "not_found", f"no orchestration instance '{instance_id}'")
        events = engine.store.history(instance_id)
        return web.json_response(build_timeline(row, events, time.time() * 1000))

    async def changes(request: web.Request) -> web.Response:
        text = request.query.get("since", "")
        try:
            since = float(text) if text else None
        except ValueError:
            since = math.nan
        if since is not None and not math.isfinite(since):
            raise ApiError(400, "invalid_query", "'since' must be a cursor this API handed out")
        found = engine.store.dashboard_changes(since if since is not None else time.time())
        latest = found["latest"] or 0.0
        cursor = max(since, latest) if since is not None else max(latest, 0.0)
        return web.json_response({
            "cursor": repr(cursor),
            "instances": [{"instanceId": r["instance_id"], "runtimeStatus": r["status"]}
                          for r in found["instances"]] if since is not None else [],
            "entities": [r["entity_id"] for r in found["entities"]] if since is not None else [],
            "total": found["total"]})

    async def metrics_view(request: web.Request) -> web.Response:
        minutes = _int(request.query, "minutes", 15, 1, MAX_MINUTES)
        return web.json_response(metrics(engine, minutes, time.time()))

    async def unknown(request: web.Request) -> web.Response:
        raise ApiError(404, "not_found", f"no dashboard API at {request.path}")

    app.router.add_get(PREFIX + "/instances", guarded(instances))
    app.router.add_get(PREFIX + "/instances/{instanceId}/timeline", guarded(timeline))
    app.router.add_get(PREFIX + "/changes", guarded(changes))
    app.router.add_get(PREFIX + "/metrics", guarded(metrics_view))
    app.router.add_route("*", PREFIX + r"/{tail:[\s\S]*}", guarded(unknown))
