"""The notifier: alarms in, grouped notifications out, through a persistent outbox.

:class:`Notifier` ties the pieces together:

* :meth:`Notifier.handle_alarm` routes an ``alarm`` message
  (:mod:`connector_alerter.routes`), puts it in its groups
  (:mod:`connector_alerter.grouping`) and saves the groups' state; the
  service acks the input only once this Deferred has fired, so an alarm is
  never lost between the bus and the state;
* :meth:`Notifier.tick` (every second or so, and from tests with a fake
  ``now``) asks the grouper what is due, renders each message with the
  route's templates (:mod:`connector_alerter.templates`), queues one outbox
  row per receiver in the same transaction as the new group state
  (:mod:`connector_alerter.outbox`), records held alarms as ``suppressed``,
  then delivers the due rows (:mod:`connector_alerter.channels`), retrying
  with backoff (:func:`connector.retry.backoff_delay`) up to ``max_attempts``.

Every attempt is published as a :class:`connector.messages.Notification`
through ``publish`` (sent, failed with the reason and whether it is retried,
suppressed). The clock is injectable (``clock``) and blocking SQL runs
through ``run_blocking`` (``deferToThread`` by default).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from connector.messages import Alarm, Notification
from connector.retry import backoff_delay

from . import channels
from .grouping import Batch, Grouper
from .outbox import OutboxRow, OutboxStore
from .routes import Route, Routes
from .silences import SilenceSet
from .templates import Templates, TemplateError, context

__all__ = ["Notifier", "DeliveryOptions", "open_notifier", "shown_recipient"]

_log = Logger()

#: How long sent/failed outbox rows and last-told records of cleared alarms are kept.
KEEP_DONE = 7 * 86400
#: How often that housekeeping runs.
HOUSEKEEPING_EVERY = 3600


class DeliveryOptions:
    """What the notifier needs from ``[alerter]`` and ``[smtp]`` (or test values)."""

    def __init__(self, *, smtp_host: str = "127.0.0.1", smtp_port: int = 25,
                 sender: str = "centaure@localhost", starttls: str = "auto",
                 username: str = "", password: Any = None, smtp_timeout: float = 30.0,
                 link_template: str = "", retry_initial: float = 10.0,
                 retry_max: float = 600.0, max_attempts: int = 20,
                 webhook_timeout: float = 10.0, tls_options: Any = None) -> None:
        self.smtp_host, self.smtp_port, self.sender = smtp_host, smtp_port, sender
        self.starttls, self.username, self.password = starttls, username, password
        self.smtp_timeout, self.link_template = smtp_timeout, link_template
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.max_attempts, self.webhook_timeout = max_attempts, webhook_timeout
        self.tls_options = tls_options

    @classmethod
    def from_settings(cls, settings) -> "DeliveryOptions":
        """From loaded settings (``[alerter]`` and ``[smtp]`` sections)."""
        a, s = settings.section("alerter"), settings.section("smtp")
        return cls(smtp_host=s.host, smtp_port=s.port, sender=s.sender, starttls=s.starttls,
                   username=s.username, password=s.password, smtp_timeout=s.timeout,
                   link_template=a.link_template, retry_initial=a.retry_initial,
                   retry_max=a.retry_max, max_attempts=a.max_attempts,
                   webhook_timeout=a.webhook_timeout)


class _SafeFormat(dict):
    def __missing__(self, key: str) -> str:
        return ""


def shown_recipient(channel: str, recipient: str) -> str:
    """The recipient as the ledger shows it: webhook URLs without what may be a token.

    Chat webhooks (Slack, Teams, Discord...) carry their secret in the path or
    the query, so only the scheme, host and first path segment are kept.
    """
    if channel != "webhook":
        return recipient
    from urllib.parse import urlsplit

    u = urlsplit(recipient)
    host = u.hostname or ""
    if u.port:
        host = f"{host}:{u.port}"
    parts = [p for p in u.path.split("/") if p]
    path = "/" + parts[0] if parts else "/"
    if len(parts) > 1 or u.query:
        path += "/***"
    return f"{u.scheme}://{host}{path}"


def _alarm_dict(alarm: Alarm | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(alarm, Mapping):
        return dict(alarm)
    return {f: getattr(alarm, f) for f in alarm.__struct_fields__}


class Notifier:
    """Routes, groups, queues and delivers notifications (see the module's docstring)."""

    def __init__(self, *, routes: Routes, store: OutboxStore,
                 publish: Callable[[Notification], Any], reactor, options: DeliveryOptions,
                 source: str = "centaure-alerter@localhost",
                 clock: Callable[[], float] = time.time,
                 inventory: Callable[[str], Mapping[str, Any]] = lambda host: {},
                 run_blocking: Callable[..., Any] | None = None) -> None:
        self.routes = routes
        self.route_map: dict[str, Route] = routes.by_name()
        self.store = store
        self.publish = publish
        self.reactor = reactor
        self.options = options
        self.source = source
        self.clock = clock
        self.inventory = inventory
        self.run_blocking = run_blocking or threads.deferToThread
        self.grouper = Grouper(routes.routes)
        self.silences = SilenceSet()
        self._templates = {r.name: Templates(r.templates) for r in routes.routes}
        self._saved_groups: dict[str, str] = {}
        self._saved_last: dict[str, str] = {}
        self._lock = defer.DeferredLock()
        self._inflight: set[int] = set()
        self._loop: task.LoopingCall | None = None
        self._housekept = 0.0
        #: Counters for the status heartbeat.
        self.counters = {"alarms": 0, "sent": 0, "failed": 0, "suppressed": 0, "retried": 0}

    # --- start / stop -------------------------------------------------------------

    async def start(self, tick_interval: float | None = 1.0) -> None:
        """Load the saved state and silences; tick every ``tick_interval`` s (None: never)."""
        groups, last = await self.run_blocking(self.store.load)
        self.grouper.load(groups, last)
        self._saved_groups = {g: json.dumps(v, sort_keys=True) for g, v in groups.items()}
        self._saved_last = {r: json.dumps(v, sort_keys=True) for r, v in last.items()}
        await self.reload_silences()
        if tick_interval:
            self._loop = task.LoopingCall(self._tick_logged)
            self._loop.clock = self.reactor
            self._loop.start(tick_interval, now=True)

    def stop(self) -> None:
        """Stop ticking (deliveries in flight finish on their own)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def _tick_logged(self) -> None:
        try:
            await self.tick()
        except Exception as e:  # a database outage: the next tick tries again
            _log.warn("notifier tick failed: {error}", error=str(e).splitlines()[0][:300]
                      if str(e) else type(e).__name__)

    async def reload_silences(self, now: float | None = None) -> None:
        """Read the silences again (the CLI writes them to SQL)."""
        now = self.clock() if now is None else now
        self.silences = SilenceSet(await self.run_blocking(self.store.silences, now))

    # --- state saving -------------------------------------------------------------

    def _changes(self) -> tuple[dict[str, Any], dict[str, Any]]:
        groups, last = {}, {}
        current = {g: json.dumps(v, sort_keys=True) for g, v in self.grouper.groups.items()}
        for gid in set(current) | set(self._saved_groups):
            if current.get(gid) != self._saved_groups.get(gid):
                groups[gid] = self.grouper.groups.get(gid)
        cur_last = {r: json.dumps(v, sort_keys=True) for r, v in self.grouper.last.items()}
        for ref in set(cur_last) | set(self._saved_last):
            if cur_last.get(ref) != self._saved_last.get(ref):
                last[ref] = self.grouper.last.get(ref)
        return groups, last

    async def _commit(self, rows: list[dict[str, Any]], now: float,
                      before: tuple[dict, dict]) -> list[int]:
        groups, last = self._changes()
        if not rows and not groups and not last:
            return []
        try:
            ids = await self.run_blocking(self.store.save, rows, groups, last, now)
        except BaseException:
            # Nothing was stored: forget what was decided, it will be decided again.
            self.grouper.load(*before)
            raise
        for gid, g in groups.items():
            if g is None:
                self._saved_groups.pop(gid, None)
            else:
                self._saved_groups[gid] = json.dumps(g, sort_keys=True)
        for ref, rec in last.items():
            if rec is None:
                self._saved_last.pop(ref, None)
            else:
                self._saved_last[ref] = json.dumps(rec, sort_keys=True)
        return ids

    # --- input --------------------------------------------------------------------

    async def handle_alarm(self, alarm: Alarm | Mapping[str, Any],
                           now: float | None = None) -> int:
        """Route and group ``alarm``, saved before returning; how many routes took it.

        Fails (and changes nothing) when the state cannot be saved: do not ack.
        """
        now = self.clock() if now is None else now
        a = _alarm_dict(alarm)
        inv = self.inventory(a["host"]) or {}
        matched = self.routes.match(a, inv)
        if not matched:
            return 0
        async with self._lock:
            before = (self.grouper.export(), json.loads(json.dumps(self.grouper.last)))
            for route in matched:
                self.grouper.add(route, route.group_labels(a, inv), a, now)
            await self._commit([], now, before)
        self.counters["alarms"] += 1
        return len(matched)

    # --- time ---------------------------------------------------------------------

    def hold(self, route: Route, alarm: Mapping[str, Any], now: float) -> str | None:
        """Why ``alarm`` must not be told now on ``route`` (None: tell it)."""
        inv = self.inventory(alarm["host"]) or {}
        s = self.silences.matching(alarm, inv, now)
        if s is not None:
            return f"silence {s.id} ({s.describe()}): {s.comment}"
        if route.muted(now):
            return f"mute window of route {route.name}"
        if alarm["state"] != "cleared":
            if alarm.get("acked_by") and not route.notify_acked:
                return f"acked by {alarm['acked_by']}"
            if alarm.get("flapping"):
                return "flapping: held until stable"
        return None

    async def tick(self, now: float | None = None, deliver: bool = True) -> list[Batch]:
        """Queue what is due at ``now``, record suppressions, deliver due rows; the batches."""
        now = self.clock() if now is None else now
        await self.reload_silences(now)
        async with self._lock:
            before = (self.grouper.export(), json.loads(json.dumps(self.grouper.last)))
            batches = self.grouper.due(now, self.hold)
            if now - self._housekept >= HOUSEKEEPING_EVERY:
                self.grouper.forget_last(now - KEEP_DONE)
            rows: list[dict[str, Any]] = []
            for b in batches:
                if b.sends:
                    rows.extend(self._render(b, now))
            await self._commit(rows, now, before)
        if now - self._housekept >= HOUSEKEEPING_EVERY:
            self._housekept = now
            await self.run_blocking(self.store.purge, now - KEEP_DONE)
        for b in batches:
            self._publish_suppressed(b, now)
        if deliver:
            await self.deliver_due(now)
        return batches

    def _publish_suppressed(self, b: Batch, now: float) -> None:
        route = self.route_map.get(b.route)
        if route is None:
            return
        for alarm, reason in b.suppressed:
            for rec in route.receivers:
                self.counters["suppressed"] += 1
                self._emit(alarm.get("ref"), route.name, rec.channel, rec.target, "suppressed",
                           0, reason, alarm.get("host"), now)

    def _render(self, b: Batch, now: float) -> list[dict[str, Any]]:
        route = self.route_map[b.route]

        def enrich(a: dict[str, Any]) -> dict[str, Any]:
            inv = dict(self.inventory(a["host"]) or {})
            link = ""
            if self.options.link_template:
                link = self.options.link_template.format_map(_SafeFormat(a))
            return dict(a, inventory=inv, link=link)

        firing = [enrich(a) for a in b.firing]
        resolved = [enrich(a) for a in b.resolved]
        ctx = context(route=route.name, group=b.labels, alarms=firing, resolved=resolved,
                      repeat=b.repeat, idempotency_key=b.key, now=now)
        first = (firing or resolved)[0]
        hosts = {a["host"] for a in firing + resolved}
        base = {"idem_key": b.key, "route": route.name, "ref": first["ref"],
                "host": first["host"] if len(hosts) == 1 else None}
        tpl = self._templates[route.name]
        rows = []
        try:
            mail = tpl.email(ctx) if any(r.channel == "email" for r in route.receivers) else None
            hook = tpl.webhook(ctx) if any(r.channel == "webhook" for r in route.receivers) \
                else None
        except TemplateError as e:
            # A template that breaks on this data: fall back to the shipped ones
            # rather than lose the notification.
            _log.error("route {route}: {error}; using the default templates",
                       route=route.name, error=str(e))
            mail, hook = Templates().email(ctx), Templates().webhook(ctx)
        for rec in route.receivers:
            if rec.channel == "email":
                payload = dict(mail, message_key=b.key)
            elif rec.channel == "webhook":
                payload = {"body": hook.decode("utf-8")}
            else:
                payload = {"notification": ctx["payload"]}
            rows.append(dict(base, channel=rec.channel, recipient=rec.target, payload=payload))
        return rows

    # --- delivery -----------------------------------------------------------------

    async def deliver_due(self, now: float | None = None) -> int:
        """Attempt every pending row whose time has come (concurrently); how many."""
        now = self.clock() if now is None else now
        rows = await self.run_blocking(self.store.due, now, 100, list(self._inflight))
        if not rows:
            return 0
        for r in rows:
            self._inflight.add(r.id)
        await defer.DeferredList([defer.ensureDeferred(self._attempt(r)) for r in rows],
                                 consumeErrors=True)
        return len(rows)

    def _send(self, row: OutboxRow) -> defer.Deferred:
        route = self.route_map.get(row.route)
        rec = None
        if route is not None:
            rec = next((r for r in route.receivers
                        if r.channel == row.channel and r.target == row.recipient), None)
        o = self.options
        if row.channel == "email":
            message = channels.build_email(o.sender, [row.recipient], row.payload["subject"],
                                           row.payload["text"], row.payload["html"],
                                           row.idem_key, self.clock())
            return channels.send_email(
                self.reactor, host=o.smtp_host, port=o.smtp_port, sender=o.sender,
                recipients=[row.recipient], message=message, username=o.username,
                password=o.password, starttls=o.starttls, timeout=o.smtp_timeout,
                tls_options=o.tls_options)
        if rec is None:
            # The secret or argv lives in the routes file only, never in the outbox.
            return defer.fail(channels.DeliveryError(
                f"receiver {row.channel} {row.recipient} is no longer in route "
                f"{row.route!r}", False))
        if row.channel == "webhook":
            return channels.post_webhook(self.reactor, row.recipient,
                                         row.payload["body"].encode("utf-8"),
                                         idempotency_key=row.idem_key, secret=rec.secret,
                                         timeout=o.webhook_timeout)
        return channels.run_command(self.reactor, rec.argv, dict(
            row.payload["notification"]), timeout=route.command_timeout)

    async def _attempt(self, row: OutboxRow) -> None:
        attempts = row.attempts + 1
        try:
            try:
                await self._send(row)
            except channels.DeliveryError as e:
                now = self.clock()
                if e.retryable and attempts < self.options.max_attempts:
                    delay = backoff_delay(attempts, self.options.retry_initial,
                                          self.options.retry_max)
                    await self.run_blocking(self.store.mark, row.id, "pending", attempts, now,
                                            now + delay, e.reason)
                    self.counters["retried"] += 1
                    self._emit(row.ref, row.route, row.channel, row.recipient, "failed",
                               attempts, f"{e.reason}; retry in {delay:.0f}s", row.host, now)
                else:
                    why = ("not retryable" if not e.retryable
                           else f"gave up after {attempts} attempts")
                    await self.run_blocking(self.store.mark, row.id, "failed", attempts, now,
                                            None, e.reason)
                    self.counters["failed"] += 1
                    self._emit(row.ref, row.route, row.channel, row.recipient, "failed",
                               attempts, f"{e.reason} ({why})", row.host, now)
                return
            now = self.clock()
            await self.run_blocking(self.store.mark, row.id, "sent", attempts, now)
            self.counters["sent"] += 1
            self._emit(row.ref, row.route, row.channel, row.recipient, "sent", attempts, None,
                       row.host, now)
        finally:
            self._inflight.discard(row.id)

    def _emit(self, ref: Any, route: str, channel: str, recipient: str, state: str,
              attempts: int, reason: str | None, host: str | None, now: float) -> None:
        try:
            ref_int = int(ref) if ref is not None else None
        except (TypeError, ValueError):
            ref_int = None
        msg = Notification(source=self.source, ts=now, ref=ref_int, rule=route, channel=channel,
                           recipient=shown_recipient(channel, recipient), state=state, attempts=attempts, reason=reason,
                           host=host)
        try:
            self.publish(msg)
        except Exception as e:  # the ledger must not stop deliveries
            _log.warn("cannot publish a notification record: {error}", error=str(e)[:300])


async def open_notifier(settings, reactor, publish: Callable[[Notification], Any], *,
                        source: str,
                        inventory: Callable[[str], Mapping[str, Any]] = lambda host: {},
                        tick_interval: float | None = 1.0) -> Notifier:
    """A started :class:`Notifier` from loaded settings (for the alerter's service).

    Reads ``[alerter] routes`` (:class:`connector_alerter.routes.RoutesError`
    names the route and field of a mistake), creates or upgrades the
    alerter's tables in ``[database]`` (in a thread), loads the saved state
    and starts ticking every ``tick_interval`` seconds.
    """
    import os

    import sqlalchemy as sa

    from . import migrate
    from .routes import load_routes

    alerter = settings.section("alerter")
    # Relative to the settings file's folder, as the other connectors' files.
    base = os.path.dirname(os.path.abspath(settings.source)) if settings.source else os.getcwd()
    routes = load_routes(os.path.join(base, alerter.routes))
    engine = sa.create_engine(settings.database.url.reveal())
    await threads.deferToThread(migrate.upgrade, engine, alerter.table_prefix)
    notifier = Notifier(routes=routes, store=OutboxStore(engine, alerter.table_prefix),
                        publish=publish, reactor=reactor,
                        options=DeliveryOptions.from_settings(settings), source=source,
                        inventory=inventory)
    await notifier.start(tick_interval)
    return notifier
