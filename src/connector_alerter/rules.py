"""Threshold rules: the model, and loaders from YAML, the legacy JSON conditions and SQL.

``load_rules(settings.section("alerter"), base_dir)`` reads the source named
by ``[alerter] rules_source`` and returns a tuple of :class:`Rule`;
``build_rules(records, source)`` does the same from records already read.
Every problem of every rule is collected and raised at once as one
:class:`RulesError` (a :class:`~connector.problems.ProblemsError`), each line
naming the rule and the field: an invalid rule stops start-up.

Native YAML form (``rules.yaml``: a list of rules)::

    - name: battery-low                 # required, unique
      severity: major                   # critical major minor warning info unknown
      message: Battery voltage low      # free text, for notifications
      # Selectors: which devices (all given ones must match; globs allowed
      # in hosts). device_types, models and tags come from the inventory
      # (device_type also from the perf message itself).
      hosts: ["paris-*"]
      device_types: [vertiv]
      models: ["NetSure*"]
      tags: [power]                     # every listed tag must be on the device
      when:                             # the breach condition
        metric: batteryVoltage          # metric name, exact or glob
        index: "*"                      # instance index, exact or glob (default: any)
        op: "<"                         # > >= < <= == !=
        value: 47.5
        hysteresis: 0.5                 # recover only at >= 48.0
        consecutive: 3                  # window: 3 values in a row (default 1)
      for: 2m                           # and held for 2 minutes (Prometheus style)
      valid_until: 2030-01-01T00:00:00Z # (limit_date in the legacy rules table)
      schedule:                         # weekly; outside it the rule is off
        timezone: Europe/Paris
        windows:
          - {days: [mon, tue, wed, thu, fri], hours: "08:00-18:00"}
      emails: [power@example.com]       # (the legacy table's emails) mailed on
                                        # breach and recovery, beside the routes

A condition (``when``, ``recovery``) is a leaf or a group:

* ``{all: [cond, ...]}`` / ``{any: [cond, ...]}``: AND / OR, nested freely.
  Leaves are evaluated per host and instance index: ``all`` of two metrics
  holds for index ``3`` when both hold for index ``3``.
* A leaf names ``metric`` (and optionally ``index``) and one test:

  - ``op`` (``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``) and ``value`` (a number;
    ``==``/``!=`` also accept a text, compared with text values);
  - ``range``: a Nagios plugin range ``[@]start:end`` (``~`` is minus
    infinity, ``10`` means ``0:10``, ``10:`` means ten to infinity): the
    leaf holds when the value is *outside* the range, or *inside* it with
    ``@``; or ``inside: [low, high]`` / ``outside: [low, high]`` (inclusive);
  - ``rate: true`` with ``op``/``value`` or a range: the test applies to the
    change per second between two consecutive values (not to the value);
  - ``match: REGEX`` (``re.search`` on text values), ``not_match: REGEX``;
  - ``absent: 10m``: no value of the metric for that long (deadman). Without
    ``index`` the whole host is watched (any matching metric, any index,
    refreshes it); devices of the inventory that never report count from the
    evaluator's start.

  and optionally a window: ``consecutive: N`` (the last N values all hold),
  or ``n_of_m: [N, M]`` (N of the last M values hold); and ``hysteresis: H``
  for ``op`` tests: once the leaf holds it stops holding only when the value
  is beyond the threshold by H (``> 90`` with ``hysteresis: 5`` clears at
  ``<= 85``), so a value around the threshold does not flap.

``recovery`` (optional) is a separate condition (Kapacitor's critReset,
Zabbix's recovery expression): once breached, a rule recovers only when it
holds. Without it a rule recovers when ``when`` no longer holds.

Legacy rules (the JSON conditions of the legacy rules table, under the key ``seed``)::

    - name: phase haute
      hosts: [onduleur-1]               # machines / ae_specifiques in the legacy table
      constructs: [Socomec]             # construct / constructeur in the legacy table
      seed: '[{"metrique": "phase_1_courant ; phase_2_courant", "type_condition": "seuil",
               "valeur_max": "100", "valeur_min": "", "valeur_egale": "",
               "valeur_differente": "2147483647", "nombre_valeurs_seuil": 1,
               "logic_operator": "ET"}]'

The JSON is taken as is. Each condition gives, for each metric of its
``metrique`` list (separated by ``;`` or ``,``), a leaf that holds when the
value is above ``valeur_max``, or below ``valeur_min``, or equal to
``valeur_egale`` (those given), and in any case differs from
``valeur_differente`` when it is given (legacy rules use it to leave out a
"no value" sentinel such as 2147483647; given alone, the leaf holds when the
value differs from it). ``type_condition`` ``max``/``min``/``égale``/
``différente`` uses only that field; ``seuil`` (the usual legacy type) uses
all given ones. ``nombre_valeurs_seuil`` is a ``consecutive`` window. The
metrics of a condition, and the conditions of the list, are joined by the
condition's ``logic_operator`` (``ET``: AND, ``OU``: OR), left to right.
A legacy rule selects devices in ``machines`` *or* of the ``construct``
(manufacturer, compared with the inventory's device type as normalised by
:func:`centaure_shared.inventory.normalize_device_type`).

SQL (``rules_source = sql``): the legacy ``ALERTEURS`` table shape, read with
SQLAlchemy Core (the table is reflected, never named in SQL text; values are
bound parameters only). Columns matched case-insensitively: ``nom``
(required), ``conditions`` (the JSON, required), ``ae_specifiques`` (hosts,
separated by ``,`` ``;`` or blanks), ``constructeur``, ``emails``,
``active`` (rows with 0/false are skipped), ``limit_date`` (UNIX seconds,
becomes ``valid_until``), ``semaines``/``jours``/``heures`` (a look-back,
kept as ``lookback`` seconds: how far back backfill reads). Other columns are
ignored.

Note on ``limit_date``: legacy tools computed it from the look-back columns,
meaning "check the values newer than this"; here a ``limit_date`` given
explicitly (YAML key or column) is the end of the rule's validity
(``valid_until``), and the look-back is ``lookback``.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from connector.messages import SEVERITIES
from connector.problems import ProblemsError

__all__ = [
    "Window", "Leaf", "Group", "Condition", "Selector", "ScheduleWindow", "Schedule", "Rule",
    "RulesError", "parse_duration", "parse_nagios_range", "parse_condition", "parse_seed_conditions",
    "build_rules", "load_rules", "load_rules_file", "load_rules_sql", "seed_row_record", "describe",
    "leaves",
]

OPS = (">", ">=", "<", "<=", "==", "!=")
_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)?\s*", re.I)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAME = re.compile(r"\S(?:.{0,198}\S)?")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")


class RulesError(ProblemsError):
    """Rules that cannot be used; ``problems`` lists every problem, naming rule and field."""


# --------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Window:
    """How many of the last values must hold: ``n`` of the last ``m`` (``n == m``: consecutive)."""

    n: int = 1
    m: int = 1

    @property
    def consecutive(self) -> bool:
        """True when every one of the last ``n`` values must hold."""
        return self.n == self.m


@dataclass(frozen=True)
class Leaf:
    """One test on the values of one metric (name or glob) of a host, per index."""

    metric: str
    kind: str                                  # an operator of OPS, or inside, outside, match, not_match, absent
    value: float | str | None = None           # threshold (op kinds) or regex text
    low: float = -math.inf                     # inside / outside bounds, inclusive
    high: float = math.inf
    index: str | None = None                   # exact or glob; None: any index
    rate: bool = False                         # test the change per second
    absent: float = 0.0                        # deadman duration, seconds
    hysteresis: float = 0.0
    window: Window = Window()
    path: str = "when"                         # where in the rule, e.g. "when.all[1]"

    @property
    def is_glob(self) -> bool:
        """True when ``metric`` is a glob pattern rather than one name."""
        return _is_glob(self.metric)

    def matches_metric(self, name: str) -> bool:
        """Whether this leaf watches metric ``name``."""
        return fnmatch.fnmatchcase(name, self.metric) if self.is_glob else name == self.metric

    def text(self) -> str:
        """A short human form, e.g. ``cpu[*] > 90 (3 of 5)``."""
        what = self.metric + (f"[{self.index}]" if self.index is not None else "")
        if self.rate:
            what = f"rate({what})/s"
        if self.kind in OPS:
            test = f"{what} {self.kind} {self.value!r}"
        elif self.kind in ("inside", "outside"):
            test = f"{what} {self.kind} [{self.low}, {self.high}]"
        elif self.kind == "absent":
            test = f"{what} absent for {self.absent:g}s"
        else:
            test = f"{what} {self.kind} /{self.value}/"
        if self.hysteresis:
            test += f" hysteresis {self.hysteresis:g}"
        if self.window.n > 1 or self.window.m > 1:
            test += (f" ({self.window.n} consecutive)" if self.window.consecutive
                     else f" ({self.window.n} of {self.window.m})")
        return test


@dataclass(frozen=True)
class Group:
    """AND (``all``) or OR (``any``) of conditions."""

    op: str                                    # "all" | "any"
    items: tuple["Condition", ...]

    def text(self) -> str:
        """A short human form."""
        joiner = " AND " if self.op == "all" else " OR "
        return "(" + joiner.join(i.text() for i in self.items) + ")"


Condition = Union[Leaf, Group]


def leaves(cond: Condition | None) -> list[Leaf]:
    """Every leaf of ``cond``, depth first."""
    if cond is None:
        return []
    if isinstance(cond, Leaf):
        return [cond]
    out: list[Leaf] = []
    for item in cond.items:
        out.extend(leaves(item))
    return out


@dataclass(frozen=True)
class Selector:
    """Which devices a rule watches. Empty fields do not restrict.

    ``any_of``: as legacy rules select, a device matches when it is among
    ``hosts`` *or* of one of ``device_types`` (else every given field must match).
    """

    hosts: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    any_of: bool = False

    def matches(self, host: str, device_type: str = "", model: str = "",
                tags: Iterable[str] = ()) -> bool:
        """Whether a device with these attributes is watched."""
        host_ok = (not self.hosts) or any(
            fnmatch.fnmatchcase(host, p) if _is_glob(p) else host == p for p in self.hosts)
        type_ok = (not self.device_types) or device_type in self.device_types
        if self.any_of and self.hosts and self.device_types:
            first = host_ok or type_ok
        else:
            first = host_ok and type_ok
        if not first:
            return False
        if self.models and not any(fnmatch.fnmatchcase(model, p) for p in self.models):
            return False
        if self.tags:
            have = set(tags)
            if not all(t in have for t in self.tags):
                return False
        return True


@dataclass(frozen=True)
class ScheduleWindow:
    """Days of the week (0 = Monday) and minutes of the day ``[start, end)``; end may wrap past midnight."""

    days: frozenset[int]
    start: int
    end: int

    def contains(self, weekday: int, minute: int) -> bool:
        """Whether this local weekday and minute of day fall in the window."""
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        # Wraps past midnight: the part after midnight belongs to the previous day.
        if minute >= self.start:
            return weekday in self.days
        return minute < self.end and (weekday - 1) % 7 in self.days


@dataclass(frozen=True)
class Schedule:
    """A weekly schedule: the rule is on during any of ``windows`` (local time of ``timezone``)."""

    windows: tuple[ScheduleWindow, ...]
    timezone: str = "UTC"

    def active(self, now: float) -> bool:
        """Whether UNIX time ``now`` falls in the schedule."""
        local = _dt.datetime.fromtimestamp(now, _zone(self.timezone))
        weekday, minute = local.weekday(), local.hour * 60 + local.minute
        return any(w.contains(weekday, minute) for w in self.windows)


@dataclass(frozen=True)
class Rule:
    """One threshold rule, checked."""

    name: str
    when: Condition
    selector: Selector = Selector()
    recovery: Condition | None = None
    for_: float = 0.0                         # seconds the condition must hold
    valid_until: float | None = None          # UNIX seconds
    schedule: Schedule | None = None
    severity: str = "warning"
    message: str = ""
    emails: tuple[str, ...] = ()
    lookback: float | None = None             # legacy look-back: how far back backfill reads
    where: str = ""                           # source and item, for logs

    def leaves(self) -> list[Leaf]:
        """Leaves of ``when`` then of ``recovery``."""
        return leaves(self.when) + leaves(self.recovery)

    def active(self, now: float) -> bool:
        """Whether the rule is on at ``now`` (valid_until and schedule)."""
        if self.valid_until is not None and now >= self.valid_until:
            return False
        return self.schedule is None or self.schedule.active(now)


def describe(rule: Rule) -> str:
    """One line saying what ``rule`` watches (for ``centaure rules check``)."""
    parts = [f"{rule.name}: {rule.when.text()}"]
    if rule.recovery is not None:
        parts.append(f"recovery {rule.recovery.text()}")
    if rule.for_:
        parts.append(f"for {rule.for_:g}s")
    sel = rule.selector
    for label, values in (("hosts", sel.hosts), ("device_types", sel.device_types),
                          ("models", sel.models), ("tags", sel.tags)):
        if values:
            parts.append(f"{label} {','.join(values)}")
    if rule.valid_until is not None:
        parts.append("until " + _dt.datetime.fromtimestamp(rule.valid_until, _dt.timezone.utc)
                     .isoformat())
    if rule.schedule is not None:
        parts.append(f"scheduled ({rule.schedule.timezone})")
    return "; ".join(parts)


# --------------------------------------------------------------------------
# Small parsers


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _zone(name: str) -> _dt.tzinfo:
    if name.upper() == "UTC":
        return _dt.timezone.utc
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


def parse_duration(raw: Any) -> float:
    """Seconds from a number or a text such as ``90``, ``10m``, ``1.5h``; ValueError otherwise."""
    if isinstance(raw, bool):
        raise ValueError(f"expected a duration such as 10m, got {raw!r}")
    if isinstance(raw, (int, float)):
        seconds = float(raw)
    elif isinstance(raw, str) and (m := _DURATION.fullmatch(raw)):
        seconds = float(m[1]) * _UNITS[(m[2] or "s").lower()]
    else:
        raise ValueError(f"expected a duration such as 90, 30s, 10m, 1h, 2d, got {raw!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a positive duration, got {raw!r}")
    return seconds


def _number(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"expected a number, got {raw!r}")
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if text in ("~", "-inf"):
            return -math.inf
        if text in ("inf", "+inf"):
            return math.inf
        try:
            value = float(text.replace(",", ".") if text.count(",") == 1 and "." not in text
                          else text)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    else:
        raise ValueError(f"expected a number, got {type(raw).__name__}")
    if math.isnan(value):
        raise ValueError("expected a number, got NaN")
    return value


def parse_nagios_range(text: str) -> tuple[float, float, bool]:
    """``(low, high, alert_inside)`` of a Nagios plugin range ``[@]start:end``.

    ``10`` is ``0:10``; ``10:`` is ten to infinity; ``~:10`` minus infinity to
    ten. Without ``@`` the alert is when the value is outside ``[start, end]``.
    """
    if not isinstance(text, (str, int, float)) or isinstance(text, bool):
        raise ValueError(f"expected a Nagios range such as 10:20, @10:20, ~:5, got {text!r}")
    raw = str(text).strip()
    inside = raw.startswith("@")
    if inside:
        raw = raw[1:]
    if ":" in raw:
        start_text, end_text = raw.split(":", 1)
        low = _number(start_text) if start_text.strip() else 0.0
        high = _number(end_text) if end_text.strip() else math.inf
    else:
        low, high = 0.0, _number(raw) if raw else math.nan
        if math.isnan(high):
            raise ValueError(f"expected a Nagios range such as 10:20, @10:20, ~:5, got {text!r}")
    if low > high:
        raise ValueError(f"range {text!r}: start {low:g} is above end {high:g}")
    return low, high, inside


def _timestamp(raw: Any) -> float:
    if isinstance(raw, _dt.datetime):
        value = raw if raw.tzinfo else raw.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    if isinstance(raw, _dt.date):
        return _dt.datetime(raw.year, raw.month, raw.day, tzinfo=_dt.timezone.utc).timestamp()
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            return float(text)
        try:
            value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            value = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
            return value.timestamp()
    raise ValueError(f"expected a date (2030-01-01T00:00:00Z) or UNIX seconds, got {raw!r}")


def _names(raw: Any, what: str) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        items = [x for x in re.split(r"[\s,;]+", raw) if x]
    elif isinstance(raw, (list, tuple)):
        items = raw
    else:
        raise ValueError(f"expected a list of {what}, got {type(raw).__name__}")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not str(item).strip():
            raise ValueError(f"expected a list of {what}, got item {item!r}")
        out.append(str(item).strip())
    return tuple(out)


def _hhmm(text: str) -> int:
    m = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", text.strip())
    if not m or int(m[1]) > 24 or int(m[2]) > 59 or (int(m[1]) == 24 and int(m[2])):
        raise ValueError(f"expected a time HH:MM, got {text!r}")
    return int(m[1]) * 60 + int(m[2])


def _parse_schedule(raw: Any) -> Schedule:
    if not isinstance(raw, dict):
        raise ValueError("expected a mapping {timezone: ..., windows: [{days: [...], hours: HH:MM-HH:MM}]}")
    unknown = set(raw) - {"timezone", "windows"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    tz = raw.get("timezone", "UTC")
    try:
        _zone(str(tz))
    except Exception:
        raise ValueError(f"timezone: unknown time zone {tz!r}") from None
    items = raw.get("windows")
    if not isinstance(items, list) or not items:
        raise ValueError("windows: expected a non-empty list of {days: [...], hours: HH:MM-HH:MM}")
    windows = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"days", "hours"}:
            raise ValueError(f"windows[{i}]: expected {{days: [mon, ...], hours: HH:MM-HH:MM}}")
        days_raw = item.get("days", list(_DAYS))
        days = set()
        for d in _names(days_raw, "days"):
            d = d.lower()[:3]
            if d not in _DAYS:
                raise ValueError(f"windows[{i}].days: {d!r} is not a day (mon tue wed thu fri sat sun)")
            days.add(_DAYS[d])
        hours = item.get("hours", "00:00-24:00")
        if not isinstance(hours, str) or "-" not in hours:
            raise ValueError(f"windows[{i}].hours: expected HH:MM-HH:MM, got {hours!r}")
        start_t, end_t = hours.split("-", 1)
        try:
            start, end = _hhmm(start_t), _hhmm(end_t)
        except ValueError as e:
            raise ValueError(f"windows[{i}].hours: {e}") from None
        if start == end:
            raise ValueError(f"windows[{i}].hours: empty window {hours!r}")
        windows.append(ScheduleWindow(frozenset(days), start, end))
    return Schedule(tuple(windows), str(tz))


# --------------------------------------------------------------------------
# Conditions (native form)

_LEAF_KEYS = {"metric", "index", "op", "value", "range", "inside", "outside", "rate", "match",
              "not_match", "absent", "hysteresis", "consecutive", "n_of_m"}


def parse_condition(raw: Any, path: str, problems: list[str], label: str,
                    default_window: Window = Window()) -> Condition | None:
    """A condition from its native YAML form; problems are appended as ``label: path: ...``."""
    def bad(msg: str) -> None:
        problems.append(f"{label}: {path}: {msg}")

    if not isinstance(raw, dict):
        bad("expected a mapping: a leaf {metric: ..., op: ..., value: ...} or {all: [...]} / {any: [...]}")
        return None
    if "all" in raw or "any" in raw:
        return _parse_group(raw, path, problems, label, default_window, bad)
    return _parse_leaf(raw, path, problems, default_window, bad)


def _parse_group(raw: dict, path: str, problems: list[str], label: str,
                 default_window: Window, bad: Callable[[str], None]) -> Group | None:
    """``{all: [...]}`` or ``{any: [...]}``, each item parsed as a condition."""
    if len(raw) != 1:
        bad("a group has exactly one key, all or any")
        return None
    op, items = next(iter(raw.items()))
    if not isinstance(items, list) or not items:
        bad(f"{op}: expected a non-empty list of conditions")
        return None
    parsed = [parse_condition(item, f"{path}.{op}[{i}]", problems, label, default_window)
              for i, item in enumerate(items)]
    if any(p is None for p in parsed):
        return None
    return Group(op, tuple(parsed))  # type: ignore[arg-type]


_TESTS = ("op", "range", "inside", "outside", "match", "not_match", "absent")
_NUMERIC_TESTS = ("op", "range", "inside", "outside")  # those rate and hysteresis apply to


def _parse_leaf(raw: dict, path: str, problems: list[str], default_window: Window,
                bad: Callable[[str], None]) -> Leaf | None:
    """One test on one metric; None when anything in it is wrong (every problem reported)."""
    unknown = set(raw) - _LEAF_KEYS
    if unknown:
        bad(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; a leaf takes "
            f"{', '.join(sorted(_LEAF_KEYS))}, a group all or any")
        return None
    before = len(problems)
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        bad("metric: missing (a metric name or glob)")
        metric = "?"
    index = raw.get("index")
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, (str, int)):
            bad(f"index: expected an index or glob, got {index!r}")
        index = str(index)
    tests = [k for k in _TESTS if k in raw]
    if len(tests) != 1:
        bad("expected exactly one test: op (with value), range, inside, outside, match, not_match "
            f"or absent; got {', '.join(tests) or 'none'}")
        return None
    test = tests[0]
    kw = _LEAF_TESTS[test](raw, test, bad)
    if "value" in raw and test != "op":
        bad(f"value: only with op (this leaf tests {test})")
    kw["rate"] = _leaf_rate(raw, test, bad)
    hysteresis = _leaf_hysteresis(raw, test, bad)
    if hysteresis is not None:
        kw["hysteresis"] = hysteresis
    window = _leaf_window(raw, default_window, bad)
    if test == "absent" and window != Window():
        bad("absent: takes no window (consecutive / n_of_m)")
    if len(problems) > before:
        return None
    return Leaf(metric=metric.strip(), index=index, window=window, path=path, **kw)


def _op_test(raw: dict, test: str, bad: Callable[[str], None]) -> dict[str, Any]:
    op = raw["op"]
    if op not in OPS:
        bad(f"op: expected one of {' '.join(OPS)}, got {op!r}")
        return {}
    if "value" not in raw:
        bad("value: missing (the threshold)")
        return {}
    value = raw["value"]
    if op in ("==", "!=") and isinstance(value, str):
        try:
            value = _number(value)
        except ValueError:
            pass                      # a text compared with text values
        return {"kind": op, "value": value}
    try:
        return {"kind": op, "value": _number(value)}
    except ValueError as e:
        bad(f"value: {e}")
        return {}


def _range_test(raw: dict, test: str, bad: Callable[[str], None]) -> dict[str, Any]:
    try:
        low, high, inside = parse_nagios_range(raw["range"])
    except ValueError as e:
        bad(f"range: {e}")
        return {}
    return {"kind": "inside" if inside else "outside", "low": low, "high": high}


def _bounds_test(raw: dict, test: str, bad: Callable[[str], None]) -> dict[str, Any]:
    bounds = raw[test]
    try:
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise ValueError("expected [low, high]")
        low, high = _number(bounds[0]), _number(bounds[1])
        if low > high:
            raise ValueError(f"low {low:g} is above high {high:g}")
    except ValueError as e:
        bad(f"{test}: {e}")
        return {}
    return {"kind": test, "low": low, "high": high}


def _regex_test(raw: dict, test: str, bad: Callable[[str], None]) -> dict[str, Any]:
    pattern = raw[test]
    if not isinstance(pattern, str):
        bad(f"{test}: expected a regular expression, got {type(pattern).__name__}")
        return {}
    try:
        re.compile(pattern)
    except re.error as e:
        bad(f"{test}: not a valid regular expression ({e})")
        return {}
    return {"kind": test, "value": pattern}


def _absent_test(raw: dict, test: str, bad: Callable[[str], None]) -> dict[str, Any]:
    try:
        seconds = parse_duration(raw["absent"])
        if seconds <= 0:
            raise ValueError("expected a duration above zero")
    except ValueError as e:
        bad(f"absent: {e}")
        return {}
    return {"kind": "absent", "absent": seconds}


# The Leaf fields of each test, by the key that names it.
_LEAF_TESTS: dict[str, Callable[[dict, str, Callable[[str], None]], dict[str, Any]]] = {
    "op": _op_test, "range": _range_test, "inside": _bounds_test, "outside": _bounds_test,
    "match": _regex_test, "not_match": _regex_test, "absent": _absent_test,
}


def _leaf_rate(raw: dict, test: str, bad: Callable[[str], None]) -> bool:
    rate = raw.get("rate", False)
    if not isinstance(rate, bool):
        bad(f"rate: expected true or false, got {rate!r}")
    elif rate and test not in _NUMERIC_TESTS:
        bad(f"rate: only with op, range, inside or outside (not {test})")
    return bool(rate)


def _leaf_hysteresis(raw: dict, test: str, bad: Callable[[str], None]) -> float | None:
    """The leaf's hysteresis, or None when it is wrong (reported)."""
    try:
        hysteresis = _number(raw.get("hysteresis", 0))
        if hysteresis < 0:
            raise ValueError("expected a number >= 0")
        if hysteresis and test not in _NUMERIC_TESTS:
            raise ValueError(f"only with op, range, inside or outside (not {test})")
        if hysteresis and test == "op" and raw.get("op") in ("==", "!="):
            raise ValueError("only with > >= < <= (not == or !=)")
    except ValueError as e:
        bad(f"hysteresis: {e}")
        return None
    return hysteresis


