"""Grouping (Alertmanager style), pure: what to send when, given alarms and ``now``.

Alarms taken by a route are put in a *group* keyed by the route and the
values of its ``group_by`` fields. Once a group holds an alarm (by its
``ref``), every later change of the same occurrence (same ``first_seen``) is
put in that group too, whatever the route matches now
(:meth:`Grouper.following` names those groups, from an index by ref kept with
the groups): an update is shown there with its new values (a severity lowered
by masking, say), and a clear ends it there as below, so a route matching on
severity never keeps for ever an alarm whose severity changed. A new
occurrence is a new alarm, taken only by the routes matching it. A route that
matches an alarm only after a change takes it as a new alarm of its own, even
though another route told that raise already (the last-told record, which
otherwise keeps a replayed message from telling a raise again, does not stop
it while another group holds the alarm active). A new group waits ``group_wait`` for more
alarms, then one message tells all of them; later changes (new alarms,
recoveries) are told at most every ``group_interval``; alarms still active are
told again every ``repeat_interval``.

What each alarm contributes is decided at flush time by ``hold(route, alarm,
now)`` (given by the notifier), which returns why it must not be told now
(a silence, a mute window, acked, flapping) or None:

* an active alarm held is recorded once per transition as *suppressed* and
  stays in the group; when the hold ends (silence expired, flapping stopped,
  mute window closed) it is told at once;
* a cleared alarm whose raise was told gets a recovery notice
  (``send_resolved``); one that was hidden (suppressed) gets it once the hold
  ends, so that an alarm raised and cleared under a silence is reported when
  the silence ends; one never told nor hidden (raised and cleared within
  ``group_wait``) is dropped quietly.

Every transition has an idempotency key, ``<ref>:<raised|cleared>:<time>``
(time: ``first_seen`` for a raise, ``cleared_at`` for a recovery); a message
(:class:`Batch`) has the key of its contents: the transition's own key when
it tells one transition, else ``g:`` and a digest of the keys it tells (and
of the reminder number), stable across restarts because the state is.

The whole state is JSON-able dicts keyed by group (:meth:`Grouper.export`,
:meth:`Grouper.load`): the notifier saves it with its outbox. So that saving
costs what changed rather than the whole state, the grouper keeps a journal:
before a group or last-told record is first changed, its previous value is
recorded (:meth:`Grouper.take_journal` hands the journal over and starts a
new one; :meth:`Journal.changes` gives the changed values to store;
:meth:`Grouper.rollback` puts the previous values back when the store failed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Callable, Iterable, Mapping

from .routes import Route

__all__ = ["Batch", "Grouper", "Journal", "transition_key", "group_id", "ALARM_FIELDS"]

#: The ``alarm`` fields kept in the group state (and given to templates).
ALARM_FIELDS = ("ref", "host", "name", "severity", "state", "message", "first_seen",
                "last_seen", "cleared_at", "count", "origin", "acked_by", "flapping", "cause_ref")

Hold = Callable[[Route, Mapping[str, Any], float], "str | None"]


def transition_key(alarm: Mapping[str, Any]) -> str:
    """``<ref>:raised:<first_seen>`` or ``<ref>:cleared:<cleared_at>``: one per transition."""
    if alarm["state"] == "cleared":
        ts = alarm.get("cleared_at") or alarm["last_seen"]
        return f"{alarm['ref']}:cleared:{float(ts)!r}"
    return f"{alarm['ref']}:raised:{float(alarm['first_seen'])!r}"


def group_id(route: str, labels: Mapping[str, str]) -> str:
    """The key of a group in the exported state: the route and its labels as JSON."""
    return json.dumps([route, sorted(labels.items())], separators=(",", ":"))


@dataclasses.dataclass
class Batch:
    """One message of a group, to render and send to every receiver of the route."""

    route: str
    group: str
    labels: dict[str, str]
    #: Active alarms told (each with ``idempotency_key`` and ``new``).
    firing: list[dict[str, Any]]
    #: Alarms whose recovery is told.
    resolved: list[dict[str, Any]]
    #: 0, or n for the n-th reminder of still-active alarms.
    repeat: int
    key: str
    #: Alarms held now, recorded as suppressed: (alarm, reason). A batch may
    #: hold only these (nothing to send).
    suppressed: list[tuple[dict[str, Any], str]] = dataclasses.field(default_factory=list)

    @property
    def sends(self) -> bool:
        """True when there is a message to send (not only suppressions)."""
        return bool(self.firing or self.resolved)


def _batch_key(told: list[str], repeat: int) -> str:
    if len(told) == 1 and not repeat:
        return told[0]
    digest = hashlib.sha256("\n".join(sorted(told) + [f"repeat:{repeat}"]).encode())
    return "g:" + digest.hexdigest()[:32]


#: A journal's mark for "this key did not exist before".
_ABSENT = None


class Journal:
    """The previous values of the groups and last-told records changed since it began.

    ``groups``: group id -> JSON of the group before its first change (None:
    it did not exist); ``last``: ref -> the record before (None: none).
    """

    def __init__(self) -> None:
        self.groups: dict[str, str | None] = {}
        self.last: dict[str, dict[str, Any] | None] = {}

    def __bool__(self) -> bool:
        return bool(self.groups or self.last)

    def changes(self, grouper: "Grouper") -> tuple[dict[str, str | None],
                                                   dict[str, dict[str, Any] | None]]:
        """What to store: group id -> the group's JSON now (None: deleted), ref -> record.

        Encoded now, so that later changes on the reactor thread cannot race
        with the thread that writes them; groups changed back to what they
        were are left out.
        """
        groups: dict[str, str | None] = {}
        for gid, before in self.groups.items():
            g = grouper.groups.get(gid)
            now = None if g is None else json.dumps(g, sort_keys=True)
            if now != before:
                groups[gid] = now
        last: dict[str, dict[str, Any] | None] = {}
        for ref, before in self.last.items():
            rec = grouper.last.get(ref)
            if rec != before:
                last[ref] = None if rec is None else dict(rec)
        return groups, last


class Grouper:
    """The groups of every route; pure (``now`` is always given)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: dict[str, Route] = {r.name: r for r in routes}
        #: group id -> {"route", "labels", "alarms": {ref: entry}, "next_flush",
        #: "last_flush", "repeat"}; an entry is {"alarm": {...}, "told": key|None,
        #: "hidden": key|None, "told_raise": bool}.
        self.groups: dict[str, dict[str, Any]] = {}
        #: Last transition told per alarm ref: {"key", "state", "first_seen", "at"}
        #: (the notifier stores it; it keeps a replayed message from telling again
        #: a transition of an alarm whose group is gone).
        self.last: dict[str, dict[str, Any]] = {}
        #: Alarm ref -> ids of the groups holding it: derived from ``groups`` (kept
        #: with every change of them, rebuilt on load and rollback), never stored.
        self._held: dict[str, set[str]] = {}
        self.journal = Journal()

    def set_routes(self, routes: Iterable[Route]) -> int:
        """Use ``routes`` from now on; the groups of routes gone are dropped (how many).

        The drops are journalled, so the next save deletes them from the store.
        """
        self.routes = {r.name: r for r in routes}
        gone = [gid for gid, g in self.groups.items() if g["route"] not in self.routes]
        for gid in gone:
            self._touch(gid)
            self._unindex(gid)
            del self.groups[gid]
        return len(gone)

    # --- who holds an alarm -------------------------------------------------------

    def holding(self, ref: Any) -> list[str]:
        """The ids of the groups holding alarm ``ref`` (any occurrence), sorted."""
        return sorted(self._held.get(str(ref), ()))

    def following(self, alarm: Mapping[str, Any]) -> list[str]:
        """The ids of the groups holding this occurrence of ``alarm``, sorted.

        Same ``ref`` and ``first_seen``: every change of it goes to these
        groups, whatever their routes match now (see the module's docstring).
        """
        ref = str(alarm["ref"])
        return sorted(gid for gid in self._held.get(ref, ())
                      if self.groups[gid]["alarms"][ref]["alarm"]["first_seen"]
                      == alarm["first_seen"])

    def _active_elsewhere(self, alarm: Mapping[str, Any]) -> bool:
        """True when a group holds this occurrence of ``alarm`` as active (not cleared)."""
        ref = str(alarm["ref"])
        return any(self.groups[gid]["alarms"][ref]["alarm"]["state"] != "cleared"
                   for gid in self.following(alarm))

    def _index(self, gid: str) -> None:
        g = self.groups.get(gid)
        if g is not None:
            for ref in g["alarms"]:
                self._held.setdefault(ref, set()).add(gid)

    def _unindex(self, gid: str) -> None:
        g = self.groups.get(gid)
        if g is not None:
            for ref in g["alarms"]:
                self._unhold(ref, gid)

    def _unhold(self, ref: str, gid: str) -> None:
        gids = self._held.get(ref)
        if gids is not None:
            gids.discard(gid)
            if not gids:
                del self._held[ref]

    # --- state --------------------------------------------------------------------

    def export(self) -> dict[str, dict[str, Any]]:
        """The state: JSON-able dicts keyed by group id (a deep copy)."""
        return json.loads(json.dumps(self.groups))

    def load(self, state: Mapping[str, Mapping[str, Any]],
             last: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Replace the state by an exported one; groups of routes gone are dropped."""
        self.groups = {gid: json.loads(json.dumps(g)) for gid, g in state.items()
                       if g.get("route") in self.routes}
        if last is not None:
            self.last = {ref: dict(v) for ref, v in last.items()}
        self._held = {}
        for gid in self.groups:
            self._index(gid)
        self.journal = Journal()

    def take_journal(self) -> Journal:
        """The journal of the changes so far; a new one starts (see the module's docstring)."""
        j, self.journal = self.journal, Journal()
        return j

    def rollback(self, *journals: Journal) -> None:
        """Put back the values before ``journals`` (newest first) and the current journal.

        The current journal's changes were made on top of the others', so
        they go too.
        """
        for j in (self.take_journal(),) + journals:
            for gid, before in j.groups.items():
                self._unindex(gid)
                if before is None:
                    self.groups.pop(gid, None)
                else:
                    self.groups[gid] = json.loads(before)
                    self._index(gid)
            for ref, rec in j.last.items():
                if rec is None:
                    self.last.pop(ref, None)
                else:
                    self.last[ref] = rec

    def _touch(self, gid: str) -> None:
        """Record ``gid``'s value before its first change in this journal."""
        if gid not in self.journal.groups:
            g = self.groups.get(gid)
            self.journal.groups[gid] = None if g is None else json.dumps(g, sort_keys=True)

    def _touch_last(self, ref: str) -> None:
        if ref not in self.journal.last:
            rec = self.last.get(ref)
            self.journal.last[ref] = None if rec is None else dict(rec)

    def forget_last(self, before: float) -> list[str]:
        """Drop the last-told records told before ``before`` that no group needs; their refs.

        A cleared alarm's record, and a raised one's whose alarm is in no
        group any more: its recovery was not told (a route without
        ``send_resolved``) or its route is gone. Such a record only stops a
        message replayed that late from telling the raise again; an alarm
        still in a group keeps its record whatever its age.
        """
        gone = [ref for ref, v in self.last.items() if v["at"] < before
                and (v["state"] == "cleared" or ref not in self._held)]
        for ref in gone:
            self._touch_last(ref)
            del self.last[ref]
        return gone

    # --- input --------------------------------------------------------------------

    def add(self, route: Route, labels: Mapping[str, str], alarm: Mapping[str, Any],
            now: float) -> str:
        """Put ``alarm`` (Alarm fields as a dict) in its group; returns the group id."""
        gid = group_id(route.name, labels)
        ref = str(alarm["ref"])
        g = self.groups.get(gid)
        last = self.last.get(ref)
        if ((g is None or ref not in g["alarms"]) and last is not None
                and ((transition_key(alarm) == last["key"] and not self._active_elsewhere(alarm))
                     or (last["state"] == "cleared"
                         and alarm["first_seen"] <= last["first_seen"]))):
            # Told already (its group is gone), or older than what was told. An
            # alarm still active in another route's group is live, not replayed:
            # a route it matches now (its severity changed) takes it.
            return gid
        old = None if g is None else g["alarms"].get(ref)
        if old is not None and (
                old["alarm"]["last_seen"] > alarm["last_seen"]
                # a message of an earlier occurrence (a replayed clear may have the
                # last_seen of the next raise, when it was raised again at once)
                or old["alarm"]["first_seen"] > alarm["first_seen"]
                or (old["alarm"]["state"] == "cleared" and alarm["state"] != "cleared"
                    and old["alarm"]["first_seen"] == alarm["first_seen"])):
            return gid  # a late or replayed message must not undo a newer state
        self._touch(gid)
        if g is None:
            g = self.groups[gid] = {"route": route.name, "labels": dict(labels), "alarms": {},
                                    "next_flush": now + route.group_wait, "last_flush": None,
                                    "repeat": 0}
        entry = {"alarm": {k: alarm.get(k) for k in ALARM_FIELDS}, "told": None,
                 "hidden": None, "told_raise": False}
        if old is not None:
            entry["told"], entry["hidden"] = old["told"], old["hidden"]
            entry["told_raise"] = old["told_raise"]
            if alarm["state"] != "cleared" and old["alarm"]["first_seen"] != alarm["first_seen"]:
                entry["told_raise"] = False  # a new occurrence of this ref
        g["alarms"][ref] = entry
        self._held.setdefault(ref, set()).add(gid)
        if transition_key(entry["alarm"]) not in (entry["told"], entry["hidden"]) \
                and g["next_flush"] is None:
            g["next_flush"] = self._after_interval(route, g, now)
        return gid

    @staticmethod
    def _after_interval(route: Route, g: Mapping[str, Any], now: float) -> float:
        if g["last_flush"] is None:
            return now + route.group_wait
        return max(now, g["last_flush"] + route.group_interval)

    # --- time ---------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """The earliest time :meth:`due` has something to do (holds aside)."""
        times = []
        for g in self.groups.values():
            if g["next_flush"] is not None:
                times.append(g["next_flush"])
            route = self.routes[g["route"]]
            if (g["last_flush"] is not None and route.repeat_interval > 0
                    and any(e["told_raise"] and e["alarm"]["state"] != "cleared"
                            for e in g["alarms"].values())):
                times.append(g["last_flush"] + route.repeat_interval)
        return min(times) if times else None

    def due(self, now: float, hold: Hold) -> list[Batch]:
        """The messages to send (and suppressions to record) at ``now``; updates the state.

        Call it again until it returns nothing new: it is idempotent for one ``now``.
        """
        out = []
        for gid in list(self.groups):
            batch = self._flush(gid, now, hold)
            if batch is not None:
                out.append(batch)
        return out

    def _flush(self, gid: str, now: float, hold: Hold) -> Batch | None:
        g = self.groups[gid]
        route = self.routes[g["route"]]
        firing: list[dict[str, Any]] = []
        resolved: list[dict[str, Any]] = []
        suppressed: list[tuple[dict[str, Any], str]] = []
        drop: list[str] = []
        released = False  # a transition whose hold just ended: told at once
        for ref, e in g["alarms"].items():
            a = e["alarm"]
            key = transition_key(a)
            cleared = a["state"] == "cleared"
            if e["told"] == key:
                if cleared:
                    drop.append(ref)
                    continue
                if hold(route, a, now) is None:
                    firing.append(dict(a, idempotency_key=key, new=False))
                continue
            # Only a recovery of something told (or hidden) is worth a message.
            if cleared and not (e["told_raise"] or e["hidden"]):
                drop.append(ref)
                continue
            reason = hold(route, a, now)
            if reason is not None:
                if e["hidden"] != key:
                    self._touch(gid)
                    e["hidden"] = key
                    suppressed.append((dict(a, idempotency_key=key), reason))
                continue
            if cleared and not route.send_resolved:
                drop.append(ref)
                continue
            released = released or e["hidden"] is not None
            (resolved if cleared else firing).append(dict(a, idempotency_key=key, new=True))
        fresh = [a["idempotency_key"] for a in firing + resolved if a["new"]]
        flush_due = g["next_flush"] is not None and g["next_flush"] <= now
        repeat = 0
        if fresh and (flush_due or released):
            self._touch(gid)
            g["repeat"] = 0
        elif (not fresh and firing and route.repeat_interval > 0 and g["last_flush"] is not None
              and now >= g["last_flush"] + route.repeat_interval):
            self._touch(gid)
            g["repeat"] += 1
            repeat = g["repeat"]
        else:
            if fresh and g["next_flush"] is None:
                self._touch(gid)
                g["next_flush"] = self._after_interval(route, g, now)
            elif flush_due:
                self._touch(gid)
                g["next_flush"] = None
            firing, resolved = [], []
        batch = None
        if firing or resolved:
            told = [a["idempotency_key"] for a in firing + resolved if a["new"] or repeat]
            batch = Batch(route.name, gid, dict(g["labels"]), firing, resolved, repeat,
                          _batch_key(told, repeat), suppressed)
            for a in firing + resolved:
                e = g["alarms"][str(a["ref"])]
                self._touch_last(str(a["ref"]))
                e["told"], e["hidden"] = a["idempotency_key"], None
                self.last[str(a["ref"])] = {"key": a["idempotency_key"], "state": a["state"],
                                            "first_seen": a["first_seen"], "at": now}
                if a["state"] == "cleared":
                    drop.append(str(a["ref"]))
                else:
                    e["told_raise"] = True
            g["last_flush"], g["next_flush"] = now, None
        elif suppressed:
            batch = Batch(route.name, gid, dict(g["labels"]), [], [], 0, "", suppressed)
        if drop:
            self._touch(gid)
        for ref in drop:
            if g["alarms"].pop(ref, None) is not None:
                self._unhold(ref, gid)
        if not g["alarms"]:
            self._touch(gid)
            del self.groups[gid]
        return batch
