"""The notifier: alarms in, grouped notifications out, through a persistent outbox.

:class:`Notifier` ties the pieces together:

* :meth:`Notifier.handle_alarm` routes an ``alarm`` message
  (:mod:`connector_alerter.routes`; a threshold alarm also goes to its
  rule's ``emails``, :func:`connector_alerter.routes.rule_route`, and an
  address that a matching route mails already is left out of the rule's
  message, so it gets the alert once), puts it in its groups
  (:mod:`connector_alerter.grouping`) and saves the groups' state; a change
  of an alarm also goes to every group already holding it, in its route's
  group as it was taken, whatever the route matches now (a ``>=major``
  route that told a major alarm tells its recovery even when the correlator
  lowered its severity by masking it meanwhile); the
  service acks the input only once this Deferred has fired, so an alarm is
  never lost between the bus and the state;
* :meth:`Notifier.tick` (every second or so, and from tests with a fake
  ``now``) asks the grouper what is due, renders each message with the
  route's templates (:mod:`connector_alerter.templates`), queues one outbox
  row per receiver in the same transaction as the new group state
  (:mod:`connector_alerter.outbox`), records held alarms as ``suppressed``,
  then delivers the due rows (:mod:`connector_alerter.channels`), retrying
  with backoff (:func:`connector.retry.backoff_delay`) up to ``max_attempts``.

Cost: only what changed is saved (the grouper's journal of changed groups,
:class:`connector_alerter.grouping.Journal`), and alarms arriving while a
commit is in flight share the next one (group commit; each is acked only
after its commit). Live (started with a tick), a group is flushed when its
``group_wait``/``group_interval`` ends (a timer, not the next tick) and new
rows are delivered at once; delivery takes due rows in batches until none
is due, reuses SMTP sessions (:class:`connector_alerter.channels.Mailer`)
and records each batch's outcomes in one transaction; a retry is attempted
when it is due.

Housekeeping (every ``[alerter] purge_interval``, 1 hour by default, on the
node holding the notifier, hence one at a time on a site): sent and failed
outbox rows done more than ``keep_notified`` (7 days) ago are deleted, never
pending ones; so are the last-told records older than that whose alarm is in
no group any more (a cleared alarm's, or a raised one's whose recovery a route
without ``send_resolved`` did not tell, which no clear would ever replace),
with the groups' next save; and silences that ended more than
``keep_ended_silences`` (30 days) ago, which hide nothing any more (the
notifier reads those ended in the last day only to name them). Deletes go
``PURGE_BATCH`` rows per transaction; one log line per pass that deleted
something; ``purged_outbox``, ``purged_last_notified``, ``purged_silences``
and ``purge_errors`` on ``/metrics``. Not purged: ``groups`` (a group lives
while it holds an alarm: active, or cleared and hidden until its recovery can
be told) and ``eval_state`` (a row per host the rules evaluate).

Every attempt is published as a :class:`connector.messages.Notification`
through ``publish`` (sent, failed with the reason and whether it is retried,
suppressed). The clock is injectable (``clock``) and blocking SQL runs
through ``run_blocking`` (``deferToThread`` by default).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from twisted.internet import defer, task, threads
from twisted.python import failure
from twisted.logger import Logger
from zope.interface import implementer

from connector.batching import BatchCommitter
from connector.interfaces import IBatchStore
from connector.messages import Alarm, Notification
from connector.retry import backoff_delay

from . import channels
from .grouping import Batch, Grouper
from .outbox import OutboxRow, OutboxStore
from .routes import RULE_ROUTE_PREFIX, Route, Routes, rule_route
from .silences import SilenceSet
from .templates import Templates, TemplateError, context, device_context

__all__ = ["Notifier", "DeliveryOptions", "open_notifier", "shown_recipient"]

_log = Logger()

#: How long sent/failed outbox rows and last-told records no group needs are kept
#: (default of ``[alerter] keep_notified``).
KEEP_DONE = 7 * 86400
#: How long ended silences are kept (default of ``[alerter] keep_ended_silences``).
KEEP_ENDED_SILENCES = 30 * 86400
#: How often that housekeeping runs (default of ``[alerter] purge_interval``).
HOUSEKEEPING_EVERY = 3600
#: Outbox rows taken per query when delivering (the loop goes on until none is due).
DELIVER_BATCH = 200


def _log_failure(what: str, e: BaseException) -> None:
    _log.warn("{what} failed: {error}", what=what,
              error=str(e).splitlines()[0][:300] if str(e) else type(e).__name__)


class DeliveryOptions:
    """What the notifier needs from ``[alerter]`` and ``[smtp]`` (or test values)."""

    def __init__(self, *, smtp_host: str = "127.0.0.1", smtp_port: int = 25,
                 sender: str = "centaure@localhost", starttls: str = "auto",
                 username: str = "", password: Any = None, smtp_timeout: float = 30.0,
                 link_template: str = "", retry_initial: float = 10.0,
                 retry_max: float = 600.0, max_attempts: int = 20,
                 webhook_timeout: float = 10.0, tls_options: Any = None,
                 smtp_connections: int = 4, max_concurrent: int = 64,
                 allow_plain_auth: bool = False, device_fields: Sequence[str] = (),
                 keep_notified: float = KEEP_DONE,
                 keep_ended_silences: float = KEEP_ENDED_SILENCES,
                 purge_interval: float = HOUSEKEEPING_EVERY) -> None:
        self.smtp_host, self.smtp_port, self.sender = smtp_host, smtp_port, sender
        self.starttls, self.username, self.password = starttls, username, password
        self.smtp_timeout, self.link_template = smtp_timeout, link_template
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.max_attempts, self.webhook_timeout = max_attempts, webhook_timeout
        self.tls_options = tls_options
        #: SMTP sessions at once (each sends several mails), and sends at once overall.
        self.smtp_connections, self.max_concurrent = smtp_connections, max_concurrent
        #: Credentials may go over a connection without TLS ([smtp] allow_plain_auth).
        self.allow_plain_auth = allow_plain_auth
        #: Inventory columns notifications show besides the usual ([alerter] device_fields).
        self.device_fields = tuple(device_fields)
        #: Housekeeping ([alerter] keep_notified, keep_ended_silences, purge_interval).
        self.keep_notified, self.keep_ended_silences = keep_notified, keep_ended_silences
        self.purge_interval = purge_interval

    @classmethod
    def from_settings(cls, settings) -> "DeliveryOptions":
        """From loaded settings (``[alerter]`` and ``[smtp]`` sections)."""
        a, s = settings.section("alerter"), settings.section("smtp")
        return cls(smtp_host=s.host, smtp_port=s.port, sender=s.sender, starttls=s.starttls,
                   username=s.username, password=s.password, smtp_timeout=s.timeout,
                   link_template=a.link_template, retry_initial=a.retry_initial,
                   retry_max=a.retry_max, max_attempts=a.max_attempts,
                   webhook_timeout=a.webhook_timeout, smtp_connections=s.connections,
                   max_concurrent=a.max_concurrent_sends,
                   allow_plain_auth=s.allow_plain_auth, device_fields=a.device_fields,
                   keep_notified=a.keep_notified, keep_ended_silences=a.keep_ended_silences,
                   purge_interval=a.purge_interval)


def _days(seconds: float) -> str:
    """``7d``, ``36h``: a retention as the settings say it."""
    return f"{seconds / 86400:g}d" if seconds % 86400 == 0 else f"{seconds / 3600:g}h"


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


@implementer(IBatchStore)
class _GroupCommit:
    """The notifier's state saving as batches: the outbox rows given and the grouper's changes.

    Every ``(rows, now)`` queued while a commit runs goes into the next one
    (one transaction for many alarms). A failed commit rolls the grouper's
    changes back; the committer then fails its callers and every queued one
    (their changes were built on it): nothing is acked that is not stored.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def apply(self, values: list[tuple[list[dict[str, Any]], float]]) -> tuple[list, float | None, int]:
        rows = [row for given, _ in values for row in given]
        now = min((t for _, t in values), default=None)
        return rows, now, len(values)

    def snapshot(self, applied: tuple[list, float | None, int]) -> Any:
        rows, now, _ = applied
        grouper = self.notifier.grouper
        journal = grouper.take_journal()
        groups, last = journal.changes(grouper)
        # Nothing to write still hands the journal over: a failure could not undo it otherwise.
        return rows, groups, last, now, journal

    def commit(self, work: Any) -> list[int]:
        rows, groups, last, now, _journal = work
        if not (rows or groups or last):
            return []
        return self.notifier.store.save(rows, groups, last, now)

    def committed(self, applied: tuple[list, float | None, int], ids: list[int]) -> list[list[int]]:
        return [ids] * applied[2]

    def failed(self, applied: Any, work: Any, failure: Any) -> None:
        if work is not None:
            # Nothing was stored: forget what was decided, it will be decided again.
            self.notifier.grouper.rollback(work[4])

    def outage(self, error: BaseException, attempt: int, delay: float, size: int) -> None:
        """Not retried here (no outage check): a failed save fails its callers."""

    def recovered(self, attempts: int) -> None:
        """Not retried here."""