def _leaf_window(raw: dict, default_window: Window, bad: Callable[[str], None]) -> Window:
    """``consecutive: N`` or ``n_of_m: [N, M]``; ``default_window`` without (or when wrong)."""
    if "consecutive" in raw and "n_of_m" in raw:
        bad("consecutive and n_of_m: give one window, not both")
    elif "consecutive" in raw:
        n = raw["consecutive"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10000:
            bad(f"consecutive: expected a whole number from 1 to 10000, got {n!r}")
        else:
            return Window(n, n)
    elif "n_of_m" in raw:
        nm = raw["n_of_m"]
        if (not isinstance(nm, list) or len(nm) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in nm)
                or not 1 <= nm[0] <= nm[1] <= 1000):
            bad(f"n_of_m: expected [N, M] with 1 <= N <= M <= 1000, got {nm!r}")
        else:
            return Window(nm[0], nm[1])
    return default_window


# --------------------------------------------------------------------------
# The legacy rules table's JSON conditions (key ``seed``)

_SEED_TYPES = {"seuil": None, "max": "valeur_max", "min": "valeur_min", "egale": "valeur_egale",
               "égale": "valeur_egale", "differente": "valeur_differente",
               "différente": "valeur_differente"}
_SEED_KEYS = {"metrique", "type_condition", "valeur_max", "valeur_min", "valeur_egale",
              "valeur_differente", "nombre_valeurs_seuil", "logic_operator"}


