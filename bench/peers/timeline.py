"""Where one of this app's turns spends its time, read back from devhost's task hub after the run:
for each measured turn, the offset (ms after the client sent the POST) of the turn instance's
creation, of every history event (their timestamps), of its completion (`updated_at`) and of the
client reading the reply. The median over the sequential turns is printed as one line per event.
Read-only, after the load: it costs the measured turns nothing."""
from __future__ import annotations

import json
import sqlite3
import statistics
from collections import Counter
from pathlib import Path

from devhost.protocol import EventType, parse_time


NAMED = {"ExecutionStarted", "TaskScheduled", "SubOrchestrationInstanceCreated"}


def instance_id(record) -> str:
    """api.run.turn_instance_id, from the thread id header (`@dafx-agent@<key>`) and turn id."""
    return f"turn-{record.thread.rsplit('@', 1)[1]}-{record.turn_id}"


def turn_timeline(hub: Path, records: list) -> dict:
    db = sqlite3.connect(f"file:{hub}?mode=ro", uri=True)
    rows: list[list[tuple[str, float]]] = []
    for record in records:
        iid = instance_id(record)
        found = db.execute("SELECT created_at, updated_at, status FROM instances "
                           "WHERE instance_id = ?", (iid,)).fetchone()
        if not found or found[2] != "Completed":
            continue
        created, updated, _ = found
        marks = [("instance created (POST handled, start_new done)", created)]
        for (text,) in db.execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq",
                                  (iid,)):
            event = json.loads(text)
            name = EventType(event["EventType"]).name
            detail = event.get("Name") or "" if name in NAMED else ""
            marks.append((f"{name} {detail}".strip(), parse_time(event["Timestamp"]).timestamp()))
        marks.append(("instance completed (status row updated)", updated))
        marks.append(("client has read the 200 reply", record.received))
        rows.append([(label, (at - record.sent) * 1000) for label, at in marks])
    db.close()
    if not rows:
        return {}
    shape = Counter(tuple(label for label, _ in row) for row in rows).most_common(1)[0][0]
    same = [row for row in rows if tuple(label for label, _ in row) == shape]
    medians = [statistics.median(row[i][1] for row in same) for i in range(len(shape))]
    return {"turns": len(same), "of": len(rows), "labels": list(shape), "median_ms": medians,
            "episodes": shape.count("OrchestratorStarted"),
            "seen_after_completion_ms": [row[-1][1] - row[-2][1] for row in same],
            "completed_ms": [row[-2][1] for row in same]}


def describe(t: dict, what: str) -> str:
    lines = [f"this app, {what} as the task hub recorded it (median of {t['turns']} "
             f"of {t['of']} turns with the same history shape; ms after the POST left; "
             f"{t['episodes']} orchestrator episodes):"]
    previous = 0.0
    for at, label in sorted(zip(t["median_ms"], t["labels"])):
        lines.append(f"  {at:7.2f}  (+{at - previous:5.2f})  {label}")
        previous = at
    seen = t["seen_after_completion_ms"]
    lines.append(f"  completion -> reply read: p50 {statistics.median(seen):.2f} ms, "
                 f"max {max(seen):.2f} ms (status polling + the HTTP reply)")
    return "\n".join(lines)
