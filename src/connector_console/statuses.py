"""The connectors' table: the newest heartbeat of each connector on each node, as
``centaure status`` shows it (a connector silent for ``lost_after`` intervals is lost)."""

from __future__ import annotations

from connector import messages

__all__ = ["KEY_COUNTERS", "StatusBoard"]

KEY_COUNTERS = ("published", "received", "handled", "buffered", "dead_lettered", "errors")


class StatusBoard:
    """Heartbeats seen since the console started, newest per (node, connector)."""

    def __init__(self, interval: float, lost_after: int) -> None:
        self.interval = interval
        self.lost_after = lost_after
        self._latest: dict[tuple[str, str], messages.Status] = {}

    def apply(self, status: messages.Status) -> None:
        """Keep ``status`` if it is the newest of its connector on its node."""
        key = (status.node, status.connector)
        current = self._latest.get(key)
        if current is None or current.ts <= status.ts:
            self._latest[key] = status

    def rows(self, now: float) -> list[dict]:
        """One row per connector and node, by node then connector."""
        out = []
        for (node, connector), s in sorted(self._latest.items()):
            age = max(0.0, now - s.ts)
            if s.state == "stopping":
                state = "stopped"
            elif age > self.lost_after * self.interval:
                state = "lost"
            else:
                state = s.state
            out.append({"node": node, "connector": connector, "state": state, "age": age,
                        "uptime": s.uptime, "pid": s.pid, "version": s.version,
                        "broker": s.broker or "-",
                        "counters": {k: s.counters.get(k, 0) for k in KEY_COUNTERS}})
        return out
