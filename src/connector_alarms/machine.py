"""The correlator's state machine: input messages in, ``alarm`` messages out.

:class:`Correlator` is pure logic: no I/O, no reactor, no clock of its own
(the caller passes ``now``), so that the service, the tests and a replay all
get the same answers from the same inputs. It reads and changes the
:class:`~connector_alarms.model.HostState` of each host it touches, marks it
``dirty`` and every alarm it may change ``touch``-ed for the store (which
compares only those), and returns the ``alarm`` messages to publish, each
with the AMQP ``message_id`` it must carry (``alarm:<ref>:<seq>``: a
republished message after a crash has the same id, so consumers dedup it).

Rules, and the practice each one follows:

* **Identity** (OpenNMS reduction keys): a trap raises ``event.alarm`` (or the
  trap's name) keyed by ``event.key`` and a clearing trap names the alarm it
  clears; a snapshot row is keyed by its row key (the poller's
  ``unreachable`` entry by ``unreachable``); a threshold by its rule and the
  sorted set of the metric indexes it names. ``ref = keys.alarm_ref(...)``.
* **Order**: ``AlarmRecord.changed_ts`` is the newest producer ``ts`` that
  affirmed the record's current state (the raise that activated it and every
  later raise while active; the clear that cleared it and every later clear
  while inactive). A message that contradicts the state applies only if it is
  not older than that; one that agrees moves ``changed_ts`` forward. Each
  record is thus a last-writer-wins register on ``ts``: once an alarm is
  known, its final state is the kind of its newest message, whatever the
  arrival order. One exception: a clear for an alarm the correlator has never
  seen is dropped, not remembered (no state is kept for alarms that never were).
* **Snapshots** (the polled table merged with the known alarms): a snapshot is the
  device's whole alarm table: rows not active are raised; active ``poll``
  alarms missing from it are cleared. A snapshot carrying the ``unreachable``
  entry is *not* a table (no snapshot ≠ empty snapshot): it raises or keeps
  ``unreachable`` and clears nothing. ``HostState.snapshot_ts`` is the ``ts``
  of the last applied *table* snapshot; any snapshot older than it is
  ignored. An ``unreachable`` snapshot does not move it, so that the table
  polled just before a device went silent, arriving late, still applies (its
  implied clear of ``unreachable`` is then older than the raise: stale).
  A row seen again refreshes ``last_seen`` without adding to ``count``
  (a poll seeing a standing alarm is not a new report) and publishes nothing
  unless its severity or message changed.
* **Updates**: a repeated raise adds to ``count``; it is published as
  ``updated`` at once if severity or message changed, else at most once per
  ``update_interval`` (held as ``pending_update`` and flushed by :meth:`tick`).
* **Flapping** (Nagios): every applied report is a "check" appended to
  ``history`` (1 raise, 0 clear, 21 kept); the percent state change weighs the
  changes between consecutive entries from 0.8 (oldest) to 1.2 (newest).
  Flapping starts above ``flap_high`` and stops below ``flap_low``. While
  flapping, consumers see the alarm as active: the report that starts it is
  published once with ``flapping=true`` (``raised`` if it was a raise, else
  ``updated``), later reports change the record and publish nothing, and
  when flapping stops the current state is published with
  ``flapping=false`` (``updated`` if active, else ``cleared``). So the
  published sequence of every ref always alternates raised → updated* →
  cleared. A flapping alarm that falls quiet gets one synthetic check of its
  current state per ``flap_recheck`` seconds (Nagios keeps checking; traps
  do not), so that it stops flapping instead of staying stuck.
* **Topology** (Vigilo): while a host's ``unreachable`` alarm is active, its
  children's ``unreachable`` alarm (all their active alarms with
  ``mask_all``) is masked: severity lowered to ``mask_severity`` (never
  raised by masking) and ``cause_ref`` set to the parent's ref. Masks are
  applied when the child's alarm is raised and when the parent goes down;
  removed when the parent's alarm clears. Grandchildren follow, each masked
  by its own parent.
* **Expiry and forgetting** in :meth:`tick`: active alarms with no news for
  the limit of their name (``expire_names``) or source severity
  (``expire_after``) are cleared as ``expired``; cleared alarms are dropped
  ``keep_cleared`` after ``cleared_at`` (not while shown as flapping).

:meth:`tick` is driven by a heap of due times, one live entry per record
that has something due (held update, expiry, flap recheck, forgetting), with
lazy invalidation: a tick with nothing due is one comparison, whatever the
number of alarms (``test_tick_is_cheap_when_nothing_is_due``: well under 1 µs with
10,000 alarms here).
The heap is derived state, rebuilt by :meth:`track` for states loaded from
the store or moved in from another node.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from connector import messages
from connector_alarms.keys import alarm_ref
from connector_alarms.model import (
    UNREACHABLE, AlarmRecord, HostState, HostStates, Origin, severity_rank,
)
from connector_alarms.settings import CorrelatorSettings

__all__ = [
    "Correlator", "MemoryHostStates", "Outgoing", "FLAP_WINDOW", "flap_percent",
    "threshold_identity",
]

#: What :meth:`Correlator.apply` and :meth:`Correlator.tick` return: (AMQP message_id, alarm).
Outgoing = tuple[str, messages.Alarm]

#: Checks kept for flap detection (Nagios' MAX_STATE_HISTORY_ENTRIES).
FLAP_WINDOW = 21
_FLAP_LOW_WEIGHT = 0.8
_FLAP_HIGH_WEIGHT = 1.2

#: Default seconds between synthetic checks of a quiet flapping alarm.
FLAP_RECHECK = 60.0

_COUNTERS = (
    # inputs
    "messages", "events", "snapshots", "thresholds", "commands", "ignored", "duplicates",
    "stale", "clears_for_inactive", "clears_without_name", "unknown_refs",
    "commands_on_cleared",
    # state changes
    "raised", "repeats", "cleared", "expired", "forgotten", "operator_clears", "acks",
    "unacks", "notes", "flap_started", "flap_stopped", "masked", "unmasked", "held",
    # outputs
    "published", "updated",
)


def flap_percent(history: list[int]) -> float:
    """Nagios' weighted percent state change of ``history`` (oldest first).

    The window has ``FLAP_WINDOW`` entries, hence ``FLAP_WINDOW - 1``
    comparisons weighted linearly from 0.8 (oldest) to 1.2 (newest); a
    shorter history fills the newest positions (the missing oldest entries
    count as no change), and the sum is always divided by the full window, so
    a few early changes do not look like flapping.
    """
    n = len(history)
    if n < 2:
        return 0.0
    comparisons = FLAP_WINDOW - 1
    step = (_FLAP_HIGH_WEIGHT - _FLAP_LOW_WEIGHT) / (comparisons - 1)
    offset = FLAP_WINDOW - n  # position (from the oldest) of the first comparison
    total = 0.0
    prev = history[0]
    for i in range(1, n):
        cur = history[i]
        if cur != prev:
            total += _FLAP_LOW_WEIGHT + (offset + i - 1) * step
        prev = cur
    return total * 100.0 / comparisons


def threshold_identity(values: Iterable[messages.ThresholdValue]) -> str:
    """The identity of a threshold alarm: its metric indexes, sorted, joined by ','."""
    return ",".join(sorted({v.index for v in values}))


class MemoryHostStates:
    """:class:`~connector_alarms.model.HostStates` in a dict (the service's, and the tests').

    The ``ref -> host`` index covers every alarm created or added here; the
    store loads persisted states with :meth:`add`.
    """

    def __init__(self) -> None:
        self._states: dict[str, HostState] = {}
        self._refs: dict[int, str] = {}
        # Refs dropped from memory since the last take_forgotten(): their rows go too.
        self._forgotten: list[int] = []
        self._forgotten_hosts: dict[int, str] = {}

    def get(self, host: str) -> HostState:
        """The state of ``host``, created empty if unknown."""
        state = self._states.get(host)
        if state is None:
            state = self._states[host] = HostState(host=host)
        return state

    def peek(self, host: str) -> HostState | None:
        """The state of ``host`` if there is one (creates nothing)."""
        return self._states.get(host)

    def host_of(self, ref: int) -> str | None:
        """The host of alarm ``ref``, if known here."""
        return self._refs.get(ref)

    def index(self, record: AlarmRecord) -> None:
        """Remember ``record.ref -> record.host``."""
        self._refs[record.ref] = record.host

    def forget(self, ref: int) -> None:
        """Drop ``ref`` from the index (and from the store at the next save)."""
        host = self._refs.pop(ref, None)
        self._forgotten.append(ref)
        if host is not None:
            self._forgotten_hosts[ref] = host

    def take_forgotten(self) -> list[int]:
        """The refs forgotten since the last call (for the store to delete)."""
        return [ref for ref, _ in self.take_forgotten_hosts()]

    def take_forgotten_hosts(self) -> list[tuple[int, str | None]]:
        """The refs forgotten since the last call, each with its host (None if unknown)."""
        refs, self._forgotten = self._forgotten, []
        hosts, self._forgotten_hosts = self._forgotten_hosts, {}
        return [(ref, hosts.get(ref)) for ref in refs]

    def dirty(self) -> list[HostState]:
        """The host states changed since they were last saved."""
        return [s for s in self._states.values() if s.dirty]

    def hosts(self) -> list[str]:
        """Every host with a state here."""
        return list(self._states)

    def add(self, state: HostState) -> None:
        """Adopt a whole host state (loaded from the store, or moved in), indexing its alarms."""
        self._states[state.host] = state
        for record in state.alarms.values():
            self._refs[record.ref] = state.host

    def remove(self, host: str) -> HostState | None:
        """Give up ``host`` (moved to another node): its state, unindexed."""
        state = self._states.pop(host, None)
        if state is not None:
            for ref in state.alarms:
                if self._refs.get(ref) == host:
                    del self._refs[ref]
        return state

    def drop(self, hosts: Iterable[str]) -> list[HostState]:
        """Give up ``hosts`` (their partition went to another node): their states, unindexed.

        Unlike :meth:`forget`, nothing is deleted from the store: the rows
        belong to the next owner now. Refs of these hosts forgotten since
        the last :meth:`take_forgotten` are dropped too (their deletion was a
        change of a state that is no longer ours to save).
        """
        hosts = set(hosts)
        dropped = [s for s in (self.remove(h) for h in hosts) if s is not None]
        if self._forgotten_hosts:
            gone = {ref for ref, host in self._forgotten_hosts.items() if host in hosts}
            if gone:
                self._forgotten = [ref for ref in self._forgotten if ref not in gone]
                for ref in gone:
                    del self._forgotten_hosts[ref]
        return dropped

    def __len__(self) -> int:
        return len(self._states)


#: What a report does to a record: a transition, or a check that agrees with its state.
_Report = Literal["raise", "clear", "check"]


class Correlator:
    """Applies input messages to host states and says which ``alarm`` messages to publish.

    ``parents`` maps a host to its parent host (the inventory's ``parent``;
    cycles are refused when the inventory loads). ``clock_now`` is used only
    when :meth:`apply` or :meth:`tick` get no ``now`` (default ``time.time``);
    tests and replays pass ``now`` and are deterministic.

    ``counters`` (for the status message): ``messages`` applied, per type
    (``events``, ``snapshots``, ``thresholds``, ``commands``), ``ignored``
    (action ``none``, unknown types), ``duplicates`` (redelivered ids),
    ``stale`` (older than the state), ``clears_for_inactive``,
    ``clears_without_name``, ``unknown_refs``; transitions ``raised``,
    ``cleared`` (of which ``expired``, ``operator_clears``), ``repeats``,
    ``held`` updates, ``forgotten``, flapping and masking changes; and
    ``published`` messages, of which ``updated``.
    """

    def __init__(self, states: HostStates, settings: CorrelatorSettings, source: str,
                 parents: Mapping[str, str | None] = {},
                 clock_now: Callable[[], float] | None = None, *,
                 flap_recheck: float = FLAP_RECHECK) -> None:
        self.states = states
        self.settings = settings
        self.source = source
        self.clock_now = clock_now or time.time
        self.flap_recheck = flap_recheck
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.parents: dict[str, str] = {}
        self.children: dict[str, list[str]] = {}
        self.set_parents(parents)
        # Due-time heap: (due, tiebreak, host, ref); _due holds each ref's live entry.
        self._heap: list[tuple[float, int, str, int]] = []
        self._due: dict[int, float] = {}
        self._tiebreak = itertools.count()
        # Local time of the last check of each flapping alarm (derived, not persisted:
        # after a restart a quiet flapping alarm waits one more flap_recheck).
        self._flap_checked: dict[int, float] = {}
        now = self.clock_now()
        for host in states.hosts():
            self.track(host, now)

    # --- configuration ---------------------------------------------------------------

    def set_parents(self, parents: Mapping[str, str | None]) -> None:
        """Replace the topology (host -> parent host); builds the children index."""
        self.parents = {h: p for h, p in parents.items() if p}
        children: dict[str, list[str]] = {}
        for host, parent in sorted(self.parents.items()):
            children.setdefault(parent, []).append(host)
        self.children = children

    def reconfigure(self, settings: CorrelatorSettings, parents: Mapping[str, str | None],
                    now: float) -> list[Outgoing]:
        """New settings and topology (a reload); the ``updated`` alarms it causes.

        Every active alarm's mask is brought in line with the new topology
        and masking settings (a child of a parent that is down now is masked,
        one whose parent changed is unmasked, a new ``mask_severity`` shows),
        and every due time is computed again (expiry, held updates,
        forgetting follow the new durations).
        """
        self.settings = settings
        self.set_parents(parents)
        out: list[Outgoing] = []
        for host in self.states.hosts():
            state = self.states.get(host)
            cause = self._parent_down(host)
            for rec in state.alarms.values():
                if not rec.active:
                    continue
                if cause is not None and self._maskable(rec):
                    if rec.cause_ref == cause.ref and \
                            rec.severity == self._masked_severity(rec.base_severity):
                        continue
                    self._mask(rec, cause)
                elif rec.cause_ref is not None:
                    self.counters["unmasked"] += 1
                    rec.cause_ref = None
                    rec.severity = rec.base_severity
                else:
                    continue
                state.touch(rec.ref)
                if not rec.flapping:
                    self._emit(rec, "updated", now, out)
            self.track(host, now)
        return out

    def track(self, host: str, now: float | None = None) -> None:
        """(Re)schedule the due times of every alarm of ``host`` (after a load or a move)."""
        now = self.clock_now() if now is None else now
        state = self.states.get(host)
        for record in state.alarms.values():
            self._schedule(record, now)

    def adopt(self, states: Iterable[HostState], now: float | None = None) -> None:
        """Take over whole host states (loaded from the store): each replaces the one here.

        Their due times are scheduled; those of a replaced state are dropped.
        """
        now = self.clock_now() if now is None else now
        states = list(states)
        self.drop(s.host for s in states)
        for state in states:
            self.states.add(state)
            self.track(state.host, now)

    def drop(self, hosts: Iterable[str]) -> list[HostState]:
        """Give up ``hosts``' states (see :meth:`MemoryHostStates.drop`) and their due times."""
        dropped = self.states.drop(hosts)
        for state in dropped:
            for ref in state.alarms:
                self._due.pop(ref, None)  # its heap entries are skipped when popped
                self._flap_checked.pop(ref, None)
        return dropped

    # --- inputs ----------------------------------------------------------------------

    def apply(self, message: object, message_id: str | None,
              now: float | None = None) -> list[Outgoing]:
        """Apply one input message; return the ``alarm`` messages to publish, in order.

        A message whose ``message_id`` its host has seen already changes
        nothing and returns ``[]``; so do messages of other types.
        """
        now = self.clock_now() if now is None else now
        out: list[Outgoing] = []
        if isinstance(message, messages.Event):
            self._event(message, message_id, now, out)
        elif isinstance(message, messages.AlarmSnapshot):
            self._snapshot(message, message_id, now, out)
        elif isinstance(message, messages.Threshold):
            self._threshold(message, message_id, now, out)
        elif isinstance(message, messages.AlarmCommand):
            self._command(message, message_id, now, out)
        else:
            self.counters["ignored"] += 1
        return out

    def _open(self, host: str, message_id: str | None) -> HostState | None:
        """The host's state, or None when ``message_id`` was applied already."""
        state = self.states.get(host)
        if state.seen(message_id):
            self.counters["duplicates"] += 1
            return None
        self.counters["messages"] += 1
        # The seen-id window is persisted state too.
        state.dirty = True
        return state

    def _event(self, event: messages.Event, message_id: str | None, now: float,
               out: list[Outgoing]) -> None:
        if event.action == "none":
            self.counters["ignored"] += 1
            return
        if event.action == "clear" and not event.alarm:
            # A clearing trap must name what it clears (the clear key); guessing is worse.
            self.counters["clears_without_name"] += 1
            return
        state = self._open(event.host, message_id)
        if state is None:
            return
        self.counters["events"] += 1
        if event.action == "raise":
            self._raise(state, event.alarm or event.name, event.key, "trap", event.severity,
                        event.message, event.ts, now, out, counts=True)
        else:
            self._clear_key(state, event.alarm, event.key, event.ts, "trap", now, out)

    def _threshold(self, threshold: messages.Threshold, message_id: str | None, now: float,
                   out: list[Outgoing]) -> None:
        state = self._open(threshold.host, message_id)
        if state is None:
            return
        self.counters["thresholds"] += 1
        identity = threshold_identity(threshold.values)
        if threshold.state == "breached":
            # The rule's severity; a producer that sends none gets a warning.
            self._raise(state, threshold.rule, identity, "threshold",
                        threshold.severity or "warning", _threshold_text(threshold),
                        threshold.ts, now, out, counts=True)
        else:
            self._clear_key(state, threshold.rule, identity, threshold.ts, "threshold", now, out)

    def _snapshot(self, snap: messages.AlarmSnapshot, message_id: str | None, now: float,
                  out: list[Outgoing]) -> None:
        state = self._open(snap.host, message_id)
        if state is None:
            return
        self.counters["snapshots"] += 1
        ts = snap.ts
        if ts < state.snapshot_ts:
            self.counters["stale"] += 1
            return
        complete = not any(row.key == UNREACHABLE for row in snap.alarms)
        if complete:
            state.snapshot_ts = ts
        present: set[int] = set()
        for row in snap.alarms:
            if row.key == UNREACHABLE:
                name = identity = UNREACHABLE
            else:
                name, identity = row.name, row.key
            since = row.since if row.since is not None and row.since < ts else None
            ref = alarm_ref(state.host, name, identity)
            present.add(ref)
            self._raise(state, name, identity, "poll", row.severity, row.message, ts, now,
                        out, counts=False, since=since, ref=ref)
        if not complete:
            return
        # The table is all the device reports: what it no longer shows is no longer active.
        for rec in list(state.alarms.values()):
            if rec.origin != "poll" or rec.ref in present:
                continue
            state.touch(rec.ref)
            if rec.active:
                self._clear(state, rec, ts, "snapshot", now, out)
            elif ts >= rec.changed_ts:
                # The table confirms it is clear: an order fact and a flap check.
                rec.changed_ts = ts
                self._check(rec, 0, "check", now, out)

    def _clear_key(self, state: HostState, name: str, identity: str, ts: float, reason: str,
                   now: float, out: list[Outgoing]) -> None:
        rec = state.alarms.get(alarm_ref(state.host, name, identity))
        if rec is None:
            self.counters["clears_for_inactive"] += 1
            return
        state.touch(rec.ref)
        if not rec.active:
            self.counters["clears_for_inactive"] += 1
            # Dropped, but remembered as an order fact: a raise older than this
            # clear must not re-raise (see the module docstring).
            rec.changed_ts = max(rec.changed_ts, ts)
            return
        self._clear(state, rec, ts, reason, now, out)

    # --- transitions -----------------------------------------------------------------

    def _raise(self, state: HostState, name: str, identity: str, origin: Origin, severity: str,
               text: str, ts: float, now: float, out: list[Outgoing], *, counts: bool,
               since: float | None = None, ref: int | None = None) -> None:
        """A report that alarm (name, identity) is active at ``ts``.

        ``counts``: a report that adds to ``count`` (a trap, a breach), not a poll
        seeing a standing alarm again. ``since``: the source's own start time.
        """
        if ref is None:
            ref = alarm_ref(state.host, name, identity)
        state.touch(ref)
        rec = state.alarms.get(ref)
        if rec is None:
            rec = AlarmRecord(ref=ref, host=state.host, name=name, identity=identity,
                              origin=origin, severity=severity, base_severity=severity,
                              message=text, active=False, first_seen=ts, last_seen=ts,
                              changed_ts=ts)
            state.alarms[ref] = rec
            self.states.index(rec)
        elif rec.active:
            self._repeat(state, rec, severity, text, ts, now, out, counts=counts)
            return
        elif ts < rec.changed_ts:
            # Older than the clear that ended the last occurrence.
            self.counters["stale"] += 1
            return
        # A new occurrence.
        self.counters["raised"] += 1
        rec.active = True
        rec.origin = origin
        rec.changed_ts = ts
        rec.first_seen = since if since is not None else ts
        rec.last_seen = ts
        rec.count = 1
        rec.cleared_at = None
        rec.clear_reason = None
        rec.acked_by = None
        rec.acked_at = None
        rec.base_severity = rec.severity = severity
        rec.message = text
        rec.cause_ref = None
        rec.pending_update = False
        cause = self._parent_down(state.host)
        if cause is not None and self._maskable(rec):
            self._mask(rec, cause)
        self._check(rec, 1, "raise", now, out)
        if rec.name == UNREACHABLE and rec.identity == UNREACHABLE:
            self._mask_children(state.host, rec, now, out)

    def _repeat(self, state: HostState, rec: AlarmRecord, severity: str, text: str, ts: float,
                now: float, out: list[Outgoing], *, counts: bool) -> None:
        """The same active alarm reported again."""
        self.counters["repeats"] += 1
        if counts:
            rec.count += 1
        rec.last_seen = max(rec.last_seen, ts)
        rec.changed_ts = max(rec.changed_ts, ts)
        changed = severity != rec.base_severity or text != rec.message
        if changed:
            rec.base_severity = severity
            rec.message = text
            if rec.cause_ref is None:
                rec.severity = severity
            else:
                rec.severity = self._masked_severity(severity)
        if self._check(rec, 1, "check", now, out) or rec.flapping:
            return  # published by the flap change, or held by flapping
        if changed:
            self._emit(rec, "updated", now, out)
            # A new severity may mean a shorter expiry.
            self._schedule(rec, now)
        elif counts:
            if now - rec.published_at >= self.settings.update_interval:
                self._emit(rec, "updated", now, out)
            else:
                # A trap storm must not become an alarm-message storm.
                if not rec.pending_update:
                    self.counters["held"] += 1
                rec.pending_update = True
                self._schedule(rec, now)

    def _clear(self, state: HostState, rec: AlarmRecord, ts: float, reason: str, now: float,
               out: list[Outgoing]) -> None:
        """A report that the active alarm ``rec`` is cleared at ``ts``."""
        if ts < rec.changed_ts:
            # Older than the raise that (last) affirmed the alarm.
            self.counters["stale"] += 1
            return
        self._deactivate(rec, ts, ts, reason)
        self._check(rec, 0, "clear", now, out)
        if rec.name == UNREACHABLE and rec.identity == UNREACHABLE:
            self._unmask_children(state.host, rec, now, out)

    def _deactivate(self, rec: AlarmRecord, changed_ts: float, cleared_at: float,
                    reason: str) -> None:
        self.counters["cleared"] += 1
        rec.active = False
        rec.changed_ts = max(rec.changed_ts, changed_ts)
        rec.cleared_at = cleared_at
        rec.clear_reason = reason
        rec.pending_update = False

    def _force_clear(self, state: HostState, rec: AlarmRecord, changed_ts: float, now: float,
                     reason: str, out: list[Outgoing]) -> None:
        """Expiry or operator: clear whatever the order, end flapping, publish ``cleared``."""
        was_active = rec.active
        if was_active:
            self._deactivate(rec, changed_ts, now, reason)
            _push_history(rec, 0)
        if rec.flapping:
            rec.flapping = False
            self._flap_checked.pop(rec.ref, None)
            self.counters["flap_stopped"] += 1
        self._emit(rec, "cleared", now, out)
        if was_active and rec.name == UNREACHABLE and rec.identity == UNREACHABLE:
            self._unmask_children(state.host, rec, now, out)
        self._schedule(rec, now)

    # --- flapping --------------------------------------------------------------------

    def _check(self, rec: AlarmRecord, bit: int, report: _Report, now: float,
               out: list[Outgoing]) -> bool:
        """Append a check to ``history``; publish what the report means. True if published."""
        _push_history(rec, bit)
        pct = flap_percent(rec.history)
        if rec.flapping:
            self._flap_checked[rec.ref] = now
            if pct < self.settings.flap_low:
                rec.flapping = False
                self._flap_checked.pop(rec.ref, None)
                self.counters["flap_stopped"] += 1
                # Consumers saw it active while flapping: now the truth.
                self._emit(rec, "updated" if rec.active else "cleared", now, out)
                self._schedule(rec, now)
                return True
            self._schedule(rec, now)
            return False
        if pct > self.settings.flap_high and report != "check":
            # Only a transition can raise the percentage (a check that agrees
            # with the previous one adds no change and ages the others).
            rec.flapping = True
            self._flap_checked[rec.ref] = now
            self.counters["flap_started"] += 1
            # One message: a raise shows it raised, a clear keeps it shown active.
            self._emit(rec, "raised" if report == "raise" else "updated", now, out)
            self._schedule(rec, now)
            return True
        if report == "check":
            return False
        self._emit(rec, "raised" if report == "raise" else "cleared", now, out)
        self._schedule(rec, now)
        return True

    # --- topology --------------------------------------------------------------------

    def _peek(self, host: str) -> HostState | None:
        """The state of ``host`` without creating one, when the provider can tell."""
        peek = getattr(self.states, "peek", None)
        return peek(host) if peek is not None else self.states.get(host)

    def _unreachable_of(self, host: str) -> AlarmRecord | None:
        state = self._peek(host)
        if state is None:
            return None
        return state.alarms.get(alarm_ref(host, UNREACHABLE, UNREACHABLE))

    def _parent_down(self, host: str) -> AlarmRecord | None:
        """The parent's active ``unreachable`` alarm, if the parent is down."""
        parent = self.parents.get(host)
        if parent is None:
            return None
        rec = self._unreachable_of(parent)
        return rec if rec is not None and rec.active else None

    def _maskable(self, rec: AlarmRecord) -> bool:
        return self.settings.mask_all or (rec.name == UNREACHABLE and rec.identity == UNREACHABLE)

    def _masked_severity(self, base: str) -> str:
        # Masking lowers; an info alarm does not become a warning because its parent is down.
        mask = self.settings.mask_severity
        return mask if severity_rank(base) > severity_rank(mask) else base

    def _mask(self, rec: AlarmRecord, cause: AlarmRecord) -> None:
        self.counters["masked"] += 1
        rec.cause_ref = cause.ref
        rec.severity = self._masked_severity(rec.base_severity)

    def _child_candidates(self, child: str) -> list[tuple[HostState, AlarmRecord]]:
        if self.settings.mask_all:
            state = self._peek(child)
            return [(state, r) for r in state.alarms.values()] if state is not None else []
        rec = self._unreachable_of(child)
        return [(self.states.get(child), rec)] if rec is not None else []

    def _mask_children(self, host: str, cause: AlarmRecord, now: float,
                       out: list[Outgoing]) -> None:
        for child in self.children.get(host, ()):
            for state, rec in self._child_candidates(child):
                if rec.active and rec.cause_ref != cause.ref and self._maskable(rec):
                    self._mask(rec, cause)
                    state.touch(rec.ref)
                    if not rec.flapping:
                        self._emit(rec, "updated", now, out)
                        self._schedule(rec, now)

    def _unmask_children(self, host: str, cause: AlarmRecord, now: float,
                         out: list[Outgoing]) -> None:
        for child in self.children.get(host, ()):
            for state, rec in self._child_candidates(child):
                if rec.active and rec.cause_ref == cause.ref:
                    self.counters["unmasked"] += 1
                    rec.cause_ref = None
                    rec.severity = rec.base_severity
                    state.touch(rec.ref)
                    if not rec.flapping:
                        self._emit(rec, "updated", now, out)
                        self._schedule(rec, now)

    # --- operators -------------------------------------------------------------------

    def _command(self, cmd: messages.AlarmCommand, message_id: str | None, now: float,
                 out: list[Outgoing]) -> None:
        host = cmd.host or self.states.host_of(cmd.ref)
        if host is None:
            self.counters["unknown_refs"] += 1
            return
        state = self._open(host, message_id)
        if state is None:
            return
        self.counters["commands"] += 1
        rec = state.alarms.get(cmd.ref)
        if rec is None:
            self.counters["unknown_refs"] += 1
            return
        state.touch(rec.ref)
        # While flapping, consumers see the alarm as active (see _check).
        shown_active = rec.active or rec.flapping
        if cmd.action == "clear":
            if not shown_active:
                self.counters["clears_for_inactive"] += 1
                return
            self.counters["operator_clears"] += 1
            if cmd.note:
                rec.notes.append([cmd.ts, cmd.user, cmd.note])
            self._force_clear(state, rec, cmd.ts, now, "operator", out)
            return
        if cmd.action == "ack":
            self.counters["acks"] += 1
            rec.acked_by = cmd.user
            rec.acked_at = cmd.ts
        elif cmd.action == "unack":
            self.counters["unacks"] += 1
            rec.acked_by = None
            rec.acked_at = None
        else:
            self.counters["notes"] += 1
        if cmd.note:
            rec.notes.append([cmd.ts, cmd.user, cmd.note])
        if not shown_active:
            # Kept in the record (history), but a cleared alarm gets no 'updated'.
            self.counters["commands_on_cleared"] += 1
            return
        self._emit(rec, "updated", now, out)
        self._schedule(rec, now)

    # --- outputs ---------------------------------------------------------------------

    def outgoing(self, rec: AlarmRecord, state: Literal["raised", "updated", "cleared"],
                 now: float) -> Outgoing:
        """The ``alarm`` message for ``rec`` in ``state``, and its AMQP message_id.

        Advances ``rec.seq`` (the id is ``alarm:<ref>:<seq>``), sets
        ``published_at`` and drops any held update (this message carries it).
        """
        rec.seq += 1
        rec.published_at = now
        rec.pending_update = False
        alarm = messages.Alarm(
            source=self.source, ts=now, host=rec.host, ref=rec.ref, name=rec.name,
            severity=rec.severity,  # type: ignore[arg-type]
            state=state, message=rec.message, first_seen=rec.first_seen,
            last_seen=rec.last_seen,
            cleared_at=rec.cleared_at if state == "cleared" else None,
            count=max(rec.count, 1), origin=rec.origin, acked_by=rec.acked_by,
            flapping=rec.flapping, cause_ref=rec.cause_ref)
        return f"alarm:{rec.ref}:{rec.seq}", alarm

    def _emit(self, rec: AlarmRecord, state: Literal["raised", "updated", "cleared"],
              now: float, out: list[Outgoing]) -> None:
        self.counters["published"] += 1
        if state == "updated":
            self.counters["updated"] += 1
        out.append(self.outgoing(rec, state, now))

    # --- time ------------------------------------------------------------------------

    def _expire_limit(self, rec: AlarmRecord) -> float:
        names = self.settings.expire_names
        if rec.name in names:
            return names[rec.name]
        # The source's severity: masking does not shorten an alarm's life.
        return self.settings.expire_after.get(rec.base_severity, 0)

    def _next_due(self, rec: AlarmRecord, now: float) -> float | None:
        due: float | None = None
        if rec.flapping:
            due = self._flap_checked.setdefault(rec.ref, now) + self.flap_recheck
        if rec.active:
            if rec.pending_update and not rec.flapping:
                d = rec.published_at + self.settings.update_interval
                due = d if due is None else min(due, d)
            limit = self._expire_limit(rec)
            if limit > 0:
                d = rec.last_seen + limit
                due = d if due is None else min(due, d)
        elif not rec.flapping:
            d = (rec.cleared_at if rec.cleared_at is not None else rec.changed_ts) \
                + self.settings.keep_cleared
            due = d if due is None else min(due, d)
        return due

    def _schedule(self, rec: AlarmRecord, now: float) -> None:
        """Make sure the heap holds an entry no later than ``rec``'s next due time."""
        due = self._next_due(rec, now)
        if due is None:
            return
        current = self._due.get(rec.ref)
        if current is not None and current <= due:
            return  # an earlier entry will pop first and reschedule (lazy)
        self._due[rec.ref] = due
        heapq.heappush(self._heap, (due, next(self._tiebreak), rec.host, rec.ref))
        # Superseded entries stay in the heap until popped: compact when they dominate.
        if len(self._heap) > 2 * len(self._due) + 1024:
            # In place: tick() holds a reference to the list.
            self._heap[:] = [(d, next(self._tiebreak), self._host_hint(ref), ref)
                             for ref, d in self._due.items()]
            heapq.heapify(self._heap)

    def _host_hint(self, ref: int) -> str:
        return self.states.host_of(ref) or ""

    def tick(self, now: float | None = None) -> list[Outgoing]:
        """Flush held updates, expire silent alarms, forget old cleared ones.

        Returns the messages to publish, in due order. Costs one heap look when
        nothing is due.
        """
        now = self.clock_now() if now is None else now
        out: list[Outgoing] = []
        heap = self._heap
        # Entries pushed during this tick wait for the next one: a due time that
        # nothing here acts on can then never spin this loop.
        mark = next(self._tiebreak)
        deferred: list[tuple[float, int, str, int]] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            due, tiebreak, host, ref = entry
            if self._due.get(ref) != due:
                continue  # superseded
            if tiebreak > mark:
                deferred.append(entry)
                continue
            del self._due[ref]
            state = self._peek(host) if host else None
            rec = state.alarms.get(ref) if state is not None else None
            if rec is None:
                continue
            self._due_actions(state, rec, now, out)
        for entry in deferred:
            heapq.heappush(heap, entry)
        return out

    def _due_actions(self, state: HostState, rec: AlarmRecord, now: float,
                     out: list[Outgoing]) -> None:
        # Whatever follows may change rec (a no-op touch costs a set add, and the
        # store compares before writing).
        state.touch(rec.ref)
        if rec.flapping and self._flap_checked.get(rec.ref, now) + self.flap_recheck <= now:
            state.dirty = True
            self._flap_checked[rec.ref] = now
            # A quiet flapping alarm: its current state, checked again.
            self._check(rec, 1 if rec.active else 0, "check", now, out)
        if rec.active:
            limit = self._expire_limit(rec)
            if limit > 0 and rec.last_seen + limit <= now:
                state.dirty = True
                self.counters["expired"] += 1
                # The occurrence ended (for ordering) when its limit ran out: a late
                # raise from before then is stale, a newer one is a new occurrence.
                self._force_clear(state, rec, rec.last_seen + limit, now, "expired", out)
                return
            if rec.pending_update and not rec.flapping \
                    and rec.published_at + self.settings.update_interval <= now:
                state.dirty = True
                self._emit(rec, "updated", now, out)
        elif not rec.flapping:
            since = rec.cleared_at if rec.cleared_at is not None else rec.changed_ts
            if since + self.settings.keep_cleared <= now:
                state.dirty = True
                del state.alarms[rec.ref]
                self._flap_checked.pop(rec.ref, None)
                forget = getattr(self.states, "forget", None)
                if forget is not None:  # stores written before HostStates.forget existed
                    forget(rec.ref)
                self.counters["forgotten"] += 1
                return
        self._schedule(rec, now)

    def due_count(self) -> int:
        """Alarms with something scheduled (for status and tests)."""
        return len(self._due)


def _push_history(rec: AlarmRecord, bit: int) -> None:
    history = rec.history
    history.append(bit)
    if len(history) > FLAP_WINDOW:
        del history[:-FLAP_WINDOW]


def _threshold_text(threshold: messages.Threshold) -> str:
    parts = [f"{v.metric}[{v.index}]={v.value}" if v.index else f"{v.metric}={v.value}"
             for v in threshold.values]
    head = threshold.message or f"{threshold.rule} breached"
    return head + (f": {', '.join(parts)}" if parts else "")
