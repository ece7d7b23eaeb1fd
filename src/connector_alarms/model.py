"""The correlator's state: every alarm of a host, kept together with the host.

All the state of one host lives in one :class:`HostState`: its alarms
(active, and cleared ones kept for a while to order late messages), the
timestamp of its last applied snapshot and the window of message ids
already applied. Nothing global besides the ``ref -> host`` index that the
state provider keeps, so that several correlators could each take a share
of the hosts, and a host move by moving its one ``HostState``.

Times are producer timestamps (UNIX seconds, float) unless said otherwise:
ordering decisions use the ``ts`` of the message that caused a change, not
the time it arrived.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "AlarmRecord", "HostState", "HostStates", "Origin", "SEVERITIES", "SeenIds",
    "severity_rank", "SEEN_IDS_PER_HOST", "UNREACHABLE",
]

Origin = Literal["trap", "poll", "threshold"]

#: Severities, lowest first (DESIGN's ``Severity`` values).
SEVERITIES: tuple[str, ...] = ("info", "warning", "minor", "major", "critical")

#: Name and identity of the poller's "device does not answer" alarm.
UNREACHABLE = "unreachable"

#: Message ids remembered per host (redeliveries change nothing).
SEEN_IDS_PER_HOST = 1024


def severity_rank(severity: str) -> int:
    """0 for info up to 4 for critical (unknown names rank lowest)."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return 0


@dataclass
class AlarmRecord:
    """One alarm (one reduction key) and everything the correlator knows of it."""

    ref: int
    host: str
    name: str
    #: The identifying part of the reduction key (trap key, table row key, rule+indexes).
    identity: str
    origin: Origin
    #: Severity as published: ``base_severity``, or the topology's lowered one when masked.
    severity: str
    #: Severity as the source last reported it.
    base_severity: str
    message: str
    active: bool
    first_seen: float
    last_seen: float
    count: int = 1
    cleared_at: float | None = None
    #: Why it was cleared: trap, snapshot, threshold, operator or expired.
    clear_reason: str | None = None
    #: Producer ts of the raise or clear that last changed ``active`` (ordering guard).
    changed_ts: float = 0.0
    acked_by: str | None = None
    acked_at: float | None = None
    #: Operator notes: [ts, user, text] lists (JSON-friendly).
    notes: list[list] = field(default_factory=list)
    flapping: bool = False
    #: Recent states for flap detection, oldest first: 1 raised, 0 cleared.
    history: list[int] = field(default_factory=list)
    #: The parent's alarm that masks this one (topology), if any.
    cause_ref: int | None = None
    #: Local time (reactor clock) of the last published message, for the update interval.
    published_at: float = 0.0
    #: A change (count, last_seen) not published yet because of the update interval.
    pending_update: bool = False
    #: Messages published for this ref so far: the next one's id is ``alarm:<ref>:<seq>``.
    seq: int = 0


