"""SMTP credentials never go in clear: a relay without STARTTLS gets no AUTH (issue 18, finding 4)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.cred import checkers, portal
from twisted.internet import reactor
from twisted.mail import smtp

from connector.settings import Secret
from connector_alerter import channels
from tests.integration.test_notify_smtp_tls import _Realm, message
from tests.smtpserver import MailDelivery

pytestmark = pytest.mark.integration


def start_plain_server(inbox, lines):
    """An ESMTP server offering AUTH LOGIN but no STARTTLS (as after a MITM strips it)."""
    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(alerter=b"s3cret")
    the_portal = portal.Portal(_Realm(MailDelivery(inbox)), [checker])
    factory = smtp.SMTPFactory()

    class Recording(smtp.ESMTP):
        def lineReceived(self, line):
            lines.append(line)
            return super().lineReceived(line)

    def build(addr):
        p = Recording()
        p.factory = factory
        p.portal = the_portal
        p.challengers = {b"LOGIN": smtp.LOGINCredentials}
        p.host = b"localhost"
        return p
    factory.buildProtocol = build
    return reactor.listenTCP(0, factory, interface="127.0.0.1")


def _kw(port, **more):
    return dict(host="127.0.0.1", port=port.getHost().port, sender="centaure@example.com",
                recipients=["noc@example.com"], message=message(), timeout=10, **more)


@pytest_twisted.ensureDeferred
async def test_no_auth_in_clear_with_starttls_auto():
    inbox, lines = [], []
    port = start_plain_server(inbox, lines)
    try:
        with pytest.raises(channels.DeliveryError) as e:
            await channels.send_email(reactor, username="alerter", password=Secret("s3cret"),
                                      starttls="auto", **_kw(port))
        assert not any(line.upper().startswith(b"AUTH") for line in lines), lines
        assert not any(b"s3cret" in line or b"czNjcmV0" in line for line in lines)
        assert inbox == []
        assert "STARTTLS" in e.value.reason and "s3cret" not in e.value.reason
        assert e.value.retryable  # retried per the delivery policy, then failed for good
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_starttls_never_with_a_user_sends_no_auth_either():
    inbox, lines = [], []
    port = start_plain_server(inbox, lines)
    try:
        with pytest.raises(channels.DeliveryError):
            await channels.send_email(reactor, username="alerter", password=Secret("s3cret"),
                                      starttls="never", **_kw(port))
        assert not any(line.upper().startswith(b"AUTH") for line in lines), lines
        assert inbox == []
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_without_a_user_auto_still_sends_in_clear():
    from tests.smtpserver import SmtpServer

    server = SmtpServer()  # no STARTTLS, no authentication
    server.start()
    try:
        await channels.send_email(reactor, starttls="auto", **_kw(server.listening))
        assert len(server.inbox) == 1
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_explicit_allow_plain_auth_sends_and_warns():
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    inbox, lines = [], []
    port = start_plain_server(inbox, lines)
    try:
        await channels.send_email(reactor, username="alerter", password=Secret("s3cret"),
                                  starttls="auto", allow_plain_auth=True, **_kw(port))
        assert len(inbox) == 1
        assert any(line.upper().startswith(b"AUTH") for line in lines)
        assert any("allow_plain_auth" in (ev.get("log_format") or "") for ev in events)
    finally:
        globalLogPublisher.removeObserver(events.append)
        await port.stopListening()
