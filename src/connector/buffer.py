"""The publisher's on-disk backup buffer: an ordered, bounded SQLite queue.

When the bus is unreachable, blocked or not confirming, the publisher appends
messages here; once the bus is back it replays them in order (``read``) and
deletes each one only after the broker confirmed it (``delete``).

Durability: the database runs in WAL mode. With ``synchronous=NORMAL`` a
committed transaction survives a crash of the process (kill -9) but may be
lost if the machine itself loses power; ``FULL`` also survives a power loss at
the price of one fsync per commit.

When full, the buffer applies its policy and says what it did in the
:class:`AppendResult` of each ``append``; it does not log it: its caller (the
publisher) counts the messages lost and logs them at most every 10 s.

``SQLiteBuffer`` is synchronous and confined to the thread that opened it;
``ThreadedBuffer`` runs it on one dedicated thread and returns Deferreds, so
the reactor never waits on the disk.

The file is opened with an exclusive lock for the lifetime of the instance:
a second process (or instance) opening the same file gets a clear error
instead of silently breaking the in-memory counters.

The files hold messages: the database is created 0600 (an existing one loses
group's and others' rights), and so are its WAL and SHM files (SQLite gives
them the database's mode; leftovers are tightened at open). A folder the
buffer creates is 0700.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

__all__ = [
    "AppendResult",
    "BufferedMessage",
    "BufferFull",
    "BufferOpenError",
    "SQLiteBuffer",
    "ThreadedBuffer",
]

log = Logger()

Policy = Literal["drop_oldest", "refuse_newest"]
Synchronous = Literal["NORMAL", "FULL"]

#: Value of ``PRAGMA user_version`` for the schema below.
SCHEMA_VERSION = 1

_TABLE = "messages"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange    TEXT    NOT NULL,
    routing_key TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    message_id  TEXT    NOT NULL,
    msg_type    TEXT    NOT NULL,
    timestamp   REAL    NOT NULL,
    headers     TEXT
)
"""