class Notifier:
    """Routes, groups, queues and delivers notifications (see the module's docstring)."""

    def __init__(self, *, routes: Routes, store: OutboxStore,
                 publish: Callable[[Notification], Any], reactor, options: DeliveryOptions,
                 source: str = "centaure-alerter@localhost",
                 clock: Callable[[], float] = time.time,
                 inventory: Callable[[str], Mapping[str, Any]] = lambda host: {},
                 run_blocking: Callable[..., Any] | None = None,
                 rule_emails: Mapping[str, Sequence[str]] | None = None,
                 metrics: Any = None) -> None:
        self.routes = routes
        #: Where the housekeeping's counts go for /metrics (``inc(name, n)``), if anywhere.
        self.metrics = metrics
        #: Threshold rule name -> its own recipients, and the route made of them.
        self.rule_emails: dict[str, tuple[str, ...]] = {}
        self.rule_routes: dict[str, Route] = {}
        self.route_map: dict[str, Route] = {}
        self.store = store
        self.publish = publish
        self.reactor = reactor
        self.options = options
        self.source = source
        self.clock = clock
        self.inventory = inventory
        self.run_blocking = run_blocking or threads.deferToThread
        self.grouper = Grouper(())
        self.silences = SilenceSet()
        self._templates: dict[str, Templates] = {}
        self._use(routes, rule_emails or {})
        # run_blocking is looked up at each commit: tests replace it after construction.
        self._saving = BatchCommitter(reactor, _GroupCommit(self), name="alerter notifier",
                                      batch_size=None, fail_pending=True,
                                      run=lambda fn, *a: self.run_blocking(fn, *a))
        self._inflight: set[int] = set()
        # Outcomes of ended sends waiting to be recorded: (row, error, fired when recorded).
        self._outcomes: list[tuple[OutboxRow, channels.DeliveryError | None,
                                   defer.Deferred]] = []
        self._recording = False
        self._limit = defer.DeferredSemaphore(max(1, options.max_concurrent))
        self._mailer: channels.Mailer | None = None
        #: Channel name -> how an outbox row of it is delivered.
        self.channels: dict[str, channels.INotifierChannel] = {c.name: c for c in (
            channels.EmailChannel(self._mail, options.sender, lambda: self.clock()),
            channels.WebhookChannel(reactor, options.webhook_timeout),
            channels.CommandChannel(reactor))}
        self._loop: task.LoopingCall | None = None
        #: Live (started with a tick): flushes and deliveries also run when due.
        self._live = False
        self._wake: Any = None
        self._wake_at_t: float | None = None
        self._flushing = self._flush_again = False
        self._pumping = self._pump_again = False
        self._retry_wake: Any = None
        self._pump_d: defer.Deferred | None = None
        #: Halted (the notifier token was lost): no send starts any more.
        self.halted = False
        #: Finishing (handing the notifier token on): the batch being sent ends, no other.
        self._finishing = False
        #: deliver_due calls running (finish waits for them).
        self._delivering = 0
        self._housekept = 0.0
        #: Counters for the status heartbeat.
        self.counters = {"alarms": 0, "sent": 0, "failed": 0, "suppressed": 0, "retried": 0}

    # --- configuration ------------------------------------------------------------

    def _use(self, routes: Routes, rule_emails: Mapping[str, Sequence[str]]) -> int:
        """Route with ``routes`` and the rules' ``rule_emails``; groups dropped (routes gone)."""
        self.routes = routes
        self.rule_emails = {name: tuple(e) for name, e in rule_emails.items() if e}
        self.rule_routes = {name: rule_route(name, emails, routes.defaults)
                            for name, emails in self.rule_emails.items()}
        every = list(routes.routes) + list(self.rule_routes.values())
        self.route_map = {r.name: r for r in every}
        self._templates = {r.name: Templates(r.templates) for r in every}
        return self.grouper.set_routes(every)

    async def reconfigure(self, routes: Routes | None = None,
                          rule_emails: Mapping[str, Sequence[str]] | None = None) -> int:
        """New routes and/or rules' emails (a reload); how many groups were dropped.

        Groups of routes that are gone are dropped, and that is saved before
        returning; the others go on with their route's new settings.
        """
        dropped = self._use(self.routes if routes is None else routes,
                            self.rule_emails if rule_emails is None else rule_emails)
        if dropped:
            await self._save([], self.clock())
        self._wake_at(self.grouper.next_wakeup())
        return dropped

    # --- start / stop -------------------------------------------------------------

    async def start(self, tick_interval: float | None = 1.0) -> None:
        """Load the saved state and silences; tick every ``tick_interval`` s (None: never).

        With a tick, the notifier is live: a group is also flushed when its
        time comes and queued rows are delivered at once (the tick is the
        safety net: silences ending, mute windows, housekeeping).
        """
        groups, last = await self.run_blocking(self.store.load)
        self.grouper.load(groups, last)
        await self.reload_silences()
        if tick_interval:
            self._live = True
            self._loop = task.LoopingCall(self._tick_logged)
            self._loop.clock = self.reactor
            self._loop.start(tick_interval, now=True)

    def stop(self) -> None:
        """Stop ticking and waking up (deliveries in flight finish on their own)."""
        self._live = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in (self._wake, self._retry_wake):
            if call is not None and call.active():
                call.cancel()
        self._wake = self._retry_wake = None

    def halt(self) -> None:
        """Stop at once (the notifier token was lost): no tick, no flush, no new send.

        Sends already handed to a receiver end on their own; rows taken but
        not yet sent stay pending in the outbox for the node that takes over.
        """
        self.halted = True
        self.stop()

    async def finish(self) -> None:
        """Stop ticking, then wait for the current flush and deliveries to end (hand-over).

        The batch of rows being sent is finished (and recorded); rows not taken
        yet stay pending for the next holder.
        """
        self._finishing = True
        self.stop()
        while self._pumping or self._flushing or self._recording or self._delivering:
            if self._pump_d is not None and not self._pump_d.called:
                await self._pump_d
            else:
                d: defer.Deferred = defer.Deferred()
                self.reactor.callLater(0.05, d.callback, None)
                await d

    async def _tick_logged(self) -> None:
        try:
            await self.tick(deliver=False)
        except Exception as e:  # a database outage: the next tick tries again
            _log_failure("notifier tick", e)
        self._kick()

    async def reload_silences(self, now: float | None = None) -> None:
        """Read the silences again (the CLI writes them to SQL)."""
        now = self.clock() if now is None else now
        self.silences = SilenceSet(await self.run_blocking(self.store.silences, now))

    # --- wake-ups (live only) -----------------------------------------------------

    def _wake_at(self, t: float | None) -> None:
        """Flush at ``t`` (or now) unless a flush is planned earlier."""
        if not self._live or t is None:
            return
        if self._wake is not None and self._wake.active():
            if self._wake_at_t is not None and self._wake_at_t <= t:
                return
            self._wake.cancel()
        self._wake_at_t = t
        self._wake = self.reactor.callLater(max(0.0, t - self.clock()), self._on_wake)

    def _on_wake(self) -> None:
        self._wake = self._wake_at_t = None
        defer.ensureDeferred(self._flush_live())

    async def _flush_live(self) -> None:
        # One flush at a time; a wake-up during one runs once more after it.
        if self._flushing:
            self._flush_again = True
            return
        self._flushing = True
        try:
            rounds = 0
            while True:
                self._flush_again = False
                now = self.clock()
                try:
                    await self._flush(now)
                except Exception as e:
                    _log_failure("notifier flush", e)
                    return  # the tick tries again (no busy loop on a database outage)
                rounds += 1
                nxt = self.grouper.next_wakeup()
                # A group may become due at ``now`` by this very flush: once more.
                if self._flush_again or (nxt is not None and nxt <= now and rounds < 2):
                    continue
                break
        finally:
            self._flushing = False
        if nxt is not None and nxt > now:
            # What is still due now (a held alarm's repeat) is the tick's.
            self._wake_at(nxt)

    def _kick(self) -> None:
        """Deliver what is due now, in the background (live only)."""
        if not self._live:
            return
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        self._pump_d = defer.ensureDeferred(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                self._pump_again = False
                done = await self.deliver_due(self.clock())
                if not self._live:
                    break
                if self._pump_again:
                    continue
                # The next retry: delivered when it is due rather than at a tick.
                nxt = await self.run_blocking(self.store.next_due)
                if nxt is None:
                    break
                delay = nxt - self.clock()
                if delay <= 0 and done:
                    continue  # fell due meanwhile
                if self._retry_wake is not None and self._retry_wake.active():
                    self._retry_wake.cancel()
                # (Due but not taken: in flight elsewhere; look again shortly.)
                self._retry_wake = self.reactor.callLater(max(delay, 0.2), self._kick)
                break
        except Exception as e:
            _log_failure("notifier delivery", e)
        finally:
            self._pumping = False

    # --- state saving -------------------------------------------------------------

    def _save(self, rows: list[dict[str, Any]], now: float) -> defer.Deferred:
        """Store ``rows`` and the grouper's changes so far; fires once they are committed.

        Callers that change the grouper while a commit is in flight go into
        the next one (group commit: one transaction for many alarms). When a
        commit fails, its changes and every change made since (built on
        them) are rolled back and all their callers fail: nothing is acked
        that is not stored, and what was undone is decided again.
        """
        return self._saving.add((rows, now))

    # --- input --------------------------------------------------------------------

    async def handle_alarm(self, alarm: Alarm | Mapping[str, Any],
                           now: float | None = None) -> int:
        """Route and group ``alarm``, saved before returning; how many routes took it.

        The routes whose groups hold this occurrence of the alarm take it in
        those groups, matching or not (its update or clear must reach them);
        the other routes take it when they match it now.
        Fails (and changes nothing) when the state cannot be saved: do not ack.
        """
        now = self.clock() if now is None else now
        a = _alarm_dict(alarm)
        inv = self.inventory(a["host"]) or {}
        taken: list[tuple[Route, dict[str, str]]] = []
        for gid in self.grouper.following(a):
            g = self.grouper.groups[gid]
            taken.append((self.grouper.routes[g["route"]], g["labels"]))
        holding = {route.name for route, _ in taken}
        matched = self.routes.match(a, inv)
        own = self.rule_routes.get(a["name"]) if a.get("origin") == "threshold" else None
        if own is not None:
            matched.append(own)
        taken += [(route, route.group_labels(a, inv)) for route in matched
                  if route.name not in holding]
        if not taken:
            return 0
        flush_at = []
        for route, labels in taken:
            gid = self.grouper.add(route, labels, a, now)
            g = self.grouper.groups.get(gid)
            if g is not None and g["next_flush"] is not None:
                flush_at.append(g["next_flush"])
        await self._save([], now)
        self.counters["alarms"] += 1
        if flush_at:
            self._wake_at(min(flush_at))
        return len({route.name for route, _ in taken})

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
        batches = await self._flush(now)
        if deliver:
            await self.deliver_due(now)
        return batches

    async def _flush(self, now: float) -> list[Batch]:
        """Queue what is due at ``now`` (committed), publish suppressions; the batches."""
        await self.reload_silences(now)
        batches = self.grouper.due(now, self.hold)
        housekeeping = now - self._housekept >= self.options.purge_interval
        forgotten: list[str] = []
        if housekeeping:
            # Journalled: the save below deletes their rows with the groups' changes.
            forgotten = self.grouper.forget_last(now - self.options.keep_notified)
        rows: list[dict[str, Any]] = []
        for b in batches:
            if b.sends:
                rows.extend(self._render(b, now))
        await self._save(rows, now)
        if housekeeping:
            self._housekept = now
            await self._housekeep(now, len(forgotten))
        for b in batches:
            self._publish_suppressed(b, now)
        if rows:
            self._kick()
        return batches

    async def _housekeep(self, now: float, forgotten: int) -> None:
        """Delete old outbox rows and ended silences (batched); one log line if any went.

        Runs on the node holding the notifier (one at a time on a site). A
        failure is logged and tried again at the next pass.
        """
        o = self.options
        try:
            outbox = await self.run_blocking(self.store.purge, now - o.keep_notified)
            silences = await self.run_blocking(self.store.purge_silences,
                                               now - o.keep_ended_silences)
        except Exception as e:
            if self.metrics is not None:
                self.metrics.inc("purge_errors")
            _log_failure("alerter purge", e)
            return
        counts = {"purged_outbox": outbox, "purged_silences": silences,
                  "purged_last_notified": forgotten}
        if self.metrics is not None:
            for name, n in counts.items():
                if n:
                    self.metrics.inc(name, n)
        if any(counts.values()):
            _log.info("alerter purge: {outbox} sent or failed notifications and {last} "
                      "last-told records older than {keep_notified}, {silences} silences "
                      "ended more than {keep_silences} ago deleted", outbox=outbox,
                      last=forgotten, silences=silences,
                      keep_notified=_days(o.keep_notified),
                      keep_silences=_days(o.keep_ended_silences))

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
            inv = device_context(self.inventory(a["host"]) or {}, self.options.device_fields)
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
        receivers = route.receivers
        if route.name.startswith(RULE_ROUTE_PREFIX):  # file routes cannot be named so
            covered = self._mailed_by_routes(firing + resolved, now)
            receivers = tuple(r for r in receivers if r.target not in covered)
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
        for rec in receivers:
            if rec.channel == "email":
                payload = dict(mail, message_key=b.key)
            elif rec.channel == "webhook":
                payload = {"body": hook.decode("utf-8")}
            else:
                payload = {"notification": ctx["payload"]}
            rows.append(dict(base, channel=rec.channel, recipient=rec.target, payload=payload))
        return rows

    def _mailed_by_routes(self, alarms: list[dict[str, Any]], now: float) -> set[str]:
        """The addresses that the routes file mails for each of ``alarms`` at ``now``.

        A rule's own message leaves them out: the address gets the alert once,
        from the route. A route muted now, or not telling recoveries for a
        cleared alarm, does not count.
        """
        covered: set[str] | None = None
        for a in alarms:
            inv = self.inventory(a["host"]) or {}
            mine = {rec.target for route in self.routes.match(a, inv)
                    if not route.muted(now)
                    and (a["state"] != "cleared" or route.send_resolved)
                    for rec in route.receivers if rec.channel == "email"}
            covered = mine if covered is None else covered & mine
        return covered or set()

    # --- delivery -----------------------------------------------------------------

    async def deliver_due(self, now: float | None = None) -> int:
        """Attempt every pending row due at ``now``; how many (their outcomes recorded).

        Rows are taken ``DELIVER_BATCH`` at a time until none is due and sent
        concurrently (at most ``max_concurrent`` at once; emails share the
        mailer's SMTP sessions). Each outcome is recorded as soon as its send
        ends, together with the others that ended meanwhile (a group commit),
        then its ``notification`` record is published: a crash re-sends only
        what was accepted and not yet recorded, not a whole batch.
        """
        now = self.clock() if now is None else now
        total = 0
        self._delivering += 1
        try:
            while not (self.halted or self._finishing):
                rows = await self.run_blocking(self.store.due, now, DELIVER_BATCH,
                                               list(self._inflight))
                if not rows:
                    break
                ids = [r.id for r in rows]
                self._inflight.update(ids)
                try:
                    await defer.gatherResults(
                        [self._limit.run(self._deliver_one, r) for r in rows],
                        consumeErrors=True)
                finally:
                    self._inflight.difference_update(ids)
                total += len(rows)
                if len(rows) < DELIVER_BATCH:
                    break
        finally:
            self._delivering -= 1
        return total

    def _mail(self) -> channels.Mailer:
        if self._mailer is None:
            o = self.options
            self._mailer = channels.Mailer(
                self.reactor, host=o.smtp_host, port=o.smtp_port, username=o.username,
                password=o.password, starttls=o.starttls, timeout=o.smtp_timeout,
                tls_options=o.tls_options, connections=o.smtp_connections,
                allow_plain_auth=o.allow_plain_auth)
        return self._mailer

    def _send(self, row: OutboxRow) -> defer.Deferred:
        route = self.route_map.get(row.route)
        rec = None
        if route is not None:
            rec = next((r for r in route.receivers
                        if r.channel == row.channel and r.target == row.recipient), None)
        channel = self.channels.get(row.channel)
        if channel is None:
            return defer.fail(channels.DeliveryError(f"unknown channel {row.channel!r}", False))
        if rec is None and channel.needs_receiver:
            # The secret or argv lives in the routes file only, never in the outbox.
            return defer.fail(channels.DeliveryError(
                f"receiver {row.channel} {row.recipient} is no longer in route "
                f"{row.route!r}", False))
        return channel.send(row, rec, route)

    async def _deliver_one(self, row: OutboxRow) -> None:
        """Send ``row``; fires once its outcome is recorded."""
        if self.halted or self._finishing:
            return  # not started: left pending for the next holder of the notifier token
        error = await self._attempt(row)
        recorded: defer.Deferred = defer.Deferred()
        self._outcomes.append((row, error, recorded))
        if not self._recording:
            defer.ensureDeferred(self._record_outcomes())
        await recorded

    async def _record_outcomes(self) -> None:
        """Record the outcomes waiting, in one transaction each time, until none is left."""
        self._recording = True
        try:
            while self._outcomes:
                taken, self._outcomes = self._outcomes, []
                try:
                    await self._record([row for row, _, _ in taken],
                                       [error for _, error, _ in taken])
                except Exception:
                    why = failure.Failure()
                    for _, _, recorded in taken:
                        recorded.errback(why)
                    continue
                for _, _, recorded in taken:
                    recorded.callback(None)
        finally:
            self._recording = False

    async def _attempt(self, row: OutboxRow) -> channels.DeliveryError | None:
        """Send ``row``: None when the receiver took it, else the error."""
        try:
            await self._send(row)
        except channels.DeliveryError as e:
            return e
        except Exception as e:  # a bug or an odd failure: retried like a transient one
            return channels.DeliveryError(f"{e.__class__.__name__}: {e}"[:500], True)
        return None

    async def _record(self, rows: list[OutboxRow],
                      outcomes: list[channels.DeliveryError | None]) -> None:
        """Mark ``rows`` by their outcomes (one transaction), then publish the records."""
        now = self.clock()
        marks, events = [], []
        for row, e in zip(rows, outcomes):
            attempts = row.attempts + 1
            if e is None:
                marks.append((row.id, "sent", attempts, now, None, None))
                events.append((row, "sent", attempts, None, "sent"))
            elif e.retryable and attempts < self.options.max_attempts:
                delay = backoff_delay(attempts, self.options.retry_initial,
                                      self.options.retry_max)
                marks.append((row.id, "pending", attempts, now, now + delay, e.reason))
                events.append((row, "failed", attempts, f"{e.reason}; retry in {delay:.0f}s",
                               "retried"))
            else:
                why = "not retryable" if not e.retryable else f"gave up after {attempts} attempts"
                marks.append((row.id, "failed", attempts, now, None, e.reason))
                events.append((row, "failed", attempts, f"{e.reason} ({why})", "failed"))
        await self.run_blocking(self.store.mark_many, marks)
        for row, state, attempts, reason, counter in events:
            self.counters[counter] += 1
            self._emit(row.ref, row.route, row.channel, row.recipient, state, attempts, reason,
                       row.host, now)

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
                        tick_interval: float | None = 1.0,
                        rule_emails: Mapping[str, Sequence[str]] | None = None,
                        metrics: Any = None) -> Notifier:
    """A started :class:`Notifier` from loaded settings (for the alerter's service).

    Reads ``[alerter] routes`` (:class:`connector_alerter.routes.RoutesError`
    names the route and field of a mistake), creates or upgrades the
    alerter's tables in ``[database]`` (in a thread), loads the saved state
    and starts ticking every ``tick_interval`` seconds. Without a routes file
    only the rules' ``rule_emails`` are notified.
    """
    import os

    import sqlalchemy as sa

    from centaure_shared.sql import private_sqlite

    from . import migrate
    from .routes import load_routes

    alerter = settings.section("alerter")
    # Relative to the settings file's folder, as the other connectors' files.
    base = os.path.dirname(os.path.abspath(settings.source)) if settings.source else os.getcwd()
    path = os.path.join(base, alerter.routes)
    routes = load_routes(path) if os.path.exists(path) else Routes(())
    engine = private_sqlite(sa.create_engine(settings.database.url.reveal()))
    await threads.deferToThread(migrate.upgrade, engine, alerter.table_prefix)
    notifier = Notifier(routes=routes, store=OutboxStore(engine, alerter.table_prefix),
                        publish=publish, reactor=reactor,
                        options=DeliveryOptions.from_settings(settings), source=source,
                        inventory=inventory, rule_emails=rule_emails, metrics=metrics)
    if notifier.options.username and notifier.options.allow_plain_auth:
        # The mailer says at start, not at the first mail, that the password may
        # go in clear.
        notifier._mail()
    await notifier.start(tick_interval)
    return notifier
