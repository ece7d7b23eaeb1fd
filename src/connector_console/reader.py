"""Reading the correlator's tables (its state, the source of truth): blocking, run in a thread."""

from __future__ import annotations

import json

import sqlalchemy as sa

from centaure_shared.storage.alarms import make_schema

__all__ = ["AlarmReader"]


class AlarmReader:
    """The active alarms and one alarm's details, from ``<prefix>alarms``."""

    def __init__(self, engine: sa.Engine, prefix: str) -> None:
        self.engine = engine
        self.table = make_schema(prefix).alarms

    def _columns(self):
        t = self.table
        return (t.c.ref, t.c.host, t.c.name, t.c.severity, t.c.message, t.c.first_seen,
                t.c.last_seen, t.c.count, t.c.acked_by, t.c.flapping, t.c.origin, t.c.cause_ref,
                t.c.published_at, t.c.active, t.c.acked_at, t.c.cleared_at, t.c.clear_reason,
                t.c.notes)

    def active(self) -> list[dict]:
        """Every active alarm as a board row (``version``: when it was last published)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*self._columns())
                                .where(self.table.c.active.is_(True))).all()
        return [self._row(r._mapping, details=False) for r in rows]

    def one(self, ref: int) -> dict | None:
        """One alarm, active or cleared, with its notes; None when the correlator has none."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*self._columns())
                               .where(self.table.c.ref == ref)).first()
        return None if row is None else self._row(row._mapping, details=True)

    @staticmethod
    def _row(m, details: bool) -> dict:
        row = {
            "ref": str(m["ref"]), "host": m["host"], "name": m["name"],
            "severity": m["severity"], "message": m["message"],
            "first_seen": m["first_seen"], "last_seen": m["last_seen"], "count": m["count"],
            "acked_by": m["acked_by"], "flapping": bool(m["flapping"]), "origin": m["origin"],
            "cause_ref": None if m["cause_ref"] is None else str(m["cause_ref"]),
            "version": m["published_at"],
        }
        if details:
            row.update(active=bool(m["active"]), acked_at=m["acked_at"],
                       cleared_at=m["cleared_at"], clear_reason=m["clear_reason"],
                       notes=[{"ts": ts, "user": user, "text": text}
                              for ts, user, text in json.loads(m["notes"] or "[]")])
        return row
