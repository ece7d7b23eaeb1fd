"""The console's HTTP side (twisted.web): pages, the live event stream, commands.

Routes (``GET`` unless told):

* ``/`` the alarm board; ``/alarm/<ref>`` one alarm; ``POST /alarm/<ref>/command``
  an operator's ack, unack, clear or note; ``/events`` the board's live
  updates (server-sent events); ``/api/alarms`` the board as JSON;
* ``/device?host=NAME`` a device's alarms, last values, events and graph;
  ``/api/samples`` the graph's points (raw samples, or rollups for a long range);
* ``/silences`` the active silences; ``POST /silences`` an operator adds one,
  ``POST /silences/<id>/expire`` ends one now;
* ``/login`` (``GET`` the form, ``POST`` the credentials), ``POST /logout``;
* ``/static/...`` the stylesheet and script shipped in the package.

Every page but the login form needs a session (or ``[console] anonymous_view``
for reading); every ``POST`` needs the session's CSRF token (the login form's:
a token of its own, doubled in a cookie). Refusals are pages that say why:
401 (not logged in, session expired, wrong password), 403 (CSRF token
missing or wrong, a viewer commanding or silencing), 404, 400.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from urllib.parse import urlencode

import sqlalchemy as sa
from jinja2 import Environment, PackageLoader, select_autoescape
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.web import resource, server, static

from centaure_shared.sql import error_summary
from connector.metrics import Counters

from .board import SEVERITIES, AlarmBoard
from .commands import ACTIONS, CommandSender
from .interfaces import IAuthenticator, ISessionStore
from .sessions import Session
from .silences import check_form
from .throttle import LoginThrottle
from .users import NAME_RE, User

__all__ = ["ConsoleResource", "EventStreams", "filter_rows", "make_console_site"]

#: Alarms the board's HTML carries at most (the script shows them all).
PAGE_ROWS = 500
#: The graph's time ranges: name -> seconds.
RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400,
          "30d": 30 * 86400}
SESSION_COOKIE = b"centaure_session"
LOGIN_COOKIE = b"centaure_login"
#: Longest name or password accepted by the login form (argon2 hashes any length).
CREDENTIAL_MAX = 1024
_HEADERS = {
    # No inline script or style: what an alarm's text could smuggle in never runs.
    b"content-security-policy": b"default-src 'self'; img-src 'self' data:; "
                                b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"same-origin",
    b"cache-control": b"no-store",
}


def iso(ts: float | None) -> str:
    """UNIX seconds as ``YYYY-MM-DD HH:MM:SS`` UTC (empty for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def filter_rows(rows: list[dict], severity: str = "", host: str = "", text: str = "",
                acked: str = "") -> list[dict]:
    """The board's filters (the page's script applies the same to live updates).

    ``severity``: that severity or worse; ``host``: part of the host name;
    ``text``: part of the host, name or message (case-insensitive);
    ``acked``: ``yes``, ``no`` or anything else for both.
    """
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    lowest = rank.get(severity, 0)
    host, text = host.lower(), text.lower()
    out = []
    for r in rows:
        if rank.get(r["severity"], 0) < lowest:
            continue
        if host and host not in r["host"].lower():
            continue
        if text and not any(text in (r[k] or "").lower() for k in ("host", "name", "message")):
            continue
        if acked == "yes" and not r["acked_by"] or acked == "no" and r["acked_by"]:
            continue
        out.append(r)
    return out


def _event(kind: str, data) -> bytes:
    """One server-sent event: its name and its JSON data."""
    return (b"event: " + kind.encode() + b"\ndata: "
            + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


class EventStreams:
    """The open ``/events`` streams: every board change is written to each of them.

    A comment line every ``keepalive`` seconds keeps proxies from closing an
    idle stream and ends the streams of sessions that expired. Changes are sent
    ``batch`` seconds after the first of them, together.
    """

    log = Logger()

    def __init__(self, board: AlarmBoard, limit: int, clock, keepalive: float = 15.0,
                 batch: float = 0.05) -> None:
        self.board = board
        self.batch = batch
        self._pending: list[bytes] = []
        self._flush = None
        self.limit = limit
        self.clock = clock
        self._streams: dict[server.Request, Session | None] = {}
        self._keepalive = task.LoopingCall(self._ping)
        self._keepalive.clock = clock
        self.keepalive = keepalive
        board.subscribe(self._changed)

    def start(self) -> None:
        """Start the keep-alive pings."""
        self._keepalive.start(self.keepalive, now=False)

    def stop(self) -> None:
        """End every stream (the process stops)."""
        if self._keepalive.running:
            self._keepalive.stop()
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        for request in list(self._streams):
            self._end(request)

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, request: server.Request, session: Session | None) -> bool:
        """Start streaming to ``request``: the whole board first, then each change."""
        if len(self._streams) >= self.limit:
            return False
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"x-accel-buffering", b"no")
        self._streams[request] = session
        request.notifyFinish().addBoth(lambda _: self._streams.pop(request, None))
        # retry: the browser's reconnect delay (ms) after the stream drops.
        request.write(b"retry: 2000\n\n")
        self._write(request, "snapshot", self.board.rows() if self.board.loaded else None)
        return True

    def _changed(self, kind: str, data: dict) -> None:
        if not self._streams:
            return
        if kind == "snapshot":
            data = self.board.rows()
        # Encoded once for every stream, and sent with the other changes of the same
        # ``batch`` seconds in one write per stream: a storm of changes costs a write per
        # stream and interval, not per change.
        self._pending.append(_event(kind, data))
        if self._flush is None:
            self._flush = self.clock.callLater(self.batch, self._send_pending)

    def _send_pending(self) -> None:
        self._flush = None
        events, self._pending = b"".join(self._pending), []
        for request in list(self._streams):
            self._send(request, events)

    def _write(self, request: server.Request, kind: str, data) -> None:
        self._send(request, _event(kind, data))

    def _send(self, request: server.Request, event: bytes) -> None:
        try:
            request.write(event)
        except Exception:
            self._streams.pop(request, None)

    def _ping(self) -> None:
        now = self.clock.seconds()
        for request, session in list(self._streams.items()):
            if session is not None and session.expires <= now:
                self._end(request)
            else:
                try:
                    request.write(b": ping\n\n")
                except Exception:
                    self._streams.pop(request, None)

    def _end(self, request: server.Request) -> None:
        self._streams.pop(request, None)
        try:
            request.finish()
        except Exception:
            pass


