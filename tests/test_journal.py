"""Contract tests of the stream journal, run against BOTH backends: a real SQLite file and Azure
Table storage served by Azurite (npm, installed by scripts/ensure-azurite.sh, started here on a
free loopback port with a temporary folder)."""
from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from core import journal as jmod
from core.journal import Event, SqliteJournal, TableJournal, TurnFinished

ROOT = Path(__file__).resolve().parent.parent
AZURITE_TABLE = ROOT / "node_modules" / ".bin" / "azurite-table"
# Azurite's documented development account (public, emulator-only; not a credential).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Connection string of a fresh Azurite Table service (killed at the end of the session)."""
    if not AZURITE_TABLE.exists():
        pytest.fail("Azurite is not installed: run `bash scripts/ensure-azurite.sh` (make test does)")
    folder = tmp_path_factory.mktemp("azurite")
    port = _free_port()
    log = open(folder / "azurite.log", "wb")
    proc = subprocess.Popen([str(AZURITE_TABLE), "--tableHost", "127.0.0.1", "--tablePort", str(port),
                             "--location", str(folder), "--silent", "--skipApiVersionCheck"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"azurite exited: {(folder / 'azurite.log').read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("azurite did not start listening in 60 s")
                time.sleep(0.05)
        yield (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
               f"TableEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Clock:
    """A settable clock: retention is tested by moving time, not by waiting."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "table"])
def make_journal(request, tmp_path):
    """make_journal() → a journal on the test's store; every call is a separate client (its own
    connection), like a different process or instance reading the same turn."""
    made = []
    table = f"j{uuid.uuid4().hex[:16]}"
    clock = Clock()

    def make(**kwargs):
        kwargs.setdefault("clock", clock)
        if request.param == "sqlite":
            j = SqliteJournal(tmp_path / "hub.journal.sqlite", **kwargs)
        else:
            j = TableJournal.from_connection_string(request.getfixturevalue("azurite"), table, **kwargs)
        made.append(j)
        return j

    make.backend = request.param
    make.clock = clock
    yield make
    for j in made:
        j.close()


def test_ids_start_at_one_and_increase_and_data_round_trips(make_journal):
    j = make_journal()
    payloads = [{"text": "Hel"}, "lo", 3, None, ["a", {"b": [1.5, True]}], {"text": "é ✓ 😀"}]
    ids = [j.append("turn-1", "delta", p) for p in payloads]
    assert ids == [1, 2, 3, 4, 5, 6]
    assert j.read("turn-1") == [Event(i, "delta", p) for i, p in zip(ids, payloads)]
    assert j.read("another-turn") == []
    assert j.append("another-turn", "meta", {}) == 1  # ids are per turn


def test_resume_after_n_gives_exactly_the_rest(make_journal):
    j = make_journal()
    for i in range(12):
        j.append("t", "delta", {"text": str(i)})
    j.finish("t", "done", {"reply": "0123456789ab"})
    everything = j.read("t")
    assert [e.id for e in everything] == list(range(1, 14))
    for n in range(0, 14):
        rest = j.read("t", after=n)
        assert rest == everything[n:], n
        assert j.read("t", after=str(n)) == rest  # Last-Event-ID arrives as text
    assert j.read("t", after=99) == []


def test_two_readers_each_get_every_event(make_journal):
    writer, readers = make_journal(), [make_journal(), make_journal()]
    got: list[list[Event]] = [[], []]
    started = threading.Barrier(3)

    def read_all(index: int) -> None:
        started.wait()
        after = 0
        while True:
            events = readers[index].wait("shared", after, timeout=30)
            got[index].extend(events)
            if events:
                after = events[-1].id
            if got[index] and got[index][-1].kind == "done":
                return

    threads = [threading.Thread(target=read_all, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    started.wait()
    sent = [writer.append("shared", "delta", {"text": f"w{i} "}) for i in range(25)]
    closing = writer.finish("shared", "done", {"reply": "ok"})
    for t in threads:
        t.join(60)
    expected = writer.read("shared")
    assert [e.id for e in expected] == sent + [closing]
    assert got[0] == expected and got[1] == expected


def test_concurrent_writers_get_unique_contiguous_ids(make_journal):
    writers = [make_journal() for _ in range(4)]
    per_writer = 12

    def write(index: int) -> None:
        for i in range(per_writer):
            writers[index].append("busy", "delta", {"w": index, "i": i})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    events = writers[0].read("busy")
    assert [e.id for e in events] == list(range(1, len(writers) * per_writer + 1))
    for w in range(len(writers)):  # every write landed once, each writer's own in its order
        assert [e.data["i"] for e in events if e.data["w"] == w] == list(range(per_writer))


def test_finish_writes_the_closing_event_once_and_closes_the_turn(make_journal):
    j, other = make_journal(), make_journal()
    j.append("t", "delta", {"text": "hi"})
    assert j.finished("t") is False
    assert j.finish("t", "done", {"reply": "hi"}) == 2
    assert other.finish("t", "done", {"reply": "again"}) == 2  # a second closer changes nothing
    assert other.finished("t") is True
    assert j.read("t") == [Event(1, "delta", {"text": "hi"}), Event(2, "done", {"reply": "hi"})]
    with pytest.raises(TurnFinished):
        other.append("t", "delta", {"text": "late"})
    assert j.read("t", after=2) == []
    # A reader at the end of a finished turn is told at once: no new events will come.
    assert other.wait("t", after=2, timeout=600) == []
    # finish() without a closing event (e.g. a cancelled turn) closes it too.
    assert j.finish("quiet") is None and j.finished("quiet") and j.read("quiet") == []


def test_wait_returns_what_was_appended_while_waiting(make_journal):
    writer, reader = make_journal(), make_journal()
    result: list[Event] = []
    waiting = threading.Event()

    def wait_for_first() -> None:
        waiting.set()
        result.extend(reader.wait("live", after=0, timeout=60))

    t = threading.Thread(target=wait_for_first)
    t.start()
    waiting.wait(10)
    writer.append("live", "delta", {"text": "first"})
    t.join(90)
    assert result and result[0] == Event(1, "delta", {"text": "first"})
    # With events already there, wait() does not wait; timeout 0 is a plain read.
    assert reader.wait("live", after=0, timeout=0) == result
    assert reader.wait("empty", after=0, timeout=0) == []


def test_wait_async_is_woken_by_an_append(make_journal):
    j = make_journal()

    async def scenario():
        waiter = asyncio.create_task(j.wait_async("async-turn", after=0, timeout=60))
        await asyncio.sleep(0)  # let the waiter start
        await asyncio.to_thread(j.append, "async-turn", "delta", {"text": "x"})
        events = await waiter
        closed = await asyncio.to_thread(j.finish, "async-turn", "done", {})
        rest = await j.wait_async("async-turn", after=1, timeout=60)
        return events, closed, rest

    events, closed, rest = asyncio.run(scenario())
    assert events == [Event(1, "delta", {"text": "x"})]
    assert rest == [Event(closed, "done", {})]


def test_retention_expires_finished_turns_only(make_journal):
    j = make_journal(retention_seconds=3600)
    clock = make_journal.clock
    j.append("old", "delta", {"text": "a"})
    j.finish("old", "done", {"reply": "a"})
    j.append("running", "delta", {"text": "still going"})
    clock.now += 3599
    assert j.expire() == 0
    assert len(j.read("old")) == 2
    clock.now += 2
    assert j.expire() == 1
    assert j.read("old") == [] and j.finished("old") is False
    assert j.read("running") == [Event(1, "delta", {"text": "still going"})]  # never finished
    assert j.expire() == 0
    # Retention needs no timer: finish() sweeps now and then.
    j.finish("running", "done", {})
    clock.now += 3601
    j.finish("third", "done", {})
    assert j.read("running") == [] and j.finished("third")


def test_a_turn_nobody_finished_expires_after_the_abandon_window(make_journal):
    j = make_journal(retention_seconds=3600, abandon_seconds=86400)
    clock = make_journal.clock
    j.append("abandoned", "delta", {"text": "a"})
    j.append("slow", "delta", {"text": "b"})
    clock.now += 86000
    j.append("slow", "delta", {"text": "still writing"})  # e.g. after a long approval wait
    clock.now += 401  # "abandoned" idle for 86401 s, "slow" for 401 s
    assert j.expire() == 1
    assert j.read("abandoned") == [] and [e.id for e in j.read("slow")] == [1, 2]
    assert j.append("slow", "delta", {"text": "c"}) == 3  # a live turn keeps its ids
    clock.now += 86401
    assert j.expire() == 1 and j.read("slow") == []
    assert j.expire() == 0


def test_a_large_result_document_round_trips(make_journal):
    j = make_journal()
    result = {"reply": "x" * 70_000, "tool_calls": [{"id": str(i)} for i in range(200)]}
    closing = j.finish("big", "done", result)
    assert make_journal().read("big") == [Event(closing, "done", result)]


def test_bad_input_is_refused_and_writes_nothing(make_journal):
    j = make_journal()
    for bad_turn in ("", "a/b", "a#b", "a?b", "a\\b", "tab\there", "~meta"):
        with pytest.raises(ValueError):
            j.append(bad_turn, "delta", {})
    with pytest.raises(ValueError):
        j.append("t", "", {})
    with pytest.raises(TypeError):
        j.append("t", "delta", {"not json": object()})
    for bad_after in ("x", "-1", "1.5"):
        with pytest.raises(ValueError):
            j.read("t", after=bad_after)
    assert j.read("t") == [] and j.finished("t") is False


def _append_many(path: str, writer: int, count: int) -> None:
    j = SqliteJournal(path)
    for i in range(count):
        j.append("multi", "delta", {"w": writer, "i": i})
    j.close()


def test_sqlite_is_safe_across_processes(tmp_path):
    path = str(tmp_path / "shared.journal.sqlite")
    SqliteJournal(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, w, 25)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    events = SqliteJournal(path).read("multi")
    assert [e.id for e in events] == list(range(1, 76))
    for w in range(3):
        assert [e.data["i"] for e in events if e.data["w"] == w] == list(range(25))


def test_a_journal_file_from_before_abandon_expiry_is_upgraded(tmp_path):
    import sqlite3
    path = tmp_path / "old.journal.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE journal_turns (turn_id TEXT PRIMARY KEY, last_id INTEGER NOT NULL,
                                    closing_id INTEGER, finished_at REAL);
        CREATE TABLE journal_events (turn_id TEXT NOT NULL, id INTEGER NOT NULL, kind TEXT NOT NULL,
                                     data TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (turn_id, id))
                                     WITHOUT ROWID;
        INSERT INTO journal_turns VALUES ('t', 1, NULL, NULL);
        INSERT INTO journal_events VALUES ('t', 1, 'delta', '"x"', 0);
    """)
    db.close()
    j = SqliteJournal(path, abandon_seconds=0)
    assert j.expire() == 0  # never touched since the upgrade: not judged abandoned
    assert j.append("t", "delta", "y") == 2 and [e.data for e in j.read("t")] == ["x", "y"]
    j.close()


def test_open_journal_follows_the_settings(tmp_path, monkeypatch):
    hub = tmp_path / "hub" / "TestHubName.sqlite"
    monkeypatch.setenv("DEVHOST_TASK_HUB_PATH", str(hub))
    monkeypatch.delenv("STREAM_JOURNAL_BACKEND", raising=False)
    monkeypatch.delenv("STREAM_JOURNAL_RETENTION_SECONDS", raising=False)
    j = jmod.open_journal()
    assert isinstance(j, SqliteJournal)
    assert j.path == hub.with_name("TestHubName.journal.sqlite")  # beside the task hub
    assert j.retention_seconds == 3600
    j.close()
    monkeypatch.setenv("STREAM_JOURNAL_RETENTION_SECONDS", "120")
    assert jmod.retention_seconds() == 120
    for bad in ("soon", "-5"):
        monkeypatch.setenv("STREAM_JOURNAL_RETENTION_SECONDS", bad)
        with pytest.raises(ValueError, match="STREAM_JOURNAL_RETENTION_SECONDS"):
            jmod.open_journal()
    monkeypatch.delenv("STREAM_JOURNAL_RETENTION_SECONDS")
    monkeypatch.setenv("STREAM_JOURNAL_BACKEND", "redis")
    with pytest.raises(ValueError, match="STREAM_JOURNAL_BACKEND"):
        jmod.open_journal()
    # The Azure backend finds the app's storage account in the host's identity-based settings.
    monkeypatch.delenv("AzureWebJobsStorage__tableServiceUri", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "stagentabc")
    assert jmod.table_endpoint() == "https://stagentabc.table.core.windows.net"
    monkeypatch.setenv("AzureWebJobsStorage__tableServiceUri", "https://x.table.core.chinacloudapi.cn")
    assert jmod.table_endpoint() == "https://x.table.core.chinacloudapi.cn"


def test_ensure_azurite_script_is_idempotent():
    """make test calls it on every run: with Azurite present it must do nothing and succeed."""
    assert AZURITE_TABLE.exists(), "run scripts/ensure-azurite.sh"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "ensure-azurite.sh")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert shutil.which("node"), "Azurite needs Node.js"


