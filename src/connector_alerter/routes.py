"""Notification routes: which alarms go to whom, grouped how, muted when.

The routes file (``[alerter] routes``, ``alert-routes.yaml`` by default) is
YAML::

    defaults:                  # optional, every key below may be set per route
      group_by: [host]         # alarm fields (or inventory fields) forming the group key
      group_wait: 30s          # wait for more alarms of a new group before the first message
      group_interval: 5m       # wait before telling a group's changes
      repeat_interval: 4h      # remind of alarms still active (0: never)
      send_resolved: true      # a recovery notice when an alarm clears
      notify_acked: false      # keep notifying acked alarms
    routes:
      - name: core-critical    # unique, used in the delivery ledger
        match:                 # every key given must match (AND); a list is any-of (OR)
          severity: ">=major"  # a severity, a list of them, or ">=major" (that or worse)
          host: ["core-*"]     # globs
          device_type: [router, switch]
          name: ["link*"]
          origin: [trap, threshold]
        email: [noc@example.com]
        webhook:
          - url: https://hooks.example.com/centaure
            secret: env:CENTAURE_HOOK_SECRET      # optional HMAC-SHA256 key (env:/file:/literal)
        command: [/usr/local/bin/page, --team, noc]   # notification JSON on stdin
        command_env:           # the command's environment besides PATH, HOME, LANG...
          PAGER_TOKEN: env:PAGER_TOKEN             # env:NAME, file:/path or the value
          TEAM: noc
        mute:                  # recurring windows with nothing sent (suppressed instead)
          - {weekdays: [sat, sun], hours: "00:00-24:00", timezone: Europe/Paris}
        continue: false        # also try the next routes after a match

A command runs with a minimal environment, not the alerter's (which may hold
the ``env:`` secrets of the settings): ``PATH`` (the system's default path
when the alerter has none), ``HOME``, ``TMPDIR``, ``TZ``, ``LANG``,
``LANGUAGE`` and ``LC_*`` as the alerter has them
(:data:`connector_alerter.channels.COMMAND_ENV_PASSED`), plus the route's
``command_env``: a mapping of variable names to values (each a value,
``env:NAME`` of the alerter's environment or ``file:/path``, read when the
routes are loaded), or a list of names passed from the alerter's environment
as they are (``[PAGER_TOKEN]`` is ``{PAGER_TOKEN: env:PAGER_TOKEN}``). A
route's ``command_env`` adds to the one of ``defaults``.

Routes are tried in order; the first that matches takes the alarm unless it
says ``continue: true``. A threshold rule's own ``emails`` (the legacy rules
table's per-rule recipients) make one more route, ``rule:<rule name>``, taking
that rule's alarms with the ``defaults`` above (:func:`rule_route`); route
names starting with ``rule:`` are therefore refused here. Loading checks everything and raises
:class:`RoutesError` naming the route and the field.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from twisted.logger import Logger

from connector.messages import SEVERITIES, SEVERITY_RANK

__all__ = ["RoutesError", "Receiver", "MuteWindow", "Route", "Routes", "load_routes",
           "parse_routes", "parse_duration", "rule_route", "ORIGINS", "TEMPLATE_KEYS",
           "RULE_ROUTE_PREFIX"]

ORIGINS = ("trap", "poll", "threshold")
#: Template keys a route (or ``defaults``) may override.
TEMPLATE_KEYS = ("subject", "text", "html", "webhook")
_WEEKDAYS = {name: i for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_EMAIL = re.compile(r"^[^\s@]+@[^\s@]+$")
_ROUTE_KEYS = {"name", "match", "email", "webhook", "command", "mute", "continue",
               "group_by", "group_wait", "group_interval", "repeat_interval", "send_resolved",
               "notify_acked", "command_timeout", "command_env", "templates"}
_DEFAULT_KEYS = {"group_by", "group_wait", "group_interval", "repeat_interval", "send_resolved",
                 "notify_acked", "command_timeout", "command_env", "templates"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MATCH_KEYS = ("severity", "host", "device_type", "name", "origin")
#: Names of the routes made from threshold rules' ``emails``.
RULE_ROUTE_PREFIX = "rule:"


_log = Logger()


class RoutesError(ValueError):
    """The routes file is invalid; the message names the route and the field."""


def parse_duration(value: Any) -> float:
    """Seconds from ``30s``, ``5m``, ``4h``, ``1d``, ``1w``, ``250ms`` or a number."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 4h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration such as 30s, 5m, 4h, got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclasses.dataclass(frozen=True)