class ConsoleResource(resource.Resource):
    """Every route of the console (see the module's list)."""

    isLeaf = True
    log = Logger()

    def __init__(self, *, board: AlarmBoard, reader, users: IAuthenticator,
                 store=None, silences=None,
                 sessions: ISessionStore, sender: CommandSender, streams: EventStreams,
                 anonymous_view: bool, tls: bool, statuses=None,
                 clock: Callable[[], float] | None = None, version: str = "",
                 proxy_header: str = "", proxy_addresses: tuple = (),
                 proxy_role: str = "none", counters=None) -> None:
        super().__init__()
        self.board = board
        self.reader = reader
        self.store = store
        #: A :class:`connector_console.silences.SilenceStore`, or None (no page).
        self.silences = silences
        self.users = users
        self.sessions = sessions
        self.sender = sender
        self.streams = streams
        self.anonymous_view = anonymous_view
        self.tls = tls
        self.statuses = statuses
        self.clock = clock or time.time
        self.throttle = LoginThrottle(self.clock)
        #: logins, logins_failed, logins_throttled, commands_sent, commands_refused.
        self.counters = counters if counters is not None else Counters("console")
        self.proxy_header = proxy_header.encode() if proxy_header else None
        self.proxy_addresses = frozenset(proxy_addresses)
        self.proxy_role = proxy_role
        #: Sessions of the users a trusted proxy names, by name (they never log in here).
        self._proxied: dict[str, Session] = {}
        self._proxy_secret = secrets.token_bytes(32)
        self.version = version
        self.templates = Environment(loader=PackageLoader("connector_console", "templates"),
                                     autoescape=select_autoescape(default=True),
                                     trim_blocks=True, lstrip_blocks=True)
        #: (method, first path segment) -> handler(request, rest of the path).
        self._routes: dict[tuple[str, str], Callable] = {
            ("GET", ""): self.board_page, ("HEAD", ""): self.board_page,
            ("GET", "login"): self.login_form, ("POST", "login"): self.login,
            ("POST", "logout"): self.logout, ("GET", "events"): self.events,
            ("GET", "api"): self.api, ("GET", "connectors"): self.connectors_page,
            ("GET", "alarm"): self.alarm_page, ("POST", "alarm"): self.command,
            ("GET", "device"): self.device_page,
            ("GET", "silences"): self.silences_page, ("POST", "silences"): self.silence_command,
        }
        self.templates.filters["iso"] = iso
        self.templates.globals["SEVERITIES"] = SEVERITIES

    # --- dispatch -----------------------------------------------------------------

    def render(self, request: server.Request):
        for name, value in _HEADERS.items():
            request.setHeader(name, value)
        if self.tls:
            # Browsers then refuse plain HTTP to this console, where the cookie would leak.
            request.setHeader(b"strict-transport-security", b"max-age=31536000")
        path = [p.decode("utf-8", "replace") for p in request.postpath]
        if path and path[-1] == "" and len(path) > 1:
            path = path[:-1]
        method = request.method.decode("ascii", "replace")
        first = path[0] if path else ""
        handler = self._routes.get((method, first))
        if handler is None:
            if any(p == first for _, p in self._routes):
                return self.refuse(request, 405, "Method not allowed",
                                   f"{method} is not accepted here.")
            return self.refuse(request, 404, "Not found", "There is no such page.")
        try:
            result = handler(request, path[1:])
        except Exception:
            self.log.failure("console: {method} {path} failed", method=method,
                             path="/".join(path))
            return self.refuse(request, 500, "Error", "The console failed to answer; its "
                               "log says why.")
        if isinstance(result, defer.Deferred):
            result.addErrback(self._failed, request)
            return server.NOT_DONE_YET
        return result

    def _failed(self, failure, request: server.Request) -> None:
        self.log.failure("console: request failed", failure)
        _reply(request, self.refuse(request, 500, "Error", "The console failed to answer; "
                                    "its log says why."))

    # --- sessions -------------------------------------------------------------------

    def session(self, request: server.Request) -> Session | None:
        """The request's live session, if any: the user a trusted proxy names, else the
        session of the request's cookie."""
        if self.proxy_header is not None:
            raw = request.getHeader(self.proxy_header)
            if raw is not None:
                name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                client = request.getClientAddress().host
                if client in self.proxy_addresses:
                    return self._proxy_session(name)
                # Anyone can send the header: only the proxies are believed.
                self.log.warn("console: {header} from {client} ignored (not in [console] "
                              "proxy_addresses)", header=self.proxy_header.decode(),
                              client=client)
        return self.sessions.get(request.getCookie(SESSION_COOKIE))

    def _proxy_session(self, name: str) -> Session | None:
        """The session of the user the proxy names (made at its first request)."""
        if not NAME_RE.fullmatch(name):
            return None
        session = self._proxied.get(name)
        if session is not None and self.sessions.get(session.token) is session:
            return session
        role = self.users.role(name)
        if role is None:
            role = None if self.proxy_role == "none" else self.proxy_role
        if role is None:
            self.log.warn("console: {name}, named by the proxy, is not a console user",
                          name=name)
            return None
        session = self._proxied[name] = self.sessions.open(User(name, role))
        # The same CSRF token for the user's every session: a page the proxy's user still
        # has open keeps working when the session behind it is renewed.
        session.csrf = hmac.new(self._proxy_secret, name.encode(), "sha256").hexdigest()
        self.log.info("console: {name} ({role}) named by the proxy", name=name, role=role)
        return session

    def viewer(self, request: server.Request) -> tuple[Session | None, bytes | None]:
        """(session, None) when the request may read; (None, the refusal page) else."""
        session = self.session(request)
        if session is not None or self.anonymous_view:
            return session, None
        expired = request.getCookie(SESSION_COOKIE) is not None
        return None, self.login_page(
            request, 401, "Your session has expired: log in again." if expired
            else "Log in to see the console.")

    def operator(self, request: server.Request, *, back: str, log_in_to: str, kind: str,
                 undone: str, tried: str, operators_do: str
                 ) -> tuple[Session, None] | tuple[None, bytes]:
        """(session, None) when the request may change something: a session, the form's
        CSRF token, an operator; else (None, the refusal page), each refusal counted in
        ``commands_refused`` and logged.

        The wording is the action's: the login page says "Log in to ``log_in_to``." and
        comes back to ``back``; a bad token is a "``kind`` refused" and "nothing was
        ``undone``"; a viewer "tried to ``tried``", and "only operators ``operators_do``".
        """
        session = self.session(request)
        if session is None:
            expired = request.getCookie(SESSION_COOKIE) is not None
            return None, self.login_page(request, 401, "Your session has expired: log in "
                                         "again." if expired else f"Log in to {log_in_to}.",
                                         back)
        name = session.user.name
        if not session.csrf_ok(_arg(request, "csrf")):
            self.counters.inc("commands_refused")
            self.log.warn("console: {name}: {kind} refused, missing or wrong CSRF token",
                          name=name, kind=kind)
            return None, self.refuse(request, 403, "Refused", "This form did not come from "
                                     "your console session (missing or wrong CSRF token): "
                                     f"nothing was {undone}.")
        if not session.user.operator:
            self.counters.inc("commands_refused")
            self.log.warn("console: {name} (viewer) tried to {tried}", name=name, tried=tried)
            return None, self.refuse(request, 403, "Refused", f"{name} is a viewer: only "
                                     f"operators {operators_do}.")
        return session, None

    def _cookie(self, request: server.Request, name: bytes, value: str, max_age: int | None,
                path: bytes = b"/") -> None:
        request.addCookie(name, value, path=path, httpOnly=True, secure=self.tls or None,
                          sameSite="strict", max_age=None if max_age is None else str(max_age))

    def page(self, request: server.Request, template: str, code: int = 200, **values) -> bytes:
        """Render a page (HTML, UTF-8)."""
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        session = values.pop("session", None)
        return self.templates.get_template(template).render(
            session=session, user=session.user if session else None,
            csrf=session.csrf if session else "", version=self.version, **values,
        ).encode("utf-8")

    def refuse(self, request: server.Request, code: int, title: str, text: str) -> bytes:
        """A page saying why the request is refused."""
        try:
            session = self.session(request)
        except Exception:
            session = None  # the page saying why must not fail for the same reason
        return self.page(request, "error.html", code, title=title, text=text, session=session)

    # --- login ----------------------------------------------------------------------

    def login_page(self, request: server.Request, code: int, text: str = "",
                   next_path: str = "") -> bytes:
        """The login form, with a fresh login CSRF token (doubled in a cookie)."""
        token = secrets.token_urlsafe(32)
        self._cookie(request, LOGIN_COOKIE, token, 600, path=b"/login")
        if not next_path:
            next_path = request.uri.decode("utf-8", "replace")
        return self.page(request, "login.html", code, text=text, login_csrf=token,
                         next=_local(next_path))

    def login_form(self, request: server.Request, rest: list[str]) -> bytes:
        next_path = _arg(request, "next") or "/"
        if self.session(request) is not None:
            _see_other(request, _local(next_path).encode())
            return b""
        return self.login_page(request, 200, next_path=next_path)

    def login(self, request: server.Request, rest: list[str]):
        cookie = request.getCookie(LOGIN_COOKIE)
        given = _arg(request, "csrf")
        next_path = _local(_arg(request, "next") or "/")
        if not cookie or not given or not secrets.compare_digest(cookie.decode("ascii", "replace"),
                                                                given):
            return self.login_page(request, 403, "The form had expired or did not come from "
                                   "this console: try again.", next_path)
        name, password = _arg(request, "name"), _arg(request, "password")
        if not name or not password or len(name) > CREDENTIAL_MAX \
                or len(password) > CREDENTIAL_MAX:
            return self.login_page(request, 401, "Wrong name or password.", next_path)
        client = request.getClientAddress().host
        wait = self.throttle.wait(name, client)
        if wait > 0:
            self.counters.inc("logins_throttled")
            self.log.warn("console: login for {name!r} from {client} refused: too many "
                          "failed logins", name=name, client=client)
            minutes = max(1, round(wait / 60))
            return self.login_page(request, 429, "Too many failed logins for this name or "
                                   f"from this address: try again in {minutes} "
                                   f"minute{'s' * (minutes != 1)}.", next_path)
        d = threads.deferToThread(self.users.authenticate, name, password)

        def checked(user: User | None) -> None:
            if user is None:
                self.counters.inc("logins_failed")
                self.throttle.failed(name, client)
                self.log.info("console: failed login for {name!r} from {client}", name=name,
                              client=client)
                body = self.login_page(request, 401, "Wrong name or password.", next_path)
            else:
                self.counters.inc("logins")
                self.throttle.succeeded(name)
                session = self.sessions.open(user)
                self._cookie(request, SESSION_COOKIE, session.token,
                             int(self.sessions.lifetime))
                self._cookie(request, LOGIN_COOKIE, "", 0, path=b"/login")
                self.log.info("console: {name} ({role}) logged in from {client}",
                              name=user.name, role=user.role,
                              client=request.getClientAddress().host)
                _see_other(request, next_path.encode())
                body = b""
            _reply(request, body)

        return d.addCallback(checked)

    def logout(self, request: server.Request, rest: list[str]) -> bytes:
        session = self.session(request)
        if session is not None:
            if not session.csrf_ok(_arg(request, "csrf")):
                return self.refuse(request, 403, "Refused", "This form did not come from "
                                   "your console session (missing or wrong CSRF token).")
            self.sessions.close(session.token)
        self._cookie(request, SESSION_COOKIE, "", 0)
        _see_other(request, b"/login")
        return b""

    # --- pages ----------------------------------------------------------------------

    def board_page(self, request: server.Request, rest: list[str]) -> bytes:
        session, refusal = self.viewer(request)
        if refusal is not None:
            return refusal
        filters = {k: _arg(request, k) or "" for k in ("severity", "host", "text", "acked")}
        rows = filter_rows(self.board.rows(), **filters)
        # The page's script draws every alarm from the event stream; the HTML carries the
        # worst ones only, so that a board of thousands is quick to send and to show.
        return self.page(request, "board.html", session=session, rows=rows[:PAGE_ROWS],
                         matching=len(rows), total=len(self.board), filters=filters,
                         loaded=self.board.loaded)

    def connectors_page(self, request: server.Request, rest: list[str]) -> bytes:
        session, refusal = self.viewer(request)
        if refusal is not None:
            return refusal
        rows = self.statuses.rows(self.clock()) if self.statuses is not None else []
        return self.page(request, "connectors.html", session=session, rows=rows)

    def api(self, request: server.Request, rest: list[str]) -> bytes:
        session, refusal = self.viewer(request)
        if refusal is not None:
            return refusal
        if rest == ["samples"]:
            return self.api_samples(request)
        if rest != ["alarms"]:
            return self.refuse(request, 404, "Not found", "There is no such page.")
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.board.rows()).encode()

    def api_samples(self, request: server.Request):
        """One metric and index of a host over a range: ``{"ts": [...], "values": [...]}``,
        raw samples or, for a long range, rollups (then ``min`` and ``max`` too); which,
        in ``resolution`` and ``label`` (see :meth:`StoreReader.samples`)."""
        from centaure_shared.storage.query import QueryError

        request.setHeader(b"content-type", b"application/json")
        host, metric = _arg(request, "host") or "", _arg(request, "metric") or ""
        index = _arg(request, "index") or ""
        try:
            start, end = float(_arg(request, "start") or ""), float(_arg(request, "end") or "")
        except ValueError:
            start = end = float("nan")
        if not host or not metric or self.store is None or not (start <= end):
            request.setResponseCode(400)
            return json.dumps({"error": "host, metric, start and end (UNIX seconds, start "
                                        "not after end) are needed"}).encode()

        def done(graph) -> None:
            _reply(request, json.dumps(graph.as_json()).encode())

        def failed(failure) -> None:
            if failure.check(QueryError):
                request.setResponseCode(404)
                body = json.dumps({"error": str(failure.value)}).encode()
            elif failure.check(sa.exc.SQLAlchemyError):
                request.setResponseCode(503)
                body = json.dumps({"error": "the samples cannot be read now"}).encode()
                self.log.warn("console: samples of {host} unreadable: {error}", host=host,
                              error=error_summary(failure.value))
            else:
                return failure
            _reply(request, body)

        d = threads.deferToThread(self.store.samples, host, metric, index, start, end)
        return d.addCallbacks(done, failed)

    def device_page(self, request: server.Request, rest: list[str]):
        session, refusal = self.viewer(request)
        if refusal is not None:
            return refusal
        host = _arg(request, "host") or ""
        if not host or self.store is None:
            return self.refuse(request, 404, "Not found", "Which device? (device?host=NAME)")
        span = _arg(request, "range") or "1h"
        if span not in RANGES:
            span = "1h"
        alarms = [r for r in self.board.rows() if r["host"] == host]

        def read() -> dict | None:
            try:
                return self.store.device(host)
            except sa.exc.SQLAlchemyError as e:
                return {"latest": [], "events": [],
                        "error": error_summary(e)}

        def found(data: dict | None) -> None:
            if data is None and not alarms:
                body = self.refuse(request, 404, "Not found",
                                   f"Nothing is stored about {host!r}.")
            else:
                data = data or {"latest": [], "events": []}
                series = sorted({(r.metric, r.index) for r in data["latest"]
                                 if isinstance(r.value, (int, float))})
                metric, index = _arg(request, "metric"), _arg(request, "index") or ""
                if (metric, index) not in series:
                    metric, index = series[0] if series else (None, "")
                end = self.clock()
                body = self.page(request, "device.html", session=session, host=host,
                                 alarms=alarms, series=series, metric=metric, index=index,
                                 span=span, ranges=RANGES, start=end - RANGES[span], end=end,
                                 **data)
            _reply(request, body)

        return threads.deferToThread(read).addCallback(found)

    def events(self, request: server.Request, rest: list[str]):
        session, refusal = self.viewer(request)
        if refusal is not None:
            return refusal
        if not self.streams.open(request, session):
            return self.refuse(request, 503, "Busy", "Too many live boards are open.")
        return server.NOT_DONE_YET

    def alarm_page(self, request: server.Request, rest: list[str]):
        session, refusal = self.viewer(request)
        if refusal is not None:
            return refusal
        ref = _ref(rest)
        if ref is None:
            return self.refuse(request, 404, "Not found", "An alarm's ref is a number.")

        def read() -> tuple[dict | None, dict]:
            alarm = self.reader.one(ref)
            stored: dict = {"history": None, "notifications": None}
            if alarm is not None and self.store is not None:
                try:
                    stored = {"history": self.store.history(ref),
                              "notifications": self.store.notifications(ref)}
                except sa.exc.SQLAlchemyError as e:
                    # The SQL writer's tables may not be in this database: the page says so.
                    stored["error"] = error_summary(e)
            return alarm, stored

        def found(result: tuple[dict | None, dict]) -> None:
            alarm, stored = result
            if alarm is None:
                body = self.refuse(request, 404, "Not found",
                                   f"The correlator has no alarm {ref}.")
            else:
                cause = self.board.get(alarm["cause_ref"]) if alarm["cause_ref"] else None
                body = self.page(request, "alarm.html", session=session, alarm=alarm,
                                 cause=cause, done=_arg(request, "done") or "", **stored)
            _reply(request, body)

        return threads.deferToThread(read).addCallback(found)

    # --- silences -------------------------------------------------------------------

    def silences_page(self, request: server.Request, rest: list[str]):
        session, refusal = self.viewer(request)
        if refusal is not None:
            return refusal
        if rest or self.silences is None:
            return self.refuse(request, 404, "Not found", "There is no such page.")
        return self._silences_reply(request, session, 200, done=_arg(request, "done") or "")

    def _silences_reply(self, request: server.Request, session: Session | None, code: int,
                        **values) -> defer.Deferred:
        """The silences page (read in a thread), with ``values`` (an error, the form's)."""
        def read() -> dict:
            try:
                return {"silences": self.silences.active()}
            except sa.exc.SQLAlchemyError as e:
                # The alerter creates its tables at its first start: the page says so.
                return {"silences": [], "error_read": error_summary(e)}

        def found(data: dict) -> None:
            _reply(request, self.page(request, "silences.html", code, session=session,
                                      now=self.clock(), **data, **values))

        return threads.deferToThread(read).addCallback(found)

    def silence_command(self, request: server.Request, rest: list[str]):
        """``POST /silences`` (add) or ``POST /silences/<id>/expire``: operators only."""
        session, refusal = self.operator(
            request, back="/silences", log_in_to="set silences", kind="silence",
            undone="changed", tried="change silences", operators_do="add or expire silences")
        if refusal is not None:
            return refusal
        if self.silences is None:
            return self.refuse(request, 404, "Not found", "There is no such page.")
        if rest == []:
            return self._add_silence(request, session)
        if len(rest) == 2 and rest[1] == "expire" and rest[0].isdigit() and len(rest[0]) <= 18:
            return self._expire_silence(request, session, int(rest[0]))
        return self.refuse(request, 404, "Not found", "There is no such page.")

    def _add_silence(self, request: server.Request, session: Session):
        fields = {k: _arg(request, k) or "" for k in ("host", "name", "duration", "comment")}
        try:
            form = check_form(fields)
        except ValueError as e:
            return self._silences_reply(request, session, 400, form_error=str(e), form=fields)

        def added(silence) -> None:
            self.counters.inc("silences_added")
            self.log.info("console: {name} silenced {what} until {until} UTC (silence {id})",
                          name=session.user.name, what=silence.describe(),
                          until=iso(silence.ends), id=silence.id)
            _see_other(request, f"/silences?{urlencode({'done': 'added'})}".encode())
            _reply(request, b"")

        d = threads.deferToThread(self.silences.add, form, session.user.name)
        return d.addCallbacks(added, self._silences_unwritable, errbackArgs=(request,))

    def _expire_silence(self, request: server.Request, session: Session, silence_id: int):
        def expired(found: bool) -> None:
            if not found:
                body = self.refuse(request, 404, "Not found", f"There is no active silence "
                                   f"{silence_id} (it may have ended already).")
            else:
                self.counters.inc("silences_expired")
                self.log.info("console: {name} expired silence {id}", name=session.user.name,
                              id=silence_id)
                _see_other(request, f"/silences?{urlencode({'done': 'expired'})}".encode())
                body = b""
            _reply(request, body)

        d = threads.deferToThread(self.silences.expire, silence_id)
        return d.addCallbacks(expired, self._silences_unwritable, errbackArgs=(request,))

    def _silences_unwritable(self, failure, request: server.Request):
        """A database error: a 503 page naming it (other failures go on to a 500)."""
        if not failure.check(sa.exc.SQLAlchemyError):
            return failure
        text = error_summary(failure.value)
        self.log.warn("console: silences not written: {error}", error=text)
        _reply(request, self.refuse(request, 503, "Not saved", "The silences table cannot be "
                                    f"written now ({text}): nothing was changed."))

    # --- commands -------------------------------------------------------------------

    def command(self, request: server.Request, rest: list[str]):
        ref = _ref(rest[:1])
        session, refusal = self.operator(
            request, back=f"/alarm/{ref}" if ref is not None else "/",
            log_in_to="act on alarms", kind="command", undone="sent",
            tried=f"command alarm {ref}", operators_do="ack, unack, clear or annotate alarms")
        if refusal is not None:
            return refusal
        if ref is None or rest[1:] != ["command"]:
            return self.refuse(request, 404, "Not found", "There is no such page.")
        action = _arg(request, "action") or ""
        note = (_arg(request, "note") or "").strip() or None
        problem = self.sender.check(action, note)
        if problem is not None:
            return self.refuse(request, 400, "Not sent", problem)

        async def run() -> None:
            alarm = self.board.get(str(ref))
            if alarm is None:
                alarm = await threads.deferToThread(self.reader.one, ref)
            if alarm is None:
                body = self.refuse(request, 404, "Not found",
                                   f"The correlator has no alarm {ref}.")
            else:
                await self.sender.send(ref, alarm["host"], action, session.user.name, note)
                self.counters.inc("commands_sent")
                self.log.info("console: {name} sent {action} of alarm {ref} ({host})",
                              name=session.user.name, action=action, ref=ref,
                              host=alarm["host"])
                _see_other(request, f"/alarm/{ref}?{urlencode({'done': action})}".encode())
                body = b""
            _reply(request, body)

        return defer.ensureDeferred(run())


