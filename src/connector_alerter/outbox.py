"""The persistent outbox and notification state in SQL (blocking: call from a thread).

:class:`OutboxStore` keeps, under the ``[alerter] table_prefix``:

* the outbox: a row per (message, receiver), inserted in the same
  transaction as the group state that produced it (:meth:`OutboxStore.save`),
  so a crash can neither lose a message nor queue it twice: ``dedup`` (a
  digest of the idempotency key, channel and recipient) is unique and rows
  already there are skipped;
* the grouper's state per group and the last transition told per alarm;
* silences (read here, written by :mod:`connector_alerter.silences`).

Delivery bookkeeping: :meth:`OutboxStore.due` gives the pending rows whose
``next_at`` has come; :meth:`OutboxStore.mark` records an attempt's outcome
(sent, retry at a time, failed for good). A row is marked sent *after* the
receiver accepted it: a kill -9 between the two sends it again at start-up,
with the same idempotency key so that the receiver can deduplicate (the one
window where "exactly once" rests on the receiver).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterable, Mapping

import sqlalchemy as sa
from zope.interface import Interface, implementer

from .schema import AlerterSchema, make_schema
from .silences import Silence, _row as _silence_row

__all__ = ["OutboxRow", "OutboxStore", "dedup_key", "group_row_id", "PURGE_BATCH"]

#: Rows deleted per transaction by the purges (:meth:`OutboxStore.purge`).
PURGE_BATCH = 500


def dedup_key(idempotency_key: str, channel: str, recipient: str) -> str:
    """The outbox's unique key of one message to one receiver (64 hex digits)."""
    return hashlib.sha256(f"{idempotency_key}\0{channel}\0{recipient}".encode()).hexdigest()


def group_row_id(gid: str) -> str:
    """The ``groups`` primary key of a group id (group ids can be long)."""
    return hashlib.sha256(gid.encode()).hexdigest()


@dataclasses.dataclass
class OutboxRow:
    """One message to one receiver, as stored."""

    id: int
    idem_key: str
    route: str
    channel: str
    recipient: str
    ref: str | None
    host: str | None
    payload: dict[str, Any]
    state: str = "pending"
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None


class IOutboxStore(Interface):
    """The alerter's notification state: groups, last-told records, outbox rows, silences."""

    def load():
        """The grouper's state and the last-told records."""

    def save(rows, groups, last, now):
        """Queue outbox rows and write the changed groups and records (ONE transaction); the row ids."""

    def due(now, limit=100, exclude=()):
        """Pending rows due at ``now`` (at most ``limit``, none of ``exclude``)."""

    def next_due():
        """When the next pending row is due (None: none)."""

    def mark_many(marks):
        """Record delivery outcomes (ONE transaction)."""

    def purge(before, batch=PURGE_BATCH):
        """Forget rows done before ``before``; how many."""

    def purge_silences(before, batch=PURGE_BATCH):
        """Delete the silences ended before ``before``; how many."""

    def silences(now):
        """The silences active at ``now`` or later."""


