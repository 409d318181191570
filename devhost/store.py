"""The task hub in one SQLite file: the only module that speaks SQL.

Every state transition the engine makes is one `with store.transaction():` block composed of the
small statements below, so a crash (kill -9) at any point leaves either the state before or the
state after. WAL + synchronous=NORMAL: a process crash loses nothing committed; an OS crash may
lose the last few milliseconds of commits but never corrupts the file.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import DatabaseError

SCHEMA_VERSION = 4
T = TypeVar("T")

MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE instances (
        instance_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT,            -- the SDK-level input text handed to the context
        input_raw TEXT,        -- the input as the status document shows it (JSON text)
        output TEXT,           -- JSON text
        custom_status TEXT,    -- JSON text
        parent_instance_id TEXT,
        parent_execution_id TEXT,
        parent_task_id INTEGER,
        engine_state TEXT NOT NULL DEFAULT '{}',  -- unused since version 4: derived from history
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX instances_created ON instances(created_at);
    CREATE TABLE history (
        instance_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (instance_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        execution_id TEXT,     -- NULL: for whichever execution is current (external events)
        event TEXT NOT NULL,
        visible_at REAL NOT NULL
    );
    CREATE INDEX inbox_instance ON inbox(instance_id, id);
    CREATE INDEX inbox_visible ON inbox(visible_at);
    CREATE TABLE activities (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        task_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        input TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX activities_instance ON activities(instance_id);
    CREATE TABLE entities (
        entity_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        state TEXT,
        updated_at REAL NOT NULL
    );
    CREATE TABLE entity_ops (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        entity_id TEXT NOT NULL,
        name TEXT NOT NULL,
        input TEXT,
        is_signal INTEGER NOT NULL,
        caller_instance TEXT,
        caller_execution TEXT,
        request_id TEXT,
        visible_at REAL NOT NULL
    );
    CREATE INDEX entity_ops_entity ON entity_ops(entity_id, id);
    """,
    # version 2: mark the events replays need (1) apart from those only people read (0)
    # (events stored before this are all replayed: safe, only slower); orchestration versions
    """
    ALTER TABLE history ADD COLUMN replayed INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE instances ADD COLUMN version TEXT;
    """,
    # version 3: a durable timer's inbox row names its timer (cancelling one is a lookup, not
    # a match over the stored event text)
    """
    ALTER TABLE inbox ADD COLUMN timer_id INTEGER;
    UPDATE inbox SET timer_id = json_extract(event, '$.TimerId')
        WHERE json_extract(event, '$.EventType') = 11;
    CREATE INDEX IF NOT EXISTS inbox_timer ON inbox(instance_id, timer_id)
    """,
    # version 4: each history row names its event type and the task id it carries (p.event_key:
    # the EventId of the scheduling events 4, 7, 10, 14, a TimerFired's TimerId, else the
    # TaskScheduledId), all that the engine's bookkeeping reads: it is rebuilt from history
    # every episode (decide.bookkeeping), and instances.engine_state is no longer used
    """
    ALTER TABLE history ADD COLUMN kind INTEGER;
    ALTER TABLE history ADD COLUMN task_id INTEGER;
    UPDATE history SET kind = json_extract(event, '$.EventType'),
        task_id = CASE WHEN json_extract(event, '$.EventType') IN (4, 7, 10, 14)
                       THEN json_extract(event, '$.EventId')
                       WHEN json_extract(event, '$.EventType') = 11
                       THEN json_extract(event, '$.TimerId')
                       ELSE json_extract(event, '$.TaskScheduledId') END
    """,
]

INSTANCE_COLUMNS = ("instance_id", "name", "execution_id", "status", "input", "input_raw",
                    "output", "custom_status", "parent_instance_id", "parent_execution_id",
                    "parent_task_id", "created_at", "updated_at", "version")


