"""Tests for connector.buffer: order, limits, reopen, crash safety, the thread wrapper."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from connector import buffer as buffer_module
from connector.buffer import (
    AppendResult,
    BufferedMessage,
    BufferFull,
    BufferOpenError,
    SQLiteBuffer,
    ThreadedBuffer,
)

ROOT = Path(__file__).resolve().parents[2]


def msg(n: int, size: int = 10, headers: dict | None = None) -> BufferedMessage:
    """A message whose body starts with its number, padded to ``size`` bytes."""
    body = (b"%08d" % n).ljust(size, b"x") if size >= 8 else b"x" * size
    return BufferedMessage(
        exchange="ex",
        routing_key=f"rk.{n}",
        body=body,
        message_id=f"m{n}",
        msg_type="test",
        timestamp=1_700_000_000.0 + n,
        headers=headers,
    )


def numbers(rows: list[tuple[int, BufferedMessage]]) -> list[int]:
    return [int(m.message_id[1:]) for _, m in rows]


def read_all(buf: SQLiteBuffer, page: int = 7) -> list[tuple[int, BufferedMessage]]:
    out: list[tuple[int, BufferedMessage]] = []
    after = 0
    while True:
        rows = buf.read(after, page)
        if not rows:
            return out
        out.extend(rows)
        after = rows[-1][0]


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "sub" / "buffer.db")


@pytest.fixture
def open_buffer(path: str):
    opened: list[SQLiteBuffer] = []

    def make(**kwargs) -> SQLiteBuffer:
        buf = SQLiteBuffer(kwargs.pop("path", path), **kwargs)
        buf.open()
        opened.append(buf)
        return buf

    yield make
    for buf in opened:
        buf.close()


@pytest.fixture
def warnings():
    """Log events emitted by connector.buffer while the test runs.

    A full buffer says what it did in its AppendResult and logs nothing per batch:
    its caller, the publisher, tells the drops in one line every 10 s at most.
    """
    events: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_namespace") == "connector.buffer":
            events.append(event)

    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def total_size(rows: list[tuple[int, BufferedMessage]]) -> int:
    return sum(len(m.body) for _, m in rows)


# -- basics -----------------------------------------------------------------


def test_roundtrip_all_fields(open_buffer, path):
    buf = open_buffer()
    assert os.path.isdir(os.path.dirname(path))  # parent created
    headers = {"s": "é", "i": 3, "f": 1.5, "b": True, "z": False}
    messages = [msg(1, headers=headers), msg(2), BufferedMessage("", "", b"", "", "", 0.0)]
    assert buf.append(messages) == AppendResult(3, 0, 0)
    rows = buf.read()
    assert [m for _, m in rows] == messages
    assert rows[0][1].headers == headers and type(rows[0][1].headers["b"]) is bool
    assert type(rows[0][1].body) is bytes
    assert buf.count() == 3 and buf.size_bytes() == 20
    assert buf.append([]) == AppendResult(0, 0, 0)
    mode, sync = buf._conn.execute("PRAGMA journal_mode").fetchone()[0], buf._conn.execute(
        "PRAGMA synchronous"
    ).fetchone()[0]
    assert (mode, sync) == ("wal", 1)


def test_full_synchronous_is_applied(open_buffer):
    buf = open_buffer(synchronous="FULL")
    assert buf._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_invalid_arguments(path):
    with pytest.raises(ValueError):
        SQLiteBuffer(path, policy="drop_newest")
    with pytest.raises(ValueError):
        SQLiteBuffer(path, synchronous="OFF")
    with pytest.raises(ValueError):
        SQLiteBuffer(path, max_messages=0)
    with pytest.raises(RuntimeError):
        SQLiteBuffer(path).read()


def test_body_must_be_bytes(open_buffer):
    buf = open_buffer()
    with pytest.raises(TypeError):
        buf.append([BufferedMessage("ex", "rk", "text", "m", "t", 0.0)])  # type: ignore[arg-type]
    assert buf.count() == 0 and buf.read() == []


def test_hostile_strings_are_data(open_buffer):
    buf = open_buffer()
    evil = "x'); DROP TABLE messages; --"
    buf.append([BufferedMessage(evil, evil, b"\x00'\"", evil, evil, 0.0, {evil: evil})])
    assert buf.read()[0][1].exchange == evil
    assert buf.read()[0][1].headers == {evil: evil}


# -- order ------------------------------------------------------------------


def test_order_after_interleaved_appends_and_deletes(open_buffer):
    buf = open_buffer()
    buf.append([msg(i) for i in range(0, 10)])
    rows = buf.read()
    assert numbers(rows) == list(range(10))
    ids = [i for i, _ in rows]
    assert ids == sorted(ids)
    # Delete the first three and two in the middle, then append more.
    assert buf.delete(ids[:3] + [ids[5], ids[7]]) == 5
    buf.append([msg(i) for i in range(10, 15)])
    assert buf.delete([ids[3]]) == 1
    buf.append([msg(i) for i in range(15, 18)])
    expected = [4, 6, 8, 9] + list(range(10, 18))
    assert numbers(read_all(buf, page=3)) == expected
    assert buf.count() == len(expected)
    # Paging with after_id continues exactly after the given id.
    first = buf.read(limit=2)
    assert numbers(first) == [4, 6]
    assert numbers(buf.read(first[-1][0], 3)) == [8, 9, 10]
    # Ids are never reused, even once the table is empty.
    everything = read_all(buf)
    last_id = everything[-1][0]
    assert buf.delete(i for i, _ in everything) == len(expected)
    assert buf.count() == 0 and buf.size_bytes() == 0
    buf.append([msg(99)])
    assert buf.read()[0][0] > last_id


def test_delete_missing_and_duplicate_ids_is_harmless(open_buffer):
    buf = open_buffer()
    buf.append([msg(i, size=10 + i) for i in range(5)])
    ids = [i for i, _ in buf.read()]
    assert buf.delete([ids[0], ids[0], 10_000, -1]) == 1
    assert buf.delete([ids[0]]) == 0
    assert buf.delete([]) == 0
    assert buf.count() == 4
    assert buf.size_bytes() == sum(10 + i for i in range(1, 5))


@pytest.mark.parametrize("returning", [True, False])
def test_delete_many_ids_in_chunks_keeps_counters_exact(open_buffer, monkeypatch, returning):
    monkeypatch.setattr(buffer_module, "_HAS_RETURNING", returning)
    buf = open_buffer()
    rng = random.Random(7)
    buf.append([msg(i, size=rng.randrange(8, 200)) for i in range(1500)])
    rows = buf.read(limit=10_000)
    doomed = [i for k, (i, _) in enumerate(rows) if k % 3 != 1]  # 1000 ids: two chunks
    doomed += [10**9, 10**9 + 1] + doomed[:50]  # absent and repeated ids
    assert buf.delete(doomed) == 1000
    left = read_all(buf, page=1000)
    assert buf.count() == len(left)
    assert buf.size_bytes() == total_size(left)


# -- limits -----------------------------------------------------------------


def test_drop_oldest_by_messages(open_buffer, warnings):
    buf = open_buffer(max_messages=5)
    assert buf.append([msg(i) for i in range(4)]) == AppendResult(4, 0, 0)
    result = buf.append([msg(i) for i in range(4, 7)])
    assert result == AppendResult(3, 0, 2, "max_messages")
    assert numbers(buf.read()) == [2, 3, 4, 5, 6]
    assert buf.count() == 5
    assert buf.dropped_total == 2
    assert not warnings


def test_drop_oldest_by_bytes(open_buffer, warnings):
    buf = open_buffer(max_bytes=100)
    buf.append([msg(i, size=30) for i in range(3)])  # 90 bytes
    result = buf.append([msg(3, size=50)])  # needs 40 more: drop two of 30
    assert result == AppendResult(1, 0, 2, "max_bytes")
    assert numbers(buf.read()) == [2, 3]
    assert buf.size_bytes() == 80 and buf.count() == 2
    assert buf.dropped_total == 2 and not warnings


def test_drop_oldest_batch_larger_than_the_buffer_keeps_its_newest(open_buffer, warnings):
    buf = open_buffer(max_messages=4)
    buf.append([msg(100), msg(101)])
    result = buf.append([msg(i) for i in range(10)])
    # The two old rows and the batch's first six are the oldest: dropped.
    assert result == AppendResult(4, 0, 8, "max_messages")
    assert numbers(buf.read()) == [6, 7, 8, 9]
    assert buf.count() == 4
    assert buf.dropped_total == 8 and not warnings


def test_refuse_newest_by_messages(open_buffer, warnings):
    buf = open_buffer(max_messages=5, policy="refuse_newest")
    buf.append([msg(i) for i in range(3)])
    result = buf.append([msg(i) for i in range(3, 7)])
    assert result == AppendResult(2, 2, 0, "max_messages")
    assert numbers(buf.read()) == [0, 1, 2, 3, 4]  # the LAST ones were refused
    assert buf.append([msg(9)]) == AppendResult(0, 1, 0, "max_messages")
    assert buf.count() == 5
    assert buf.refused_total == 3
    assert not warnings
    # Room again after a delete.
    buf.delete([buf.read(limit=1)[0][0]])
    assert buf.append([msg(9)]) == AppendResult(1, 0, 0)


def test_refuse_newest_by_bytes(open_buffer, warnings):
    buf = open_buffer(max_bytes=100, policy="refuse_newest")
    buf.append([msg(0, size=60)])
    result = buf.append([msg(1, size=20), msg(2, size=20), msg(3, size=10)])
    assert result == AppendResult(2, 1, 0, "max_bytes")
    assert numbers(buf.read()) == [0, 1, 2]
    assert buf.size_bytes() == 100
    assert buf.refused_total == 1 and not warnings


@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_newest"])
def test_oversized_message_is_refused(open_buffer, warnings, policy):
    buf = open_buffer(max_bytes=100, policy=policy)
    buf.append([msg(0, size=40)])
    result = buf.append([msg(1, size=101)])
    assert result == AppendResult(0, 1, 0, "max_bytes")
    assert numbers(buf.read()) == [0]  # nothing dropped for a message that can never fit
    assert buf.size_bytes() == 40
    assert buf.refused_total == 1 and not warnings
    # Exactly max_bytes fits (dropping the rest under drop_oldest).
    result = buf.append([msg(2, size=100)])
    if policy == "drop_oldest":
        assert result == AppendResult(1, 0, 1, "max_bytes")
        assert numbers(buf.read()) == [2]
    else:
        assert result == AppendResult(0, 1, 0, "max_bytes")


def test_oversized_in_the_middle_of_a_batch(open_buffer):
    drop = open_buffer(max_bytes=100)
    assert drop.append([msg(0), msg(1, size=500), msg(2)]) == AppendResult(2, 1, 0, "max_bytes")
    assert numbers(drop.read()) == [0, 2]
    refuse = open_buffer(path=drop.path + ".2", max_bytes=100, policy="refuse_newest")
    # refuse_newest always refuses a suffix: the caller knows which ones failed.
    assert refuse.append([msg(0), msg(1, size=500), msg(2)]) == AppendResult(1, 2, 0, "max_bytes")
    assert numbers(refuse.read()) == [0]


def test_buffer_full_names_the_limit():
    err = BufferFull.reached("max_messages", 1000, "/var/lib/centaure/buffer.db")
    assert "max_messages=1000" in str(err) and "/var/lib/centaure/buffer.db" in str(err)
    assert err.limit == "max_messages"
    assert str(BufferFull("buffer full (max_bytes)")) == "buffer full (max_bytes)"


def test_explicit_ids_place_messages_in_sequence_order(open_buffer):
    """The publisher puts unconfirmed messages back with their sequence numbers."""
    buf = open_buffer()
    assert buf.last_id() == 0
    buf.append([msg(5), msg(6)], ids=[5, 6])
    assert buf.last_id() == 6
    # Messages 3 and 4 were in flight when the link dropped: they go back before 5.
    buf.append([msg(3), msg(4)], ids=[3, 4])
    assert buf.last_id() == 6
    rows = buf.read()
    assert [i for i, _ in rows] == [3, 4, 5, 6] and numbers(rows) == [3, 4, 5, 6]
    # Without ids the next one follows the highest id ever used.
    buf.append([msg(7)])
    assert buf.read()[-1][0] == 7 == buf.last_id()
    # A duplicate id fails the whole transaction.
    with pytest.raises(sqlite3.IntegrityError):
        buf.append([msg(8), msg(9)], ids=[8, 5])
    assert buf.count() == 5 and buf.last_id() == 7 and numbers(buf.read()) == [3, 4, 5, 6, 7]
    with pytest.raises(ValueError):
        buf.append([msg(8)], ids=[8, 9])
    with pytest.raises(ValueError):
        buf.append([msg(8)], ids=[0])


def test_explicit_ids_follow_the_policy(open_buffer):
    refuse = open_buffer(max_messages=3, policy="refuse_newest")
    assert refuse.append([msg(i) for i in range(5)], ids=[10, 11, 12, 13, 14]) == AppendResult(
        3, 2, 0, "max_messages"
    )
    assert [i for i, _ in refuse.read()] == [10, 11, 12] and refuse.last_id() == 12
    drop = open_buffer(path=refuse.path + ".2", max_messages=3, max_bytes=100)
    batch = [msg(i) for i in range(5)] + [msg(5, size=200)]
    result = drop.append(batch, ids=[10, 11, 12, 13, 14, 15])
    assert result == AppendResult(3, 1, 2, "max_bytes")
    assert [i for i, _ in drop.read()] == [12, 13, 14] and drop.last_id() == 14


@pytest.mark.parametrize("seed", [1234, 99])
@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_newest"])
def test_counters_follow_a_random_workload(open_buffer, policy, seed):
    """Counters and contents match a simple model through appends, drops and deletes."""
    rng = random.Random(seed)
    buf = open_buffer(max_messages=60, max_bytes=3000, policy=policy)
    model: list[tuple[int, int]] = []  # (number, size), oldest first
    n = 0
    for _ in range(300):
        if rng.random() < 0.6:
            batch = [msg(n + k, size=rng.randrange(8, 120)) for k in range(rng.randrange(1, 70))]
            n += len(batch)
            result = buf.append(batch)
            before = len(model)
            if policy == "drop_oldest":
                model.extend((int(m.message_id[1:]), len(m.body)) for m in batch)
                # Trim from the front until both limits hold.
                dropped = 0
                while len(model) > 60 or sum(s for _, s in model) > 3000:
                    model.pop(0)
                    dropped += 1
                assert result.refused == 0
                assert result.dropped_oldest == dropped
                assert result.accepted == len(batch) - max(0, dropped - before)
            else:
                # Store the longest prefix that fits, refuse the rest.
                accepted = 0
                for m in batch:
                    if len(model) + 1 > 60 or sum(s for _, s in model) + len(m.body) > 3000:
                        break
                    model.append((int(m.message_id[1:]), len(m.body)))
                    accepted += 1
                refused = len(batch) - accepted
                assert result == AppendResult(accepted, refused, 0, result.limit if refused else None)
        else:
            rows = buf.read(limit=rng.randrange(1, 30))
            chosen = [i for i, _ in rows if rng.random() < 0.7]
            gone = {int(m.message_id[1:]) for i, m in rows if i in chosen}
            assert buf.delete(chosen) == len(gone)
            model = [(k, s) for k, s in model if k not in gone]
        assert buf.count() == len(model)
        assert buf.size_bytes() == sum(s for _, s in model)
    assert numbers(read_all(buf)) == [k for k, _ in model]


# -- persistence ------------------------------------------------------------


def test_reopen_keeps_rows_counters_and_ids(path, open_buffer):
    buf = SQLiteBuffer(path)
    buf.open()
    buf.append([msg(i, size=20 + i) for i in range(6)])
    ids = [i for i, _ in buf.read()]
    buf.delete(ids[-2:])  # delete the highest ids: they must not be reused
    count, size = buf.count(), buf.size_bytes()
    buf.close()
    buf.close()  # idempotent
    assert not os.path.exists(path + "-wal")  # checkpointed on close

    again = open_buffer()
    assert (again.count(), again.size_bytes()) == (count, size) == (4, 20 * 4 + 6)
    assert numbers(again.read()) == [0, 1, 2, 3]
    assert again.last_id() == ids[-1]
    again.append([msg(6)])
    assert again.read()[-1][0] > ids[-1]


def test_same_instance_can_reopen(path):
    buf = SQLiteBuffer(path)
    with buf:
        buf.append([msg(1)])
    with buf:
        assert buf.count() == 1
    with pytest.raises(RuntimeError):
        buf.append([msg(2)])


def test_not_a_database_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    buf = SQLiteBuffer(str(path))
    with pytest.raises(BufferOpenError) as info:
        buf.open()
    assert str(path) in str(info.value)
    assert "not an SQLite database" in str(info.value)
    assert path.read_bytes() == content
    assert not buf.is_open


def test_corrupt_pages_are_reported_at_open(tmp_path):
    path = str(tmp_path / "damaged.db")
    with SQLiteBuffer(path) as buf:
        buf.append([msg(i, size=300) for i in range(2000)])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 8192)
    damaged = Path(path).read_bytes()
    with pytest.raises(BufferOpenError, match="corrupt") as info:
        SQLiteBuffer(path).open()
    assert path in str(info.value)
    assert Path(path).read_bytes() == damaged


def test_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER, name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(BufferOpenError, match="something else") as info:
        SQLiteBuffer(str(path)).open()
    assert str(path) in str(info.value)


def test_directory_path_is_reported(tmp_path):
    with pytest.raises(BufferOpenError, match="directory"):
        SQLiteBuffer(str(tmp_path)).open()


def test_second_instance_on_the_same_file_is_refused(open_buffer, path):
    buf = open_buffer()
    buf.append([msg(1)])
    second = SQLiteBuffer(path)
    second.lock_timeout = 0.05
    with pytest.raises(BufferOpenError, match="locked") as info:
        second.open()
    assert path in str(info.value)
    assert buf.count() == 1 and numbers(buf.read()) == [1]


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from connector.buffer import BufferedMessage, SQLiteBuffer

    buf = SQLiteBuffer({path!r}, synchronous={sync!r})
    buf.open()
    n = buf.count()  # continue the numbering after a previous crash
    print("start", n, flush=True)
    pad = b"p" * 1200
    while True:
        batch = [
            BufferedMessage("ex", "rk", b"%08d" % (n + k) + pad, "m%d" % (n + k), "t", float(n + k))
            for k in range(100)
        ]
        buf.append(batch)
        n += 100
        print(n, flush=True)
    """
)


