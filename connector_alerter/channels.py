"""Delivery channels: email (Twisted's ESMTP client), webhook (``Agent`` POST), command.

Each sender returns a Deferred that fires on success or fails with
:class:`DeliveryError`, whose ``retryable`` says whether trying again later
may help (relay down, 4xx, HTTP 5xx/429/408, timeout, EX_TEMPFAIL) or not
(5xx SMTP reply, HTTP 4xx, a command that exits with another code).

Every message carries its idempotency key: email headers ``Idempotency-Key``
and ``X-Centaure-Idempotency-Key`` and a ``Message-ID`` derived from it (mail
systems drop a second copy with the same Message-ID); webhook headers of the
same names. A webhook with a secret is signed: ``X-Centaure-Signature:
sha256=<hex HMAC-SHA256 of the body>`` (:func:`sign`, :func:`verify_signature`).
Secrets (SMTP password, HMAC keys) never appear in errors or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Mapping, Sequence

from twisted.internet import defer, error as net_error, protocol
from twisted.mail import smtp

__all__ = ["DeliveryError", "send_email", "build_email", "post_webhook", "run_command", "sign",
           "verify_signature", "SIGNATURE_HEADER", "KEY_HEADERS"]

SIGNATURE_HEADER = "X-Centaure-Signature"
#: Headers carrying the idempotency key (the common name and ours).
KEY_HEADERS = ("Idempotency-Key", "X-Centaure-Idempotency-Key")
#: sysexits.h EX_TEMPFAIL: a command's way to ask for a retry.
EX_TEMPFAIL = 75


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
               tls_options: Any = None) -> defer.Deferred:
    """Send ``message`` (bytes, see :func:`build_email`) through the relay ``host:port``.

    ``starttls``: ``auto`` (when offered), ``always`` (refuse a relay without
    it), ``never``. ``password`` is a :class:`connector.settings.Secret` (or a
    string); authentication happens when ``username`` is set. ``tls_options``
    replaces the default client TLS options (tests: a private CA).
    """
    from twisted.internet import ssl

    result: defer.Deferred = defer.Deferred()
    context = None
    if starttls != "never":
        context = tls_options if tls_options is not None else ssl.optionsForClientTLS(host)
    secret = password.reveal() if hasattr(password, "reveal") else (password or "")
    factory = smtp.ESMTPSenderFactory(
        username.encode() if username else None, secret.encode() if username else None,
        sender, list(recipients), io.BytesIO(message), result, retries=0,
        timeout=int(max(1, timeout)), contextFactory=context, heloFallback=False,
        requireAuthentication=bool(username), requireTransportSecurity=(starttls == "always"),
        hostname=host)
    connector = reactor.connectTCP(host, port, factory, timeout=timeout)
    # ``timeout`` bounds each wait for the relay (the protocol's idle timeout);
    # this bounds a session that a relay drips out slowly.
    limit = timeout * 3
    result.addTimeout(limit, reactor,
                      onTimeoutCancel=lambda r, t: _timed_out(connector, factory, limit))
    result.addErrback(_smtp_failure)
    return result


def _timed_out(connector, factory, limit: float):
    proto = getattr(factory, "currentProtocol", None)
    if proto is not None and proto.transport is not None:
        proto.setTimeout(None)
        proto.transport.abortConnection()
    connector.disconnect()
    raise DeliveryError(f"SMTP session took longer than {limit:g}s", True)


# --- webhook ----------------------------------------------------------------------


def sign(secret: str | bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str) -> bool:
    """True when ``header`` is ``body``'s signature with ``secret`` (constant time)."""
    return hmac.compare_digest(sign(secret, body), header or "")


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

    ``secret`` (a Secret or a string) signs the body. 5xx, 429, 408 and
    timeouts/connection errors are retryable; other statuses are not.
    """
    headers = {"Content-Type": "application/json", "User-Agent": "Centaure-alerter/1"}
    for h in KEY_HEADERS:
        headers[h] = idempotency_key
    if secret is not None:
        key = secret.reveal() if hasattr(secret, "reveal") else secret
        headers[SIGNATURE_HEADER] = sign(key, body)

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


def run_command(reactor, argv: Sequence[str], payload: Mapping[str, Any],
                timeout: float = 30.0, env: Mapping[str, str] | None = None) -> defer.Deferred:
    """Run ``argv`` with ``payload`` as JSON on stdin; success when it exits 0.

    Exit 75 (EX_TEMPFAIL), a signal or the timeout (the process is killed)
    are retryable; another exit code is not.
    """
    import os

    done: defer.Deferred = defer.Deferred()
    proto = _CommandProtocol(json.dumps(payload).encode(), done)
    try:
        transport = reactor.spawnProcess(proto, argv[0], list(argv),
                                         env=dict(env) if env is not None else dict(os.environ))
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
