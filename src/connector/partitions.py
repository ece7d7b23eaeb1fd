"""Hosts shared over a fixed number of partitions, for several nodes.

A deployment with ``[bus] partitions = P`` (the same P on every node) maps
each host to one of P partitions by a stable hash of its name: every node,
every process and every release computes the same partition for the same
host, unlike Python's ``hash()``. Which node owns which partition is decided
by the broker (:mod:`connector.ownership`), never here.
"""

from __future__ import annotations

import math
import zlib

__all__ = ["fair_share", "partition_of", "partitions_of"]


def partition_of(host: str, partitions: int) -> int:
    """The partition (0 .. partitions-1) of ``host``."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    # CRC-32 is stable, cheap (~0.2 us) and spreads host names evenly enough
    # for a modulo of a few hundred; nothing here needs to resist an attacker.
    return zlib.crc32(host.encode("utf-8")) % partitions


def partitions_of(hosts, partitions: int) -> dict[int, list[str]]:
    """Partition -> the hosts of ``hosts`` in it (partitions without one are absent)."""
    grouped: dict[int, list[str]] = {}
    for host in hosts:
        grouped.setdefault(partition_of(host, partitions), []).append(host)
    return grouped


def fair_share(partitions: int, members: int) -> int:
    """The most partitions one of ``members`` live nodes should own."""
    return math.ceil(partitions / max(1, members))