class SeenIds:
    """The last ``capacity`` message ids a host applied, oldest first, kept in chunks.

    Redelivered messages are recognised by their id. The window is saved
    incrementally: the ids added since the last save form a new numbered
    chunk (:meth:`take_chunk`), and a chunk is dropped once the chunks after
    it hold ``capacity`` ids or more, so a save writes what is new and never
    rewrites the whole window. Loading the chunks in order and keeping the
    last ``capacity`` ids gives back exactly this window (:meth:`from_chunks`).
    """

    __slots__ = ("capacity", "_ids", "_new", "_chunks", "_held", "_next")

    def __init__(self, ids: Iterable[str] = (), capacity: int = SEEN_IDS_PER_HOST) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        #: Added since the last take_chunk, oldest first.
        self._new: list[str] = []
        #: (number, size) of the chunks saved so far and still needed, oldest first.
        self._chunks: deque[tuple[int, int]] = deque()
        self._held = 0  # sum of the sizes in _chunks
        self._next = 0  # number of the next chunk
        for message_id in ids:
            self.add(message_id)

    @classmethod
    def from_chunks(cls, chunks: Iterable[tuple[int, list[str]]],
                    capacity: int = SEEN_IDS_PER_HOST) -> SeenIds:
        """The window saved as ``chunks`` ((number, ids) in number order); nothing new."""
        seen = cls(capacity=capacity)
        for number, ids in chunks:
            for message_id in ids:
                seen._remember(message_id)
            seen._chunks.append((number, len(ids)))
            seen._held += len(ids)
            seen._next = number + 1
        return seen

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        # The ids and their order; how they were chunked is a storage detail.
        if not isinstance(other, SeenIds):
            return NotImplemented
        return self.capacity == other.capacity and list(self._ids) == list(other._ids)

    def __repr__(self) -> str:
        return f"SeenIds({list(self._ids)!r})"

    def add(self, message_id: str) -> None:
        """Remember ``message_id`` (the oldest goes when the window is full)."""
        self._remember(message_id)
        self._new.append(message_id)

    def _remember(self, message_id: str) -> None:
        ids = self._ids
        ids[message_id] = None
        ids.move_to_end(message_id)
        while len(ids) > self.capacity:
            ids.popitem(last=False)

    def take_chunk(self) -> tuple[int, list[str], list[int]] | None:
        """The ids added since the last call as a new chunk, and the chunks no longer needed.

        Returns ``(number, ids, obsolete chunk numbers)``, or None when nothing
        was added. Whoever saves the window writes the chunk and deletes the
        obsolete ones in the same transaction.
        """
        if not self._new:
            return None
        number, ids = self._next, self._new
        self._new = []
        self._next += 1
        self._chunks.append((number, len(ids)))
        self._held += len(ids)
        obsolete = []
        chunks = self._chunks
        while self._held - chunks[0][1] >= self.capacity:
            old, size = chunks.popleft()
            self._held -= size
            obsolete.append(old)
        return number, ids, obsolete


@dataclass
class HostState:
    """Every alarm of one host, and what orders the host's messages."""

    host: str
    alarms: dict[int, AlarmRecord] = field(default_factory=dict)
    #: Producer ts of the last applied snapshot; older snapshots are ignored.
    snapshot_ts: float = 0.0
    #: Message ids already applied, oldest first (bounded by SEEN_IDS_PER_HOST).
    seen_ids: SeenIds = field(default_factory=SeenIds)
    #: Changed since last persisted (set by the correlator, cleared by the store).
    dirty: bool = False
    #: Refs of the alarms changed since the last snapshot (:meth:`touch`), so that
    #: the store compares only those; None: not tracked, every alarm is compared.
    touched: set[int] | None = None

    def touch(self, ref: int) -> None:
        """Say that alarm ``ref`` changed (or may have): it is saved with the next snapshot."""
        self.dirty = True
        if self.touched is not None:
            self.touched.add(ref)

    def seen(self, message_id: str | None) -> bool:
        """True if ``message_id`` was applied already; else remember it."""
        if not message_id:
            return False
        if message_id in self.seen_ids:
            return True
        self.seen_ids.add(message_id)
        return False

    def active(self) -> list[AlarmRecord]:
        """The active alarms of this host."""
        return [a for a in self.alarms.values() if a.active]


class HostStates(Protocol):
    """Where the correlator finds host states (in memory today; a shard tomorrow)."""

    def get(self, host: str) -> HostState:
        """The state of ``host`` (created empty if unknown)."""

    def host_of(self, ref: int) -> str | None:
        """The host of alarm ``ref``, if this correlator knows it."""

    def index(self, record: AlarmRecord) -> None:
        """Remember ``record.ref -> record.host`` (called when an alarm is created)."""

    def hosts(self) -> list[str]:
        """Every host with a state here."""

    def forget(self, ref: int) -> None:
        """Drop ``ref`` from the index (called when a cleared alarm is forgotten)."""