def _seed_value(cond: Mapping[str, Any], key: str) -> float | None:
    raw = cond.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _number(raw)


def parse_seed_conditions(raw: Any, problems: list[str], label: str, path: str = "seed"
                          ) -> Condition | None:
    """A legacy JSON condition list (a JSON text or already decoded) as a condition.

    Each condition is joined to the next by its own ``logic_operator``, left to right.
    """
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as e:
            problems.append(f"{label}: {path}: not valid JSON ({e})")
            return None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        problems.append(f"{label}: {path}: expected a JSON list of conditions [{{\"metrique\": ..., ...}}]")
        return None
    before = len(problems)
    parts = [part for i, cond in enumerate(raw)
             if (part := _seed_condition(cond, f"{path}[{i}]", label, problems)) is not None]
    if len(problems) > before or not parts:
        return None
    result, op = parts[0]
    for node, next_op in parts[1:]:
        result = Group(op, (result, node))
        op = next_op
    return result


def _seed_condition(cond: Any, where: str, label: str, problems: list[str]
                    ) -> tuple[Condition, str] | None:
    """One legacy condition object as (condition, its join operator); None (problems noted) when bad."""
    if not isinstance(cond, dict):
        problems.append(f"{label}: {where}: expected an object")
        return None
    before = len(problems)
    unknown = set(cond) - _SEED_KEYS
    if unknown:
        problems.append(f"{label}: {where}: unknown key(s) {', '.join(sorted(unknown))}")
    metrics = [m.strip() for m in re.split(r"[;,]", str(cond.get("metrique") or "")) if m.strip()]
    if not metrics:
        problems.append(f"{label}: {where}.metrique: missing (metric names separated by ;)")
    ctype = str(cond.get("type_condition") or "seuil").strip().lower()
    if ctype not in _SEED_TYPES:
        problems.append(f"{label}: {where}.type_condition: expected one of "
                        f"{', '.join(_SEED_TYPES)}, got {ctype!r}")
        return None
    values = _seed_thresholds(cond, ctype, where, label, problems)
    n = _seed_count(cond, where, label, problems)
    logic = str(cond.get("logic_operator") or "ET").strip().upper()
    if logic not in ("ET", "OU", "AND", "OR"):
        problems.append(f"{label}: {where}.logic_operator: expected ET or OU, got {logic!r}")
        logic = "ET"
    gop = "all" if logic in ("ET", "AND") else "any"
    if len(problems) > before:
        return None
    window = Window(n, n)
    per_metric = [_seed_metric_condition(metric, values, window, f"{where}.metrique[{j}]")
                  for j, metric in enumerate(metrics)]
    return (per_metric[0] if len(per_metric) == 1 else Group(gop, tuple(per_metric))), gop