class Receiver:
    """One destination: ``channel`` email/webhook/command, ``target`` the address, URL or argv."""

    channel: str
    target: str
    #: argv of a command receiver.
    argv: tuple[str, ...] = ()
    #: HMAC key of a webhook (a :class:`connector.settings.Secret`), or None.
    secret: Any = None

    def __repr__(self) -> str:  # never show the secret
        return f"Receiver({self.channel!r}, {self.target!r})"


@dataclasses.dataclass(frozen=True)
class MuteWindow:
    """A weekly window (weekdays, minutes of the day [start, end)) in a timezone."""

    weekdays: frozenset[int]
    start: int
    end: int
    tz: Any

    def active(self, now: float) -> bool:
        """True when UNIX time ``now`` falls in the window."""
        local = datetime.fromtimestamp(now, timezone.utc).astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        if self.start <= self.end:
            return local.weekday() in self.weekdays and self.start <= minute < self.end
        # Across midnight (22:00-06:00): the evening belongs to the listed day,
        # the early morning to the day after it.
        if minute >= self.start:
            return local.weekday() in self.weekdays
        return minute < self.end and (local.weekday() - 1) % 7 in self.weekdays


@dataclasses.dataclass(frozen=True)
class Route:
    """A route: its matchers, receivers, grouping and delivery options."""

    name: str
    severities: frozenset[str] | None = None
    hosts: tuple[str, ...] | None = None
    device_types: tuple[str, ...] | None = None
    names: tuple[str, ...] | None = None
    origins: frozenset[str] | None = None
    receivers: tuple[Receiver, ...] = ()
    group_by: tuple[str, ...] = ("host",)
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 14400.0
    send_resolved: bool = True
    notify_acked: bool = False
    command_timeout: float = 30.0
    #: Variables the command gets besides the minimal environment: (name, Secret) pairs.
    command_env: tuple[tuple[str, Any], ...] = ()
    mute: tuple[MuteWindow, ...] = ()
    templates: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cont: bool = False

    def matches(self, alarm: Mapping[str, Any], inventory: Mapping[str, Any]) -> bool:
        """True when ``alarm`` (a dict of Alarm fields) and its device's fields match."""
        if self.severities is not None and alarm.get("severity") not in self.severities:
            return False
        if self.origins is not None and alarm.get("origin") not in self.origins:
            return False
        if self.hosts is not None and not _glob_any(str(alarm.get("host", "")), self.hosts):
            return False
        if self.names is not None and not _glob_any(str(alarm.get("name", "")), self.names):
            return False
        if self.device_types is not None:
            dtype = str(inventory.get("device_type") or "")
            # "Vertiv / Emerson" is matched as itself and as its key "vertiv".
            forms = [dtype.lower()] + ([dtype.split()[0].lower()] if dtype.split() else [])
            if not any(_glob_any(f, self.device_types) for f in forms):
                return False
        return True

    def muted(self, now: float) -> bool:
        """True when one of the route's mute windows is open at ``now``."""
        return any(w.active(now) for w in self.mute)

    def group_labels(self, alarm: Mapping[str, Any],
                     inventory: Mapping[str, Any]) -> dict[str, str]:
        """The values of ``group_by`` for ``alarm`` (alarm fields first, then inventory)."""
        out = {}
        for key in self.group_by:
            value = alarm.get(key, inventory.get(key))
            out[key] = "" if value is None else str(value)
        return out


