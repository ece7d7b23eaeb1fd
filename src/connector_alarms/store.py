"""The correlator's state in SQL: host states, their alarms and the outbox.

:class:`StateStore` maps :class:`~connector_alarms.model.HostState` and
:class:`~connector_alarms.model.AlarmRecord` to the tables of
:mod:`connector_alarms.schema` and back, field for field:

* every ``AlarmRecord`` field is a column of the same name (``notes`` and
  ``history`` as JSON text); every ``HostState`` field is a column of
  ``hosts`` except ``alarms`` (its rows in ``alarms``), ``seen_ids`` (its
  chunks in ``seen_ids``, see :class:`~connector_alarms.model.SeenIds`),
  ``dirty`` and ``touched`` (run-time only). :func:`check_mapping`
  fails loudly, at start-up and in the tests, when a dataclass field is
  neither mapped nor declared run-time only: a new field needs a column, a
  migration and an entry here, or it would silently not survive a restart;
* timestamps are stored as the floats they are (DOUBLE: bit-exact), refs as
  unsigned 64-bit (see :mod:`connector_alarms.schema`).

Threads: :meth:`StateStore.snapshot` runs on the reactor thread (it copies
the mutable dataclasses into plain rows and does no I/O); :meth:`StateStore.save`
and :meth:`StateStore.load` block on the database: call them from a thread.

Only what changed is written: the store remembers, per ref, the row its
last snapshot took (or ``load`` read), and a snapshot leaves out the alarms
whose row has not changed since; likewise host rows. It looks only at the
alarms a dirty host says it touched (``HostState.touch``, which the
correlator calls for every alarm it may change), or at all of them for a
state that does not track (``touched`` None: new, or built by hand). The
window of seen message ids grows by one chunk row per dirty host (the ids
the batch added) and loses the chunks it no longer needs, so its cost
follows the messages, not the window's size. At 10,000 events/s over 10,000
alarms nearly every host is dirty in every batch, but only the alarms the
batch touched are looked at and rewritten. Snapshots are saved in order, one
at a time; the rows of a failed save are taken again by the next snapshot.

Several nodes (``[bus] partitions``): :meth:`StateStore.load_hosts` reads the
states of some hosts only (a partition taken over, filtered by a predicate
on the host name) without touching what the snapshots compare with, and
:meth:`StateStore.adopt` (reactor thread) makes them the reference;
:meth:`StateStore.drop_hosts` forgets the reference of hosts given up, and
:func:`fence` takes the rows of given-up hosts out of a snapshot before it
is saved (the service decides which, see :mod:`connector_alarms.service`).

One :meth:`~StateStore.save` is one transaction: the state change and the
``alarm`` messages it produced (the outbox) are committed together, so a
restart, even after kill -9, resumes with the state of the last commit and
republishes what the broker had not confirmed (consumers deduplicate by
``message_id``). Writes are upserts (MySQL/MariaDB ``INSERT ... ON DUPLICATE
KEY UPDATE``, PostgreSQL/SQLite ``INSERT ... ON CONFLICT DO UPDATE``) sent as
one executemany per table with bound parameters (PyMySQL and SQLAlchemy's
insertmanyvalues turn them into multi-row statements), so saving a snapshot
twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from zope.interface import Interface, implementer

from .model import SEEN_IDS_PER_HOST, AlarmRecord, HostState, SeenIds
from .schema import AlarmSchema, make_schema

__all__ = ["StateStore", "Snapshot", "LoadedHosts", "fence", "UnpersistedFields",
           "check_mapping", "PURGE_BATCH", "ALARM_FIELDS",
           "ALARM_JSON_FIELDS", "HOST_FIELDS", "HOST_TABLE_FIELDS", "HOST_RUNTIME_FIELDS"]

#: AlarmRecord fields, each stored in the ``alarms`` column of the same name.
ALARM_FIELDS: tuple[str, ...] = (
    "ref", "host", "name", "identity", "origin", "severity", "base_severity", "message",
    "active", "first_seen", "last_seen", "count", "cleared_at", "clear_reason", "changed_ts",
    "acked_by", "acked_at", "notes", "flapping", "history", "cause_ref", "published_at",
    "pending_update", "seq",
)
#: Of those, the ones stored as JSON text.
ALARM_JSON_FIELDS: tuple[str, ...] = ("notes", "history")
#: HostState fields stored in the ``hosts`` column of the same name.
HOST_FIELDS: tuple[str, ...] = ("host", "snapshot_ts")
#: HostState fields stored as rows of their own table: ``alarms`` in ``alarms``,
#: ``seen_ids`` in ``seen_ids`` (a JSON list of ids per chunk).
HOST_TABLE_FIELDS: tuple[str, ...] = ("alarms", "seen_ids")
#: HostState fields not stored: they only mean something while the process runs.
HOST_RUNTIME_FIELDS: tuple[str, ...] = ("dirty", "touched")

# Rows and ids are sent in chunks of this many (IN lists, well under every limit).
_CHUNK = 1000
#: Rows of old cleared alarms deleted per transaction by :meth:`StateStore.purge_cleared`.
PURGE_BATCH = 500

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_PLAIN_FIELDS = tuple(f for f in ALARM_FIELDS if f not in ALARM_JSON_FIELDS)
_plain_values = operator.attrgetter(*_PLAIN_FIELDS)
# The order of an alarm row's values (tuples compare fast and weigh little in the cache).
_ROW_KEYS = _PLAIN_FIELDS + ALARM_JSON_FIELDS
_U64 = 2**64


class UnpersistedFields(TypeError):
    """A dataclass field that the store does not persist (or a column it does not fill)."""


def check_mapping(schema: AlarmSchema | None = None) -> None:
    """Raise :class:`UnpersistedFields` unless every dataclass field is persisted.

    Compares ``dataclasses.fields`` of AlarmRecord and HostState with this
    module's mapping and, with ``schema``, the mapping with the tables' columns.
    """
    problems = []
    alarm = {f.name for f in dataclasses.fields(AlarmRecord)}
    host = {f.name for f in dataclasses.fields(HostState)}
    if missing := alarm - set(ALARM_FIELDS):
        problems.append(f"AlarmRecord fields not persisted: {sorted(missing)}")
    if extra := set(ALARM_FIELDS) - alarm:
        problems.append(f"persisted fields AlarmRecord lacks: {sorted(extra)}")
    mapped = set(HOST_FIELDS) | set(HOST_TABLE_FIELDS) | set(HOST_RUNTIME_FIELDS)
    if missing := host - mapped:
        problems.append(f"HostState fields not persisted: {sorted(missing)}")
    if extra := mapped - host:
        problems.append(f"persisted fields HostState lacks: {sorted(extra)}")
    if schema is not None:
        for table, names in ((schema.alarms, ALARM_FIELDS), (schema.hosts, HOST_FIELDS),
                             (schema.seen_ids, ("host", "chunk", "ids"))):
            columns = set(table.columns.keys())
            if columns != set(names):
                problems.append(f"table {table.name}: columns {sorted(columns - set(names))} "
                                f"not mapped, fields {sorted(set(names) - columns)} without "
                                f"a column")
    if problems:
        raise UnpersistedFields(
            "connector_alarms.store does not persist the state exactly: " + "; ".join(problems)
            + " (a new field needs a column in connector_alarms/schema.py, a migration and "
            "an entry in connector_alarms/store.py)")


@dataclass(frozen=True)
class Snapshot:
    """Rows of some host states, copied on the reactor thread, to be saved on another.

    Plain values only (no reference to the live dataclasses): ``hosts`` the
    rows of the states that changed, ``alarms`` the rows of the alarms that
    changed, ``forgotten`` refs whose rows are deleted (alarms no longer held
    in memory), ``seen`` new chunks of seen message ids and ``seen_dropped``
    the (host, chunk) pairs no longer needed.
    """

    hosts: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    forgotten: list[int] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    seen_dropped: list[tuple[str, int]] = field(default_factory=list)
    #: The host of each ``forgotten`` ref, when the caller said (for :func:`fence`).
    forgotten_hosts: dict[int, str] = field(default_factory=dict)
    #: The caller's mark (opaque here): the correlator puts its partitions'
    #: generations when the snapshot was taken.
    tag: Any = None

    def __bool__(self) -> bool:
        return bool(self.hosts or self.alarms or self.forgotten or self.seen
                    or self.seen_dropped)


def fence(snapshot: Snapshot, keep: Callable[[str], bool]) -> Snapshot:
    """``snapshot`` without the rows of the hosts ``keep`` refuses (pure).

    A forgotten ref goes with its host (``forgotten_hosts``); one whose host is
    unknown is kept. Returns ``snapshot`` itself when nothing is left out.
    """
    hosts = [r for r in snapshot.hosts if keep(r["host"])]
    alarms = [r for r in snapshot.alarms if keep(r["host"])]
    known = snapshot.forgotten_hosts
    forgotten = [ref for ref in snapshot.forgotten if ref not in known or keep(known[ref])]
    seen = [r for r in snapshot.seen if keep(r["host"])]
    seen_dropped = [k for k in snapshot.seen_dropped if keep(k[0])]
    if (len(hosts), len(alarms), len(forgotten), len(seen), len(seen_dropped)) == (
            len(snapshot.hosts), len(snapshot.alarms), len(snapshot.forgotten),
            len(snapshot.seen), len(snapshot.seen_dropped)):
        return snapshot
    left = set(forgotten)
    return dataclasses.replace(
        snapshot, hosts=hosts, alarms=alarms, forgotten=forgotten, seen=seen,
        seen_dropped=seen_dropped, forgotten_hosts={ref: h for ref, h in known.items()
                                                    if ref in left})


@dataclass
class LoadedHosts:
    """Some hosts' states as :meth:`StateStore.load_hosts` read them (not adopted yet)."""

    states: dict[str, HostState]
    outbox: list[tuple[str, bytes]]
    rows: dict[int, tuple]
    host_rows: dict[str, float]

    def only(self, keep: Callable[[str], bool]) -> LoadedHosts:
        """The same, for the hosts ``keep`` accepts (the outbox whole)."""
        host_index = _ROW_KEYS.index("host")
        return LoadedHosts({h: s for h, s in self.states.items() if keep(h)}, self.outbox,
                           {ref: row for ref, row in self.rows.items() if keep(row[host_index])},
                           {h: ts for h, ts in self.host_rows.items() if keep(h)})


