"""The stream journal: a turn's live events, written by the LLM activity, read by SSE clients.

Why it exists: the durable result of a turn is the source of truth, but it only appears when the
turn ends. The journal carries what happens *meanwhile* (deltas, tool calls, restarts) from the
process that runs the activity to every process that serves a reader, and keeps it long enough
for a dropped client to resume with `Last-Event-ID`.

Contract (both backends pass the same tests, tests/test_journal.py):
- ``append(turn_id, kind, data) -> event id``: ids are 1, 2, 3... per turn, assigned atomically,
  so `after=N` means exactly "the events after the N-th" in every process.
- ``read(turn_id, after=None) -> [Event(id, kind, data)]`` in id order.
- ``wait(turn_id, after, timeout)`` / ``await wait_async(...)``: the events after `after`, waiting
  up to `timeout` seconds for the first one; returns [] at once if the turn is finished.
- ``finish(turn_id, kind=None, data=None)``: closes the turn, optionally appending its closing
  event (``done`` / ``error``) in the same transaction; idempotent (a second call appends nothing
  and returns the first closing event's id). ``append`` after ``finish`` raises TurnFinished.
- ``expire()``: deletes the entries of turns finished more than the retention ago.

Backends: SQLite (a file beside the devhost task hub; WAL; safe across threads and processes) and
Azure Table storage (the Function app's storage account, `DefaultAzureCredential`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

DEFAULT_RETENTION_SECONDS = 3600.0
# A turn nobody finished (terminated, or its host died before publishing the end) is deleted once
# it has had no event for this long. Longer than any approval wait: deleting a live turn would
# restart its ids at 1.
DEFAULT_ABANDON_SECONDS = 7 * 86400.0
DEFAULT_TABLE = "streamjournal"
BACKENDS = ("sqlite", "table")

log = logging.getLogger(__name__)


class Event(NamedTuple):
    id: int
    kind: str
    data: Any


class TurnFinished(RuntimeError):
    """append() on a turn whose closing event is written: the stream is over."""


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise ValueError("event kind must be a non-empty string of at most 64 characters")
    return kind


def _turn(turn_id) -> str:
    """Turn ids become Table partition keys: the characters Table storage refuses are refused
    by both backends, so an id that works on devhost works on Azure."""
    value = str(turn_id)
    if not value or len(value) > 512 or value.startswith("~") or any(
            c in value for c in "/\\#?") or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError("turn id must be 1-512 characters, not starting with ~, "
                         "without / \\ # ? or control characters")
    return value


def _after(after) -> int:
    """`after` as the Last-Event-ID number (None = from the start); bad text is a ValueError."""
    if after is None or after == "":
        return 0
    value = int(after)
    if value < 0:
        raise ValueError("after must be >= 0")
    return value


class _Wakeup:
    """Wakes waiters of this process as soon as a turn gets an event; other processes poll."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._async: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, turn_id: str) -> None:
        with self._cond:
            self._cond.notify_all()
            waiters = list(self._async.get(turn_id, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed
                pass

    def sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait(seconds)

    def register(self, turn_id: str, loop, event) -> None:
        with self._cond:
            self._async.setdefault(turn_id, set()).add((loop, event))

    def unregister(self, turn_id: str, loop, event) -> None:
        with self._cond:
            waiters = self._async.get(turn_id)
            if waiters is not None:
                waiters.discard((loop, event))
                if not waiters:
                    del self._async[turn_id]


_WAKEUP = _Wakeup()  # one per process: every journal client here wakes every waiter here


class Journal:
    """Shared behaviour; a backend implements _append, _read, _finish, _finished, _expire."""

    poll_seconds = 0.25
    expire_every_seconds = 60.0

    def __init__(self, retention_seconds: float = DEFAULT_RETENTION_SECONDS,
                 clock: Callable[[], float] = time.time,
                 abandon_seconds: float = DEFAULT_ABANDON_SECONDS) -> None:
        self.retention_seconds = float(retention_seconds)
        self.abandon_seconds = float(abandon_seconds)
        self.clock = clock
        self._wakeup = _WAKEUP
        self._last_expiry: float | None = None

    # -- the contract ----------------------------------------------------------------------
    def append(self, turn_id: str, kind: str, data: Any = None) -> int:
        turn_id = _turn(turn_id)
        event_id = self._append(turn_id, _check_kind(kind), json.dumps(data))
        self._wakeup.notify(turn_id)
        return event_id

    def read(self, turn_id: str, after=None) -> list[Event]:
        return [Event(i, k, json.loads(d)) for i, k, d in self._read(_turn(turn_id), _after(after))]

    def finish(self, turn_id: str, kind: str | None = None, data: Any = None) -> int | None:
        turn_id = _turn(turn_id)
        closing = None if kind is None else (_check_kind(kind), json.dumps(data))
        event_id = self._finish(turn_id, closing)
        self._wakeup.notify(turn_id)
        self._expire_now_and_then()
        return event_id

    def finished(self, turn_id: str) -> bool:
        return self._finished(_turn(turn_id))

    def _expire_now_and_then(self) -> None:
        """Retention without a timer: finish() sweeps at most once a minute per process."""
        now = self.clock()
        if self._last_expiry is not None and now - self._last_expiry < self.expire_every_seconds:
            return
        self._last_expiry = now
        try:
            self.expire()
        except Exception:  # noqa: BLE001 - a failed sweep must not fail the turn; the next one retries
            log.warning("stream journal: expiring old turns failed", exc_info=True)

    def expire(self) -> int:
        """Delete turns finished more than `retention_seconds` ago, and unfinished turns without
        an event for `abandon_seconds`; returns how many turns were deleted."""
        now = self.clock()
        return self._expire(now - self.retention_seconds, now - self.abandon_seconds)

    def wait(self, turn_id: str, after=None, timeout: float = 15.0) -> list[Event]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            events = self.read(turn_id, after)
            if events:
                return events
            if self.finished(turn_id):  # read again: the closing event may have just landed
                return self.read(turn_id, after)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._wakeup.sleep(min(self.poll_seconds, remaining))

    async def wait_async(self, turn_id: str, after=None, timeout: float = 15.0) -> list[Event]:
        """wait() for asyncio handlers: the journal calls run in a thread, the loop stays free."""
        turn_id = _turn(turn_id)
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        self._wakeup.register(turn_id, loop, woken)
        try:
            deadline = loop.time() + max(0.0, timeout)
            while True:
                woken.clear()
                events = await asyncio.to_thread(self.read, turn_id, after)
                if events:
                    return events
                if await asyncio.to_thread(self.finished, turn_id):
                    return await asyncio.to_thread(self.read, turn_id, after)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                try:
                    await asyncio.wait_for(woken.wait(), min(self.poll_seconds, remaining))
                except asyncio.TimeoutError:
                    pass
        finally:
            self._wakeup.unregister(turn_id, loop, woken)

    def close(self) -> None:
        pass


# -- SQLite -----------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal_turns (
    turn_id     TEXT PRIMARY KEY,
    last_id     INTEGER NOT NULL,
    closing_id  INTEGER,
    finished_at REAL,
    touched_at  REAL
);
CREATE INDEX IF NOT EXISTS journal_turns_finished ON journal_turns (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS journal_events (
    turn_id TEXT NOT NULL,
    id      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,
    at      REAL NOT NULL,
    PRIMARY KEY (turn_id, id)
) WITHOUT ROWID;
"""


class SqliteJournal(Journal):
    """One SQLite file in WAL mode; one connection per thread; writes are BEGIN IMMEDIATE
    transactions, so ids stay contiguous with any number of writer threads and processes."""

    poll_seconds = 0.1

    def __init__(self, path: str | os.PathLike, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        db = self._db()
        db.executescript(_SCHEMA)  # IF NOT EXISTS: safe when processes race to create
        if "touched_at" not in {row[1] for row in db.execute("PRAGMA table_info(journal_turns)")}:
            with self._tx() as tx:  # a file made before abandoned turns expired
                if "touched_at" not in {r[1] for r in tx.execute("PRAGMA table_info(journal_turns)")}:
                    tx.execute("ALTER TABLE journal_turns ADD COLUMN touched_at REAL")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            return False

    def _tx(self):
        return self._Tx(self._db())

    def _next_id(self, db, turn_id: str) -> int:
        row = db.execute("SELECT last_id, closing_id FROM journal_turns WHERE turn_id = ?",
                         (turn_id,)).fetchone()
        if row is None:
            db.execute("INSERT INTO journal_turns (turn_id, last_id, touched_at) VALUES (?, 0, ?)",
                       (turn_id, self.clock()))
            return 1
        return row[0] + 1

    def _insert(self, db, turn_id: str, event_id: int, kind: str, data: str) -> None:
        db.execute("INSERT INTO journal_events (turn_id, id, kind, data, at) VALUES (?, ?, ?, ?, ?)",
                   (turn_id, event_id, kind, data, self.clock()))
        db.execute("UPDATE journal_turns SET last_id = ?, touched_at = ? WHERE turn_id = ?",
                   (event_id, self.clock(), turn_id))

    def _append(self, turn_id: str, kind: str, data: str) -> int:
        with self._tx() as db:
            if self._finished_in(db, turn_id):
                raise TurnFinished(f"turn {turn_id!r} is finished")
            event_id = self._next_id(db, turn_id)
            self._insert(db, turn_id, event_id, kind, data)
            return event_id

    def _read(self, turn_id: str, after: int):
        return self._db().execute(
            "SELECT id, kind, data FROM journal_events WHERE turn_id = ? AND id > ? ORDER BY id",
            (turn_id, after)).fetchall()

    @staticmethod
    def _finished_in(db, turn_id: str) -> bool:
        row = db.execute("SELECT finished_at FROM journal_turns WHERE turn_id = ?",
                         (turn_id,)).fetchone()
        return row is not None and row[0] is not None

    def _finished(self, turn_id: str) -> bool:
        return self._finished_in(self._db(), turn_id)

    def _finish(self, turn_id: str, closing) -> int | None:
        with self._tx() as db:
            row = db.execute("SELECT closing_id, finished_at FROM journal_turns WHERE turn_id = ?",
                             (turn_id,)).fetchone()
            if row is not None and row[1] is not None:
                return row[0]
            event_id = self._next_id(db, turn_id)
            closing_id = None
            if closing is not None:
                self._insert(db, turn_id, event_id, *closing)
                closing_id = event_id
            db.execute("UPDATE journal_turns SET closing_id = ?, finished_at = ? WHERE turn_id = ?",
                       (closing_id, self.clock(), turn_id))
            return closing_id

    def _expire(self, cutoff: float, abandon_cutoff: float) -> int:
        with self._tx() as db:
            turns = [r[0] for r in db.execute(
                "SELECT turn_id FROM journal_turns WHERE (finished_at IS NOT NULL AND finished_at < ?)"
                " OR (finished_at IS NULL AND touched_at IS NOT NULL AND touched_at < ?)",
                (cutoff, abandon_cutoff))]
            for turn_id in turns:
                db.execute("DELETE FROM journal_events WHERE turn_id = ?", (turn_id,))
                db.execute("DELETE FROM journal_turns WHERE turn_id = ?", (turn_id,))
            return len(turns)

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                try:
                    db.close()
                except sqlite3.ProgrammingError:  # made in another thread that is still using it
                    pass
            self._all.clear()
        self._local = threading.local()


# -- Azure Table storage ----------------------------------------------------------------------
_META = "~meta"          # sorts after the zero-padded event row keys of its partition
_EXPIRY = "~expiry"      # one partition indexing finished turns by finish time
_STARTED = "~started"    # one partition indexing turns by their first event (abandon sweep)
_CHUNK = 30_000          # characters per string property (Table storage allows 32K UTF-16)
_MAX_CHUNKS = 30         # an entity holds at most 1 MiB


class _Meta(dict):
    """A `~meta` entity as this client wrote it, shaped like the SDK's (dict + .metadata)."""

    def __init__(self, entity: dict, etag: str):
        super().__init__(entity)
        self.metadata = {"etag": etag}


def _row_key(event_id: int) -> str:
    return f"{event_id:012d}"


class TableJournal(Journal):
    """One Azure Table: partition = turn id; rows = events (row key = zero-padded id) plus a
    `~meta` row holding the last id. Appends are entity-group transactions that update the meta
    row with its ETag (If-Match) and insert the event, retried on conflict: ids stay contiguous
    with concurrent writers on any number of instances."""

    poll_seconds = 0.2

    def __init__(self, table_client, **kwargs) -> None:
        super().__init__(**kwargs)
        from azure.core.exceptions import HttpResponseError, ResourceExistsError
        self._table = table_client
        # The meta row this client last wrote, per turn: a writer appending in a row skips the
        # read; a stale copy fails its If-Match (412) and is re-read.
        self._written: dict[str, _Meta] = {}
        self._written_lock = threading.Lock()
        try:
            self._table.create_table()
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:  # Azure: the Bicep made it; the role covers entities
            if exc.status_code != 403:
                raise

    @classmethod
    def from_connection_string(cls, connection_string: str, table: str = DEFAULT_TABLE, **kwargs):
        """For Azurite in tests (its documented development account), not for Azure."""
        from azure.data.tables import TableClient
        return cls(TableClient.from_connection_string(connection_string, table_name=table), **kwargs)

    @classmethod
    def from_endpoint(cls, endpoint: str, table: str = DEFAULT_TABLE, credential=None, **kwargs):
        from azure.data.tables import TableClient
        if credential is None:
            from azure.identity import DefaultAzureCredential
            credential = DefaultAzureCredential()
        return cls(TableClient(endpoint=endpoint, table_name=table, credential=credential), **kwargs)

    # entity <-> event
    @staticmethod
    def _event_entity(turn_id: str, event_id: int, kind: str, data: str, at: float) -> dict:
        chunks = [data[i:i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [""]
        if len(chunks) > _MAX_CHUNKS:
            raise ValueError(f"event data of {len(data)} characters is too large for the journal")
        entity = {"PartitionKey": turn_id, "RowKey": _row_key(event_id), "kind": kind,
                  "at": at, "chunks": len(chunks)}
        entity.update({f"d{i}": chunk for i, chunk in enumerate(chunks)})
        return entity

    @staticmethod
    def _event_of(entity) -> tuple[int, str, str]:
        data = "".join(entity[f"d{i}"] for i in range(int(entity["chunks"])))
        return int(entity["RowKey"]), entity["kind"], data

    def _meta(self, turn_id: str):
        from azure.core.exceptions import ResourceNotFoundError
        try:
            return self._table.get_entity(turn_id, _META)
        except ResourceNotFoundError:
            return None

    def _write(self, turn_id: str, build) -> int | None:
        """Run one optimistic transaction: build(meta) -> (operations, result); retried on a
        conflict with a concurrent writer (412 from If-Match, 409 from a racing create)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError
        from azure.data.tables import TableTransactionError, UpdateMode
        for _ in range(50):
            with self._written_lock:
                meta = self._written.pop(turn_id, None)
            if meta is None:
                meta = self._meta(turn_id)
            ops, result = build(meta)
            if not ops:
                return result
            batch = []
            for op, entity in ops:
                if op == "meta" and meta is not None:
                    batch.append(("update", entity, {"mode": UpdateMode.REPLACE,
                                                     "etag": meta.metadata["etag"],
                                                     "match_condition": MatchConditions.IfNotModified}))
                else:
                    batch.append(("create", entity))
            try:
                answers = self._table.submit_transaction(batch)
            except (TableTransactionError, HttpResponseError) as exc:
                # 412: another writer moved on; 409: a racing create; 404: a remembered meta row
                # was deleted by expiry. Each time the meta row is read again.
                if getattr(exc, "status_code", None) in (404, 409, 412):
                    continue
                raise
            etag = (answers[0] or {}).get("etag") if answers else None
            if etag:
                with self._written_lock:
                    if len(self._written) > 1000:  # many turns in one process: forget the oldest
                        self._written.pop(next(iter(self._written)))
                    self._written[turn_id] = _Meta(ops[0][1], etag)
            return result
        raise RuntimeError(f"journal: too much contention appending to turn {turn_id!r}")

    def _append(self, turn_id: str, kind: str, data: str) -> int:
        at = self.clock()
        created = [False]

        def build(meta):
            if meta is not None and meta.get("finished_at") is not None:
                raise TurnFinished(f"turn {turn_id!r} is finished")
            created[0] = meta is None
            event_id = (int(meta["last_id"]) if meta else 0) + 1
            new_meta = {"PartitionKey": turn_id, "RowKey": _META, "last_id": event_id,
                        "touched_at": at}
            return [("meta", new_meta),
                    ("event", self._event_entity(turn_id, event_id, kind, data, at))], event_id
        event_id = self._write(turn_id, build)
        if created[0]:  # the turn's first event: index it so an abandoned turn can be found
            self._table.upsert_entity({"PartitionKey": _STARTED,
                                       "RowKey": f"{at:017.3f}|{turn_id}", "turn_id": turn_id})
        return event_id

    def _read(self, turn_id: str, after: int):
        query = "PartitionKey eq @pk and RowKey gt @after and RowKey lt @meta"
        rows = self._table.query_entities(
            query, parameters={"pk": turn_id, "after": _row_key(after), "meta": _META})
        return sorted(self._event_of(e) for e in rows)

    def _finished(self, turn_id: str) -> bool:
        meta = self._meta(turn_id)
        return meta is not None and meta.get("finished_at") is not None

    def _finish(self, turn_id: str, closing) -> int | None:
        at = self.clock()
        finished_at = [at]

        def build(meta):
            if meta is not None and meta.get("finished_at") is not None:
                finished_at[0] = float(meta["finished_at"])
                return [], meta.get("closing_id")
            last = int(meta["last_id"]) if meta else 0
            new_meta = {"PartitionKey": turn_id, "RowKey": _META, "finished_at": at}
            ops = [("meta", new_meta)]
            if closing is None:
                new_meta.update(last_id=last)
                return ops, None
            new_meta.update(last_id=last + 1, closing_id=last + 1)
            ops.append(("event", self._event_entity(turn_id, last + 1, *closing, at)))
            return ops, last + 1
        closing_id = self._write(turn_id, build)
        # The expiry index lives in another partition (no cross-partition transactions): it is
        # (re)written on every finish() call, so a retried finish repairs a lost index row.
        self._table.upsert_entity({"PartitionKey": _EXPIRY,
                                   "RowKey": f"{finished_at[0]:017.3f}|{turn_id}", "turn_id": turn_id})
        return closing_id

    def _index_before(self, partition: str, cutoff: float) -> list:
        return list(self._table.query_entities(
            "PartitionKey eq @pk and RowKey lt @cutoff",
            parameters={"pk": partition, "cutoff": f"{cutoff:017.3f}|"}))

    def _delete_turn(self, turn_id: str) -> None:
        with self._written_lock:
            self._written.pop(turn_id, None)
        rows = list(self._table.query_entities("PartitionKey eq @pk", parameters={"pk": turn_id},
                                               select=["PartitionKey", "RowKey"]))
        for start in range(0, len(rows), 100):  # a transaction holds at most 100 operations
            self._table.submit_transaction([("delete", r) for r in rows[start:start + 100]])

    def _unindex(self, partition: str, row_key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        try:
            self._table.delete_entity(partition, row_key)
        except ResourceNotFoundError:
            pass

    def _expire(self, cutoff: float, abandon_cutoff: float) -> int:
        deleted = 0
        for index_row in self._index_before(_EXPIRY, cutoff):
            self._delete_turn(index_row["turn_id"])
            self._unindex(_EXPIRY, index_row["RowKey"])
            deleted += 1
        for index_row in self._index_before(_STARTED, abandon_cutoff):
            meta = self._meta(index_row["turn_id"])
            if meta is not None and meta.get("finished_at") is not None:
                continue  # finished: the retention sweep above deletes it in time
            if meta is not None and float(meta.get("touched_at") or 0) >= abandon_cutoff:
                continue  # a long turn that is still writing
            if meta is not None:
                self._delete_turn(index_row["turn_id"])
                deleted += 1
            self._unindex(_STARTED, index_row["RowKey"])
        return deleted

    def close(self) -> None:
        self._table.close()


# -- Server-Sent Events ------------------------------------------------------------------------
HEARTBEAT = ": keep-alive\n\n"  # an SSE comment: keeps proxies and idle clients from closing


def sse_event(event: Event) -> str:
    """One SSE frame; `id` is the journal id, so the browser's Last-Event-ID resumes exactly."""
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))  # one line
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


async def sse_stream(j: Journal, turn_id: str, after=None, *, heartbeat_seconds: float = 15.0,
                     settle: Callable[[], Any] | None = None):
    """Replay a turn's events after `after`, then follow it live until it is finished.

    Yields SSE text: a heartbeat comment first, the frames, and one whenever `heartbeat_seconds` pass without
    an event. `settle` (optional, async) is asked at each idle beat whether the turn ended without
    anyone writing its closing event (e.g. it was terminated); returning `(kind, data)` makes this
    reader write it with finish(), which is idempotent, so every reader still sees exactly one."""
    turn_id, after = _turn(turn_id), _after(after)
    yield HEARTBEAT  # at once: the response head and a first byte reach the client (and proxies)
    while True:
        events = await j.wait_async(turn_id, after, heartbeat_seconds)
        for event in events:
            yield sse_event(event)
            after = event.id
        if events:
            continue
        if await asyncio.to_thread(j.finished, turn_id):
            # another reader may have written the closing event since this one last read
            for event in await asyncio.to_thread(j.read, turn_id, after):
                yield sse_event(event)
            return
        closing = await settle() if settle is not None else None
        if closing:
            await asyncio.to_thread(j.finish, turn_id, *closing)
            continue
        yield HEARTBEAT


# -- settings ---------------------------------------------------------------------------------
def retention_seconds() -> float:
    raw = os.environ.get("STREAM_JOURNAL_RETENTION_SECONDS")
    if raw is None or not raw.strip():
        return DEFAULT_RETENTION_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"STREAM_JOURNAL_RETENTION_SECONDS must be a number of seconds, not {raw!r}") from None
    if value < 0:
        raise ValueError("STREAM_JOURNAL_RETENTION_SECONDS must be >= 0")
    return value


def default_sqlite_path() -> Path:
    """Beside the devhost task hub file (devhost exports its path), else the app's .devhost/."""
    hub = os.environ.get("DEVHOST_TASK_HUB_PATH")
    if hub:
        hub_path = Path(hub)
        return hub_path.with_name(hub_path.stem + ".journal.sqlite")
    return Path(__file__).resolve().parent.parent / ".devhost" / "journal.sqlite"


def table_endpoint() -> str:
    """The Function app's storage account, from the identity-based AzureWebJobsStorage settings."""
    uri = os.environ.get("AzureWebJobsStorage__tableServiceUri")
    if uri:
        return uri
    account = os.environ.get("AzureWebJobsStorage__accountName")
    if not account:
        raise ValueError("STREAM_JOURNAL_BACKEND=table needs AzureWebJobsStorage__accountName "
                         "(or AzureWebJobsStorage__tableServiceUri)")
    return f"https://{account}.table.core.windows.net"


def open_journal(backend: str | None = None) -> Journal:
    """The journal the settings choose: STREAM_JOURNAL_BACKEND = sqlite (default) | table."""
    backend = (backend or os.environ.get("STREAM_JOURNAL_BACKEND") or "sqlite").strip().lower()
    if backend not in BACKENDS:
        raise ValueError(f"STREAM_JOURNAL_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "table":
        return TableJournal.from_endpoint(table_endpoint(),
                                          os.environ.get("STREAM_JOURNAL_TABLE") or DEFAULT_TABLE,
                                          retention_seconds=retention_seconds())
    return SqliteJournal(default_sqlite_path(), retention_seconds=retention_seconds())


_shared: Journal | None = None
_shared_lock = threading.Lock()


def journal() -> Journal:
    """The process-wide journal (clients are thread-safe and reused across invocations)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = open_journal()
        return _shared


def publish(turn_id: str, kind: str, data: Any = None, j: Journal | None = None) -> int | None:
    """append() for producers (the LLM and tool activities): the journal is a live view and the
    durable result the truth, so a journal that is down, or a turn already finished, must never
    fail the model call. Returns the event id, or None when nothing was written."""
    try:
        return (j or journal()).append(turn_id, kind, data)
    except TurnFinished:
        return None
    except Exception:  # noqa: BLE001 - see above; the failure is logged, the turn goes on
        log.warning("stream journal: could not publish %s for turn %s", kind, turn_id, exc_info=True)
        return None