@implementer(IOutboxStore)
class OutboxStore:
    """The alerter's notification state in one database (``engine``), tables ``prefix``."""

    def __init__(self, engine: sa.Engine, prefix: str = "alert_") -> None:
        self.engine = engine
        self.schema: AlerterSchema = make_schema(prefix)

    # --- state --------------------------------------------------------------------

    def load(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The grouper's state (group id -> group) and last-told records (ref -> record)."""
        s = self.schema
        with self.engine.connect() as conn:
            groups = {}
            for (text,) in conn.execute(sa.select(s.groups.c.state)):
                g = json.loads(text)
                groups[g.pop("gid")] = g
            last = {ref: json.loads(text) for ref, text in
                    conn.execute(sa.select(s.last_notified.c.ref, s.last_notified.c.state))}
        return groups, last

    def save(self, rows: Iterable[Mapping[str, Any]], groups: Mapping[str, Any | None],
             last: Mapping[str, Any | None], now: float) -> list[int]:
        """In one transaction: queue ``rows``, write changed ``groups`` and ``last`` records.

        ``rows`` are dicts with idem_key, route, channel, recipient, ref, host,
        payload; a row whose dedup key is already queued is skipped. A group
        is a dict or its JSON (:meth:`connector_alerter.grouping.Journal.changes`);
        a None group or record is deleted. Returns the ids of the rows inserted.
        Statements are batched (``executemany``, ``IN`` lists): a commit of a
        thousand groups is a few round trips, not thousands.
        """
        s = self.schema
        rows = list(rows)
        ids: list[int] = []
        with self.engine.begin() as conn:
            if rows:
                keys = {dedup_key(r["idem_key"], r["channel"], r["recipient"]): r for r in rows}
                have: set[str] = set()
                for chunk in _chunks(list(keys)):
                    have.update(conn.scalars(sa.select(s.outbox.c.dedup)
                                             .where(s.outbox.c.dedup.in_(chunk))))
                new = [dict(dedup=key, idem_key=r["idem_key"][:255], route=r["route"][:255],
                            channel=r["channel"], recipient=r["recipient"][:1024],
                            ref=None if r.get("ref") is None else str(r["ref"]),
                            host=r.get("host"), payload=json.dumps(r["payload"]),
                            state="pending", attempts=0, next_at=now, created=now)
                       for key, r in keys.items() if key not in have]
                if new:
                    conn.execute(s.outbox.insert(), new)
                    order = {v["dedup"]: i for i, v in enumerate(new)}
                    found: list[tuple[int, str]] = []
                    for chunk in _chunks(list(order)):
                        found.extend(conn.execute(sa.select(s.outbox.c.id, s.outbox.c.dedup)
                                                  .where(s.outbox.c.dedup.in_(chunk))))
                    ids = [int(i) for i, _k in sorted(found, key=lambda x: order[x[1]])]
            if groups:
                rids = {group_row_id(gid): (gid, g) for gid, g in groups.items()}
                for chunk in _chunks(list(rids)):
                    conn.execute(s.groups.delete().where(s.groups.c.gid.in_(chunk)))
                values = [{"gid": rid, "state": _group_json(gid, g)}
                          for rid, (gid, g) in rids.items() if g is not None]
                if values:
                    conn.execute(s.groups.insert(), values)
            if last:
                for chunk in _chunks(list(last)):
                    conn.execute(s.last_notified.delete()
                                 .where(s.last_notified.c.ref.in_(chunk)))
                values = [{"ref": ref, "state": json.dumps(rec)} for ref, rec in last.items()
                          if rec is not None]
                if values:
                    conn.execute(s.last_notified.insert(), values)
        return ids

    # --- delivery -----------------------------------------------------------------

    def due(self, now: float, limit: int = 100, exclude: Iterable[int] = ()) -> list[OutboxRow]:
        """Pending rows whose time has come, oldest first (``exclude``: ids in flight)."""
        t = self.schema.outbox
        q = (sa.select(t).where(t.c.state == "pending", t.c.next_at <= now)
             .order_by(t.c.next_at, t.c.id).limit(limit))
        exclude = list(exclude)
        if exclude:
            q = q.where(t.c.id.not_in(exclude))
        with self.engine.connect() as conn:
            return [self._row(r._mapping) for r in conn.execute(q)]

    def next_due(self) -> float | None:
        """The earliest ``next_at`` of a pending row, or None."""
        t = self.schema.outbox
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.min(t.c.next_at)).where(t.c.state == "pending"))

    def rows(self, state: str | None = None) -> list[OutboxRow]:
        """Every row (or those in ``state``), by id (tests, listings)."""
        t = self.schema.outbox
        q = sa.select(t).order_by(t.c.id)
        if state:
            q = q.where(t.c.state == state)
        with self.engine.connect() as conn:
            return [self._row(r._mapping) for r in conn.execute(q)]

    def mark(self, row_id: int, state: str, attempts: int, now: float,
             next_at: float | None = None, error: str | None = None) -> None:
        """Record an attempt: ``state`` sent / failed / pending (retry at ``next_at``)."""
        self.mark_many([(row_id, state, attempts, now, next_at, error)])

    def mark_many(self, marks: Iterable[tuple[int, str, int, float, float | None, str | None]]
                  ) -> None:
        """Record several attempts in one transaction: (id, state, attempts, now, next_at, error).

        Successes (the bulk) are one ``UPDATE ... WHERE id IN`` per attempt
        count and time; the others one statement each.
        """
        t = self.schema.outbox
        sent: dict[tuple[int, float], list[int]] = {}
        others = []
        for row_id, state, attempts, now, next_at, error in marks:
            if state == "sent" and error is None:
                sent.setdefault((attempts, now), []).append(row_id)
            else:
                others.append((row_id, state, attempts, now, next_at, error))
        with self.engine.begin() as conn:
            for (attempts, now), row_ids in sent.items():
                for chunk in _chunks(row_ids):
                    conn.execute(t.update().where(t.c.id.in_(chunk)).values(
                        state="sent", attempts=attempts, last_error=None, done_at=now))
            for row_id, state, attempts, now, next_at, error in others:
                values: dict[str, Any] = {"state": state, "attempts": attempts,
                                          "last_error": None if error is None else error[:2000]}
                if state == "pending":
                    values["next_at"] = next_at if next_at is not None else now
                else:
                    values["done_at"] = now
                conn.execute(t.update().where(t.c.id == row_id).values(**values))

    def purge(self, before: float, batch: int = PURGE_BATCH) -> int:
        """Delete sent and failed rows finished before ``before``; how many.

        At most ``batch`` rows per transaction (a short lock each, SQLite's
        writer included); pending rows are never deleted, whatever their age.
        """
        t = self.schema.outbox
        return _purge_by_id(self.engine, t, sa.and_(t.c.state != "pending",
                                                   t.c.done_at < before), batch)

    def purge_silences(self, before: float, batch: int = PURGE_BATCH) -> int:
        """Delete the silences that ended before ``before``; how many (``batch`` per transaction).

        An ended silence hides nothing; the notifier reads those ended in the
        last day only to name them (``[alerter] keep_ended_silences`` is at
        least a day).
        """
        t = self.schema.silences
        return _purge_by_id(self.engine, t, t.c.ends < before, batch)

    # --- silences -----------------------------------------------------------------

    def silences(self, now: float) -> list[Silence]:
        """Silences not ended at ``now``, plus those ended in the last day.

        Ended ones are kept so that the notifier can name, in a reason, what
        an alarm was hidden by; only active ones hide anything.
        """
        t = self.schema.silences
        with self.engine.connect() as conn:
            return [_silence_row(r._mapping) for r in conn.execute(
                sa.select(t).where(t.c.ends > now - 86400).order_by(t.c.id))]

    @staticmethod
    def _row(r: Mapping[str, Any]) -> OutboxRow:
        return OutboxRow(id=int(r["id"]), idem_key=r["idem_key"], route=r["route"],
                         channel=r["channel"], recipient=r["recipient"], ref=r["ref"],
                         host=r["host"], payload=json.loads(r["payload"]), state=r["state"],
                         attempts=r["attempts"], next_at=r["next_at"],
                         last_error=r["last_error"])


def _purge_by_id(engine: sa.Engine, table: sa.Table, condition: Any, batch: int) -> int:
    """Delete the rows of ``table`` meeting ``condition``, ``batch`` ids per transaction."""
    deleted = 0
    ids = sa.select(table.c.id).where(condition).order_by(table.c.id).limit(batch)
    while True:
        with engine.begin() as conn:
            found = list(conn.scalars(ids))
            if found:
                # The condition again: a row changed since it was read stays.
                deleted += conn.execute(table.delete().where(table.c.id.in_(found),
                                                             condition)).rowcount
        if len(found) < batch:
            return deleted


def _chunks(items: list, size: int = 500) -> Iterable[list]:
    """``items`` in lists of at most ``size`` (bounded ``IN`` lists)."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _group_json(gid: str, g: Any) -> str:
    """The stored form of a group: its JSON with its id (``g``: a dict or its JSON)."""
    if not isinstance(g, str):
        return json.dumps(dict(g, gid=gid))
    # Pre-encoded (a JSON object, never empty): splice the id in front.
    assert g.startswith("{") and g != "{}"
    return '{"gid": ' + json.dumps(gid) + ", " + g[1:]