def run_and_kill(path: str, sync: str, more: int) -> tuple[int, int]:
    """Run the child until it reports ``more`` new messages, SIGKILL it mid-stream.

    Returns (count at its start, highest count it reported committed).
    """
    code = CHILD.format(root=str(ROOT), path=path, sync=sync)
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 20
    try:
        first = child.stdout.readline().split()
        assert first and first[0] == "start", child.stderr.read()
        start = int(first[1])
        reported = start
        while reported < start + more:
            line = child.stdout.readline()
            assert line, f"child died: {child.stderr.read()}"
            reported = int(line)
            assert time.monotonic() < deadline
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    # Whatever complete lines it printed before dying were committed too.
    for line in child.stdout.read().splitlines():
        if line.strip().isdigit():
            reported = max(reported, int(line))
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return start, reported


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_sigkill_loses_nothing_committed(path, sync):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    start, reported = run_and_kill(path, sync, 2000)
    assert start == 0
    # The second run recovers the file left by the kill, continues, and is killed again.
    start2, reported2 = run_and_kill(path, sync, 2500)
    assert start2 >= reported
    with SQLiteBuffer(path) as buf:
        count = buf.count()
        assert count >= reported2
        rows = read_all(buf, page=1000)
        assert len(rows) == count
        assert [int(m.body[:8]) for _, m in rows] == list(range(count))
        assert numbers(rows) == list(range(count))
        ids = [i for i, _ in rows]
        assert ids == sorted(set(ids))
        assert buf.size_bytes() == count * 1208