def test_sse_stream_replays_follows_and_ends_with_the_closing_event(make_journal):
    j, writer = make_journal(), make_journal()
    for i in range(3):
        writer.append("sse", "delta", {"text": f"t{i}"})
    beats_seen = []

    async def settle():
        beats_seen.append(len(beats_seen))
        if len(beats_seen) == 3:  # the turn "ended" with nobody writing its closing event
            return ("error", {"error": {"status": 500, "code": "terminated", "message": "x"}})
        return None

    async def collect(after):
        return [chunk async for chunk in jmod.sse_stream(j, "sse", after, heartbeat_seconds=0.01,
                                                         settle=settle)]

    chunks = asyncio.run(collect("1"))  # resume after event 1
    assert chunks[0] == jmod.HEARTBEAT  # sent at once, before any event exists
    chunks = chunks[1:]
    assert chunks[:2] == ['id: 2\nevent: delta\ndata: {"text":"t1"}\n\n',
                          'id: 3\nevent: delta\ndata: {"text":"t2"}\n\n']
    assert chunks[2:4] == [jmod.HEARTBEAT, jmod.HEARTBEAT]  # idle beats before it was settled
    assert chunks[4:] == ['id: 4\nevent: error\ndata: {"error":{"status":500,"code":"terminated",'
                          '"message":"x"}}\n\n']
    # A late reader of the finished turn gets the replay up to the closing event, then the end.
    late = asyncio.run(collect(None))[1:]
    assert [c.split("\n", 1)[0] for c in late] == ["id: 1", "id: 2", "id: 3", "id: 4"]
    assert writer.finish("sse", "done", {}) == 4  # the closing event stays the only one


def test_publish_never_fails_the_producer(make_journal, tmp_path):
    j = make_journal()
    assert jmod.publish("p", "delta", {"text": "a"}, j) == 1
    j.finish("p", "done", {})
    assert jmod.publish("p", "delta", {"text": "late"}, j) is None  # finished: dropped
    broken = SqliteJournal(tmp_path / "gone.sqlite")
    broken.path.unlink()
    broken.path.mkdir()  # the file is now a folder: every write fails
    broken.close()
    assert jmod.publish("p", "delta", {"text": "x"}, broken) is None
    assert [e.kind for e in j.read("p")] == ["delta", "done"]