def _alarm_values(record: AlarmRecord) -> tuple:
    """The row of ``record`` as plain values in ``_ROW_KEYS`` order (JSON encoded)."""
    return _plain_values(record) + (_encode(record.notes).decode(),
                                    _encode(record.history).decode())


def _alarm_record(values: tuple) -> AlarmRecord:
    row = dict(zip(_ROW_KEYS, values))
    row["notes"] = _decode(row["notes"])
    row["history"] = _decode(row["history"])
    return AlarmRecord(**row)


def _chunks(items: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class IAlarmStateStore(Interface):
    """Where the correlator's host states and outbox survive restarts."""

    def snapshot(states, forgotten=()):
        """Copy what the commit writes (reactor thread, no I/O): a ``Snapshot``."""

    def save(snapshot, outbox_add=(), outbox_done=()):
        """Write a snapshot, add alarm messages to the outbox and drop published ones (ONE transaction, a thread)."""

    def load(keep_cleared_since):
        """The saved host states and the outbox left to publish (a thread)."""


@implementer(IAlarmStateStore)
class StateStore:
    """Loads and saves the correlator's host states and outbox in ``engine``.

    ``prefix`` is ``[correlator] table_prefix``; the tables must exist at the
    current revision (:func:`connector_alarms.migrate.upgrade`). ``load`` and
    ``save`` block: call them from a thread, one at a time, saves in the
    order their snapshots were taken. ``snapshot`` is for the thread that
    owns the dataclasses (the reactor's). ``seen_capacity`` is the size of
    the windows of seen message ids that ``load`` rebuilds.
    """

    def __init__(self, engine: sa.Engine, prefix: str = "corr_",
                 seen_capacity: int = SEEN_IDS_PER_HOST) -> None:
        self.engine = engine
        #: Message ids per host that ``load`` keeps (the windows' capacity).
        self.seen_capacity = seen_capacity
        self.schema = make_schema(prefix)
        check_mapping(self.schema)
        # ref -> the alarm's row as last snapshotted (or loaded): what the table
        # holds once every snapshot taken is saved. Reactor thread, but for load.
        self._rows: dict[int, tuple] = {}
        # host -> its row's snapshot_ts, as last snapshotted (or loaded).
        self._hosts: dict[str, float] = {}
        # Snapshots whose save failed: the next snapshot takes their rows again
        # (writing them twice is harmless; losing them is not). Appended by save.
        self._again: list[Snapshot] = []
        self._dialect = engine.dialect.name
        self._alarm_upsert = self._upsert(self.schema.alarms, "ref")
        self._host_upsert = self._upsert(self.schema.hosts, "host")
        self._seen_upsert = self._upsert(self.schema.seen_ids, "host", "chunk")
        self._outbox_insert = self._insert_new(self.schema.outbox, "message_id")
        self._alarm_sql: str | None = None  # the upsert compiled for MySQL/MariaDB
        t = self.schema.alarms
        self._forget = t.delete().where(t.c.ref.in_(sa.bindparam("refs", expanding=True)))
        o = self.schema.outbox
        self._done = o.delete().where(o.c.message_id.in_(sa.bindparam("ids", expanding=True)))
        n = self.schema.seen_ids
        self._seen_drop = n.delete().where(
            sa.tuple_(n.c.host, n.c.chunk).in_(sa.bindparam("keys", expanding=True)))

    # --- statements -----------------------------------------------------------------

    def _upsert(self, table: sa.Table, *key: str):
        """INSERT, or UPDATE every other column when ``key`` exists, for this dialect."""
        others = [c.name for c in table.columns if c.name not in key]
        if self._dialect in ("mysql", "mariadb"):
            stmt = mysql_dialect.insert(table)
            return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in others})
        if self._dialect in ("postgresql", "sqlite"):
            mod = pg_dialect if self._dialect == "postgresql" else sqlite_dialect
            stmt = mod.insert(table)
            return stmt.on_conflict_do_update(index_elements=[table.c[k] for k in key],
                                              set_={c: stmt.excluded[c] for c in others})
        raise NotImplementedError(f"unsupported SQL dialect {self._dialect!r}")

    def _insert_new(self, table: sa.Table, key: str):
        """INSERT that skips rows whose ``key`` exists (and nothing else)."""
        if self._dialect in ("mysql", "mariadb"):
            # Not INSERT IGNORE: that would also turn a too-long value into a
            # silent truncation; a no-op update skips only duplicates.
            stmt = mysql_dialect.insert(table)
            return stmt.on_duplicate_key_update({key: table.c[key]})
        if self._dialect in ("postgresql", "sqlite"):
            mod = pg_dialect if self._dialect == "postgresql" else sqlite_dialect
            return mod.insert(table).on_conflict_do_nothing(index_elements=[table.c[key]])
        raise NotImplementedError(f"unsupported SQL dialect {self._dialect!r}")

    # --- reactor thread -------------------------------------------------------------

    def snapshot(self, states: Iterable[HostState], forgotten: Iterable[int] = (), *,
                 forgotten_hosts: dict[int, str] | None = None, tag: Any = None,
                 again: Callable[[Snapshot], Snapshot] | None = None) -> Snapshot:
        """Copy ``states`` into plain rows; clear their ``dirty`` and ``touched`` marks.

        No I/O: for the thread that mutates the states. Each state's host row
        is taken if it changed, the rows of its alarms that changed since the
        previous snapshot (or ``load``), and its new seen ids as a chunk.
        ``forgotten`` are refs removed from memory
        since the last snapshot (their rows go); a ref present in ``states``
        again is kept. Save snapshots in the order they were taken, one at a
        time; if a save fails, save the same snapshot again before taking the
        next (its hosts are no longer marked dirty). A failed save that is not
        retried loses nothing either: the next snapshot takes its rows again.

        ``forgotten_hosts`` (ref -> host of ``forgotten``) and ``tag`` are kept
        in the snapshot for the caller; ``again`` filters each failed
        snapshot before its rows are taken again (a host given up since).
        """
        rows = self._rows
        host_rows = self._hosts
        hosts: dict[str, dict[str, Any]] = {}
        changed: dict[int, dict[str, Any]] = {}
        present: set[int] = set()
        # keyed (host, chunk): a row twice in one upsert is an error on PostgreSQL
        seen: dict[tuple[str, int], dict[str, Any]] = {}
        dropped: list[tuple[str, int]] = []
        forgotten = list(forgotten)
        again_filter, forgotten_of = again, dict(forgotten_hosts or {})
        while self._again:
            again = self._again.pop(0)
            if again_filter is not None:
                again = again_filter(again)
            forgotten_of.update(again.forgotten_hosts)
            hosts.update((row["host"], row) for row in again.hosts)
            changed.update((row["ref"], row) for row in again.alarms)
            forgotten.extend(again.forgotten)
            seen.update(((row["host"], row["chunk"]), row) for row in again.seen)
            dropped.extend(again.seen_dropped)
        for state in states:
            host = state.host
            if host_rows.get(host) != state.snapshot_ts:
                host_rows[host] = state.snapshot_ts
                hosts[host] = {"host": host, "snapshot_ts": state.snapshot_ts}
            chunk = state.seen_ids.take_chunk()
            if chunk is not None:
                number, ids, obsolete = chunk
                seen[host, number] = {"host": host, "chunk": number,
                                      "ids": _encode(ids).decode()}
                dropped.extend((host, n) for n in obsolete)
            touched = state.touched
            if touched is None:
                records: Iterable[AlarmRecord] = state.alarms.values()
            else:
                alarms = state.alarms
                records = [alarms[ref] for ref in touched if ref in alarms]
            for record in records:
                ref = record.ref
                present.add(ref)
                values = _alarm_values(record)
                if rows.get(ref) != values:
                    if not 0 <= ref < _U64:  # here, not in the writer thread
                        raise ValueError(f"alarm ref not unsigned 64-bit: {ref}")
                    rows[ref] = values
                    # keyed: the same row twice in one upsert is an error on PostgreSQL
                    changed[ref] = dict(zip(_ROW_KEYS, values))
            state.dirty = False
            state.touched = set()
        # A forgotten ref back in memory was touched when it came back: it stays.
        gone = sorted({ref for ref in forgotten if ref not in present})
        for ref in gone:
            rows.pop(ref, None)
            changed.pop(ref, None)  # taken again from a failed save, gone since
        return Snapshot(list(hosts.values()), list(changed.values()), gone, list(seen.values()),
                        sorted(set(dropped)),
                        {ref: forgotten_of[ref] for ref in gone if ref in forgotten_of}, tag)

    def drop_hosts(self, gone: Callable[[str], bool]) -> None:
        """Forget what the tables hold for the hosts ``gone`` accepts (reactor thread).

        For hosts given up to another node: the next snapshots compare their
        rows with nothing (they are written whole if they come back without a
        :meth:`adopt`). Failed snapshots waiting to be taken again are
        filtered by the caller (``snapshot(again=...)``), which knows when.
        """
        host_index = _ROW_KEYS.index("host")
        for ref in [ref for ref, row in self._rows.items() if gone(row[host_index])]:
            del self._rows[ref]
        for host in [h for h in self._hosts if gone(h)]:
            del self._hosts[host]

    def adopt(self, loaded: LoadedHosts, wanted: Callable[[str], bool]) -> None:
        """What :meth:`load_hosts` read is now what the snapshots compare with (reactor thread)."""
        self.drop_hosts(wanted)
        self._rows.update(loaded.rows)
        self._hosts.update(loaded.host_rows)

    # --- blocking: call from a thread ----------------------------------------------

    def save(self, snapshot: Snapshot, outbox_add: Sequence[tuple[str, bytes]] = (),
             outbox_done: Sequence[str] = ()) -> None:
        """Write ``snapshot`` and the outbox changes in one transaction (blocking).

        Upserts the host, alarm and seen-id chunk rows, deletes the forgotten
        refs and the dropped chunks (after the upserts), appends
        ``outbox_add`` ((message_id, body) pairs; a message_id already there is
        skipped) and removes the ``outbox_done`` message ids (after the adds:
        a message added and confirmed within one save leaves nothing).
        Idempotent: the same arguments again change nothing. On failure
        nothing is written; retry with the same snapshot (its hosts are no
        longer dirty); its alarms are taken again by later snapshots anyway.
        """
        created = time.time()
        try:
            with self.engine.begin() as conn:
                for refs in _chunks(snapshot.forgotten):
                    conn.execute(self._forget, {"refs": list(refs)})
                if snapshot.hosts:
                    conn.execute(self._host_upsert, snapshot.hosts)
                if snapshot.alarms:
                    self._upsert_alarms(conn, snapshot.alarms)
                if snapshot.seen:
                    conn.execute(self._seen_upsert, snapshot.seen)
                for keys in _chunks(snapshot.seen_dropped):
                    conn.execute(self._seen_drop, {"keys": list(keys)})
                if outbox_add:
                    conn.execute(self._outbox_insert,
                                 [{"message_id": mid, "body": bytes(body), "created": created}
                                  for mid, body in outbox_add])
                for ids in _chunks(list(dict.fromkeys(outbox_done))):
                    conn.execute(self._done, {"ids": list(ids)})
        except BaseException:
            # These rows may not be in the table: the next snapshots write them
            # again even if this one is never retried. (Single dict operations,
            # safe beside the reactor's snapshot: at worst a row written twice.)
            # Once: the service saves a snapshot again and again while the
            # database is away.
            if not any(s is snapshot for s in self._again):
                self._again.append(snapshot)
            raise

    def _upsert_alarms(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        if self._dialect not in ("mysql", "mariadb") or conn.dialect.driver != "pymysql":
            conn.execute(self._alarm_upsert, rows)
            return
        # The rows hold plain values that PyMySQL escapes exactly as SQLAlchemy's
        # bind processing would hand them over (refs: ints checked by snapshot;
        # booleans: 1/0; floats: repr), so the statement SQLAlchemy compiled goes
        # to the driver's executemany as is: about a quarter less time per save
        # (measured), PyMySQL's escaping being most of the rest. Still multi-row
        # statements. Other drivers (mysqlclient: positional %s) take the generic path.
        if self._alarm_sql is None:
            compiled = self._alarm_upsert.compile(dialect=conn.dialect)
            if set(compiled.params) != set(_ROW_KEYS):  # bind names are the column names
                raise RuntimeError(f"unexpected bind names {sorted(compiled.params)}")
            self._alarm_sql = str(compiled)
        conn.exec_driver_sql(self._alarm_sql, rows)

    def load(self, keep_cleared_since: float) -> tuple[dict[str, HostState],
                                                        list[tuple[str, bytes]]]:
        """Every host state and the outbox, as of the last commit (blocking).

        A host's alarms are its active ones, those cleared at or after
        ``keep_cleared_since`` and those still shown as flapping (older
        cleared rows stay in the table, unread, until :meth:`purge_cleared`),
        in ``first_seen`` order; every state comes back not dirty. The outbox
        is (message_id, body) pairs in the order they were added: republish
        them at start-up, then confirm them with ``outbox_done``. Call it
        before taking snapshots (it resets what they compare with).
        """
        loaded = self._read(keep_cleared_since, None)
        # The next snapshots write only what differs from the tables.
        self._rows, self._hosts, self._again = loaded.rows, loaded.host_rows, []
        return loaded.states, loaded.outbox

    def load_hosts(self, keep_cleared_since: float, wanted: Callable[[str], bool]) -> LoadedHosts:
        """The saved states of the hosts ``wanted`` accepts, and the whole outbox (blocking).

        As :meth:`load`, but for some hosts (a partition taken over) and
        without touching what the snapshots compare with: hand the result
        to :meth:`adopt` on the reactor thread. Every host is read and
        filtered here (a host's partition is a hash SQL does not compute).
        """
        return self._read(keep_cleared_since, wanted)

    def _read(self, keep_cleared_since: float,
              wanted: Callable[[str], bool] | None) -> LoadedHosts:
        s = self.schema
        a = s.alarms
        states: dict[str, HostState] = {}
        rows: dict[int, tuple] = {}
        take: Callable[[str], bool] = wanted if wanted is not None else (lambda host: True)
        host_index = _ROW_KEYS.index("host")
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(s.hosts)):
                if take(row.host):
                    states[row.host] = HostState(host=row.host, snapshot_ts=row.snapshot_ts)
            host_rows = {host: state.snapshot_ts for host, state in states.items()}
            n = s.seen_ids
            chunks: dict[str, list[tuple[int, list[str]]]] = {}
            for host, number, ids in conn.execute(
                    sa.select(n.c.host, n.c.chunk, n.c.ids).order_by(n.c.host, n.c.chunk)):
                if take(host):
                    chunks.setdefault(host, []).append((number, _decode(ids)))
            for host, host_chunks in chunks.items():
                state = states.get(host)
                if state is None:  # not expected: a host's row is saved with its ids
                    state = states[host] = HostState(host=host)
                state.seen_ids = SeenIds.from_chunks(host_chunks, self.seen_capacity)
            # A cleared alarm still shown as flapping is kept whatever its age: the
            # correlator forgets it only once flapping stops (and tells consumers then).
            query = (sa.select(*(a.c[f] for f in _ROW_KEYS))
                     .where(sa.or_(a.c.active, a.c.flapping,
                                   a.c.cleared_at >= keep_cleared_since))
                     .order_by(a.c.host, a.c.first_seen, a.c.ref))
            for row in conn.execute(query):
                values = tuple(row)
                if not take(values[host_index]):
                    continue
                record = _alarm_record(values)
                rows[record.ref] = values
                state = states.get(record.host)
                if state is None:  # not expected: a host's row is saved with its alarms
                    state = states[record.host] = HostState(host=record.host)
                state.alarms[record.ref] = record
            outbox = [(mid, bytes(body)) for mid, body in conn.execute(
                sa.select(s.outbox.c.message_id, s.outbox.c.body).order_by(s.outbox.c.id))]
        return LoadedHosts(states, outbox, rows, host_rows)

    def purge_cleared(self, before: float, keep: Callable[[str], bool] | None = None,
                      batch: int = PURGE_BATCH) -> int:
        """Delete the rows of cleared alarms cleared before ``before``; how many (blocking).

        Only rows that no :meth:`load` or :meth:`load_hosts` with
        ``keep_cleared_since >= before`` returns: not active, not flapping,
        cleared (``cleared_at``, else ``changed_ts``) before ``before``.
        ``keep`` (a host -> bool predicate, e.g. the hosts this node owns)
        limits the purge to those hosts. Pages through the candidates by ref
        and deletes at most ``batch`` rows per transaction, each delete
        checking the conditions again: a row raised again meanwhile stays.
        Touches neither what the snapshots compare with nor memory.
        """
        a = self.schema.alarms
        since = sa.func.coalesce(a.c.cleared_at, a.c.changed_ts)
        old = sa.and_(a.c.active.is_(False), a.c.flapping.is_(False), since < before)
        delete = a.delete().where(a.c.ref.in_(sa.bindparam("refs", expanding=True)), old)
        deleted, after = 0, None
        while True:
            # Keyset pages in the database's own order of refs (signed on SQLite:
            # the bound ref is converted the same way, so the pages still follow).
            page = sa.select(a.c.ref, a.c.host).where(old).order_by(a.c.ref).limit(batch)
            if after is not None:
                page = page.where(a.c.ref > after)
            with self.engine.connect() as conn:
                found = conn.execute(page).all()
            if not found:
                return deleted
            after = int(found[-1][0])
            refs = [int(ref) for ref, host in found if keep is None or keep(host)]
            if refs:
                with self.engine.begin() as conn:
                    deleted += conn.execute(delete, {"refs": refs}).rowcount
            if len(found) < batch:
                return deleted