# -- ThreadedBuffer ---------------------------------------------------------


class RecordingBuffer(SQLiteBuffer):
    """Records the thread each SQLite operation runs in."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[tuple[str, int]] = []

    def open(self) -> None:
        self.threads.append(("open", threading.get_ident()))
        super().open()

    def append(self, messages, ids=None):
        self.threads.append(("append", threading.get_ident()))
        return super().append(messages, ids)

    def read(self, after_id=0, limit=1000):
        self.threads.append(("read", threading.get_ident()))
        return super().read(after_id, limit)

    def delete(self, ids):
        self.threads.append(("delete", threading.get_ident()))
        return super().delete(ids)

    def close(self) -> None:
        self.threads.append(("close", threading.get_ident()))
        super().close()


@pytest_twisted.ensureDeferred
async def test_threaded_buffer_runs_off_the_reactor_thread(path):
    reactor_thread = threading.get_ident()
    buf = RecordingBuffer(path, max_messages=10)
    tb = ThreadedBuffer(buf)
    await tb.start()
    assert tb.running
    # Calls made back to back run in order on the single thread.
    d1 = tb.append([msg(i) for i in range(8)])
    d2 = tb.append([msg(i) for i in range(8, 12)])
    d3 = tb.read(0, 100)
    r1, r2, rows = await d1, await d2, await d3
    assert r1 == AppendResult(8, 0, 0)
    assert r2 == AppendResult(4, 0, 2, "max_messages")
    assert numbers(rows) == list(range(2, 12))
    assert tb.count() == 10 and tb.size_bytes() == 100
    assert await tb.delete(i for i, _ in rows[:4]) == 4
    assert tb.count() == 6
    assert tb.last_id() == rows[-1][0]
    assert numbers(await tb.read(rows[5][0], 2)) == [8, 9]
    await tb.stop()
    assert not tb.running
    await tb.stop()  # harmless

    names = [name for name, _ in buf.threads]
    assert names == ["open", "append", "append", "read", "delete", "read", "close"]
    idents = {ident for _, ident in buf.threads}
    assert len(idents) == 1
    assert reactor_thread not in idents

    # The data is on disk.
    with SQLiteBuffer(path) as again:
        assert numbers(read_all(again)) == list(range(6, 12))


@pytest_twisted.ensureDeferred
async def test_threaded_buffer_start_failure_stops_the_thread(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"junk" * 1000)
    tb = ThreadedBuffer(SQLiteBuffer(str(path)))
    with pytest.raises(BufferOpenError):
        await tb.start()
    assert not tb._pool.started
    assert not tb.running


@pytest_twisted.ensureDeferred
async def test_threaded_buffer_not_started_fails_fast_and_can_restart(path):
    tb = ThreadedBuffer(SQLiteBuffer(path))
    with pytest.raises(RuntimeError, match="not started"):
        await tb.append([msg(1)])
    await tb.start()
    with pytest.raises(RuntimeError, match="already started"):
        await tb.start()
    await tb.append([msg(1)])
    await tb.stop()
    with pytest.raises(RuntimeError, match="not started"):
        await tb.read()
    await tb.start()  # a new thread, the same file
    assert numbers(await tb.read()) == [1]
    await tb.stop()


@pytest_twisted.ensureDeferred
async def test_threaded_buffer_errors_come_back_as_failures(path):
    tb = ThreadedBuffer(SQLiteBuffer(path))
    await tb.start()
    try:
        with pytest.raises(TypeError):
            bad = BufferedMessage("ex", "rk", "text", "m", "t", 0.0)  # type: ignore[arg-type]
            await tb.append([bad])
        assert await tb.append([msg(1)]) == AppendResult(1, 0, 0)
        assert await tb.append([msg(3), msg(2)], ids=[30, 20]) == AppendResult(2, 0, 0)
        assert numbers(await tb.read()) == [1, 2, 3]
        assert tb.last_id() == 30
    finally:
        await tb.stop()


def test_reactor_shutdown_closes_a_running_buffer(tmp_path):
    """A ThreadedBuffer left running does not keep the process alive, and is closed."""
    path = str(tmp_path / "b.db")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from twisted.internet import asyncioreactor
        asyncioreactor.install()
        from twisted.internet import reactor
        from twisted.internet.defer import ensureDeferred
        from connector.buffer import BufferedMessage, SQLiteBuffer, ThreadedBuffer

        tb = ThreadedBuffer(SQLiteBuffer({path!r}), reactor)

        async def main():
            await tb.start()
            await tb.append([BufferedMessage("ex", "rk", b"body", "m1", "t", 0.0)])
            reactor.stop()  # no tb.stop(): the shutdown trigger must do it

        reactor.callWhenRunning(lambda: ensureDeferred(main()))
        reactor.run()
        print("closed" if not tb.buffer.is_open else "still open", flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closed"
    assert not os.path.exists(path + "-wal")
    with SQLiteBuffer(path) as buf:
        assert buf.count() == 1