def _glob_any(value: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


@dataclasses.dataclass(frozen=True)
class Routes:
    """Every route, in order."""

    routes: tuple[Route, ...]
    #: The file's ``defaults`` as Route fields (for the routes of rules' emails).
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def match(self, alarm: Mapping[str, Any],
              inventory: Mapping[str, Any] | None = None) -> list[Route]:
        """The routes that take ``alarm``: the first match, and more after ``continue``."""
        inventory = inventory or {}
        out = []
        for route in self.routes:
            if route.matches(alarm, inventory):
                out.append(route)
                if not route.cont:
                    break
        return out

    def by_name(self) -> dict[str, Route]:
        """Routes by name."""
        return {r.name: r for r in self.routes}


def rule_route(rule: str, emails: Sequence[str], defaults: Mapping[str, Any]) -> Route:
    """The route mailing threshold rule ``rule``'s own ``emails`` (its alarms only).

    Matched by :class:`connector_alerter.notifier.Notifier` on the alarm's
    exact name and origin ``threshold``, not by :meth:`Routes.match`.
    """
    return Route(name=RULE_ROUTE_PREFIX + rule, origins=frozenset({"threshold"}),
                 receivers=tuple(Receiver("email", e) for e in dict.fromkeys(emails)),
                 **defaults)


# --- parsing ----------------------------------------------------------------------


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) for v in value):
        raise RoutesError(f"{where}: expected a non-empty string or list of strings")
    return tuple(str(v) for v in value)


def _severities(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str) and value.strip().startswith(">="):
        floor = value.strip()[2:].strip()
        if floor not in SEVERITY_RANK:
            raise RoutesError(f"{where}: unknown severity {floor!r} "
                              f"(one of {', '.join(SEVERITIES)})")
        return frozenset(s for s in SEVERITIES if SEVERITY_RANK[s] <= SEVERITY_RANK[floor])
    names = _strings(value, where)
    for n in names:
        if n not in SEVERITY_RANK:
            raise RoutesError(f"{where}: unknown severity {n!r} (one of {', '.join(SEVERITIES)}, "
                              "or '>=major')")
    return frozenset(names)


