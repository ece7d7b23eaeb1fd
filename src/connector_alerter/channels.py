"""Delivery channels: email (Twisted's ESMTP client), webhook (``Agent`` POST), command.

Each sender returns a Deferred that fires on success or fails with
:class:`DeliveryError`, whose ``retryable`` says whether trying again later
may help (relay down, 4xx, HTTP 5xx/429/408, timeout, EX_TEMPFAIL) or not
(5xx SMTP reply, HTTP 4xx, a command that exits with another code).

Emails go through a :class:`Mailer`: one relay, a few SMTP sessions each
sending many queued messages (a burst costs a few EHLO/STARTTLS/AUTH
exchanges, not one per mail); :func:`send_email` sends one.

Every message carries its idempotency key: email headers ``Idempotency-Key``
and ``X-Centaure-Idempotency-Key`` and a ``Message-ID`` derived from it (mail
systems drop a second copy with the same Message-ID); webhook headers of the
same names. A webhook with a secret is signed over a timestamp and the body:
``X-Centaure-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
(:func:`sign`). The receiver recomputes the HMAC of ``<t>.<body>`` with the
shared secret, compares it in constant time, and rejects the request when
``|now - t|`` exceeds 300 s (:func:`verify_signature`): a captured request
cannot be replayed later. Each attempt (retries too) is signed afresh.
Secrets (SMTP password, HMAC keys) never appear in errors or logs.

A command runs with a minimal environment (:func:`command_environment`):
the alerter's own may hold the ``env:`` secrets of its settings (broker and
database URLs, SMTP password), which a notification script has no use for.
It gets ``PATH`` (the system's default when unset), ``HOME``, ``TMPDIR``,
``TZ``, ``LANG``, ``LANGUAGE`` and ``LC_*`` (what programs need to find
their files and print text), plus what its route's ``command_env`` names.

SMTP credentials travel only over TLS with the relay's certificate verified:
STARTTLS, or implicit TLS when the port is 465. A relay that offers no
STARTTLS (or a man in the middle that strips it) gets no ``AUTH``: the send
fails (retryable) unless the :class:`Mailer` is given ``allow_plain_auth``
(which logs a warning when the Mailer is made). Without
a user name, ``starttls = auto`` still sends in clear to such a relay.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Mapping, Sequence

from twisted.internet import defer, error as net_error, protocol
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python import failure
from zope.interface import Attribute, Interface, implementer

__all__ = ["INotifierChannel", "EmailChannel", "WebhookChannel", "CommandChannel",
           "DeliveryError", "Mailer", "send_email", "build_email", "post_webhook", "run_command", "sign",
           "verify_signature", "SIGNATURE_HEADER", "SIGNATURE_TOLERANCE", "KEY_HEADERS",
           "COMMAND_ENV_PASSED", "command_environment"]

SIGNATURE_HEADER = "X-Centaure-Signature"
#: Headers carrying the idempotency key (the common name and ours).
KEY_HEADERS = ("Idempotency-Key", "X-Centaure-Idempotency-Key")
#: sysexits.h EX_TEMPFAIL: a command's way to ask for a retry.
EX_TEMPFAIL = 75
#: The SMTP port of implicit TLS (RFC 8314 submissions): TLS from the first byte.
SMTPS_PORT = 465
#: Variables of the alerter's environment a command gets (and every ``LC_*``).
COMMAND_ENV_PASSED = ("PATH", "HOME", "TMPDIR", "TZ", "LANG", "LANGUAGE")

_log = Logger()


class DeliveryError(Exception):
    """A failed delivery; ``retryable`` when a later attempt may succeed."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (net_error.ConnectError, net_error.ConnectionLost,
                            net_error.ConnectionDone, net_error.TimeoutError,
                            defer.TimeoutError, defer.CancelledError, ConnectionError,
                            TimeoutError, OSError))


# --- email ------------------------------------------------------------------------


