"""Silences: time-bounded matchers that hide alarms from notifications.

A :class:`Silence` matches alarms by host, alarm name, device type (globs,
case-insensitive) and severity (the severities given, or ``>=major`` for
that one or worse), between ``starts`` and ``ends``. A silenced alarm is
recorded as ``suppressed`` and kept by the grouper
(:mod:`connector_alerter.grouping`): when the silence ends (expires or is
removed), alarms it hid that are still active are notified then, and those
that cleared under it get their recovery notice if the route sends recoveries.

Silences live in the ``<prefix>silences`` table, defined with :func:`add`,
:func:`list_` and :func:`remove` in :mod:`centaure_shared.storage.silences`
(the web console writes them too); :class:`SilenceSet` is the in-memory view
the notifier checks alarms against, read again from SQL at every flush, so a
silence written by anyone takes effect at the next notification.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from centaure_shared.storage.silences import (
    Silence,
    add,
    list_,
    parse_severity,
    remove,
    row_to_silence as _row,
)

__all__ = ["Silence", "SilenceSet", "add", "list_", "remove", "parse_severity", "_row"]


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
