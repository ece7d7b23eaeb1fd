"""Counters, gauges and histograms of one connector, for /metrics and status.

Deliberately tiny: a connector's hot paths only do ``inc`` (a dict update).
The Prometheus text format and the ``status`` message both read snapshots.
"""

from __future__ import annotations

import bisect
import re
from typing import Iterable

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Cumulative buckets, sum and count, Prometheus style."""

    __slots__ = ("buckets", "counts", "total", "count")

    def __init__(self, buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q`` quantile (the bucket it falls in)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.buckets + (float("inf"),), self.counts):
            seen += n
            if seen >= rank:
                return bound
        return float("inf")


class Counters:
    """The named numbers of one connector: counters only go up, gauges are set."""

    def __init__(self, connector: str) -> None:
        self.connector = connector
        self.values: dict[str, float] = {}
        self.gauges: set[str] = set()
        self.histograms: dict[str, Histogram] = {}
        self.help: dict[str, str] = {}

    def inc(self, name: str, amount: float = 1) -> None:
        """Add ``amount`` to the counter ``name``."""
        self.values[name] = self.values.get(name, 0) + amount

    def set(self, name: str, value: float) -> None:
        """Set the gauge ``name``."""
        self.gauges.add(name)
        self.values[name] = value

    def get(self, name: str) -> float:
        """The current value of ``name`` (0 when never touched)."""
        return self.values.get(name, 0)

    def histogram(self, name: str, buckets: Iterable[float] = DEFAULT_BUCKETS) -> Histogram:
        """The histogram ``name``, created on first use."""
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = Histogram(buckets)
        return h

    def snapshot(self) -> dict[str, float]:
        """A copy of every counter and gauge, for the ``status`` message."""
        return dict(self.values)


def render_prometheus(counters: Iterable[Counters], prefix: str = "centaure") -> str:
    """The Prometheus text exposition (format 0.0.4) of every connector's numbers."""
    families: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    for c in counters:
        label = f'connector="{_escape(c.connector)}"'
        for name, value in sorted(c.values.items()):
            if not _NAME.match(name):
                continue
            if name in c.gauges:
                metric = f"{prefix}_{name}"
                types[metric] = "gauge"
            else:
                # Prometheus counters end in _total exactly once.
                metric = f"{prefix}_{name.removesuffix('_total')}_total"
                types[metric] = "counter"
            families.setdefault(metric, []).append(f"{metric}{{{label}}} {_num(value)}")
        for name, h in sorted(c.histograms.items()):
            metric = f"{prefix}_{name}"
            types[metric] = "histogram"
            lines = families.setdefault(metric, [])
            cumulative = 0
            for bound, n in zip(h.buckets + (float("inf"),), h.counts):
                cumulative += n
                le = "+Inf" if bound == float("inf") else _num(bound)
                lines.append(f'{metric}_bucket{{{label},le="{le}"}} {cumulative}')
            lines.append(f"{metric}_sum{{{label}}} {_num(h.total)}")
            lines.append(f"{metric}_count{{{label}}} {h.count}")
    out = []
    for metric in sorted(families):
        out.append(f"# TYPE {metric} {types[metric]}")
        out.extend(families[metric])
    return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