def build_email(sender: str, recipients: Sequence[str], subject: str, text: str, html: str,
                idempotency_key: str, now: float) -> bytes:
    """The MIME message: text and HTML alternatives, key headers, a Message-ID from the key."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate(now, usegmt=True)
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    domain = sender.rpartition("@")[2] or "centaure"
    msg["Message-ID"] = f"<{digest}@{domain}>"
    for h in KEY_HEADERS:
        msg[h] = idempotency_key
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def _smtp_failure(f) -> None:
    exc = f.value
    if isinstance(exc, DeliveryError):
        raise exc
    if isinstance(exc, smtp.SMTPClientError):
        code = exc.code or 0
        # 5xx is a permanent refusal (RFC 5321), except 421 "closing" style
        # replies some relays send as 5xx-less; 4xx and no code: try again.
        permanent = 500 <= code < 600
        text = exc.resp.decode("utf-8", "replace") if isinstance(exc.resp, bytes) else exc.resp
        raise DeliveryError(f"SMTP {code or ''} {text}".strip()[:500], not permanent)
    if _transient(exc):
        raise DeliveryError(f"SMTP relay unreachable: {exc.__class__.__name__}: {exc}"[:500], True)
    raise DeliveryError(f"SMTP: {exc.__class__.__name__}: {exc}"[:500], True)


def send_email(reactor, *, host: str, port: int, sender: str, recipients: Sequence[str],
               message: bytes, username: str = "", password: Any = None,
               starttls: str = "auto", timeout: float = 30.0,
               tls_options: Any = None, allow_plain_auth: bool = False,
               implicit_tls: bool | None = None) -> defer.Deferred:
    """Send ``message`` (bytes, see :func:`build_email`) through the relay ``host:port``.

    ``starttls``: ``auto`` (when offered), ``always`` (refuse a relay without
    it), ``never``. ``password`` is a :class:`connector.settings.Secret` (or a
    string); authentication happens when ``username`` is set, over TLS only
    unless ``allow_plain_auth``. ``implicit_tls``: TLS from the connection's
    start (None: when ``port`` is 465). ``tls_options`` replaces the default
    client TLS options (tests: a private CA).
    """
    # A session of its own: the Mailer, for one message.
    mailer = Mailer(reactor, host=host, port=port, username=username, password=password,
                    starttls=starttls, timeout=timeout, tls_options=tls_options, connections=1,
                    allow_plain_auth=allow_plain_auth, implicit_tls=implicit_tls)
    return mailer.send(sender, recipients, message)


# --- webhook ----------------------------------------------------------------------


#: A receiver rejects a signature whose timestamp is further than this from its clock.
SIGNATURE_TOLERANCE = 300


def _hmac(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: float | None = None) -> str:
    """The signature header's value: ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.

    ``timestamp``: the signing time (default: now), in whole seconds.
    """
    import time

    key = secret.encode() if isinstance(secret, str) else secret
    t = int(time.time() if timestamp is None else timestamp)
    return f"t={t},v1={_hmac(key, t, body)}"


def verify_signature(secret: str | bytes, body: bytes, header: str, *,
                     now: float | None = None,
                     tolerance: float = SIGNATURE_TOLERANCE) -> bool:
    """The receiver's check: True when ``header`` signs ``body`` with ``secret``
    (recomputed, compared in constant time) at a time within ``tolerance``
    seconds of ``now`` (default: the current time)."""
    import time

    key = secret.encode() if isinstance(secret, str) else secret
    t, sigs = None, []
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            t = int(value)
        elif name == "v1":
            sigs.append(value)
    if t is None or not sigs:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = _hmac(key, t, body)
    return any(hmac.compare_digest(expected, s) for s in sigs)


async def _post(reactor, url: str, body: bytes, headers: Mapping[str, str], timeout: float,
                agent) -> int:
    from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
    from twisted.web.http_headers import Headers

    if agent is None:
        # Not persistent: a webhook is rare, and a stale kept-alive connection
        # would turn into a spurious failure.
        agent = Agent(reactor, connectTimeout=timeout,
                      pool=HTTPConnectionPool(reactor, persistent=False))
    hdrs = Headers({k.encode(): [v.encode()] for k, v in headers.items()})
    d = agent.request(b"POST", url.encode(), hdrs, FileBodyProducer(io.BytesIO(body)))
    d.addTimeout(timeout, reactor)
    response = await d
    # Read (and drop) the body so that the connection closes cleanly; the
    # status is what counts.
    done: defer.Deferred = defer.Deferred()
    response.deliverBody(_Discard(done))
    done.addTimeout(timeout, reactor)
    try:
        await done
    except Exception:
        pass
    return response.code


class _Discard(protocol.Protocol):
    def __init__(self, done: defer.Deferred) -> None:
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if not self.done.called:
            self.done.callback(None)


def post_webhook(reactor, url: str, body: bytes, *, idempotency_key: str,
                 secret: Any = None, timeout: float = 10.0, agent=None) -> defer.Deferred:
    """POST ``body`` (JSON) to ``url``; fires with the HTTP status on 2xx.

    ``secret`` (a Secret or a string) signs the current time and the body
    (:func:`sign`, the reactor's clock). 5xx, 429, 408 and
    timeouts/connection errors are retryable; other statuses are not.
    """
    headers = {"Content-Type": "application/json", "User-Agent": "Centaure-alerter/1"}
    for h in KEY_HEADERS:
        headers[h] = idempotency_key
    if secret is not None:
        key = secret.reveal() if hasattr(secret, "reveal") else secret
        headers[SIGNATURE_HEADER] = sign(key, body, reactor.seconds())

    def check(code: int) -> int:
        if 200 <= code < 300:
            return code
        raise DeliveryError(f"HTTP {code}", code >= 500 or code in (408, 425, 429))

    def failed(f):
        if f.check(DeliveryError):
            return f
        exc = f.value
        # ResponseNeverReceived & co carry the underlying failures in .reasons.
        inner = [getattr(r, "value", r) for r in getattr(exc, "reasons", None) or ()]
        if any(isinstance(e, (defer.TimeoutError, defer.CancelledError))
               for e in [exc] + inner):
            raise DeliveryError(f"no answer within {timeout:g}s", True)
        # ResponseFailed & co wrap the connection errors: all worth a retry.
        raise DeliveryError(f"{exc.__class__.__name__}: {exc}"[:500], True)

    d = defer.ensureDeferred(_post(reactor, url, body, headers, timeout, agent))
    d.addCallback(check)
    d.addErrback(failed)
    return d


# --- command ----------------------------------------------------------------------


class _CommandProtocol(protocol.ProcessProtocol):
    def __init__(self, payload: bytes, done: defer.Deferred) -> None:
        self.payload = payload
        self.done = done
        self.stderr = b""
        self.timed_out = False

    def connectionMade(self) -> None:
        self.transport.write(self.payload)
        self.transport.closeStdin()

    def errReceived(self, data: bytes) -> None:
        if len(self.stderr) < 2000:
            self.stderr += data[:2000]

    def processEnded(self, reason) -> None:
        if self.done.called:
            return
        code = getattr(reason.value, "exitCode", None)
        err = self.stderr.decode("utf-8", "replace").strip().splitlines()
        tail = f": {err[-1][:300]}" if err else ""
        if self.timed_out:
            self.done.errback(DeliveryError("command timed out (killed)", True))
        elif code == 0:
            self.done.callback(0)
        elif code is None:
            self.done.errback(DeliveryError(f"command killed by signal "
                                            f"{getattr(reason.value, 'signal', '?')}{tail}", True))
        else:
            self.done.errback(DeliveryError(f"command exited with {code}{tail}",
                                            code == EX_TEMPFAIL))


def command_environment(extra: Mapping[str, str] | None = None,
                        environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A command's environment: :data:`COMMAND_ENV_PASSED` and ``LC_*`` of
    ``environ`` (the process's by default), ``PATH`` defaulting to
    :data:`os.defpath`, then ``extra`` (the route's ``command_env``)."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k in COMMAND_ENV_PASSED or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    env.update(extra or {})
    return env


def run_command(reactor, argv: Sequence[str], payload: Mapping[str, Any],
                timeout: float = 30.0, env: Mapping[str, str] | None = None) -> defer.Deferred:
    """Run ``argv`` with ``payload`` as JSON on stdin; success when it exits 0.

    The command's environment is :func:`command_environment` with ``env``
    added. Exit 75 (EX_TEMPFAIL), a signal or the timeout (the process is
    killed) are retryable; another exit code is not.
    """
    done: defer.Deferred = defer.Deferred()
    proto = _CommandProtocol(json.dumps(payload).encode(), done)
    try:
        transport = reactor.spawnProcess(proto, argv[0], list(argv),
                                         env=command_environment(env))
    except OSError as e:
        return defer.fail(DeliveryError(f"cannot run {argv[0]}: {e.strerror or e}", False))

    def kill() -> None:
        if not done.called:
            proto.timed_out = True
            try:
                transport.signalProcess("KILL")
            except net_error.ProcessExitedAlready:
                pass

    call = reactor.callLater(timeout, kill)
    done.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
    return done


# --- email, several per session ---------------------------------------------------


class _Job:
    """One message waiting for (or going through) a session of a :class:`Mailer`."""

    __slots__ = ("sender", "recipients", "message", "d", "timer")

    def __init__(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        self.sender, self.recipients, self.message = sender, list(recipients), message
        self.d: defer.Deferred = defer.Deferred()
        self.timer = None


def _settle(reactor, job: _Job, result: Any) -> None:
    """Fire ``job``'s Deferred on the next reactor turn (an exception: its failure).

    Not from within the protocol's own call: what waits for the mail may
    queue more mails or stop the relay, and must not run in the middle of
    the session's state change.
    """
    if isinstance(result, BaseException):
        reactor.callLater(0, job.d.errback, failure.Failure(result))
    else:
        reactor.callLater(0, job.d.callback, result)


class _Session(smtp.ESMTPSender):
    """An ESMTP session that sends the :class:`Mailer`'s queued messages one after the other.

    Twisted's client asks ``getMailFrom`` for the next message after each
    one (``RSET`` in between) and quits on None: the queue feeds it. A
    message refused (4xx/5xx on MAIL, RCPT or DATA) fails alone and the
    session goes on; a session error (timeout, TLS or authentication
    refused, connection lost) fails the message in progress.
    """

    def __init__(self, mailer: "Mailer", *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.mailer = mailer
        self.job: _Job | None = None
        self.taken = 0
        self.error: BaseException | None = None
        self.owner: "_SessionFactory | None" = None
        #: True once this side decided to quit (nothing more to send).
        self.done = False

    def esmtpTLSRequired(self, code=-1, resp=None) -> None:
        # Twisted's TLSRequiredError is a 502 (permanent); a relay that stopped
        # offering STARTTLS may be a man in the middle: say so, and retry.
        if self.mailer.username and not self.mailer.allow_plain_auth:
            reason = ("SMTP relay offers no STARTTLS: the credentials are not sent in clear "
                      "(a relay without TLS, or STARTTLS stripped on the way; "
                      "allow_plain_auth would allow it)")
        else:
            reason = "SMTP relay offers no STARTTLS (starttls = always)"
        self.sendError(DeliveryError(reason, True))

    def connectionMade(self) -> None:
        # The body and its final "." are two writes: without this, Nagle
        # holds the "." until the relay's delayed ACK (~40 ms per mail).
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        super().connectionMade()

    def getMailFrom(self):
        job = None
        if not self.done and self.taken < self.mailer.per_session:
            job = self.mailer._take(self)
        self.job = job
        if job is None:
            self.done = True
            return None
        self.taken += 1
        limit = self.mailer.timeout * 3
        # ``timeout`` bounds each wait for the relay (the protocol's idle
        # timeout); this bounds a message that a relay drips out slowly.
        job.timer = self.mailer.reactor.callLater(limit, self._too_long, limit)
        return job.sender

    def getMailTo(self):
        return [r.encode() for r in self.job.recipients]

    def getMailData(self):
        return io.BytesIO(self.job.message)

    def _finish(self) -> _Job | None:
        job, self.job = self.job, None
        if job is not None and job.timer is not None and job.timer.active():
            job.timer.cancel()
        return job

    def sentMail(self, code, resp, numOk, addresses, log) -> None:
        # Nothing waiting now: this session quits (a mail queued from now on
        # opens a new one rather than ride a session on its way out).
        self.done = not self.mailer._waiting()
        job = self._finish()
        if job is None:
            return
        if code not in smtp.SUCCESS:
            errlog = [addr + b": " + b"%03d " % acode + aresp
                      for addr, acode, aresp in addresses if acode not in smtp.SUCCESS]
            _settle(self.mailer.reactor, job,
                    smtp.SMTPDeliveryError(code, resp, b"\n".join(errlog), addresses))
        else:
            _settle(self.mailer.reactor, job, (numOk, addresses))

    def sendError(self, exc) -> None:
        smtp.SMTPClient.sendError(self, exc)
        self.error = exc
        job = self._finish()
        if job is not None:
            _settle(self.mailer.reactor, job, exc)

    def _too_long(self, limit: float) -> None:
        job = self._finish()
        if job is not None:
            self.error = DeliveryError(f"SMTP session took longer than {limit:g}s", True)
            _settle(self.mailer.reactor, job, self.error)
        self.setTimeout(None)
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        super().connectionLost(reason)
        job = self._finish()
        if job is not None:
            self.error = self.error or reason.value
            _settle(self.mailer.reactor, job, reason.value)
        elif not self.done and self.error is None:
            # Closed by the relay before we were done (e.g. at the greeting).
            self.error = reason.value
        self.mailer._ended(self.owner, self.error)


class _SessionFactory(protocol.ClientFactory):
    def __init__(self, mailer: "Mailer") -> None:
        self.mailer = mailer
        self.session: _Session | None = None

    def buildProtocol(self, addr) -> _Session:
        m = self.mailer
        p = _Session(m, m._username, m._secret, m._context, smtp.DNSNAME, 10,
                     hostname=m.host if m.starttls != "never" else None)
        p.heloFallback = False
        p.requireAuthentication = bool(m.username)
        # Credentials only over TLS (unless explicitly allowed in clear).
        p.requireTransportSecurity = m.starttls == "always" or (
            bool(m.username) and not m.allow_plain_auth)
        if m.implicit_tls:
            p._tlsMode = True  # TLS from the first byte: no STARTTLS
        p.timeout = int(max(1, m.timeout))
        p.owner = self
        self.session = p
        return p

    def clientConnectionFailed(self, connector, reason) -> None:
        self.mailer._ended(self, reason.value)


class Mailer:
    """Email through one relay, reusing SMTP sessions: :meth:`send` queues a message.

    Up to ``connections`` sessions run at once, each sending up to
    ``per_session`` queued messages before it quits (a new one takes over):
    a burst of mails costs a few connections (EHLO, STARTTLS, AUTH) rather
    than one per mail. A session that fails before sending anything (relay
    down, TLS or authentication refused) fails every queued message: they
    would all meet the same error. Options as :func:`send_email`.
    """

    def __init__(self, reactor, *, host: str, port: int, username: str = "",
                 password: Any = None, starttls: str = "auto", timeout: float = 30.0,
                 tls_options: Any = None, connections: int = 4,
                 per_session: int = 100, allow_plain_auth: bool = False,
                 implicit_tls: bool | None = None) -> None:
        from twisted.internet import ssl

        self.reactor, self.host, self.port = reactor, host, port
        self.username, self.starttls, self.timeout = username, starttls, timeout
        self.connections, self.per_session = max(1, connections), max(1, per_session)
        self.allow_plain_auth = allow_plain_auth
        self.implicit_tls = port == SMTPS_PORT if implicit_tls is None else implicit_tls
        self._context = None
        if starttls != "never" or self.implicit_tls:
            # optionsForClientTLS verifies the certificate against the host name.
            self._context = tls_options if tls_options is not None \
                else ssl.optionsForClientTLS(host)
        if username and allow_plain_auth and not self.implicit_tls:
            _log.warn("SMTP allow_plain_auth: the SMTP password of {user} may be "
                      "sent in clear to {host}:{port} when the relay offers no STARTTLS",
                      user=username, host=host, port=port)
        secret = password.reveal() if hasattr(password, "reveal") else (password or "")
        self._username = username.encode() if username else None
        self._secret = secret.encode() if username else None
        self._queue: list[_Job] = []
        self._head = 0
        #: Sessions open or opening, and those of them that took no message yet.
        self._sessions: set[Any] = set()
        self._fresh = 0

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> defer.Deferred:
        """Queue ``message``; fires when the relay accepted it, fails with :class:`DeliveryError`."""
        job = _Job(sender, recipients, message)
        self._queue.append(job)
        self._spawn()
        d = job.d
        d.addErrback(_smtp_failure)
        return d

    def _waiting(self) -> int:
        return len(self._queue) - self._head

    def _spawn(self) -> None:
        # One more session while queued messages outnumber the sessions not
        # yet serving one (each of those will take one).
        while self._waiting() > self._fresh and len(self._sessions) < self.connections:
            factory = _SessionFactory(self)
            self._fresh += 1
            if self.implicit_tls:
                connector = self.reactor.connectSSL(self.host, self.port, factory,
                                                    self._context, timeout=self.timeout)
            else:
                connector = self.reactor.connectTCP(self.host, self.port, factory,
                                                    timeout=self.timeout)
            self._sessions.add(factory)
            factory.connector = connector

    def _take(self, session: _Session | None = None) -> _Job | None:
        if self._head >= len(self._queue):
            return None
        if session is not None and session.taken == 0:
            self._fresh -= 1
        job = self._queue[self._head]
        self._queue[self._head] = None  # type: ignore[call-overload]
        self._head += 1
        if self._head > 1024 and self._head * 2 > len(self._queue):
            del self._queue[:self._head]
            self._head = 0
        return job

    def _ended(self, factory: "_SessionFactory", error: BaseException | None) -> None:
        if factory not in self._sessions:
            return
        self._sessions.discard(factory)
        session = factory.session
        if session is None or not session.taken:
            self._fresh -= 1
            if error is not None:
                # Nothing went through this session: the queued mails would
                # meet the same error (relay down, TLS or authentication
                # refused); they fail now and are retried with backoff.
                while True:
                    job = self._take()
                    if job is None:
                        break
                    _settle(self.reactor, job, error)
        self._spawn()


# --- channels: what the notifier dispatches an outbox row to ---------------------------


class INotifierChannel(Interface):
    """One way of delivering an outbox row (``[[routes]] receivers`` channel)."""

    name = Attribute("The channel's name in the routes file and the outbox (``email``...).")
    needs_receiver = Attribute(
        "True when the route's receiver is needed (its secret or argv live in the routes "
        "file only, never in the outbox).")

    def send(row, receiver, route):
        """
        Deliver ``row`` (an ``OutboxRow``); ``receiver`` and ``route`` are the
        route's current ones (None when gone). Returns a Deferred that fails
        with ``DeliveryError``.
        """


@implementer(INotifierChannel)
class EmailChannel:
    """Emails through a shared :class:`Mailer` (made on first use)."""

    name = "email"
    needs_receiver = False

    def __init__(self, mailer: Any, sender: str, clock: Any) -> None:
        #: A callable giving the Mailer: SMTP sessions are opened only when mail is sent.
        self.mailer = mailer
        self.sender = sender
        self.clock = clock

    def send(self, row: Any, receiver: Any, route: Any) -> defer.Deferred:
        """Build the email from the row's payload and queue it on the mailer."""
        message = build_email(self.sender, [row.recipient], row.payload["subject"],
                              row.payload["text"], row.payload["html"], row.idem_key,
                              self.clock())
        return self.mailer().send(self.sender, [row.recipient], message)


@implementer(INotifierChannel)
class WebhookChannel:
    """POSTs the rendered body, signed with the receiver's secret."""

    name = "webhook"
    needs_receiver = True

    def __init__(self, reactor: Any, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout

    def send(self, row: Any, receiver: Any, route: Any) -> defer.Deferred:
        """POST the row's body to its URL."""
        return post_webhook(self.reactor, row.recipient, row.payload["body"].encode("utf-8"),
                            idempotency_key=row.idem_key, secret=receiver.secret,
                            timeout=self.timeout)


@implementer(INotifierChannel)
class CommandChannel:
    """Runs the receiver's command with the notification on its standard input."""

    name = "command"
    needs_receiver = True

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def send(self, row: Any, receiver: Any, route: Any) -> defer.Deferred:
        """Run the command, bounded by the route's command timeout, with its environment."""
        env = {name: value.reveal() for name, value in route.command_env}
        return run_command(self.reactor, receiver.argv, dict(row.payload["notification"]),
                           timeout=route.command_timeout, env=env)