def _seed_thresholds(cond: dict, ctype: str, where: str, label: str, problems: list[str]
                     ) -> dict[str, float | None]:
    """The condition's bounds by key; a typed condition keeps only its own bound."""
    values: dict[str, float | None] = {}
    for key in ("valeur_max", "valeur_min", "valeur_egale", "valeur_differente"):
        try:
            values[key] = _seed_value(cond, key)
        except ValueError as e:
            problems.append(f"{label}: {where}.{key}: {e}")
            values[key] = None
    only = _SEED_TYPES[ctype]
    if only is not None:
        values = {k: (v if k == only else None) for k, v in values.items()}
        if values[only] is None:
            problems.append(f"{label}: {where}.{only}: missing (type_condition is {ctype})")
    elif all(v is None for v in values.values()):
        problems.append(f"{label}: {where}: no threshold (valeur_max, valeur_min, "
                        "valeur_egale or valeur_differente)")
    return values


def _seed_count(cond: dict, where: str, label: str, problems: list[str]) -> int:
    """``nombre_valeurs_seuil``: how many values in a row must breach (1 when absent or bad)."""
    raw = cond.get("nombre_valeurs_seuil", 1)
    try:
        n = int(str(raw).strip() or "1") if not isinstance(raw, bool) else None
        if n is None or not 1 <= n <= 10000:
            raise ValueError
    except (ValueError, TypeError):
        problems.append(f"{label}: {where}.nombre_valeurs_seuil: expected a whole number "
                        f"from 1 to 10000, got {raw!r}")
        return 1
    return n