class Store:
    """The writer connection, used from the engine's event-loop thread only, plus a read-only
    connection (WAL lets it read the last commit while the writer works) on one thread of its
    own, so big reads (histories, lists) never stall the loop: see `read`."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create the folder for the task hub database "
                                f"{self.path}: {exc.strerror or exc}") from exc
        self._lock_file = self._take_process_lock() if self.path != ":memory:" else None
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"cannot open the task hub database {self.path}: {exc}. "
                                "If the file is corrupt, move it away (devhost will create a "
                                "new one) or point --db at another file.") from exc
        self._depth = 0
        self._reader: Store | None = None
        self._read_thread = ThreadPoolExecutor(1, "store-read")

    def _take_process_lock(self):
        """One devhost process per task hub: the engine tracks in-flight work in memory, so a
        second process on the same file would run it twice. The OS drops the lock when the
        process dies, kill -9 included."""
        handle = open(self.path + ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise DatabaseError(f"the task hub {self.path} is in use by devhost ({owner}); run "
                                "one devhost per task hub, or point --db at another file")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        return handle

    # -- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise DatabaseError(
                f"the task hub database {self.path} has schema version {current}, newer than "
                f"this devhost understands ({SCHEMA_VERSION}); upgrade devhost or use --db "
                "with another file")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip() and not self._already_applied(statement):
                        self.db.execute(statement)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                                (str(version),))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _already_applied(self, statement: str) -> bool:
        """An ADD COLUMN whose column exists (a hub made by a pre-release of this schema)."""
        words = statement.split()
        if words[:2] != ["ALTER", "TABLE"] or "ADD" not in words:
            return False
        table, column = words[2], words[words.index("COLUMN") + 1]
        return any(row[1] == column for row in self.db.execute(f"PRAGMA table_info({table})"))

    def close(self) -> None:
        self._read_thread.shutdown(wait=True)
        if self._reader is not None:
            self._reader.db.close()
        self.db.close()
        if self._lock_file:
            self._lock_file.close()

    # -- reads off the event loop -----------------------------------------------------------

    def _read_view(self) -> "Store":
        """This store's query methods over the read-only connection (opened on first use, in
        the read thread). Writes through it fail: SQLite refuses them on a read-only handle."""
        if self._reader is None:
            view = Store.__new__(Store)
            view.path, view._depth, view._lock_file, view._reader = self.path, 0, None, None
            view.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                      isolation_level=None, check_same_thread=False)
            view.db.row_factory = sqlite3.Row
            view.db.execute("PRAGMA busy_timeout=5000")
            self._reader = view
        return self._reader

    async def read(self, query: Callable[["Store"], T]) -> T:
        """Run `query(view)` on the read thread, where `view` offers every query method of this
        class on the read-only connection; the event loop keeps serving meanwhile. It sees the
        last committed state, which is all a reader may rely on anyway."""
        if self.path == ":memory:":
            return query(self)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_thread,
                                          lambda: query(self._read_view()))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT; nested uses join the outer transaction.

        Anything that fails, the COMMIT itself included (disk full, a deferred constraint),
        rolls back whatever is still open and raises DatabaseError: the store is then ready
        for the next transaction, never wedged inside a dead one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DatabaseError(f"the task hub database {self.path} refused a write: "
                                f"{exc}") from exc
        self._depth = 1
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise DatabaseError(f"the task hub database {self.path} could not commit a "
                                    f"change (nothing was changed): {exc}") from exc
            raise
        finally:
            self._depth = 0

    # -- instances --------------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM instances WHERE instance_id=?",
                              (instance_id,)).fetchone()
        return dict(row) if row else None

    def put_instance(self, row: dict) -> None:
        placeholders = ",".join("?" for _ in INSTANCE_COLUMNS)
        self.db.execute(f"INSERT OR REPLACE INTO instances ({','.join(INSTANCE_COLUMNS)}) "
                        f"VALUES ({placeholders})", [row.get(c) for c in INSTANCE_COLUMNS])

    def update_instance(self, instance_id: str, **fields: Any) -> None:
        fields.setdefault("updated_at", time.time())
        assignments = ",".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE instances SET {assignments} WHERE instance_id=?",
                        [*fields.values(), instance_id])

    @staticmethod
    def _instance_filter(name: str | None, statuses: list[str] | None,
                         created_from: float | None, created_to: float | None,
                         prefix: str | None) -> tuple[str, list]:
        """The WHERE clause shared by the management list and the dashboard's list."""
        sql, args = " WHERE 1=1", []
        if name:
            sql += " AND name = ? COLLATE NOCASE"
            args.append(name)
        if statuses:
            sql += f" AND status IN ({','.join('?' for _ in statuses)})"
            args.extend(statuses)
        if created_from is not None:
            sql += " AND created_at >= ?"
            args.append(created_from)
        if created_to is not None:
            sql += " AND created_at <= ?"
            args.append(created_to)
        if prefix:
            sql += " AND substr(instance_id, 1, ?) = ?"
            args.extend([len(prefix), prefix])
        return sql, args

    def query_instances(self, *, created_from: float | None = None,
                        created_to: float | None = None, statuses: list[str] | None = None,
                        prefix: str | None = None, limit: int | None = None,
                        offset: int = 0, after: tuple[float, str] | None = None) -> list[dict]:
        """Newest first; `after` = (created_at, instance_id) of the row before this page."""
        where, args = self._instance_filter(None, statuses, created_from, created_to, prefix)
        sql = "SELECT * FROM instances" + where
        if after is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND instance_id > ?))"
            args.extend([after[0], after[0], after[1]])
        sql += " ORDER BY created_at DESC, instance_id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args.extend([limit, offset])
        return [dict(r) for r in self.db.execute(sql, args)]

    def delete_instance(self, instance_id: str) -> int:
        """Remove an instance and everything queued for it; returns 1 if it existed."""
        self.clear_history(instance_id)
        self.db.execute("DELETE FROM inbox WHERE instance_id=?", (instance_id,))
        self.db.execute("DELETE FROM activities WHERE instance_id=?", (instance_id,))
        return self.db.execute("DELETE FROM instances WHERE instance_id=?",
                               (instance_id,)).rowcount

    # -- history ----------------------------------------------------------------------------

    def replay_history(self, instance_id: str) -> tuple[list[str], list[tuple[int, int | None]]]:
        """One read per episode: the events an orchestrator replay needs, as stored JSON text,
        and every event's (EventType, task id) for the bookkeeping, both in order."""
        rows = self.db.execute("SELECT kind, task_id, CASE WHEN replayed THEN event END "
                               "FROM history WHERE instance_id=? ORDER BY seq",
                               (instance_id,)).fetchall()
        return ([text for _, _, text in rows if text is not None],
                [(kind, task_id) for kind, task_id, _ in rows])

    def history(self, instance_id: str) -> list[dict]:
        return [json.loads(r[0]) for r in self.db.execute(
            "SELECT event FROM history WHERE instance_id=? ORDER BY seq", (instance_id,))]

    def append_history(self, instance_id: str,
                       events: list[tuple[str, bool, int, int | None]]) -> None:
        """Append stored events (p.stored_event: text, replayed, EventType, task id) after
        whatever is there (a terminate or suspend may have added an event while an episode
        was running)."""
        start = self.db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM history WHERE "
                                "instance_id=?", (instance_id,)).fetchone()[0]
        self.db.executemany("INSERT INTO history (instance_id, seq, event, replayed, kind, "
                            "task_id) VALUES (?,?,?,?,?,?)",
                            [(instance_id, start + i, text, int(replayed), kind, task_id)
                             for i, (text, replayed, kind, task_id) in enumerate(events)])

    def replace_history(self, instance_id: str,
                        events: list[tuple[str, bool, int, int | None]]) -> None:
        self.clear_history(instance_id)
        self.append_history(instance_id, events)

    def clear_history(self, instance_id: str) -> None:
        self.db.execute("DELETE FROM history WHERE instance_id=?", (instance_id,))

    # -- inbox (completions, external events, timers) -------------------------------------

    def add_inbox(self, instance_id: str, execution_id: str | None, event_text: str,
                  visible_at: float, timer_id: int | None = None) -> None:
        """Queue an event; a durable timer's TimerFired also records its timer id."""
        self.db.execute("INSERT INTO inbox (instance_id, execution_id, event, visible_at, "
                        "timer_id) VALUES (?,?,?,?,?)",
                        (instance_id, execution_id, event_text, visible_at, timer_id))

    def inbox(self, instance_id: str, visible_before: float | None = None) -> list[dict]:
        sql = "SELECT * FROM inbox WHERE instance_id=?"
        args: list[Any] = [instance_id]
        if visible_before is not None:
            sql += " AND visible_at <= ?"
            args.append(visible_before)
        return [dict(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def delete_inbox(self, ids: list[int]) -> None:
        self.db.executemany("DELETE FROM inbox WHERE id=?", [(i,) for i in ids])

    def delete_timer(self, instance_id: str, timer_id: int) -> None:
        """Drop a cancelled timer that has not fired yet."""
        self.db.execute("DELETE FROM inbox WHERE instance_id=? AND timer_id=?",
                        (instance_id, timer_id))

    def clear_inbox(self, instance_id: str) -> None:
        self.db.execute("DELETE FROM inbox WHERE instance_id=?", (instance_id,))

    def instances_with_inbox(self) -> list[tuple[str, float]]:
        """(instance, earliest visible time) for every instance with queued events."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT instance_id, MIN(visible_at) FROM inbox GROUP BY instance_id")]

    # -- activities -------------------------------------------------------------------------

    def add_activity(self, instance_id: str, execution_id: str, task_id: int, name: str,
                     input_text: str | None) -> int:
        return self.db.execute(
            "INSERT INTO activities (instance_id, execution_id, task_id, name, input, created_at)"
            " VALUES (?,?,?,?,?,?)",
            (instance_id, execution_id, task_id, name, input_text, time.time())).lastrowid

    def get_activity(self, activity_id: int) -> dict | None:
        row = self.db.execute("SELECT * FROM activities WHERE id=?", (activity_id,)).fetchone()
        return dict(row) if row else None

    def delete_activity(self, activity_id: int) -> int:
        return self.db.execute("DELETE FROM activities WHERE id=?", (activity_id,)).rowcount

    def activity_count(self, instance_id: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM activities WHERE instance_id=?",
                               (instance_id,)).fetchone()[0]

    def delete_activities_of(self, instance_id: str) -> None:
        self.db.execute("DELETE FROM activities WHERE instance_id=?", (instance_id,))

    def all_activities(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM activities ORDER BY id")]

    # -- entities ---------------------------------------------------------------------------

    def get_entity(self, scheduler_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM entities WHERE entity_id=?",
                              (scheduler_id,)).fetchone()
        return dict(row) if row else None

    def put_entity(self, scheduler_id: str, name: str, key: str, state: str | None) -> None:
        if state is None:
            self.db.execute("DELETE FROM entities WHERE entity_id=?", (scheduler_id,))
        else:
            self.db.execute("INSERT OR REPLACE INTO entities VALUES (?,?,?,?,?)",
                            (scheduler_id, name, key, state, time.time()))

    def query_entities(self, name: str | None = None, limit: int = 100,
                       offset: int = 0) -> list[dict]:
        sql, args = "SELECT * FROM entities", []
        if name:
            sql += " WHERE name=?"
            args.append(name.lower())
        sql += " ORDER BY updated_at DESC LIMIT ? OFFSET ?"
        return [dict(r) for r in self.db.execute(sql, [*args, limit, offset])]

    def add_entity_op(self, scheduler_id: str, name: str, input_text: str | None,
                      is_signal: bool, caller_instance: str | None = None,
                      caller_execution: str | None = None, request_id: str | None = None,
                      visible_at: float | None = None) -> None:
        self.db.execute(
            "INSERT INTO entity_ops (entity_id, name, input, is_signal, caller_instance, "
            "caller_execution, request_id, visible_at) VALUES (?,?,?,?,?,?,?,?)",
            (scheduler_id, name, input_text, int(is_signal), caller_instance, caller_execution,
             request_id, visible_at if visible_at is not None else time.time()))

    def entity_ops(self, scheduler_id: str, limit: int) -> list[dict]:
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM entity_ops WHERE entity_id=? AND visible_at <= ? ORDER BY id LIMIT ?",
            (scheduler_id, time.time(), limit))]

    def delete_entity_ops(self, ids: list[int]) -> None:
        self.db.executemany("DELETE FROM entity_ops WHERE id=?", [(i,) for i in ids])

    def entities_with_ops(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT entity_id FROM entity_ops")]

    def counts(self) -> dict:
        """Small numbers for the dashboard and health checks."""
        by_status = {r[0]: r[1] for r in self.db.execute(
            "SELECT status, COUNT(*) FROM instances GROUP BY status")}
        return {"instances": by_status,
                "entities": self.db.execute("SELECT COUNT(*) FROM entities").fetchone()[0],
                "pendingActivities": self.db.execute(
                    "SELECT COUNT(*) FROM activities").fetchone()[0],
                "pendingEntityOperations": self.db.execute(
                    "SELECT COUNT(*) FROM entity_ops").fetchone()[0]}

    # -- dashboard reads ------------------------------------------------------------------------
    # Read-only queries behind devhost/dashboard_api.py (the dashboard's list, changes feed and
    # metrics). Summaries leave out input/output so a page of thousands of instances stays cheap.

    def dashboard_instances(self, *, name: str | None = None, statuses: list[str] | None = None,
                            created_from: float | None = None, created_to: float | None = None,
                            prefix: str | None = None, limit: int = 25,
                            offset: int = 0) -> tuple[list[dict], int]:
        """One page of instance summaries, newest first, and how many match in all."""
        where, args = self._instance_filter(name, statuses, created_from, created_to, prefix)
        total = self.db.execute("SELECT COUNT(*) FROM instances" + where, args).fetchone()[0]
        rows = self.db.execute(
            "SELECT instance_id, name, status, created_at, updated_at, parent_instance_id "
            f"FROM instances{where} ORDER BY created_at DESC, instance_id LIMIT ? OFFSET ?",
            [*args, limit, offset])
        return [dict(r) for r in rows], total

    def dashboard_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT name FROM instances ORDER BY name")]

    def dashboard_changes(self, since: float, limit: int = 200) -> dict:
        """Instances and entities written after `since` (updated_at), newest first."""
        instances = [dict(r) for r in self.db.execute(
            "SELECT instance_id, status, updated_at FROM instances WHERE updated_at > ? "
            "ORDER BY updated_at DESC LIMIT ?", (since, limit))]
        entities = [dict(r) for r in self.db.execute(
            "SELECT entity_id, updated_at FROM entities WHERE updated_at > ? "
            "ORDER BY updated_at DESC LIMIT ?", (since, limit))]
        latest = max([r["updated_at"] for r in instances + entities], default=since)
        total = self.db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        return {"instances": instances, "entities": entities, "latest": latest, "total": total,
                "truncated": len(instances) == limit or len(entities) == limit}

    def dashboard_finished_since(self, since: float) -> list[dict]:
        """Instances that reached a terminal status after `since` (for the metrics window)."""
        return [dict(r) for r in self.db.execute(
            "SELECT instance_id, name, status, created_at, updated_at, output FROM instances "
            "WHERE updated_at >= ? AND status IN ('Completed', 'Failed', 'Terminated') "
            "ORDER BY updated_at", (since,))]

    def dashboard_active_by_name(self) -> dict[str, dict[str, int]]:
        """{name: {status: count}} for instances not yet finished."""
        out: dict[str, dict[str, int]] = {}
        for name, status, count in self.db.execute(
                "SELECT name, status, COUNT(*) FROM instances WHERE status IN "
                "('Pending', 'Running', 'Suspended') GROUP BY name, status"):
            out.setdefault(name, {})[status] = count
        return out

    def dashboard_histories(self, instance_ids: list[str]) -> dict[str, list[dict]]:
        """The stored history of each of these instances (metrics over recent turns)."""
        out: dict[str, list[dict]] = {i: [] for i in instance_ids}
        for start in range(0, len(instance_ids), 500):
            chunk = instance_ids[start:start + 500]
            for instance_id, text in self.db.execute(
                    f"SELECT instance_id, event FROM history WHERE instance_id IN "
                    f"({','.join('?' for _ in chunk)}) ORDER BY instance_id, seq", chunk):
                out[instance_id].append(json.loads(text))
        return out