_INSERT = (
    f"INSERT INTO {_TABLE} (exchange, routing_key, body, message_id, msg_type, timestamp, headers)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_WITH_ID = (
    f"INSERT INTO {_TABLE}"
    " (id, exchange, routing_key, body, message_id, msg_type, timestamp, headers)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_LAST_ID = "SELECT seq FROM sqlite_sequence WHERE name = ?"
_SELECT = (
    f"SELECT id, exchange, routing_key, body, message_id, msg_type, timestamp, headers"
    f" FROM {_TABLE} WHERE id > ? ORDER BY id LIMIT ?"
)

#: Ids per DELETE statement: 999 is the smallest host-parameter limit any
#: SQLite build has ever had, so this works everywhere.
_DELETE_CHUNK = 999

#: ``DELETE ... RETURNING`` exists from SQLite 3.35.0 on.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

# Reused codec objects: json.dumps with non-default arguments builds a new
# encoder at every call, which shows in the append rate.
_encode_headers = json.JSONEncoder(separators=(",", ":")).encode
_decode_headers = json.JSONDecoder().decode

#: Keep the WAL file from staying huge after a burst (bytes).
_JOURNAL_SIZE_LIMIT = 64 << 20


@dataclass(frozen=True, slots=True)
class BufferedMessage:
    """One message as published: where it goes, its body and AMQP properties."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    msg_type: str  # AMQP 'type' property
    timestamp: float  # UNIX seconds
    headers: dict[str, str | int | float | bool] | None = None  # stored as JSON text


class BufferFull(Exception):
    """The buffer refused a message; the message names the limit that was hit.

    ``BufferFull.reached("max_messages", 1000, path)`` builds the standard
    message; ``limit`` is then available as an attribute.
    """

    def __init__(self, message: str = "backup buffer full", limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit

    @classmethod
    def reached(cls, limit: str, value: int | None = None, path: str | None = None) -> BufferFull:
        """``backup buffer full: max_messages=1000 reached (path)``."""
        text = f"backup buffer full: {limit}"
        if value is not None:
            text += f"={value}"
        text += " reached"
        if path is not None:
            text += f" ({path})"
        return cls(text, limit)


#: Mode of the buffer's files: they hold messages (events, perf, alarms).
_FILE_MODE = 0o600
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _private_file(path: str) -> None:
    """Create ``path`` 0600 if missing (an empty file is an empty SQLite database),
    or take group's and others' rights away from an existing one.

    Not through the umask: it is the whole process's, threads included.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     _FILE_MODE)
    except FileExistsError:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
        return
    os.close(fd)


class BufferOpenError(Exception):
    """The file at ``path`` cannot be used as a buffer (corrupt, foreign, locked)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot open backup buffer {path!r}: {reason}")


@dataclass
class AppendResult:
    """What ``SQLiteBuffer.append`` did with a batch.

    ``refuse_newest``: the first ``accepted`` messages are stored, the last
    ``refused`` ones are not (it stops at the first message that does not fit).

    ``drop_oldest``: ``refused`` counts only messages whose body alone is
    larger than ``max_bytes`` (those are never stored); room for the others is
    made by deleting the oldest rows, counted in ``dropped_oldest``. If the
    batch itself exceeds a limit, its own first messages are the oldest ones:
    they are not stored and are counted in ``dropped_oldest`` too.

    ``limit`` names the limit that caused refusals or drops (``"max_messages"``
    or ``"max_bytes"``), ``None`` when everything fitted.
    """

    accepted: int  # how many of the given messages are now stored
    refused: int  # refused (policy refuse_newest) - the LAST ones of the batch
    dropped_oldest: int  # older rows deleted to make room (policy drop_oldest)
    limit: str | None = None


class SQLiteBuffer:
    """Thread-confined, synchronous. One instance per file; open() creates the schema."""

    #: Seconds open() waits for a file locked by another instance (e.g. a
    #: previous process still exiting) before raising BufferOpenError.
    lock_timeout: float = 1.0

    def __init__(
        self,
        path: str,
        max_messages: int = 1_000_000,
        max_bytes: int = 1 << 30,
        policy: Policy = "drop_oldest",
        synchronous: Synchronous = "NORMAL",
    ) -> None:
        if policy not in ("drop_oldest", "refuse_newest"):
            raise ValueError(f"policy must be 'drop_oldest' or 'refuse_newest', not {policy!r}")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, not {max_messages!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes!r}")
        self.path = os.fspath(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.policy: Policy = policy
        self.synchronous: Synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._count = 0
        self._bytes = 0
        self._last_id = 0
        #: Totals since open(), for health reports.
        self.dropped_total = 0
        self.refused_total = 0

    # -- lifecycle -------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True between a successful open() and close()."""
        return self._conn is not None

    def open(self) -> None:
        """Open (creating if needed) the file, its schema, and load the counters."""
        if self._conn is not None:
            raise RuntimeError(f"backup buffer {self.path!r} is already open")
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        if os.path.isdir(self.path):
            raise BufferOpenError(self.path, "it is a directory")
        try:
            _private_file(self.path)
        except OSError as e:
            raise BufferOpenError(self.path, f"cannot create it 0600: {e}") from e
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            # check_same_thread (default True) enforces the thread confinement.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.lock_timeout)
        except sqlite3.Error as e:
            raise BufferOpenError(self.path, str(e)) from e
        try:
            self._prepare(conn)
            # SQLite gives its -wal/-shm/-journal files the database's mode;
            # the ones left by an older version are tightened too.
            for suffix in _SIDE_FILES:
                try:
                    os.chmod(self.path + suffix, _FILE_MODE)
                except FileNotFoundError:
                    pass
            count, size = conn.execute(
                f"SELECT count(*), coalesce(sum(length(body)), 0) FROM {_TABLE}"
            ).fetchone()
            last_id = _read_last_id(conn)
        except BufferOpenError:
            conn.close()
            raise
        except sqlite3.DatabaseError as e:
            conn.close()
            name = getattr(e, "sqlite_errorname", "")
            if name.startswith("SQLITE_BUSY") or "locked" in str(e):
                reason = "the file is locked, another process or instance is using it"
            elif name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
                reason = f"not an SQLite database or corrupt ({e}); the file was left untouched"
            else:
                reason = str(e)
            raise BufferOpenError(self.path, reason) from e
        self._conn = conn
        self._count = int(count)
        self._bytes = int(size)
        self._last_id = last_id
        self.dropped_total = 0
        self.refused_total = 0
        if self._count:
            log.info(
                "Backup buffer {path} opened with {count} messages ({size} bytes) to replay",
                path=self.path,
                count=self._count,
                size=self._bytes,
            )
        if self._count > self.max_messages or self._bytes > self.max_bytes:
            log.warn(
                "Backup buffer {path} holds more than its limits ({count} messages > "
                "{max_messages} or {size} bytes > {max_bytes}); policy {policy} applies "
                "on the next append",
                path=self.path,
                count=self._count,
                size=self._bytes,
                max_messages=self.max_messages,
                max_bytes=self.max_bytes,
                policy=self.policy,
            )

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file is ours (or empty), set the pragmas, create the schema."""
        # Reading the schema first validates the header without writing anything.
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if tables - {_TABLE, "sqlite_sequence"} or (tables and _TABLE not in tables):
            raise BufferOpenError(
                self.path, f"it is an SQLite database of something else (tables: {sorted(tables)})"
            )
        if version > SCHEMA_VERSION:
            raise BufferOpenError(
                self.path, f"schema version {version} is newer than this code ({SCHEMA_VERSION})"
            )
        # Exclusive: one instance per file, and WAL without shared memory.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warn(
                "Backup buffer {path}: journal_mode is {mode}, not WAL", path=self.path, mode=mode
            )
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        # A write transaction takes the exclusive lock now, not at the first append.
        # Nothing is written to an existing buffer here: if its pages are
        # damaged, the scan in open() reports it on an untouched file.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _TABLE not in tables:
                conn.execute(_SCHEMA)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the file (checkpointing the WAL). Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> SQLiteBuffer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"backup buffer {self.path!r} is not open")
        return conn

    # -- counters --------------------------------------------------------

    def count(self) -> int:
        """Number of messages stored (O(1))."""
        return self._count

    def size_bytes(self) -> int:
        """Sum of the stored bodies' sizes in bytes (O(1))."""
        return self._bytes

    def last_id(self) -> int:
        """Highest id ever stored in this file (0 if none), even if since deleted (O(1))."""
        return self._last_id

    # -- operations ------------------------------------------------------

    def append(
        self, messages: Sequence[BufferedMessage], ids: Sequence[int] | None = None
    ) -> AppendResult:
        """Store ``messages`` in order, in one transaction, applying the limits.

        Without ``ids`` each message gets the next id. With ``ids`` (one per
        message, e.g. the publisher's sequence numbers) the rows take those
        ids, so a message put back after a link failure is replayed at its
        original place; they must be unique and not already stored (else
        ``sqlite3.IntegrityError`` and nothing is stored).
        """
        # Every helper below runs once per batch, never once per message.
        conn = self._connection()
        n = len(messages)
        ids = _checked_ids(ids, n)
        if n == 0:
            return AppendResult(0, 0, 0)
        sizes = _body_sizes(messages)
        if self.policy == "refuse_newest":
            plan = self._plan_refuse_newest(messages, ids, sizes)
        else:
            plan = self._plan_drop_oldest(messages, ids, sizes)
        rows = _rows(plan.kept, plan.kept_ids)
        freed_count, freed_bytes, last_id = self._write(conn, rows, plan)
        # Committed: only now do the counters move.
        self._count += len(rows) - freed_count
        self._bytes += plan.batch_bytes - freed_bytes
        self._last_id = last_id
        dropped = freed_count + plan.self_dropped
        result = AppendResult(len(rows), plan.refused, dropped, plan.limit)
        if plan.refused or dropped:
            self.refused_total += plan.refused
            self.dropped_total += dropped
        return result

    def _plan_refuse_newest(
        self, messages: Sequence[BufferedMessage], ids: list[int] | None, sizes: list[int]
    ) -> _AppendPlan:
        """Keep the batch's first messages while they fit in the room left; refuse the rest."""
        room_count = self.max_messages - self._count
        room_bytes = self.max_bytes - self._bytes
        limit: str | None = None
        keep = 0
        batch_bytes = 0
        for size in sizes:
            if keep + 1 > room_count:
                limit = "max_messages"
                break
            if batch_bytes + size > room_bytes:
                limit = "max_bytes"
                break
            keep += 1
            batch_bytes += size
        return _AppendPlan(
            kept=messages[:keep],
            kept_ids=None if ids is None else ids[:keep],
            batch_bytes=batch_bytes,
            refused=len(messages) - keep,
            self_dropped=0,
            to_free_count=0,
            to_free_bytes=0,
            limit=limit,
        )

    def _plan_drop_oldest(
        self, messages: Sequence[BufferedMessage], ids: list[int] | None, sizes: list[int]
    ) -> _AppendPlan:
        """Keep the batch's newest messages that fit the limits; count the stored rows to delete."""
        max_bytes = self.max_bytes
        # Oversized bodies can never fit: refuse them whatever the policy.
        fitting = [i for i, size in enumerate(sizes) if size <= max_bytes]
        refused = len(messages) - len(fitting)
        limit: str | None = "max_bytes" if refused else None
        # If the batch alone exceeds a limit, its first (oldest) messages go.
        keep = 0
        batch_bytes = 0
        for i in reversed(fitting):
            if keep + 1 > self.max_messages:
                limit = limit or "max_messages"
                break
            if batch_bytes + sizes[i] > max_bytes:
                limit = limit or "max_bytes"
                break
            keep += 1
            batch_bytes += sizes[i]
        self_dropped = len(fitting) - keep
        chosen = fitting[len(fitting) - keep :]
        kept: Sequence[BufferedMessage]
        if refused or self_dropped:
            kept = [messages[i] for i in chosen]
            kept_ids = None if ids is None else [ids[i] for i in chosen]
        else:
            kept, kept_ids = messages, ids
        if self_dropped:
            # Some of the batch had to go: every older row goes before them.
            to_free_count, to_free_bytes = self._count, self._bytes
        else:
            to_free_count = self._count + keep - self.max_messages
            to_free_bytes = self._bytes + batch_bytes - max_bytes
        if to_free_count > 0 or to_free_bytes > 0:
            limit = limit or ("max_messages" if to_free_count > 0 else "max_bytes")
        return _AppendPlan(kept, kept_ids, batch_bytes, refused, self_dropped,
                           to_free_count, to_free_bytes, limit)

    def _write(
        self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]], plan: _AppendPlan
    ) -> tuple[int, int, int]:
        """Delete what the plan frees and insert ``rows`` in one transaction.

        Returns (rows freed, bytes freed, the file's last id afterwards).
        """
        freed_count = freed_bytes = 0
        last_id = self._last_id
        must_free = plan.to_free_count > 0 or plan.to_free_bytes > 0
        if not rows and not must_free:
            return freed_count, freed_bytes, last_id
        conn.execute("BEGIN IMMEDIATE")
        try:
            if must_free:
                freed_count, freed_bytes = self._drop_oldest(
                    conn, plan.to_free_count, plan.to_free_bytes
                )
            if rows:
                conn.executemany(_INSERT if plan.kept_ids is None else _INSERT_WITH_ID, rows)
                last_id = _read_last_id(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return freed_count, freed_bytes, last_id

    def _drop_oldest(
        self, conn: sqlite3.Connection, need_count: int, need_bytes: int
    ) -> tuple[int, int]:
        """Delete the oldest rows until both needs are met; return (rows, bytes) freed."""
        freed_count = freed_bytes = 0
        last_id = None
        cursor = conn.execute(f"SELECT id, length(body) FROM {_TABLE} ORDER BY id")
        try:
            for row_id, size in cursor:
                last_id = row_id
                freed_count += 1
                freed_bytes += size
                if freed_count >= need_count and freed_bytes >= need_bytes:
                    break
        finally:
            cursor.close()
        if last_id is not None:
            conn.execute(f"DELETE FROM {_TABLE} WHERE id <= ?", (last_id,))
        return freed_count, freed_bytes

    def read(self, after_id: int = 0, limit: int = 1000) -> list[tuple[int, BufferedMessage]]:
        """Return up to ``limit`` (id, message) with id > ``after_id``, ascending id."""
        conn = self._connection()
        if limit < 1:
            return []
        loads = _decode_headers
        rows = conn.execute(_SELECT, (after_id, limit)).fetchall()
        return [
            (
                row_id,
                BufferedMessage(
                    exchange,
                    routing_key,
                    body,
                    message_id,
                    msg_type,
                    timestamp,
                    None if headers is None else loads(headers),
                ),
            )
            for row_id, exchange, routing_key, body, message_id, msg_type, timestamp, headers in rows
        ]

    def delete(self, ids: Iterable[int]) -> int:
        """Delete the given ids in one transaction; return how many rows existed."""
        conn = self._connection()
        id_list = [int(i) for i in ids]
        if not id_list:
            return 0
        deleted = deleted_bytes = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for first in range(0, len(id_list), _DELETE_CHUNK):
                chunk = id_list[first : first + _DELETE_CHUNK]
                marks = _placeholders(len(chunk))
                if _HAS_RETURNING:
                    sizes = conn.execute(
                        f"DELETE FROM {_TABLE} WHERE id IN ({marks}) RETURNING length(body)", chunk
                    ).fetchall()
                    deleted += len(sizes)
                    deleted_bytes += sum(size for (size,) in sizes)
                else:
                    rows, size = conn.execute(
                        f"SELECT count(*), coalesce(sum(length(body)), 0) FROM {_TABLE}"
                        f" WHERE id IN ({marks})",
                        chunk,
                    ).fetchone()
                    conn.execute(f"DELETE FROM {_TABLE} WHERE id IN ({marks})", chunk)
                    deleted += rows
                    deleted_bytes += size
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._count -= deleted
        self._bytes -= deleted_bytes
        return deleted


class _AppendPlan(NamedTuple):
    """What one ``append`` stores and what it deletes first, decided before the transaction."""

    kept: Sequence[BufferedMessage]  # the messages to insert, in order
    kept_ids: Sequence[int] | None  # their ids, or None: the next ones
    batch_bytes: int  # the kept bodies' total size
    refused: int
    self_dropped: int  # the batch's own oldest messages left out (drop_oldest)
    to_free_count: int  # stored rows to delete, at least
    to_free_bytes: int  # stored bytes to delete, at least
    limit: str | None


def _checked_ids(ids: Sequence[int] | None, n: int) -> list[int] | None:
    """``ids`` as ints, one per message and positive; ValueError otherwise."""
    if ids is None:
        return None
    checked = [int(i) for i in ids]
    if len(checked) != n:
        raise ValueError(f"{len(checked)} ids given for {n} messages")
    if any(i < 1 for i in checked):
        raise ValueError("ids must be positive integers")
    return checked


def _body_sizes(messages: Sequence[BufferedMessage]) -> list[int]:
    """Each body's size; TypeError when a body is not bytes."""
    sizes = []
    for m in messages:
        body = m.body
        if not isinstance(body, (bytes, bytearray)):
            raise TypeError(f"BufferedMessage.body must be bytes, not {type(body).__name__}")
        sizes.append(len(body))
    return sizes


def _rows(
    kept: Sequence[BufferedMessage], kept_ids: Sequence[int] | None
) -> list[tuple[Any, ...]]:
    """The INSERT parameters of ``kept``, with their ids first when given."""
    encode = _encode_headers
    if kept_ids is None:
        return [
            (
                m.exchange,
                m.routing_key,
                m.body,
                m.message_id,
                m.msg_type,
                m.timestamp,
                None if m.headers is None else encode(m.headers),
            )
            for m in kept
        ]
    return [
        (
            row_id,
            m.exchange,
            m.routing_key,
            m.body,
            m.message_id,
            m.msg_type,
            m.timestamp,
            None if m.headers is None else encode(m.headers),
        )
        for row_id, m in zip(kept_ids, kept)
    ]


def _read_last_id(conn: sqlite3.Connection) -> int:
    """The AUTOINCREMENT high-water mark: the highest id ever inserted."""
    row = conn.execute(_LAST_ID, (_TABLE,)).fetchone()
    return 0 if row is None else int(row[0])


_MARKS: dict[int, str] = {}


def _placeholders(n: int) -> str:
    """``?, ?, ...`` for ``n`` bound parameters (never data), cached by size."""
    marks = _MARKS.get(n)
    if marks is None:
        marks = _MARKS[n] = ", ".join("?" * n)
    return marks


class ThreadedBuffer:
    """The same operations returning Deferreds, run on ONE dedicated thread.

    A ``ThreadPool(1, 1)`` and ``deferToThreadPool`` keep the SQLite
    connection in its thread and the reactor free; operations run in the order
    they were called.
    """

    def __init__(self, buffer: SQLiteBuffer, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.buffer = buffer
        self._reactor = reactor
        self._pool = self._new_pool()
        self._shutdown_trigger: Any = None

    def _new_pool(self) -> ThreadPool:
        return ThreadPool(1, 1, name=f"backup-buffer:{os.path.basename(self.buffer.path)}")

    @property
    def running(self) -> bool:
        """True once start() succeeded and until stop()."""
        return self._pool.started and self.buffer.is_open

    def _call(self, f: Any, *args: Any) -> Deferred:
        if not self._pool.started:
            return fail(RuntimeError(f"backup buffer {self.buffer.path!r}: not started"))
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def start(self) -> Deferred:
        """Start the thread and open the buffer in it."""
        if self._pool.started:
            return fail(RuntimeError(f"backup buffer {self.buffer.path!r}: already started"))
        if self._pool.joined:
            self._pool = self._new_pool()  # a stopped ThreadPool cannot be restarted
        self._pool.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._on_reactor_shutdown
        )
        d = self._call(self.buffer.open)

        def failed(failure: Any) -> Any:
            self._stop_pool()
            return failure

        d.addErrback(failed)
        return d

    def stop(self) -> Deferred:
        """Close the buffer in its thread, then stop the thread."""
        if not self._pool.started:
            return succeed(None)
        d = self._call(self.buffer.close)

        def stopped(result: Any) -> Any:
            self._stop_pool()
            return result

        d.addBoth(stopped)
        return d

    def _stop_pool(self) -> None:
        if self._shutdown_trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):
                pass
            self._shutdown_trigger = None
        if self._pool.started:
            self._pool.stop()

    def _on_reactor_shutdown(self) -> None:
        """The reactor stops with the buffer still running: close it, join the thread.

        This runs in the "during shutdown" phase, after the "before" triggers
        (where services such as the publisher flush to the buffer) and once
        the main loop no longer delivers thread results: so it is synchronous,
        like the reactor's own thread pool. The close is queued behind the
        work already submitted, and ThreadPool.stop() lets that work finish.
        """
        self._shutdown_trigger = None
        if self._pool.started:
            self._pool.callInThread(self.buffer.close)
            self._pool.stop()

    def append(
        self, messages: Sequence[BufferedMessage], ids: Sequence[int] | None = None
    ) -> Deferred:
        """Deferred of ``SQLiteBuffer.append``."""
        return self._call(self.buffer.append, list(messages), None if ids is None else list(ids))

    def read(self, after_id: int = 0, limit: int = 1000) -> Deferred:
        """Deferred of ``SQLiteBuffer.read``."""
        return self._call(self.buffer.read, after_id, limit)

    def delete(self, ids: Iterable[int]) -> Deferred:
        """Deferred of ``SQLiteBuffer.delete``."""
        return self._call(self.buffer.delete, list(ids))

    def count(self) -> int:
        """Messages stored (as of the last completed operation)."""
        return self.buffer.count()

    def size_bytes(self) -> int:
        """Bytes of bodies stored (as of the last completed operation)."""
        return self.buffer.size_bytes()

    def last_id(self) -> int:
        """Highest id ever stored (as of the last completed operation)."""
        return self.buffer.last_id()

