"""Failed logins slow down password guessing: too many for one name or from one
address within a window, and further attempts are refused until it has passed."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["LoginThrottle"]

#: Names and addresses tracked at most (the oldest forgotten first).
MAX_KEYS = 100_000


class LoginThrottle:
    """Counts failed logins per name and per client address over ``window`` seconds."""

    def __init__(self, clock: Callable[[], float], per_name: int = 5, per_client: int = 20,
                 window: float = 600.0) -> None:
        self.clock = clock
        self.limits = {"name": per_name, "client": per_client}
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def wait(self, name: str, client: str) -> float:
        """Seconds before ``name`` may be tried from ``client`` again (0: now)."""
        now = self.clock()
        longest = 0.0
        for key in (("name", name), ("client", client)):
            times = self._recent(key, now)
            if times is not None and len(times) >= self.limits[key[0]]:
                longest = max(longest, times[0] + self.window - now)
        return longest

    def failed(self, name: str, client: str) -> None:
        """Count one failed login."""
        now = self.clock()
        for key in (("name", name), ("client", client)):
            times = self._failures.pop(key, None) or deque(maxlen=self.limits[key[0]])
            times.append(now)
            self._failures[key] = times  # re-inserted: the dict stays oldest first
        while len(self._failures) > MAX_KEYS:
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, name: str) -> None:
        """The name's failures are forgotten (its address's are kept)."""
        self._failures.pop(("name", name), None)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times
