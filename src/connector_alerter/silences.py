"""Silences: time-bounded matchers that hide alarms from notifications.

A :class:`Silence` matches alarms by host, alarm name, device type (globs,
case-insensitive) and severity (the severities given, or ``>=major`` for
that one or worse), between ``starts`` and ``ends``. A silenced alarm is
recorded as ``suppressed`` and kept by the grouper
(:mod:`connector_alerter.grouping`): when the silence ends (expires or is
removed), alarms it hid that are still active are notified then, and those
that cleared under it get their recovery notice if the route sends recoveries.

Silences live in the ``<prefix>silences`` table (:func:`add`, :func:`list_`,
:func:`remove`, all blocking: call them from a thread); :class:`SilenceSet`
is the in-memory view the notifier checks alarms against.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from connector.messages import SEVERITIES, SEVERITY_RANK

__all__ = ["Silence", "SilenceSet", "add", "list_", "remove", "parse_severity"]


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


class SilenceSet:
    """The silences the notifier knows (replaced whole on each reload)."""

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self.silences: list[Silence] = list(silences)

    def matching(self, alarm: Mapping[str, Any], inventory: Mapping[str, Any] | None,
                 now: float) -> Silence | None:
        """The first active silence covering ``alarm`` at ``now``, or None."""
        for s in self.silences:
            if s.matches(alarm, inventory, now):
                return s
        return None


# --- SQL ----------------------------------------------------------------------------


def _row(r: Mapping[str, Any]) -> Silence:
    return Silence(id=int(r["id"]), starts=r["starts"], ends=r["ends"], comment=r["comment"],
                   host=r["host"], name=r["name"], device_type=r["device_type"],
                   severity=tuple(r["severity"].split(",")) if r["severity"] else None,
                   created_by=r["created_by"] or "")


def add(engine: sa.Engine, prefix: str, *, duration: float, comment: str,
        host: str | None = None, name: str | None = None, device_type: str | None = None,
        severity: str | None = None, created_by: str = "", now: float | None = None) -> Silence:
    """Store a silence from ``now`` for ``duration`` seconds; returns it (with its id)."""
    from .schema import make_schema

    if not (host or name or device_type):
        raise ValueError("a silence needs --host, --name or --device-type (all alarms: use '*')")
    if duration <= 0:
        raise ValueError("a silence needs a positive duration")
    sev = parse_severity(severity)
    now = time.time() if now is None else now
    t = make_schema(prefix).silences
    values = {"starts": now, "ends": now + duration, "comment": comment, "host": host,
              "name": name, "device_type": device_type,
              "severity": ",".join(sev) if sev else None, "created_by": created_by,
              "created": now}
    with engine.begin() as conn:
        new_id = conn.execute(t.insert().values(**values)).inserted_primary_key[0]
    return _row(dict(values, id=new_id))


def list_(engine: sa.Engine, prefix: str, now: float | None = None,
          include_expired: bool = False) -> list[Silence]:
    """The silences not ended at ``now`` (all with ``include_expired``), by end time."""
    from .schema import make_schema

    now = time.time() if now is None else now
    t = make_schema(prefix).silences
    q = sa.select(t)
    if not include_expired:
        q = q.where(t.c.ends > now)
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(q.order_by(t.c.ends, t.c.id))]


def remove(engine: sa.Engine, prefix: str, silence_id: int, now: float | None = None) -> bool:
    """End silence ``silence_id`` now (kept, so that what it hid is told); False if unknown."""
    from .schema import make_schema

    now = time.time() if now is None else now
    t = make_schema(prefix).silences
    with engine.begin() as conn:
        n = conn.execute(t.update().where(t.c.id == silence_id, t.c.ends > now)
                         .values(ends=now)).rowcount
    return n > 0