def _seed_metric_condition(metric: str, values: dict[str, float | None], window: Window,
                           lpath: str) -> Condition:
    """One metric's test: above max, below min or equal (any), and not the forbidden value."""
    bounds: list[Condition] = []
    if values["valeur_max"] is not None:
        bounds.append(Leaf(metric, ">", values["valeur_max"], window=window, path=lpath + ".max"))
    if values["valeur_min"] is not None:
        bounds.append(Leaf(metric, "<", values["valeur_min"], window=window, path=lpath + ".min"))
    if values["valeur_egale"] is not None:
        bounds.append(Leaf(metric, "==", values["valeur_egale"], window=window,
                           path=lpath + ".egale"))
    node: Condition | None = None
    if bounds:
        node = bounds[0] if len(bounds) == 1 else Group("any", tuple(bounds))
    if values["valeur_differente"] is not None:
        ne = Leaf(metric, "!=", values["valeur_differente"], window=window,
                  path=lpath + ".differente")
        node = ne if node is None else Group("all", (node, ne))
    assert node is not None  # _seed_thresholds noted a problem when there is no bound
    return node


# --------------------------------------------------------------------------
# Rules

_RULE_KEYS = {"name", "severity", "message", "hosts", "device_types", "models", "tags",
              "constructs", "when", "seed", "recovery", "for", "valid_until", "limit_date",
              "schedule", "emails", "lookback", "description"}


