"""Silences: time-bounded matchers that hide alarms from notifications, and their table.

Owned by the alerter (``connector_alerter``: its migrations create the table,
its notifier reads it again at every flush); defined here, below the
connectors, so that ``centaure silence`` and the web console add, list and
expire silences without importing the alerter.

A :class:`Silence` matches alarms by host, alarm name, device type (globs,
case-insensitive) and severity (the severities given, or ``>=major`` for
that one or worse), between ``starts`` and ``ends``.

The ``<prefix>silences`` table (``[alerter] table_prefix``, ``alert_`` by
default) is built by :func:`silences_table`; :func:`add`, :func:`list_` and
:func:`remove` are blocking (call them from a thread). A silence is never
deleted by hand: :func:`remove` ends it now, so that the alerter can still name it;
the alerter deletes the silences ended more than ``[alerter] keep_ended_silences``
ago (30 days by default, :meth:`connector_alerter.outbox.OutboxStore.purge_silences`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import time
from typing import Any, Mapping

import sqlalchemy as sa

from centaure_shared.sql import PREFIX_RE
from connector.messages import SEVERITIES, SEVERITY_RANK

__all__ = ["Silence", "silences_table", "make_table", "add", "list_", "remove",
           "parse_severity", "parse_duration", "row_to_silence", "MATCHER_MAX", "COMMENT_MAX"]

#: Longest matcher (host, name, device type glob), as the column allows.
MATCHER_MAX = 255
#: Longest comment accepted by the console's form (the column itself is TEXT).
COMMENT_MAX = 2000

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``30s``, ``30m``, ``2h``, ``1d`` or ``1w`` (positive)."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"duration {text!r}: expected a number and a unit, such as 30m, 2h "
                         "or 1d")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {text!r}: a silence needs a positive duration")
    return seconds


def parse_severity(text: str | None) -> tuple[str, ...] | None:
    """``major`` -> (major,); ``>=major`` -> (critical, major); None -> None (any)."""
    if not text:
        return None
    text = text.strip()
    if text.startswith(">="):
        floor = text[2:].strip()
        if floor not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {floor!r} (one of {', '.join(SEVERITIES)})")
        return tuple(s for s in SEVERITIES if SEVERITY_RANK[s] <= SEVERITY_RANK[floor])
    names = tuple(s.strip() for s in text.split(","))
    for n in names:
        if n not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {n!r} (one of {', '.join(SEVERITIES)}, "
                             "or '>=major')")
    return names


@dataclasses.dataclass(frozen=True)
class Silence:
    """One silence; ``None`` matchers match anything (at least one is set)."""

    id: int
    starts: float
    ends: float
    comment: str
    host: str | None = None
    name: str | None = None
    device_type: str | None = None
    severity: tuple[str, ...] | None = None
    created_by: str = ""
    created: float | None = None

    def active(self, now: float) -> bool:
        """True between ``starts`` (included) and ``ends`` (excluded)."""
        return self.starts <= now < self.ends

    def matches(self, alarm: Mapping[str, Any], inventory: Mapping[str, Any] | None = None,
                now: float | None = None) -> bool:
        """True when the silence covers ``alarm`` (and is active at ``now`` if given)."""
        if now is not None and not self.active(now):
            return False
        if self.host and not _glob(str(alarm.get("host", "")), self.host):
            return False
        if self.name and not _glob(str(alarm.get("name", "")), self.name):
            return False
        if self.severity and alarm.get("severity") not in self.severity:
            return False
        if self.device_type:
            dtype = str((inventory or {}).get("device_type") or "")
            forms = [dtype] + ([dtype.split()[0]] if dtype.split() else [])
            if not any(_glob(f, self.device_type) for f in forms):
                return False
        return True

    def describe(self) -> str:
        """``host=r1 name=link*`` (for reasons and listings)."""
        parts = [f"{k}={v}" for k, v in (("host", self.host), ("name", self.name),
                                         ("device_type", self.device_type)) if v]
        if self.severity:
            parts.append("severity=" + ",".join(self.severity))
        return " ".join(parts)


def _glob(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


# --- SQL ----------------------------------------------------------------------------


def silences_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """The ``<prefix>silences`` table, in ``metadata`` (the alerter's schema holds it)."""
    return sa.Table(
        f"{prefix}silences", metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(MATCHER_MAX), nullable=True),
        sa.Column("name", sa.String(MATCHER_MAX), nullable=True),
        sa.Column("device_type", sa.String(MATCHER_MAX), nullable=True),
        sa.Column("severity", sa.String(128), nullable=True),
        sa.Column("starts", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("ends", sa.Double, nullable=False, comment="UNIX seconds"),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created", sa.Double, nullable=False, comment="UNIX seconds"),
    )


def make_table(prefix: str = "alert_") -> sa.Table:
    """The silences table alone (in a fresh ``MetaData``), for readers and writers."""
    if prefix and not PREFIX_RE.match(prefix):
        raise ValueError(f"invalid table prefix {prefix!r}: must match {PREFIX_RE.pattern}")
    return silences_table(sa.MetaData(), prefix)


def row_to_silence(r: Mapping[str, Any]) -> Silence:
    """A :class:`Silence` from a row of the table."""
    return Silence(id=int(r["id"]), starts=r["starts"], ends=r["ends"], comment=r["comment"],
                   host=r["host"], name=r["name"], device_type=r["device_type"],
                   severity=tuple(r["severity"].split(",")) if r["severity"] else None,
                   created_by=r["created_by"] or "", created=r.get("created"))


def add(engine: sa.Engine, prefix: str, *, duration: float, comment: str,
        host: str | None = None, name: str | None = None, device_type: str | None = None,
        severity: str | None = None, created_by: str = "", now: float | None = None) -> Silence:
    """Store a silence from ``now`` for ``duration`` seconds; returns it (with its id)."""
    if not (host or name or device_type):
        raise ValueError("a silence needs --host, --name or --device-type (all alarms: use '*')")
    if duration <= 0:
        raise ValueError("a silence needs a positive duration")
    sev = parse_severity(severity)
    now = time.time() if now is None else now
    t = make_table(prefix)
    values = {"starts": now, "ends": now + duration, "comment": comment, "host": host,
              "name": name, "device_type": device_type,
              "severity": ",".join(sev) if sev else None, "created_by": created_by,
              "created": now}
    with engine.begin() as conn:
        new_id = conn.execute(t.insert().values(**values)).inserted_primary_key[0]
    return row_to_silence(dict(values, id=new_id))


def list_(engine: sa.Engine, prefix: str, now: float | None = None,
          include_expired: bool = False) -> list[Silence]:
    """The silences not ended at ``now`` (all with ``include_expired``), by end time."""
    now = time.time() if now is None else now
    t = make_table(prefix)
    q = sa.select(t)
    if not include_expired:
        q = q.where(t.c.ends > now)
    with engine.connect() as conn:
        return [row_to_silence(r._mapping) for r in conn.execute(q.order_by(t.c.ends, t.c.id))]


def remove(engine: sa.Engine, prefix: str, silence_id: int, now: float | None = None) -> bool:
    """End silence ``silence_id`` now (kept, so that what it hid is told); False if unknown
    or already ended."""
    now = time.time() if now is None else now
    t = make_table(prefix)
    with engine.begin() as conn:
        n = conn.execute(t.update().where(t.c.id == silence_id, t.c.ends > now)
                         .values(ends=now)).rowcount
    return n > 0