def _mute(value: Any, where: str) -> tuple[MuteWindow, ...]:
    if not isinstance(value, list):
        raise RoutesError(f"{where}: expected a list of {{weekdays, hours, timezone}}")
    out = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise RoutesError(f"{w}: expected a mapping with weekdays, hours, timezone")
        unknown = set(item) - {"weekdays", "hours", "timezone"}
        if unknown:
            raise RoutesError(f"{w}: unknown key {sorted(unknown)[0]!r}")
        days = item.get("weekdays", list(_WEEKDAYS))
        try:
            weekdays = frozenset(_WEEKDAYS[str(d).lower()[:3]] for d in _strings(days, w))
        except KeyError:
            raise RoutesError(
                f"{w}.weekdays: expected day names (mon..sun), got {days!r}") from None
        m = _HOURS.match(str(item.get("hours", "00:00-24:00")).strip())
        if not m:
            raise RoutesError(f"{w}.hours: expected HH:MM-HH:MM, got {item.get('hours')!r}")
        h1, m1, h2, m2 = map(int, m.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start > 24 * 60 or end > 24 * 60 or m1 > 59 or m2 > 59 or start == end:
            raise RoutesError(f"{w}.hours: {item['hours']!r} is not a window of the day")
        try:
            tz = ZoneInfo(str(item.get("timezone", "UTC")))
        except (ZoneInfoNotFoundError, ValueError):
            raise RoutesError(f"{w}.timezone: unknown timezone {item.get('timezone')!r}") from None
        out.append(MuteWindow(weekdays, start, end, tz))
    return tuple(out)


def _secret(value: Any, where: str, environ: Mapping[str, str] | None) -> Any:
    from connector.settings import InvalidValue, ParseContext, SecretText, secret_file_problem

    ctx = ParseContext(environ=environ) if environ is not None else ParseContext()
    try:
        secret = SecretText().parse(str(value), ctx)
    except InvalidValue as e:
        # The detail names the reference (env:NAME, file:/path), never the content.
        detail = f" ({e.detail})" if getattr(e, "detail", None) else ""
        raise RoutesError(f"{where}: {e.allowed}{detail}") from None
    problem = secret_file_problem(secret.source)
    if problem is not None:
        _log.warn("routes file: {where}: {problem}", where=where, problem=problem)
    return secret


def _command_env(spec: Mapping[str, Any], where: str, environ: Mapping[str, str] | None,
                 base: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """``command_env`` of ``spec`` added to ``base``: (name, Secret) pairs."""
    if "command_env" not in spec:
        return base
    w = f"{where}.command_env"
    value = spec["command_env"]
    if isinstance(value, list):
        value = {name: f"env:{name}" for name in _strings(value, w)}
    if not isinstance(value, dict):
        raise RoutesError(f"{w}: expected a mapping of variable names to values "
                          "(a value, env:NAME or file:/path) or a list of variable names")
    env = dict(base)
    for name, text in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise RoutesError(f"{w}: {name!r} is not an environment variable name")
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            raise RoutesError(f"{w}.{name}: expected a value, env:NAME or file:/path")
        secret = _secret(text, f"{w}.{name}", environ)
        if "\0" in secret.reveal():
            raise RoutesError(f"{w}.{name}: a value cannot hold a NUL character")
        env[name] = secret
    return tuple(env.items())


def _receivers(spec: Mapping[str, Any], where: str,
               environ: Mapping[str, str] | None) -> tuple[Receiver, ...]:
    out: list[Receiver] = []
    if "email" in spec:
        for addr in _strings(spec["email"], f"{where}.email"):
            if not _EMAIL.match(addr):
                raise RoutesError(f"{where}.email: {addr!r} is not an email address")
            out.append(Receiver("email", addr))
    if "webhook" in spec:
        hooks = spec["webhook"]
        hooks = hooks if isinstance(hooks, list) else [hooks]
        for i, hook in enumerate(hooks):
            w = f"{where}.webhook[{i}]"
            if isinstance(hook, str):
                hook = {"url": hook}
            if not isinstance(hook, dict) or not isinstance(hook.get("url"), str):
                raise RoutesError(f"{w}: expected a URL or {{url, secret}}")
            unknown = set(hook) - {"url", "secret"}
            if unknown:
                raise RoutesError(f"{w}: unknown key {sorted(unknown)[0]!r}")
            url = hook["url"]
            if not re.match(r"^https?://[^/\s]+", url):
                raise RoutesError(f"{w}.url: expected an http:// or https:// URL, got {url!r}")
            secret = _secret(hook["secret"], f"{w}.secret", environ) if hook.get("secret") else None
            out.append(Receiver("webhook", url, secret=secret))
    if "command" in spec:
        argv = _strings(spec["command"], f"{where}.command")
        out.append(Receiver("command", " ".join(argv), argv=argv))
    return tuple(out)


def _options(spec: Mapping[str, Any], where: str, base: dict[str, Any]) -> dict[str, Any]:
    opts = dict(base)
    for key in ("group_wait", "group_interval", "repeat_interval", "command_timeout"):
        if key in spec:
            try:
                opts[key] = parse_duration(spec[key])
            except ValueError as e:
                raise RoutesError(f"{where}.{key}: {e}") from None
    for key in ("send_resolved", "notify_acked"):
        if key in spec:
            if not isinstance(spec[key], bool):
                raise RoutesError(f"{where}.{key}: expected true or false")
            opts[key] = spec[key]
    if "group_by" in spec:
        value = spec["group_by"]
        opts["group_by"] = () if value in ([], None) else _strings(value, f"{where}.group_by")
    if "templates" in spec:
        tpl = spec["templates"]
        if not isinstance(tpl, dict):
            raise RoutesError(
                f"{where}.templates: expected a mapping of {', '.join(TEMPLATE_KEYS)}")
        for k, v in tpl.items():
            if k not in TEMPLATE_KEYS or not isinstance(v, str):
                raise RoutesError(f"{where}.templates.{k}: expected one of "
                                  f"{', '.join(TEMPLATE_KEYS)} with a template text")
        merged = dict(opts.get("templates", {}))
        merged.update(tpl)
        opts["templates"] = merged
    return opts


def parse_routes(data: Any, environ: Mapping[str, str] | None = None,
                 check_template: Callable[[str, str], None] | None = None) -> Routes:
    """Build :class:`Routes` from the parsed YAML ``data``; :class:`RoutesError` if invalid.

    ``check_template(key, text)`` (e.g. :func:`connector_alerter.templates.check`)
    raises ValueError for a template that does not compile.
    """
    if not isinstance(data, dict) or "routes" not in data:
        raise RoutesError("routes file: expected a mapping with 'routes' (a list)")
    unknown = set(data) - {"routes", "defaults"}
    if unknown:
        raise RoutesError(f"routes file: unknown key {sorted(unknown)[0]!r} (routes, defaults)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise RoutesError("defaults: expected a mapping")
    bad = set(defaults) - _DEFAULT_KEYS
    if bad:
        raise RoutesError(f"defaults: unknown key {sorted(bad)[0]!r}")
    base = _options(defaults, "defaults", {})
    if "command_env" in defaults:
        base["command_env"] = _command_env(defaults, "defaults", environ, ())
    if not isinstance(data["routes"], list):
        raise RoutesError("routes: expected a list of routes")
    routes: list[Route] = []
    seen: set[str] = set()
    for i, spec in enumerate(data["routes"]):
        if not isinstance(spec, dict):
            raise RoutesError(f"routes[{i}]: expected a mapping")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RoutesError(f"routes[{i}].name: every route needs a name")
        where = f"route {name!r}"
        if name.startswith(RULE_ROUTE_PREFIX):
            raise RoutesError(f"{where}.name: names starting with {RULE_ROUTE_PREFIX!r} are "
                              "kept for the routes of rules' emails")
        if name in seen:
            raise RoutesError(f"{where}.name: two routes are named {name!r}")
        seen.add(name)
        bad = set(spec) - _ROUTE_KEYS
        if bad:
            raise RoutesError(f"{where}: unknown key {sorted(bad)[0]!r}")
        match = spec.get("match") or {}
        if not isinstance(match, dict):
            raise RoutesError(f"{where}.match: expected a mapping")
        bad = set(match) - set(_MATCH_KEYS)
        if bad:
            raise RoutesError(f"{where}.match: unknown key {sorted(bad)[0]!r} "
                              f"({', '.join(_MATCH_KEYS)})")
        fields: dict[str, Any] = {}
        if "severity" in match:
            fields["severities"] = _severities(match["severity"], f"{where}.match.severity")
        for key, attr in (("host", "hosts"), ("device_type", "device_types"), ("name", "names")):
            if key in match:
                fields[attr] = _strings(match[key], f"{where}.match.{key}")
        if "origin" in match:
            origins = _strings(match["origin"], f"{where}.match.origin")
            for o in origins:
                if o not in ORIGINS:
                    raise RoutesError(f"{where}.match.origin: unknown origin {o!r} "
                                      f"({', '.join(ORIGINS)})")
            fields["origins"] = frozenset(origins)
        receivers = _receivers(spec, where, environ)
        if not receivers:
            raise RoutesError(f"{where}: no receiver (email, webhook or command)")
        opts = _options(spec, where, base)
        if "command_env" in spec:
            opts["command_env"] = _command_env(spec, where, environ, base.get("command_env", ()))
        if check_template is not None:
            for key, text in opts.get("templates", {}).items():
                try:
                    check_template(key, text)
                except ValueError as e:
                    raise RoutesError(f"{where}.templates.{key}: {e}") from None
        if "mute" in spec:
            fields["mute"] = _mute(spec["mute"], f"{where}.mute")
        cont = spec.get("continue", False)
        if not isinstance(cont, bool):
            raise RoutesError(f"{where}.continue: expected true or false")
        routes.append(Route(name=name, receivers=receivers, cont=cont, **fields, **opts))
    return Routes(tuple(routes), base)


def load_routes(path: str, environ: Mapping[str, str] | None = None) -> Routes:
    """Read and check the routes file ``path`` (templates compiled too)."""
    from . import templates

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise RoutesError(f"routes file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise RoutesError(f"routes file {path}: invalid YAML: {e}") from None
    try:
        return parse_routes(data, environ, check_template=templates.check)
    except RoutesError as e:
        raise RoutesError(f"{path}: {e}") from None
