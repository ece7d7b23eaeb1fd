"""The ``per_device`` layout: a table per metric per device, the legacy layout.

In the legacy per-device layout each metric of each device has its own table,
named after the metric and the device's id (``ifInOctets_42``), with the
columns ``datetime`` (whole UNIX seconds, INT), ``metric_index`` and ``value``
(VARCHAR(63)); missing tables and columns are created as rows arrive.
:class:`PerDeviceStore` writes that layout for sites whose tools read it,
without string-built SQL:

* table names come from ``[db] table_template`` (``{metric}_{device}``);
  ``{device}`` is the device's inventory id, its host name when it has none.
  A filled-in name that is not an identifier (:data:`connector.settings.SQL_IDENTIFIER`, and at
  most 63 characters on PostgreSQL) rejects the message with the reason;
  identifiers are quoted by SQLAlchemy (``order``, ``ifInOctets``) and values
  are always bound parameters;
* the columns come from ``[db] table_struct`` (``name:source:type`` items,
  checked by :mod:`connector_db.settings`). ``prepare`` converts every value
  to its column's type and rejects a message holding one that does not fit
  (too long, out of range, not a number), naming metric, column and value;
* a missing table is created (``CREATE TABLE IF NOT EXISTS`` built by
  SQLAlchemy) with a unique key over the columns of sources ``ts``,
  ``ts_ms`` and ``index``; a missing column is added with Alembic's
  ``Operations.add_column`` (nullable: older rows have no value). A table is
  inspected once per process; the cache is filled only after a commit;
* DDL runs first in the batch's transaction: MySQL/MariaDB commit implicitly
  on DDL, which must not commit half of the batch's rows.

Which tables it may touch (a perf message's metric and host are whatever its
publisher wrote: ``alarm`` on host ``history`` fills in ``alarm_history``):

* the store creates and writes only tables it registered itself, in its
  registry table (``<table_prefix>per_device_registry``, one row per table
  it created, written in the transaction of the CREATE), or tables the user
  listed (``tables``: the legacy tables to adopt, by name). Any other
  existing table, Centaure's or anyone's, gets no ALTER and no row: the
  message is dead-lettered with the reason (:class:`RefusedTable`);
* it creates at most ``max_tables`` tables (the registry's rows; default
  :data:`DEFAULT_MAX_TABLES`, a plain number: the store does not see the
  profiles' metrics); beyond, the message is dead-lettered with the reason.

Idempotency (a replayed message writes no duplicate row):

* a table with a unique key over the key columns (every table this store
  creates) takes its rows with insert-ignore (:func:`~connector_db.store.insert_ignore`);
* a pre-existing table without one (legacy tables have none; some have only an
  AUTO_INCREMENT id) is not altered: the batch's rows are checked against
  the keys already stored, read with one ``SELECT`` of the key columns per
  table for the batch's timestamps (bound parameters), then inserted with
  a plain INSERT. This assumes one writer per table (one ``centaure-db``
  consuming the queue): two writers racing on the same new row could both
  insert it. Adding a unique key over the key columns makes it race-free.

A row's key has a time and an index: with the legacy ``datetime`` in whole
seconds, two polls of one metric within the same second keep the first.

Other message types (events, alarms...) go to an optional ``fallback``
store (a :class:`~connector_db.store.NormalizedStore`) in the same
transaction, through its ``write_in``/``after_commit``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Callable, Protocol

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.schema import CreateTable
from twisted.logger import Logger
from zope.interface import implementer

from connector.interfaces import IStore
from connector.messages import Metric, Perf
from connector.settings import SQL_IDENTIFIER

from centaure_shared.sql import key_string
from .settings import (
    COLUMN_TYPES,
    KEY_SOURCES,
    ColumnSpec,
    parse_struct,
    parse_template,
)
from .store import UnstorableMessage, insert_ignore

__all__ = ["PerDeviceLayout", "PerDeviceStore", "RefusedTable", "SharedTransactionStore",
           "DEFAULT_MAX_TABLES", "REGISTRY_SUFFIX"]

#: Tables the store may create, unless told otherwise.
DEFAULT_MAX_TABLES = 10_000
#: The registry table's name after the prefix.
REGISTRY_SUFFIX = "per_device_registry"

# MySQL/MariaDB limit table and column names to 64 characters, PostgreSQL to 63.
_IDENT_MAX = 64
# Longest value of a text column: MySQL/MariaDB's TEXT holds 65,535 bytes.
_TEXT_BYTES_MAX = 65535
# Timestamps per SELECT of stored keys (bound parameters of one IN list).
_SELECT_CHUNK = 500

_INT_TEXT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLACEHOLDER_RE = re.compile(r"(\{metric\}|\{device\})")


class SharedTransactionStore(Protocol):
    """A store whose rows can join another store's transaction (the fallback)."""

    def prepare(self, message: Any, delivery: Any) -> Any:
        """As ``IStore.prepare``."""

    def write_in(self, conn: sa.Connection, items: list) -> tuple[dict[str, int], Any]:
        """Write in ``conn``'s transaction; (rows per table, state for after_commit)."""

    def after_commit(self, state: Any) -> None:
        """Update caches once the transaction of ``write_in`` is committed."""

    def health(self) -> dict[str, Any]:
        """As ``IStore.health``."""


