"""Streaming evaluation of threshold rules on ``perf`` values.

``Evaluator(rules, devices, source)``:

* ``evaluate(perf, now)`` feeds the values of one poll and returns the
  :class:`~connector.messages.Threshold` transitions (``breached`` /
  ``recovered``) it caused; nothing while a rule's state does not change.
* ``tick(now)`` runs what time alone decides: deadman (``absent``) leaves,
  ``for`` durations, schedules and ``valid_until``. Call it every second or so.
* ``backfill(samples)`` rebuilds windows and breach state from stored samples
  ``(host, metric, index, ts, value)`` without emitting (``emit=True``: return
  the transitions against the state already held, e.g. after ``import_state``).
* ``export_state()`` / ``import_state(state)``: plain JSON-able dicts keyed by
  host, so state can be persisted, or moved with a host to another process.

How it stays fast: rules are indexed by metric name, and each host gets a
*plan* (shared by hosts that the same rules select: same device type, model
and tags) mapping a metric name to the few leaf feeders that can match it,
resolved once per name. The common leaf (one metric, a comparison, no
window) is a generated function doing one comparison and one dict test per
value; the tree of a rule is evaluated only when one of its leaves changes
truth (rare), per host and index.

Leaf truth is kept per host in a dict ``(leaf id, index) -> {metric: value}``
(present: the leaf holds for that index, with the values that made it hold).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from connector.messages import Perf, Threshold, ThresholdValue
from connector_alerter.rules import OPS, Group, Leaf, Rule, leaves

__all__ = ["Evaluator", "same_condition"]

_NUM = frozenset((int, float))
_NEG = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}

# A feeder: (host, truth, windows, name, index, value, ts) -> instance index
# whose leaf truth flipped, or None.
Feeder = Callable[[str, dict, dict, str, str, Any, float], "str | None"]

_SIMPLE_TEMPLATE = """
def feed(host, ht, hs, name, index, value, ts):
    {guard}
    if hit:
        key = (lid, index)
        if key in ht:
            return None
        ht[key] = {{name: value}}
        return index
    # Most values: no breach, and most hosts hold no truth at all.
    if ht:
        key = (lid, index)
        if key in ht:
            del ht[key]
            return index
    return None
"""


def _simple_feeder(lid: str, op: str, threshold: Any) -> Feeder:
    """Generated feeder for a one-metric comparison with no window: the hot path."""
    if isinstance(threshold, str):
        guard = f"if value.__class__ is not str:\n        return None\n    hit = value {op} thr"
    elif op in ("==", "!="):
        # == / != never raise: test the type so a text or None does not breach.
        guard = f"if value.__class__ not in NUM:\n        return None\n    hit = value {op} thr"
    else:
        # Ordered comparisons raise TypeError on text and None: free when numeric.
        guard = f"try:\n        hit = value {op} thr\n    except TypeError:\n        return None"
    namespace: dict[str, Any] = {"lid": lid, "thr": threshold, "NUM": _NUM}
    exec(_SIMPLE_TEMPLATE.format(guard=guard), namespace)  # noqa: S102 - our own fixed template
    feed = namespace["feed"]
    if op in _ORDERED and threshold.__class__ in _NUM:
        # What the metric's entry of a plan needs to skip it for quiet values (_entry).
        feed.ordered = (lid, op, threshold)
    return feed


_ORDERED = frozenset((">", ">=", "<", "<="))


def _entry(feeders: tuple) -> tuple:
    """A plan's entry for one metric name: ``(feeders, above, below, checks)``.

    When every feeder is a plain ordered comparison, a numeric value (int or
    float, not bool) with ``above < value < below`` makes none of their leaves
    hold, so a feeder can only flip a leaf that holds now for the value's
    index, by clearing it: ``checks`` lists ``(lid, feed, rule)`` for that
    test, in the feeders' order. Otherwise (a window, a glob, a text or
    equality test, a deadman leaf) ``above > below``: no value is quiet, every
    value goes through every feeder. No feeder at all: every number is quiet.
    """
    above, below = float("-inf"), float("inf")
    checks = []
    for feed, rt in feeders:
        spec = getattr(feed, "ordered", None)
        if spec is None:
            return feeders, float("inf"), float("-inf"), ()
        lid, op, thr = spec
        if op in (">", ">="):
            below = min(below, thr)
        else:
            above = max(above, thr)
        checks.append((lid, feed, rt))
    return feeders, above, below, tuple(checks)


_WINDOW_TEMPLATE = """
def feed(host, ht, hs, name, index, value, ts):
    try:
        hit = value {op} thr
    except TypeError:
        return None
    if ht:  # most hosts hold no truth: no key to build
        key = (lid, index)
        if key in ht:
            # Holds until a value passes the clearing test (hysteresis).
            if value {clear_op} clear_thr:
                del ht[key]
                hs.pop((lid, name, index), None)
                return index
            return None
    if hit:
        wkey = (lid, name, index)
        count = hs.get(wkey, 0) + 1
        if count >= n:
            hs[wkey] = n
            ht[(lid, index)] = {{name: value}}
            return index
        hs[wkey] = count
    elif hs:
        hs.pop((lid, name, index), None)
    return None