def _rule(where: str, record: Mapping[str, Any], problems: list[str]) -> Rule | None:
    name = record.get("name")
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        name = str(name)
    label = f"{where} ({name})" if isinstance(name, str) else where
    before = len(problems)

    def bad(fieldname: str, msg: str) -> None:
        problems.append(f"{label}: {fieldname}: {msg}")

    if not isinstance(name, str) or not _NAME.fullmatch(name.strip() or "x") or not name.strip():
        bad("name", "missing (a text of 1 to 200 characters)")
        name = "?"
    name = name.strip()
    label = f"{where} ({name})"
    unknown = set(record) - _RULE_KEYS
    if unknown:
        problems.append(f"{label}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                        f"expected {', '.join(sorted(_RULE_KEYS))}")
    severity = record.get("severity") or "warning"
    if severity not in SEVERITIES:
        bad("severity", f"expected one of {' '.join(SEVERITIES)}, got {severity!r}")
    message = record.get("message") or ""
    if not isinstance(message, str):
        bad("message", "expected a text")
        message = ""
    selector, emails = _rule_selector(record, bad)
    when: Condition | None = None
    if ("when" in record) == ("seed" in record):
        bad("when", "give exactly one of when (native condition) or seed (legacy JSON conditions)")
    elif "when" in record:
        when = parse_condition(record["when"], "when", problems, label)
    else:
        when = parse_seed_conditions(record["seed"], problems, label)
    recovery = None
    if record.get("recovery") is not None:
        recovery = parse_condition(record["recovery"], "recovery", problems, label)
    for_, valid_until, schedule, lookback = _rule_times(record, bad)
    if when is not None:
        for leaf in leaves(when) + leaves(recovery):
            if leaf.kind == "absent" and for_:
                bad(leaf.path, "absent already is a duration; do not combine it with for")
                break
    if len(problems) > before or when is None:
        return None
    return Rule(name=name, when=when, selector=selector, recovery=recovery, for_=for_,
                valid_until=valid_until, schedule=schedule, severity=severity, message=message,
                emails=emails, lookback=lookback, where=where)


def _rule_selector(record: Mapping[str, Any], bad: Callable[[str, str], None]
                   ) -> tuple[Selector, tuple[str, ...]]:
    """Which hosts a rule applies to, and its own email recipients.

    Legacy ``constructs`` (constructor labels) select device types too, as
    alternatives (any of them) rather than all at once.
    """
    sel: dict[str, tuple[str, ...]] = {}
    for key in ("hosts", "device_types", "models", "tags", "constructs", "emails"):
        try:
            sel[key] = _names(record.get(key), key)
        except ValueError as e:
            bad(key, str(e))
            sel[key] = ()
    bad_emails = [e for e in sel["emails"] if not _EMAIL.fullmatch(e)]
    if bad_emails:
        bad("emails", f"not an email address: {', '.join(map(repr, bad_emails))}")
    seed_types: tuple[str, ...] = ()
    if sel["constructs"]:
        from centaure_shared.inventory import normalize_device_type
        seed_types = tuple(normalize_device_type(c) for c in sel["constructs"])
    selector = Selector(hosts=sel["hosts"], device_types=sel["device_types"] + seed_types,
                        models=sel["models"], tags=sel["tags"], any_of=bool(seed_types))
    return selector, sel["emails"]


def _rule_times(record: Mapping[str, Any], bad: Callable[[str, str], None]
                ) -> tuple[float, float | None, Any, float | None]:
    """(for, valid_until, schedule, lookback) of a rule, each checked; defaults when absent or bad."""
    for_ = 0.0
    if record.get("for") is not None:
        try:
            for_ = parse_duration(record["for"])
        except ValueError as e:
            bad("for", str(e))
    valid_until = None
    if "valid_until" in record and "limit_date" in record:
        bad("valid_until", "give valid_until or limit_date, not both")
    until = record.get("valid_until", record.get("limit_date"))
    if until not in (None, "", 0):
        try:
            valid_until = _timestamp(until)
        except ValueError as e:
            bad("valid_until", str(e))
    schedule = None
    if record.get("schedule") is not None:
        try:
            schedule = _parse_schedule(record["schedule"])
        except ValueError as e:
            bad("schedule", str(e))
    lookback = None
    if record.get("lookback") not in (None, "", 0):
        try:
            lookback = parse_duration(record["lookback"])
        except ValueError as e:
            bad("lookback", str(e))
    return for_, valid_until, schedule, lookback


def build_rules(records: Iterable[tuple[str, Mapping[str, Any]]], source: str) -> tuple[Rule, ...]:
    """Rules from ``(where, record)`` pairs; RulesError listing every problem."""
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for where, record in records:
        if not isinstance(record, Mapping):
            problems.append(f"{where}: expected a mapping (a rule), got {type(record).__name__}")
            continue
        name = record.get("name")
        name = str(name).strip() if isinstance(name, (str, int, float)) and not isinstance(name, bool) else None
        if name and name in seen:
            problems.append(f"{where} ({name}): name: already used by {seen[name]}")
            continue
        if name:
            seen[name] = where
        rule = _rule(where, record, problems)
        if rule is not None:
            rules.append(rule)
    if problems:
        raise RulesError(source, problems)
    return tuple(rules)


def load_rules_file(path: str, shown: str | None = None) -> tuple[Rule, ...]:
    """Rules of the YAML file ``path`` (a list of rules; an empty file: none)."""
    import yaml

    from centaure_shared.yamlfile import StrictLoader, YamlError
    shown = shown or path
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise RulesError(shown, [f"cannot read the file ({e.strerror or e})"]) from None
    # Compose first so that each rule's line can be named in errors.
    try:
        node = yaml.compose(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        raise RulesError(shown, [f"{where}{e.problem}; not valid YAML"]) from None
    except (yaml.YAMLError, YamlError) as e:
        raise RulesError(shown, [f"not valid YAML ({e})"]) from None
    if data is None:
        return ()
    if not isinstance(data, list):
        raise RulesError(shown, ["expected a list of rules"])
    lines = [item.start_mark.line + 1 for item in node.value] if node is not None else []
    return build_rules(((f"rule {i + 1} (line {lines[i] if i < len(lines) else '?'})", r)
                        for i, r in enumerate(data)), shown)


_SQL_COLUMNS = ("nom", "conditions", "ae_specifiques", "constructeur", "emails", "active",
                "limit_date", "semaines", "jours", "heures")


def seed_row_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A rule record (native keys) from one legacy ``ALERTEURS``-style row (lower-case keys)."""
    record: dict[str, Any] = {"name": row.get("nom"), "seed": row.get("conditions")}
    if row.get("ae_specifiques"):
        record["hosts"] = row["ae_specifiques"]
    if row.get("constructeur"):
        record["constructs"] = [row["constructeur"]]
    if row.get("emails"):
        record["emails"] = row["emails"]
    if row.get("limit_date"):
        record["limit_date"] = row["limit_date"]
    look = 0.0
    for col, unit in (("semaines", 604800), ("jours", 86400), ("heures", 3600)):
        try:
            look += float(row.get(col) or 0) * unit
        except (TypeError, ValueError):
            # Left as text so that validation reports it under the rule's name.
            record["lookback"] = f"{col}={row.get(col)!r} (not a number)"
    if look and "lookback" not in record:
        record["lookback"] = look
    return record


def load_rules_sql(url: str, table: str, shown: str | None = None) -> tuple[Rule, ...]:
    """Rules from a legacy ``ALERTEURS``-style table (SQLAlchemy Core, reflected; bound parameters only)."""
    import sqlalchemy as sa

    from connector.settings import mask_url
    shown = shown or f"{mask_url(url)} table {table}"
    engine = sa.create_engine(url)
    try:
        try:
            meta = sa.MetaData()
            tbl = sa.Table(table, meta, autoload_with=engine)
        except sa.exc.NoSuchTableError:
            raise RulesError(shown, ["no such table"]) from None
        except sa.exc.SQLAlchemyError as e:
            raise RulesError(shown, [f"cannot read the table ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:200]})"]) from None
        cols = {c.name.lower(): c for c in tbl.columns}
        missing = [c for c in ("nom", "conditions") if c not in cols]
        if missing:
            raise RulesError(shown, [f"missing column(s) {', '.join(missing)} (legacy rules rows: "
                                     f"{', '.join(_SQL_COLUMNS)})"])
        wanted = [cols[c] for c in _SQL_COLUMNS if c in cols]
        with engine.connect() as conn:
            rows = conn.execute(sa.select(*wanted)).mappings().all()
    finally:
        engine.dispose()
    records = []
    for i, row in enumerate(rows):
        lower = {k.lower(): v for k, v in row.items()}
        active = lower.get("active")
        if active is not None and str(active).strip().lower() in ("0", "false", "no", ""):
            continue
        records.append((f"row {i + 1}", seed_row_record(lower)))
    return build_rules(records, shown)


def load_rules(section: Any, base_dir: str | os.PathLike[str] = ".") -> tuple[Rule, ...]:
    """Rules of the source named by the ``[alerter]`` section (``rules_source``)."""
    if section.rules_source == "sql":
        url = section.rules_url.reveal()
        if not url:
            raise RulesError("[alerter]", ["rules_url: empty, but rules_source = sql"])
        return load_rules_sql(url, section.rules_table)
    return load_rules_file(os.path.join(os.fspath(base_dir), section.rules), section.rules)