class RefusedTable(UnstorableMessage, sa.exc.DataError):
    """A table the store may not touch (not its own, not listed) or may not create (cap).

    Also a ``DataError``: raised inside a batch, the writer retries its
    messages one at a time and dead-letters the one naming this table with
    the reason; raised by ``prepare`` (a table known refused), the message
    is dead-lettered at once.
    """

    def __init__(self, reason: str) -> None:
        sa.exc.DataError.__init__(self, None, None, ValueError(reason))
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self):  # pragma: no cover - pickling (thread pools do not need it)
        return (type(self), (self.reason,))


class _Unfit(ValueError):
    """A value that a column cannot hold; ``str()`` says why."""


def _number(raw: Any) -> int | float:
    """An int or float from a value; _Unfit for anything that is not a number."""
    if isinstance(raw, bool):  # bool is an int to Python, not to a metric
        raise _Unfit("not a number")
    if isinstance(raw, (int, float)):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        if _INT_TEXT_RE.fullmatch(text):
            return int(text)
        if _FLOAT_TEXT_RE.fullmatch(text):
            return float(text)
    raise _Unfit("not a number")


class _Column:
    """One ``table_struct`` column: its SQLAlchemy type and its value converter."""

    __slots__ = ("spec", "name", "source", "family", "lo", "hi", "length", "key")

    def __init__(self, spec: ColumnSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.source = spec.source
        self.length = spec.length
        if self.length is not None:
            self.family, self.lo, self.hi = "text", None, None
        else:
            self.family, self.lo, self.hi = COLUMN_TYPES[spec.type]
        self.key = spec.source in KEY_SOURCES

    def sa_type(self) -> sa.types.TypeEngine:
        """The column's SQLAlchemy type."""
        t = self.spec.type
        if self.length is not None:
            # A key string compares byte for byte on MariaDB too (as the normalized schema).
            return key_string(self.length) if self.key else sa.String(self.length)
        return {"smallint": sa.SmallInteger, "int": sa.Integer, "bigint": sa.BigInteger,
                "double": sa.Double, "text": sa.Text}[t]()

    def make(self, nullable: bool) -> sa.Column:
        """A new ``sa.Column`` for CREATE TABLE or ALTER TABLE ADD COLUMN."""
        return sa.Column(self.name, self.sa_type(), nullable=nullable)

    def convert(self, raw: Any) -> Any:
        """``raw`` as this column stores it; _Unfit if it cannot hold it."""
        if raw is None:
            return None
        if self.family == "int":
            if raw == "" and self.source == "index":
                return 0  # a scalar's index: legacy tables declare 'metric_index ... DEFAULT 0'
            v = _number(raw)
            if isinstance(v, float):
                if not (math.isfinite(v) and v.is_integer()):
                    raise _Unfit("not a whole number")
                v = int(v)
            if not self.lo <= v <= self.hi:
                raise _Unfit(f"out of range ({self.lo} to {self.hi})")
            return v
        if self.family == "float":
            try:
                v = float(_number(raw))
            except OverflowError:
                raise _Unfit("out of range") from None
            if not math.isfinite(v):
                raise _Unfit("not a finite number")
            return v
        if isinstance(raw, str):
            text = raw
        elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
            text = repr(raw)  # the shortest text that reads back as the same number
        else:
            raise _Unfit(f"unsupported type {type(raw).__name__}")
        if self.length is not None and len(text) > self.length:
            raise _Unfit(f"{len(text)} characters, longer than {self.length}")
        if self.length is None and len(text) * 4 > _TEXT_BYTES_MAX \
                and len(text.encode("utf-8")) > _TEXT_BYTES_MAX:
            raise _Unfit(f"longer than {_TEXT_BYTES_MAX} bytes")
        if "\x00" in text:
            raise _Unfit("NUL character in text")  # PostgreSQL refuses it
        return text


def _value_num(m: Perf, x: Metric, device: str) -> Any:
    v = x.value
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# Where each source's raw value comes from: (perf message, metric, device id).
_SOURCES: dict[str, Callable[[Perf, Metric, str], Any]] = {
    "ts": lambda m, x, d: int(m.ts),  # whole seconds, as the legacy datetime column holds
    "ts_ms": lambda m, x, d: int(round(m.ts * 1000.0)),
    "index": lambda m, x, d: x.index,
    "value": lambda m, x, d: x.value,
    "value_num": _value_num,
    "value_text": lambda m, x, d: x.value if isinstance(x.value, str) else None,
    "unit": lambda m, x, d: x.unit,
    "kind": lambda m, x, d: x.kind,
    "oid": lambda m, x, d: x.oid,
    "host": lambda m, x, d: m.host,
    "address": lambda m, x, d: m.address,
    "device": lambda m, x, d: d,
    "metric": lambda m, x, d: x.name,
}


def _shown(value: Any) -> str:
    """A value for a rejection reason: its repr, cut short."""
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _key_text(v: Any) -> str:
    """A key value compared across types: 3, 3.0, Decimal('3') and '3' are equal."""
    if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
        if isinstance(v, int) or (math.isfinite(v) and v == int(v)):
            return str(int(v))
        return repr(float(v))
    return str(v)


def _rowcount(result: sa.CursorResult, default: int) -> int:
    n = result.rowcount
    return default if n is None or n < 0 else n


class _Prepared:
    """One message's rows (table -> rows), or its fallback store's prepared item."""

    __slots__ = ("rows", "fallback", "nrows")

    def __init__(self, rows: dict[str, list[dict]], fallback: Any = None) -> None:
        self.rows = rows
        self.fallback = fallback
        self.nrows = (fallback.nrows if fallback is not None
                      else sum(len(r) for r in rows.values()))


class _Target:
    """A table ready for rows: its DML statement and how replays are skipped."""

    __slots__ = ("name", "table", "insert", "select_keys")

    def __init__(self, name: str, table: sa.TableClause, insert: sa.Insert,
                 select_keys: bool) -> None:
        self.name = name
        self.table = table
        self.insert = insert
        # True: no unique key over the key columns; stored keys are read first.
        self.select_keys = select_keys


@implementer(IStore)
class PerDeviceStore:
    """A table per metric per device (the legacy per-device layout); other messages to ``fallback``."""

    log = Logger()

    def __init__(self, engine: sa.Engine, table_struct: Iterable[str | ColumnSpec],
                 table_template: str = "{metric}_{device}",
                 device_ids: Mapping[str, str] | None = None,
                 fallback: SharedTransactionStore | None = None, *,
                 tables: Iterable[str] = (), max_tables: int = DEFAULT_MAX_TABLES,
                 registry_table: str = REGISTRY_SUFFIX) -> None:
        """``table_struct``: ``name:source:type`` items (ValueError if one is bad);
        ``device_ids``: host name -> inventory id; ``fallback``: the store of
        every message but ``perf`` (None: those are not kept); ``tables``:
        existing tables the user allows it to complete and write (legacy
        ones); ``max_tables``: how many tables it may create;
        ``registry_table``: the table recording those it created."""
        self.engine = engine
        self.columns = [_Column(s) for s in parse_struct(table_struct)]
        try:
            self.template = parse_template(table_template)
        except ValueError as e:
            raise ValueError(f"table_template {table_template!r} {e}") from None
        self.device_ids = dict(device_ids or {})
        needed = ("prepare", "write_in", "after_commit")
        if fallback is not None and not all(callable(getattr(fallback, n, None)) for n in needed):
            raise TypeError("fallback must provide prepare, write_in and after_commit "
                            "(e.g. a NormalizedStore): its rows share this store's transaction")
        self.fallback = fallback
        self._dialect = engine.dialect.name
        self._ident_max = min(_IDENT_MAX, engine.dialect.max_identifier_length)
        # Table and column names are case-insensitive on MySQL/MariaDB and SQLite.
        self._fold: Callable[[str], str] = (
            str.lower if self._dialect in ("mysql", "mariadb", "sqlite") else str)
        self._key_names = [c.name for c in self.columns if c.key]
        self._time_key = next(c.name for c in self.columns if c.source in ("ts", "ts_ms"))
        self._template_parts = _PLACEHOLDER_RE.split(self.template)
        self._getters = [(c, _SOURCES[c.source]) for c in self.columns]
        # Tables known to be ready (created or inspected): writer thread only.
        self._targets: dict[str, _Target] = {}
        if not SQL_IDENTIFIER.fullmatch(registry_table):
            raise ValueError(f"registry table {registry_table!r} is not an SQL identifier")
        self.registry_table = registry_table
        self.max_tables = max(0, int(max_tables))
        self._listed = {self._fold(t) for t in tables}
        # Folded names in the registry (None: not read yet); names known refused
        # (read by prepare on the reactor thread: a set replaced, never mutated).
        self._registered: set[str] | None = None
        self._refused: frozenset[str] = frozenset()
        self._registry = sa.Table(
            registry_table, sa.MetaData(),
            sa.Column("table_name", key_string(_IDENT_MAX), primary_key=True),
            sa.Column("created", sa.BigInteger, nullable=False))

    @classmethod
    def from_settings(cls, engine: sa.Engine, db_settings: Any, device_ids: Mapping[str, str],
                      fallback: SharedTransactionStore | None = None) -> PerDeviceStore:
        """The store that ``[db]`` (``table_struct``, ``table_template``) describes.

        The registry is ``<table_prefix>per_device_registry``; ``tables`` and
        ``max_tables`` come from ``[db] per_device_tables`` and
        ``per_device_max_tables`` when those settings exist.
        """
        prefix = getattr(db_settings, "table_prefix", "") or ""
        return cls(engine, db_settings.table_struct, db_settings.table_template,
                   device_ids=device_ids, fallback=fallback,
                   tables=getattr(db_settings, "per_device_tables", ()) or (),
                   max_tables=getattr(db_settings, "per_device_max_tables",
                                      DEFAULT_MAX_TABLES),
                   registry_table=prefix + REGISTRY_SUFFIX)

    # --- IStore -----------------------------------------------------------------------

    def prepare(self, message: Any, delivery: Any) -> _Prepared | None:
        """The rows of a ``perf`` message, per table (no I/O); others go to the fallback.

        Raises UnstorableMessage for a metric whose table name is not an
        identifier or whose value fits no column.
        """
        if not isinstance(message, Perf):
            if self.fallback is None:
                return None
            item = self.fallback.prepare(message, delivery)
            return None if item is None else _Prepared({}, item)
        if not message.metrics:
            return None
        device = self.device_ids.get(message.host) or message.host
        rows: dict[str, list[dict]] = {}
        for metric in message.metrics:
            table = self.table_name(metric.name, device)
            if self._fold(table) in self._refused:
                raise RefusedTable(self._refusal(metric.name, device, table))
            row = {}
            for col, get in self._getters:
                try:
                    raw = get(message, metric, device)
                except (ValueError, TypeError, OverflowError) as exc:
                    raise UnstorableMessage(
                        f"metric {metric.name!r}: no {col.source} for column {col.name!r}: "
                        f"{exc}") from None
                try:
                    row[col.name] = col.convert(raw)
                except _Unfit as exc:
                    raise UnstorableMessage(
                        f"metric {metric.name!r} index {metric.index!r}: column {col.name!r} "
                        f"({col.spec.type}) cannot hold {col.source} {_shown(raw)}: {exc}"
                    ) from None
            rows.setdefault(table, []).append(row)
        return _Prepared(rows)

    def table_name(self, metric: str, device: str) -> str:
        """The table of ``metric`` on ``device``; UnstorableMessage if not an identifier."""
        # One pass over the template: a metric named '{device}' stays literal.
        parts = self._template_parts
        name = "".join(metric if p == "{metric}" else device if p == "{device}" else p
                       for p in parts)
        if len(name) > self._ident_max or not SQL_IDENTIFIER.fullmatch(name):
            raise UnstorableMessage(
                f"metric {metric!r} of device {device!r}: table name {_shown(name)} is not an "
                f"SQL identifier (letters, digits and '_', a letter or '_' first, at most "
                f"{self._ident_max} characters)")
        return name

    def _refusal(self, metric: str, device: str, table: str) -> str:
        return (f"metric {metric!r} of device {device!r}: table {table} exists and is "
                f"neither one the per_device writer created (registry {self.registry_table}) "
                f"nor one listed for it: refused (no ALTER, no row)")

    def write(self, items: list[_Prepared]) -> dict[str, int]:
        """One transaction for the whole batch; rows written per table (see write_in)."""
        try:
            with self.engine.begin() as conn:
                written, state = self.write_in(conn, items)
        except BaseException as exc:
            # The registry's rows of this transaction may be gone: read it again.
            self._registered = None
            if not isinstance(exc, (sa.exc.ProgrammingError, sa.exc.OperationalError)):
                raise
            # Maybe a table dropped or altered behind our back (SQLite says so with
            # an OperationalError): inspect this batch's tables again next time.
            # Not on refused values: the writer retries those one message at a time.
            for it in items:
                for name in it.rows:
                    self._targets.pop(name, None)
            raise
        self.after_commit(state)
        return written

    def write_in(self, conn: sa.Connection, items: list[_Prepared]) -> tuple[dict[str, int], Any]:
        """Write ``items`` in ``conn``'s transaction (no commit).

        Returns (rows written, state for :meth:`after_commit`). The rows of
        every per-device table are counted under one key, the template
        (``{metric}_{device}``): a count per table would grow ``/health``
        with every device. The fallback's tables are counted by name.
        """
        by_table: dict[str, list[dict]] = {}
        fallback_items = []
        for it in items:
            if it.fallback is not None:
                fallback_items.append(it.fallback)
            for name, rows in it.rows.items():
                by_table.setdefault(name, []).extend(rows)
        # DDL before any row: MySQL/MariaDB commit implicitly on DDL.
        missing = [name for name in by_table if name not in self._targets]
        new_targets = self._ensure_tables(conn, missing) if missing else {}
        written: dict[str, int] = {}
        fallback_state = None
        if fallback_items:
            assert self.fallback is not None  # prepare made them
            written, fallback_state = self.fallback.write_in(conn, fallback_items)
            written = dict(written)
        if by_table:
            n = 0
            for name, rows in by_table.items():
                target = self._targets.get(name) or new_targets[name]
                n += self._insert(conn, target, rows)
            written[self.template] = written.get(self.template, 0) + n
        return written, (new_targets, fallback_state)

    def after_commit(self, state: Any) -> None:
        """Cache the tables a committed :meth:`write_in` made ready; tell the fallback."""
        new_targets, fallback_state = state
        self._targets.update(new_targets)
        if fallback_state is not None and self.fallback is not None:
            self.fallback.after_commit(fallback_state)

    def health(self) -> dict[str, Any]:
        """The fallback's details, and how many per-device tables this process knows."""
        body = dict(self.fallback.health()) if self.fallback is not None else {}
        body["per_device_tables_cached"] = len(self._targets)
        return body

    # --- SQL (writer thread only) ---------------------------------------------------------

    def _dml_table(self, name: str) -> sa.TableClause:
        # A lightweight TableClause: thousands of tables are common in this layout.
        return sa.table(name, *(sa.column(c.name, c.sa_type()) for c in self.columns))

    def _ensure_tables(self, conn: sa.Connection, names: list[str]) -> dict[str, _Target]:
        """Create the missing tables, complete the existing ones; a target for each."""
        insp = sa.inspect(conn)
        fold = self._fold
        registered = self._load_registry(conn, insp)
        # Every check before any DDL (MySQL/MariaDB commit implicitly on DDL).
        plan: list[tuple[str, bool]] = []  # (name, exists)
        creating = 0
        for name in names:
            key = fold(name)
            exists = insp.has_table(name)
            if key == fold(self.registry_table):
                raise RefusedTable(f"table {name} is the per_device writer's registry: refused")
            if key not in registered and key not in self._listed:
                if exists:
                    self._refused = self._refused | {key}
                    raise RefusedTable(
                        f"table {name} exists and is neither one the per_device writer created "
                        f"(registry {self.registry_table}) nor one listed for it: refused "
                        f"(no ALTER, no row)")
                if len(registered) + creating >= self.max_tables:
                    raise RefusedTable(
                        f"table {name}: the per_device writer already created "
                        f"{len(registered)} tables, its limit ({self.max_tables}): refused")
                creating += 1
            plan.append((name, exists))
        out: dict[str, _Target] = {}
        for name, exists in plan:
            dml = self._dml_table(name)
            if exists:
                select_keys = self._adopt(conn, insp, name)
            else:
                if fold(name) not in self._listed:
                    # Registered first: MySQL/MariaDB's implicit commit at the
                    # CREATE below commits it, never a table without its row.
                    conn.execute(insert_ignore(self._dialect, self._registry),
                                 [{"table_name": name, "created": int(time.time())}])
                    registered.add(fold(name))
                md = sa.MetaData()
                table = sa.Table(name, md, *(c.make(nullable=not c.key) for c in self.columns),
                                 sa.UniqueConstraint(*self._key_names))
                # IF NOT EXISTS: another writer may have created it since has_table.
                conn.execute(CreateTable(table, if_not_exists=True))
                select_keys = False
            insert = sa.insert(dml) if select_keys else insert_ignore(self._dialect, dml)
            out[name] = _Target(name, dml, insert, select_keys)
        return out

    def _load_registry(self, conn: sa.Connection, insp: sa.Inspector) -> set[str]:
        """The folded names of the tables this store created (the registry made if missing)."""
        if self._registered is None:
            if not insp.has_table(self.registry_table):
                conn.execute(CreateTable(self._registry, if_not_exists=True))
            self._registered = {self._fold(r[0]) for r in conn.execute(
                sa.select(self._registry.c.table_name))}
        return self._registered

    def _adopt(self, conn: sa.Connection, insp: sa.Inspector, name: str) -> bool:
        """Add the missing columns of an existing table; True if it has no usable unique key."""
        fold = self._fold
        existing = {fold(c["name"]): c for c in insp.get_columns(name)}
        missing = [c for c in self.columns if fold(c.name) not in existing]
        if missing:
            ops = Operations(MigrationContext.configure(conn))
            for col in missing:
                # Nullable: the rows already there have no value for it.
                ops.add_column(name, col.make(nullable=True))
            self.log.info("per_device table {table}: added columns {columns}", table=name,
                          columns=", ".join(c.name for c in missing))
        for col in self.columns:
            found = existing.get(fold(col.name))
            if found is not None:
                self._check_type(name, col, found["type"])
        return not self._has_usable_key(insp, name)

    def _has_usable_key(self, insp: sa.Inspector, name: str) -> bool:
        """True when a unique key makes replayed rows conflict, and only them.

        That is a key over key columns only (a row's values there are never
        NULL), holding every index column and a time column: then
        insert-ignore skips replays without dropping other rows.
        """
        fold = self._fold
        keys = {fold(c.name) for c in self.columns if c.key}
        needed = {fold(c.name) for c in self.columns if c.source == "index"}
        times = {fold(c.name) for c in self.columns if c.source in ("ts", "ts_ms")}
        candidates = [insp.get_pk_constraint(name).get("constrained_columns") or []]
        try:
            candidates += [u.get("column_names") or [] for u in insp.get_unique_constraints(name)]
        except NotImplementedError:
            pass
        candidates += [i.get("column_names") or [] for i in insp.get_indexes(name)
                       if i.get("unique")]
        for cols in candidates:
            if not cols or any(c is None for c in cols):  # expression indexes
                continue
            folded = {fold(c) for c in cols}
            if folded <= keys and needed <= folded and folded & times:
                return True
        return False

    def _check_type(self, table: str, col: _Column, reflected: sa.types.TypeEngine) -> None:
        """Warn when a pre-existing column's type differs from table_struct's.

        ``prepare`` checks values against table_struct, not against the
        database: a narrower column there refuses them at write time.
        """
        try:
            py = reflected.python_type
        except NotImplementedError:
            return
        family = "text" if py is str else "int" if py is int else \
            "float" if py in (float, Decimal) else None
        ours = "text" if col.family == "text" else "number"
        theirs = {"text": "text", "int": "number", "float": "number"}.get(family or "")
        length = getattr(reflected, "length", None)
        if theirs is not None and (theirs != ours or (
                ours == "text" and length is not None and (col.length or 2**31) > length)):
            self.log.warn("per_device table {table}: column {column} is {reflected} in the "
                          "database but {configured} in table_struct", table=table,
                          column=col.name, reflected=str(reflected), configured=col.spec.type)

    def _insert(self, conn: sa.Connection, target: _Target, rows: list[dict]) -> int:
        """Insert rows not stored yet; the number written."""
        keys = self._key_names
        unique: dict[tuple, dict] = {}
        for row in rows:  # the same message twice in a batch
            unique.setdefault(tuple(_key_text(row[k]) for k in keys), row)
        if target.select_keys:
            stored = self._stored_keys(conn, target, unique.values())
            todo = [r for k, r in unique.items() if k not in stored]
        else:
            todo = list(unique.values())
        if not todo:
            return 0
        return _rowcount(conn.execute(target.insert, todo), len(todo))

    def _stored_keys(self, conn: sa.Connection, target: _Target,
                     rows: Iterable[dict]) -> set[tuple]:
        """The keys already in a table without unique key, for these rows' times."""
        t = target.table
        times = sorted({r[self._time_key] for r in rows})
        cols = [t.c[k] for k in self._key_names]
        stored: set[tuple] = set()
        for i in range(0, len(times), _SELECT_CHUNK):
            chunk = times[i:i + _SELECT_CHUNK]
            for found in conn.execute(sa.select(*cols).where(t.c[self._time_key].in_(chunk))):
                stored.add(tuple(_key_text(v) for v in found))
        return stored


class PerDeviceLayout:
    """How the per_device layout names its tables and what their columns hold (reading).

    ``device_ids`` maps host names to inventory ids, as the writer's; a host
    without one has its tables named after the host itself. Table names are
    filled in from the template and checked as identifiers, never taken
    from user text unchecked.
    """

    def __init__(self, table_struct: Iterable[str | ColumnSpec],
                 table_template: str = "{metric}_{device}",
                 device_ids: Mapping[str, str] | None = None, ident_max: int = _IDENT_MAX) -> None:
        self.columns = [_Column(s) for s in parse_struct(table_struct)]
        self.template = parse_template(table_template)
        self.device_ids = dict(device_ids or {})
        self.ident_max = ident_max
        self._parts = _PLACEHOLDER_RE.split(self.template)

        def first(*sources: str) -> _Column | None:
            for source in sources:
                for c in self.columns:
                    if c.source == source:
                        return c
            return None

        # ts_ms first: it keeps the milliseconds that ts rounds away.
        self.time = first("ts_ms", "ts")
        assert self.time is not None  # parse_struct requires one
        self.time_scale = 1 if self.time.source == "ts_ms" else 1000
        self.index = first("index")
        self.value = first("value")
        self.value_num = first("value_num")
        self.value_text = first("value_text")
        self.kind = first("kind")
        self.unit = first("unit")

    def device(self, host: str) -> str:
        """The ``{device}`` of ``host``'s tables."""
        return self.device_ids.get(host) or host

    def fill(self, metric: str, device: str) -> str:
        """The template filled in, unchecked (for messages)."""
        return "".join(metric if p == "{metric}" else device if p == "{device}" else p
                       for p in self._parts)

    def table_name(self, metric: str, device: str) -> str | None:
        """The table of ``metric`` on ``device``, or None when it is no identifier."""
        name = self.fill(metric, device)
        if len(name) > self.ident_max or not SQL_IDENTIFIER.fullmatch(name):
            return None
        return name

    def metric_of(self, table: str, device: str, fold: bool) -> str | None:
        """The metric whose table on ``device`` is ``table``; None for another table.

        Ambiguous only when one device's id ends another's (``1_42`` and
        ``42`` under ``{metric}_{device}``): the layout cannot tell those apart.
        """
        pieces, named = [], False
        for p in self._parts:
            if p == "{metric}":
                # A template naming {metric} twice: the later ones repeat the first.
                pieces.append("(?P=metric)" if named else "(?P<metric>[A-Za-z0-9_]+)")
                named = True
            else:
                pieces.append(re.escape(device) if p == "{device}" else re.escape(p))
        pattern = "".join(pieces)
        m = re.fullmatch(pattern, table, re.IGNORECASE if fold else 0)
        return m.group("metric") if m else None