"""


def _window_feeder(lid: str, leaf: Leaf) -> Feeder:
    """Generated feeder for an ordered comparison with hysteresis and/or N consecutive values.

    Same results as the general feeder (the property tests compare them), with
    the window count kept as an int under ``(lid, metric, index)``.
    """
    op, thr, h = leaf.kind, leaf.value, leaf.hysteresis
    clear_thr = thr - h if op in (">", ">=") else thr + h
    namespace: dict[str, Any] = {"lid": lid, "thr": thr, "clear_thr": clear_thr, "n": leaf.window.n}
    exec(_WINDOW_TEMPLATE.format(op=op, clear_op=_NEG[op]), namespace)  # noqa: S102
    return namespace["feed"]


def _number(value: Any) -> float | None:
    cls = value.__class__
    if cls is float or cls is int:
        return value
    return None


def _tests(leaf: Leaf) -> tuple[Callable[[Any], bool], Callable[[Any], bool]]:
    """``(breach, clear)`` predicates on a tested value (already a number for numeric leaves)."""
    kind, thr, h = leaf.kind, leaf.value, leaf.hysteresis
    lo, hi = leaf.low, leaf.high
    if kind in OPS:
        cmp = {">": lambda x, t: x > t, ">=": lambda x, t: x >= t, "<": lambda x, t: x < t,
               "<=": lambda x, t: x <= t, "==": lambda x, t: x == t, "!=": lambda x, t: x != t}
        breach_fn, clear_fn = cmp[kind], cmp[_NEG[kind]]
        # The clearing threshold moves away from the breach side by the hysteresis.
        clear_thr = thr - h if kind in (">", ">=") else thr + h if kind in ("<", "<=") else thr
        return (lambda x: breach_fn(x, thr)), (lambda x: clear_fn(x, clear_thr))
    if kind == "outside":
        return ((lambda x: x < lo or x > hi), (lambda x: lo + h <= x <= hi - h))
    if kind == "inside":
        return ((lambda x: lo <= x <= hi), (lambda x: x < lo - h or x > hi + h))
    pattern = re.compile(str(thr))
    if kind == "match":
        return ((lambda x: pattern.search(x) is not None), (lambda x: pattern.search(x) is None))
    return ((lambda x: pattern.search(x) is None), (lambda x: pattern.search(x) is not None))


def _general_feeder(lid: str, leaf: Leaf) -> Feeder:
    """Feeder for any leaf but ``absent``: index globs, rate, hysteresis, windows, text."""
    breach, clear = _tests(leaf)
    index_sel = leaf.index
    index_glob = index_sel is not None and any(c in index_sel for c in "*?[")
    numeric = leaf.kind in OPS and not isinstance(leaf.value, str) or leaf.kind in ("inside", "outside")
    text = isinstance(leaf.value, str) and leaf.kind in ("==", "!=")
    rate = leaf.rate
    n, m = leaf.window.n, leaf.window.m
    consecutive = n == m
    full = (1 << m) - 1

    def feed(host: str, ht: dict, hs: dict, name: str, index: str, value: Any, ts: float) -> str | None:
        if index_sel is not None and (
                not fnmatch.fnmatchcase(index, index_sel) if index_glob else index != index_sel):
            return None
        if numeric:
            x = _number(value)
            if x is None:
                return None
        elif text:
            if value.__class__ is not str:
                return None
            x = value
        else:
            if value is None:
                return None
            x = value if value.__class__ is str else str(value)
        wkey = (lid, name, index)
        st = hs.get(wkey)
        if st is None:
            st = hs[wkey] = [0, None, None]        # window bits or count, previous ts, previous value
        if rate:
            prev_ts, prev = st[1], st[2]
            st[1], st[2] = ts, x
            if prev_ts is None or ts <= prev_ts:
                return None
            x = (x - prev) / (ts - prev_ts)
        key = (lid, index)
        held = ht.get(key)
        cur = held is not None and name in held
        # While the leaf holds, a value keeps it unless it passes the clearing
        # test (hysteresis); without hysteresis that is just the breach test.
        hit = (not clear(x)) if cur else breach(x)
        if consecutive:
            acc = st[0] + 1 if hit else 0
            st[0] = acc if acc <= n else n
            now_true = acc >= n
        else:
            acc = ((st[0] << 1) | hit) & full
            st[0] = acc
            now_true = acc.bit_count() >= n
        if now_true == cur:
            if now_true:
                held[name] = value
            return None
        if now_true:
            if held is None:
                ht[key] = {name: value}
            else:
                held[name] = value
        else:
            del held[name]
            if not held:
                del ht[key]
        return index

    return feed


class _RuleRT:
    """A rule compiled: its trees and the ids of its leaves."""

    __slots__ = ("rule", "name", "tree", "recovery", "when_lids", "lids", "for_", "until",
                 "schedule", "active", "host_specific", "deadman")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name
        self.for_ = rule.for_
        self.until = rule.valid_until
        self.schedule = rule.schedule
        self.active: bool | None = None          # last state seen by tick (schedule / until)
        self.host_specific = bool(rule.selector.hosts)
        self.when_lids = [self.lid(leaf) for leaf in leaves(rule.when)]
        self.lids = [self.lid(leaf) for leaf in rule.leaves()]
        self.tree = self._compile(rule.when)
        self.recovery = None if rule.recovery is None else self._compile(rule.recovery)
        self.deadman = [leaf for leaf in rule.leaves() if leaf.kind == "absent"]

    def lid(self, leaf: Leaf) -> str:
        """The stable id of a leaf: rule name and its path."""
        return f"{self.name}#{leaf.path}"

    def _compile(self, cond: Leaf | Group) -> Callable[[dict, str], bool]:
        if isinstance(cond, Leaf):
            lid = self.lid(cond)
            if cond.kind == "absent" and cond.index is None:
                return lambda ht, index: (lid, "") in ht
            return lambda ht, index: (lid, index) in ht
        fns = [self._compile(item) for item in cond.items]
        if cond.op == "all":
            return lambda ht, index: all(f(ht, index) for f in fns)
        return lambda ht, index: any(f(ht, index) for f in fns)

    def is_active(self, now: float) -> bool:
        """valid_until and the schedule at ``now``."""
        if self.until is not None and now >= self.until:
            return False
        return self.schedule is None or self.schedule.active(now)


def same_condition(a: Rule, b: Rule) -> bool:
    """Whether ``a`` and ``b`` breach and recover alike (text, severity, recipients aside)."""
    def core(r: Rule) -> Rule:
        return dataclasses.replace(r, where="", severity="warning", message="", emails=())
    return core(a) == core(b)


class Evaluator:
    """Threshold rules evaluated on the ``perf`` stream; see the module docstring.

    ``devices`` (name -> :class:`connector_snmp.model.Device`, may be empty)
    gives device types, models and tags for selectors; a host not in it is
    known by the ``device_type`` of its perf messages only. ``source`` is the
    ``connector@node`` stamped on the messages produced.
    """

    def __init__(self, rules: Iterable[Rule], devices: Mapping[str, Any], source: str) -> None:
        self.rules = tuple(rules)
        self.devices = devices
        self.source = source
        self._rts = [_RuleRT(r) for r in self.rules]
        self._by_name = {rt.name: rt for rt in self._rts}
        # Metric index: exact name -> [(rule number, leaf id, feeder)]; globs apart.
        self._exact: dict[str, list[tuple[int, _RuleRT, Feeder]]] = {}
        self._globs: list[tuple[int, Leaf, _RuleRT, Feeder]] = []
        self._deadman: list[tuple[int, _RuleRT, Leaf, str]] = []
        self._lids: set[str] = set()
        self._seen: dict[str, dict] = {}           # deadman lid -> (host, index) -> last value ts
        self._seen_keys: dict[str, set] = {}       # host -> {(deadman lid, index key)} of _seen
        for i, rt in enumerate(self._rts):
            for leaf in rt.rule.leaves():
                lid = rt.lid(leaf)
                self._lids.add(lid)
                if leaf.kind == "absent":
                    self._deadman.append((i, rt, leaf, lid))
                    feeder = self._deadman_feeder(lid, leaf)
                elif (leaf.kind in OPS and leaf.window.n == leaf.window.m == 1 and not leaf.rate
                      and not leaf.hysteresis and leaf.index is None and not leaf.is_glob):
                    feeder = _simple_feeder(lid, leaf.kind, leaf.value)
                elif (leaf.kind in (">", ">=", "<", "<=") and leaf.window.n == leaf.window.m
                      and not leaf.rate and leaf.index is None and not leaf.is_glob):
                    feeder = _window_feeder(lid, leaf)
                else:
                    feeder = _general_feeder(lid, leaf)
                if leaf.is_glob:
                    self._globs.append((i, leaf, rt, feeder))
                else:
                    self._exact.setdefault(leaf.metric, []).append((i, rt, feeder))
        self._generic = tuple(i for i, rt in enumerate(self._rts) if not rt.host_specific)
        # Rules naming hosts: checked for each new host (the others are shared by attributes).
        self._specific = tuple((i, rt) for i, rt in enumerate(self._rts) if rt.host_specific)
        self._attr_sig: dict[tuple, tuple[int, ...]] = {}
        self._sig_plan: dict[tuple[int, ...], dict[str, tuple]] = {}
        self._plans: dict[str, dict[str, tuple]] = {}
        self._truth: dict[str, dict] = {}          # host -> (lid, index) -> {metric: value}
        self._win: dict[str, dict] = {}            # host -> (lid, metric, index) -> window state
        self._breached: dict[str, dict] = {}       # host -> (rule, index) -> since
        self._pending: dict[str, dict] = {}        # host -> (rule, index) -> true since (for)
        self._started: float | None = None
        # Change tracking for persistence (take_changes), kept off the per-value path:
        # evaluate() does one dict store per message; the rare paths mark the rest.
        self._touched: dict[str, float] = {}       # host -> data ts fed since the last take
        self._dirty: set[str] = set()              # hosts changed by time (tick) since then
        self._emitted: set[str] = set()            # hosts with a transition since then
        self._data_ts: dict[str, float] = {}       # host -> newest data ts taken

    # ------------------------------------------------------------------
    # Plans: which feeders a metric name of a host goes to

    def _signature(self, host: str, device_type: str) -> tuple[int, ...]:
        device = self.devices.get(host)
        if device is not None:
            device_type, model, tags = device.device_type, device.model, tuple(device.tags)
        else:
            model, tags = "", ()
        attrs = (device_type, model, tags)
        sig = self._attr_sig.get(attrs)
        if sig is None:
            sig = self._attr_sig[attrs] = tuple(
                i for i in self._generic
                if self._rts[i].rule.selector.matches(host, device_type, model, tags))
        specific = [i for i, rt in self._specific
                    if rt.rule.selector.matches(host, device_type, model, tags)]
        return tuple(sorted(sig + tuple(specific))) if specific else sig

    def _plan(self, host: str, device_type: str, keep: bool = True) -> dict[str, tuple]:
        sig = self._signature(host, device_type)
        plan = self._sig_plan.get(sig)
        if plan is None:
            plan = self._sig_plan[sig] = {"\x00sig": frozenset(sig)}  # type: ignore[dict-item]
        if keep:
            self._plans[host] = plan
        return plan

    def _resolve(self, plan: dict, name: str) -> tuple:
        """The entry of ``name`` in ``plan``, as :func:`_entry` gives it."""
        sig = plan["\x00sig"]
        found = [(f, rt) for i, rt, f in self._exact.get(name, ()) if i in sig]
        found += [(f, rt) for i, leaf, rt, f in self._globs
                  if i in sig and fnmatch.fnmatchcase(name, leaf.metric)]
        plan[name] = result = _entry(tuple(found))
        return result

    def _deadman_feeder(self, lid: str, leaf: Leaf) -> Feeder:
        seen = self._seen.setdefault(lid, {})
        seen_keys = self._seen_keys
        index_sel = leaf.index

        def feed(host: str, ht: dict, hs: dict, name: str, index: str, value: Any, ts: float) -> str | None:
            if index_sel is None:
                ik = ""
            elif fnmatch.fnmatchcase(index, index_sel):
                ik = index
            else:
                return None
            skey = (host, ik)
            last = seen.get(skey)
            if last is None:
                seen[skey] = ts
                keys = seen_keys.get(host)
                if keys is None:
                    keys = seen_keys[host] = set()
                keys.add((lid, ik))
            elif ts > last:
                seen[skey] = ts
            if (lid, ik) in ht:
                del ht[(lid, ik)]
                return ik
            return None

        return feed

    # ------------------------------------------------------------------
    # Evaluation

    def evaluate(self, perf: Perf, now: float | None = None) -> list[Threshold]:
        """Feed the values of ``perf``; the breached/recovered transitions they cause."""
        host = perf.host
        plan = self._plans.get(host)
        if plan is None:
            plan = self._plan(host, perf.device_type)
        ht = self._truth.get(host)
        if ht is None:
            ht = self._truth[host] = {}
            self._win[host] = {}
        hs = self._win[host]
        ts = perf.ts
        flips = None
        get = plan.get
        num = _NUM
        for metric in perf.metrics:
            name = metric.name
            entry = get(name)
            if entry is None:
                entry = self._resolve(plan, name)
            feeders, above, below, checks = entry
            value = metric.value
            if value.__class__ in num and above < value < below:
                # No leaf of this metric holds for this value: only a held one can flip
                # (cleared), as its feeder would find; most hosts hold none.
                if not ht:
                    continue
                index = metric.index
                for lid, feed, rt in checks:
                    if (lid, index) in ht:
                        flipped = feed(host, ht, hs, name, index, value, ts)
                        if flipped is not None:
                            if flips is None:
                                flips = []
                            flips.append((rt, flipped, name, value))
                continue
            index = metric.index
            for feed, rt in feeders:
                flipped = feed(host, ht, hs, name, index, value, ts)
                if flipped is not None:
                    if flips is None:
                        flips = []
                    flips.append((rt, flipped, name, value))
        out: list[Threshold] = []
        if flips is not None:
            now = ts if now is None else now
            for rt, index, name, value in flips:
                self._settle(rt, host, index, ts, now, out, (name, index, value), True)
        if self._pending.get(host):
            self._check_pending(host, ts if now is None else now, out, True)
        self._touched[host] = ts
        return out

    def _values(self, rt: _RuleRT, ht: dict, index: str) -> list[ThresholdValue]:
        values = []
        for lid in rt.when_lids:
            for key in ((lid, index), (lid, "")) if index else ((lid, index),):
                held = ht.get(key)
                if held:
                    values.extend(ThresholdValue(metric=n, index=key[1], value=v)
                                  for n, v in held.items())
        return values

    def _emit(self, out: list[Threshold] | None, host: str, rt: _RuleRT, state: str,
              values: list[ThresholdValue], now: float) -> None:
        if out is not None:
            self._emitted.add(host)
            rule = rt.rule
            out.append(Threshold(source=self.source, ts=now, host=host, rule=rt.name, state=state,
                                 values=values, severity=rule.severity, message=rule.message))

    def _settle(self, rt: _RuleRT, host: str, index: str, ts: float, now: float,
                out: list[Threshold] | None, trigger: tuple | None, emit: bool) -> None:
        """Re-evaluate one rule instance (host, index) after a leaf of it changed."""
        ht = self._truth[host]
        bkey = (rt.name, index)
        breached = self._breached.get(host)
        if breached is not None and bkey in breached:
            if rt.recovery is not None:
                recover = rt.recovery(ht, index)
            else:
                recover = not rt.tree(ht, index)
            if recover:
                del breached[bkey]
                values = ([ThresholdValue(metric=trigger[0], index=trigger[1], value=trigger[2])]
                          if trigger is not None else [])
                self._emit(out if emit else None, host, rt, "recovered", values, now)
            return
        pending = self._pending.get(host)
        if (rt.until is None and rt.schedule is None) or rt.is_active(now):
            if rt.tree(ht, index):
                if rt.for_:
                    if pending is None:
                        pending = self._pending[host] = {}
                    pending.setdefault(bkey, ts)
                    return
                self._breach(rt, host, index, ts, now, out if emit else None)
                return
        if pending is not None:
            pending.pop(bkey, None)

    def _breach(self, rt: _RuleRT, host: str, index: str, ts: float, now: float,
                out: list[Threshold] | None) -> None:
        self._breached.setdefault(host, {})[(rt.name, index)] = ts
        self._emit(out, host, rt, "breached", self._values(rt, self._truth[host], index), now)

    def _check_pending(self, host: str, now: float, out: list[Threshold] | None, emit: bool) -> None:
        pending = self._pending[host]
        for bkey, since in list(pending.items()):
            rt = self._by_name.get(bkey[0])
            if rt is None:
                del pending[bkey]
                continue
            if now - since >= rt.for_:
                del pending[bkey]
                if rt.tree(self._truth[host], bkey[1]) and rt.is_active(now):
                    self._breach(rt, host, bkey[1], since, now, out if emit else None)

    def tick(self, now: float) -> list[Threshold]:
        """Time-driven transitions at ``now``: deadman, ``for``, schedules, valid_until."""
        out: list[Threshold] = []
        if self._started is None:
            self._started = now
            # Inventory devices that never report are silent since start-up.
            for i, rt, leaf, lid in self._deadman:
                if leaf.index is not None:
                    continue
                seen = self._seen[lid]
                for name, device in self.devices.items():
                    if (name, "") not in seen and rt.rule.selector.matches(
                            name, device.device_type, device.model, device.tags):
                        seen[(name, "")] = now
                        self._seen_keys.setdefault(name, set()).add((lid, ""))
                        self._dirty.add(name)
        for i, rt, leaf, lid in self._deadman:
            for (host, ik), last in self._seen[lid].items():
                if now - last >= leaf.absent:
                    ht = self._truth.get(host)
                    if ht is None:
                        ht = self._truth[host] = {}
                        self._win[host] = {}
                    if (lid, ik) not in ht:
                        ht[(lid, ik)] = {leaf.metric: round(now - last, 3)}
                        self._dirty.add(host)
                        self._settle(rt, host, ik, now, now, out, None, True)
        for host in [h for h, p in self._pending.items() if p]:
            self._dirty.add(host)   # a pending entry may end without a transition
            self._check_pending(host, now, out, True)
        for rt in self._rts:
            if rt.until is None and rt.schedule is None:
                continue
            active = rt.is_active(now)
            if active == rt.active:
                continue
            rt.active = active
            if not active:
                # Off: a breach cannot outlive the rule's schedule or validity.
                for host, breached in self._breached.items():
                    for bkey in [k for k in breached if k[0] == rt.name]:
                        del breached[bkey]
                        self._emit(out, host, rt, "recovered", [], now)
                for host, pending in self._pending.items():
                    for bkey in [k for k in pending if k[0] == rt.name]:
                        del pending[bkey]
                        self._dirty.add(host)
            else:
                # On again: instances whose condition already holds breach now.
                lids = set(rt.lids)
                for host, ht in self._truth.items():
                    for index in sorted({k[1] for k in ht if k[0] in lids}):
                        self._dirty.add(host)   # may start a pending ``for``
                        self._settle(rt, host, index, now, now, out, None, True)
        return out

    # ------------------------------------------------------------------
    # Backfill and state

    def backfill(self, samples: Iterable[tuple[str, str, str, float, Any]],
                 emit: bool = False,
                 device_types: Mapping[str, str] | None = None) -> list[Threshold]:
        """Rebuild windows and breach state from stored ``(host, metric, index, ts, value)``.

        Samples are replayed in time order, the samples of one host and
        timestamp (one stored poll) together, settled as :meth:`evaluate`
        settles a ``perf`` message: a replay finds the transitions (and the
        values they name) that the live stream found. ``emit=False``: nothing
        is returned (a restart does not repeat breaches). ``emit=True``: the
        transitions against the state held before (e.g. imported) are
        returned, so a breach or recovery that happened while down is not missed.
        ``device_types`` (host -> type, as stored) selects rules for hosts that
        the inventory does not know, as their ``perf`` messages would.
        """
        out: list[Threshold] = []
        # Stable sort: a poll's samples keep their stored order.
        ordered = sorted(samples, key=lambda s: (s[3], s[0]))
        flips: list[tuple] = []
        poll: tuple[str, float] | None = None
        for host, name, index, ts, value in ordered:
            if (host, ts) != poll:
                if flips:
                    self._settle_flips(poll[0], poll[1], flips, out, emit)
                    flips = []
                poll = (host, ts)
            plan = self._plans.get(host)
            if plan is None:
                device = self.devices.get(host)
                device_type = device.device_type if device else (device_types or {}).get(host) or ""
                plan = self._plan(host, device_type, keep=device is not None)
            ht = self._truth.get(host)
            if ht is None:
                ht = self._truth[host] = {}
                self._win[host] = {}
            hs = self._win[host]
            entry = plan.get(name)
            if entry is None:
                entry = self._resolve(plan, name)
            feeders = entry[0]
            index = "" if index is None else str(index)
            for feed, rt in feeders:
                flipped = feed(host, ht, hs, name, index, value, ts)
                if flipped is not None:
                    flips.append((rt, flipped, name, value))
            if ts > self._touched.get(host, float("-inf")):
                self._touched[host] = ts
        if flips:
            self._settle_flips(poll[0], poll[1], flips, out, emit)
        return out

    def _settle_flips(self, host: str, ts: float, flips: list[tuple], out: list[Threshold],
                      emit: bool) -> None:
        for rt, index, name, value in flips:
            self._settle(rt, host, index, ts, ts, out, (name, index, value), emit)

    def export_state(self) -> dict[str, dict[str, list]]:
        """Every host's state as JSON-able data: ``{host: {truth, windows, breached, pending, seen}}``."""
        hosts = set(self._truth) | set(self._breached) | set(self._pending)
        for seen in self._seen.values():
            hosts.update(h for h, _ in seen)
        return {host: self.export_host(host) for host in sorted(hosts)}

    def export_host(self, host: str) -> dict[str, list]:
        """One host's state as JSON-able data (a value of :meth:`export_state`)."""
        seen = self._seen
        return {
            "truth": [[lid, index, dict(held)]
                      for (lid, index), held in self._truth.get(host, {}).items()],
            "windows": [[lid, name, index, *(st if isinstance(st, list) else [st])]
                        for (lid, name, index), st in self._win.get(host, {}).items()],
            "breached": [[rule, index, since]
                         for (rule, index), since in self._breached.get(host, {}).items()],
            "pending": [[rule, index, since]
                        for (rule, index), since in self._pending.get(host, {}).items()],
            # Through the per-host key index: not a scan of every host's entries.
            "seen": [[lid, ik, seen[lid][(host, ik)]]
                     for lid, ik in sorted(self._seen_keys.get(host, ()))
                     if (host, ik) in seen.get(lid, ())],
        }

    def import_state(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Take over the hosts of ``state`` (from :meth:`export_state`), replacing theirs.

        Entries of rules or leaves that no longer exist are dropped. Imported
        hosts are not reported by :meth:`take_changes` (their state is the saved one).
        """
        for host, data in state.items():
            self._truth[host] = {(lid, index): dict(held) for lid, index, held in data.get("truth", ())
                                 if lid in self._lids}
            self._win[host] = {(w[0], w[1], w[2]): list(w[3:]) if len(w) > 4 else w[3]
                               for w in data.get("windows", ()) if w[0] in self._lids}
            self._breached[host] = {(rule, index): since for rule, index, since
                                    in data.get("breached", ()) if rule in self._by_name}
            self._pending[host] = {(rule, index): since for rule, index, since
                                   in data.get("pending", ()) if rule in self._by_name}
            for lid, ik in self._seen_keys.pop(host, ()):
                self._seen.get(lid, {}).pop((host, ik), None)
            for lid, ik, ts in data.get("seen", ()):
                if lid in self._seen:
                    self._seen[lid][(host, ik)] = ts
                    self._seen_keys.setdefault(host, set()).add((lid, ik))
            self._plans.pop(host, None)

    def drop_hosts(self, hosts: Iterable[str]) -> None:
        """Forget these hosts' state (their partition went to another node)."""
        for host in hosts:
            for table in (self._truth, self._win, self._breached, self._pending, self._plans,
                          self._touched, self._data_ts):
                table.pop(host, None)
            self._dirty.discard(host)
            self._emitted.discard(host)
            for lid, ik in self._seen_keys.pop(host, ()):
                self._seen.get(lid, {}).pop((host, ik), None)

    def hosts(self) -> set[str]:
        """The hosts this evaluator holds a state of."""
        out = set(self._truth) | set(self._win) | set(self._breached) | set(self._pending)
        return out | set(self._seen_keys) | set(self._touched)

    def take_changes(self) -> dict[str, tuple[dict[str, list], float | None, bool]]:
        """The hosts whose state may have changed since the last call, and forget them.

        ``{host: (state, ts, transitions)}``: ``state`` as :meth:`export_host`,
        ``ts`` the newest data timestamp fed for the host so far (None if only
        time changed it), ``transitions`` True when a ``threshold`` was emitted
        for it. A host fed values that left its state as it was is reported
        too (its ``ts`` moved): the caller compares states to skip those.
        """
        touched, self._touched = self._touched, {}
        hosts = set(touched) | self._dirty | self._emitted
        emitted, self._emitted = self._emitted, set()
        self._dirty = set()
        data_ts = self._data_ts
        out = {}
        for host in hosts:
            ts = touched.get(host)
            if ts is not None:
                prev = data_ts.get(host)
                if prev is None or ts > prev:
                    data_ts[host] = ts
            out[host] = (self.export_host(host), data_ts.get(host), host in emitted)
        return out

    def with_rules(self, rules: Iterable[Rule], now: float) -> tuple["Evaluator", list[Threshold]]:
        """A new evaluator of ``rules`` holding this one's state of the rules kept.

        A rule whose condition, selectors, ``for``, schedule and validity are
        unchanged keeps its windows, truth and breaches (a new severity or
        message shows at its next transition). A rule removed or changed
        starts afresh, and its breached instances are returned as
        ``recovered``: a breach must not outlive the rule that raised it, and
        the changed rule breaches again on its next values if it still holds.
        Changes not yet taken by :meth:`take_changes` are handed over.
        """
        new = Evaluator(rules, self.devices, self.source)
        kept = {rt.name for rt in new._rts if rt.name in self._by_name
                and same_condition(self._by_name[rt.name].rule, rt.rule)}
        out: list[Threshold] = []
        for host, breached in self._breached.items():
            for rule, index in sorted(k for k in breached if k[0] not in kept):
                self._emit(out, host, self._by_name[rule], "recovered", [], now)

        def lid_kept(lid: str) -> bool:
            return lid.rpartition("#")[0] in kept

        state = {}
        for host, data in self.export_state().items():
            state[host] = {
                "truth": [t for t in data["truth"] if lid_kept(t[0])],
                "windows": [w for w in data["windows"] if lid_kept(w[0])],
                "breached": [b for b in data["breached"] if b[0] in kept],
                "pending": [p for p in data["pending"] if p[0] in kept],
                "seen": [s for s in data["seen"] if lid_kept(s[0])],
            }
        new.import_state(state)
        new._touched = self._touched
        new._data_ts = self._data_ts
        new._emitted = self._emitted
        # Every host: the saver writes those whose state the new rules changed.
        new._dirty = self._dirty | set(state)
        return new, out

    def breached(self) -> dict[str, list[tuple[str, str]]]:
        """The breached instances: host -> [(rule, index)]."""
        return {h: sorted(b) for h, b in self._breached.items() if b}