def _reply(request: server.Request, body: bytes) -> None:
    """Send ``body`` and end a response given later, unless the client has gone."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.write(body)
    request.finish()


def _see_other(request: server.Request, location: bytes) -> None:
    """303 See Other: the browser GETs ``location`` (after a POST, never resends it)."""
    request.setResponseCode(303)
    request.setHeader(b"location", location)


def _arg(request: server.Request, name: str) -> str | None:
    """A query or form field as text (the first of its values), or None."""
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _ref(parts: list[str]) -> int | None:
    """An alarm's ref from the path (an unsigned 64-bit number), or None."""
    if len(parts) < 1 or not parts[0].isdigit() or len(parts[0]) > 20:
        return None
    ref = int(parts[0])
    return ref if ref < 2**64 else None


def _local(path: str) -> str:
    """``path`` when it stays on this site (``/...``, not ``//host``), else ``/``."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path \
            or any(c in path for c in "\r\n"):
        return "/"
    return path


def static_root() -> static.File:
    """The stylesheet and script shipped in the package."""
    folder = resources.files("connector_console") / "static"
    return static.File(str(folder))


def make_console_site(console: ConsoleResource) -> server.Site:
    """The site: ``/static/`` from the package, every other path to ``console``."""

    class Root(resource.Resource):
        """``/static`` or the console's routes."""

        def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
            if path == b"static":
                return static_root()
            request.postpath.insert(0, path)
            request.prepath.pop()
            return console

        def render(self, request: server.Request):
            return console.render(request)

    site = server.Site(Root())
    site.displayTracebacks = False
    return site
