"""The alarm board's state: the active alarms, kept current from the ``alarm`` exchange.

Loaded once from the correlator's tables, then every ``alarm`` message
updates it and is told to the listeners (the open boards' event streams).
A message older than what the board holds of its alarm (its ``ts`` before
the publication the board last applied) is ignored: the console's queue may
hold messages from before its start, already reflected in the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.logger import Logger
from zope.interface import implementer
from connector import messages
from connector.interfaces import IMessageHandler

__all__ = ["SEVERITIES", "AlarmBoard", "ConsoleHandler", "alarm_row"]

#: Least severe first (``connector.messages.SEVERITIES`` reversed).
SEVERITIES = tuple(reversed(messages.SEVERITIES))
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

Listener = Callable[[str, dict], None]


def alarm_row(alarm: messages.Alarm) -> dict:
    """What the board shows of an ``alarm`` message (refs as text: JavaScript numbers are
    exact only up to 2**53)."""
    return {
        "ref": str(alarm.ref), "host": alarm.host, "name": alarm.name,
        "severity": alarm.severity, "message": alarm.message, "first_seen": alarm.first_seen,
        "last_seen": alarm.last_seen, "count": alarm.count, "acked_by": alarm.acked_by,
        "flapping": alarm.flapping, "origin": alarm.origin,
        "cause_ref": None if alarm.cause_ref is None else str(alarm.cause_ref),
        "version": alarm.ts,
    }


class AlarmBoard:
    """Active alarms by ref, worst first on demand; tells listeners of every change."""

    log = Logger()

    def __init__(self) -> None:
        self._alarms: dict[str, dict] = {}
        #: Cleared refs -> the version that cleared them (late updates stay ignored).
        self._cleared: dict[str, float] = {}
        self._listeners: list[Listener] = []
        self.loaded = False
        self.applied = 0

    def load(self, rows: Iterable[dict]) -> None:
        """Start from the correlator's active alarms (the rows of :mod:`.reader`)."""
        for row in rows:
            if self._cleared.get(row["ref"], -1.0) >= row["version"]:
                continue  # cleared by a message that came while the tables were read
            current = self._alarms.get(row["ref"])
            if current is None or current["version"] <= row["version"]:
                self._alarms[row["ref"]] = row
        self.loaded = True
        self._tell("snapshot", {})

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(kind, data)`` on each change: ``upsert`` (data: the row) or
        ``remove`` (data: ``{"ref"}``)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop telling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def listeners(self) -> int:
        """How many listeners are told."""
        return len(self._listeners)

    def get(self, ref: str) -> dict | None:
        """The active alarm ``ref``, or None."""
        return self._alarms.get(ref)

    def rows(self) -> list[dict]:
        """Every active alarm, worst first, then the most recently seen first."""
        return sorted(self._alarms.values(),
                      key=lambda r: (-_RANK.get(r["severity"], -1), -r["last_seen"], r["ref"]))

    def __len__(self) -> int:
        return len(self._alarms)

    def apply(self, alarm: messages.Alarm) -> bool:
        """Update the board from one ``alarm`` message; False when it was stale."""
        ref = str(alarm.ref)
        current = self._alarms.get(ref)
        if current is not None and alarm.ts < current["version"]:
            return False
        if ref in self._cleared and alarm.ts < self._cleared[ref]:
            return False
        self.applied += 1
        if alarm.state == "cleared":
            self._alarms.pop(ref, None)
            self._cleared[ref] = alarm.ts
            if len(self._cleared) > 100_000:
                self._cleared.pop(next(iter(self._cleared)))
            self._tell("remove", {"ref": ref})
        else:
            self._cleared.pop(ref, None)
            row = alarm_row(alarm)
            self._alarms[ref] = row
            self._tell("upsert", row)
        return True

    def _tell(self, kind: str, data: dict) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, data)
            except Exception:
                # One broken stream must not stop the others' updates.
                self.log.failure("board listener failed")


@implementer(IMessageHandler)
class ConsoleHandler:
    """The console's queue: ``alarm`` messages to the board, heartbeats to the connectors'
    table; each acked once applied (in memory: nothing to wait for)."""

    def __init__(self, board: AlarmBoard, statuses) -> None:
        self.board = board
        self.statuses = statuses

    def handle(self, message, delivery):
        if isinstance(message, messages.Alarm):
            self.board.apply(message)
        elif isinstance(message, messages.Status):
            self.statuses.apply(message)
        return None
