"""Email over STARTTLS with authentication, against Twisted's ESMTP server started here."""

from __future__ import annotations


import pytest
import pytest_twisted
from twisted.cred import checkers, portal
from twisted.internet import reactor, ssl
from twisted.mail import smtp
from zope.interface import implementer

from connector.settings import Secret
from connector_alerter import channels
from tests.smtpserver import MailDelivery
from tests.integration.test_tls import make_pki

pytestmark = pytest.mark.integration


@implementer(portal.IRealm)
class _Realm:
    def __init__(self, delivery):
        self.delivery = delivery

    def requestAvatar(self, avatar_id, mind, *interfaces):
        return smtp.IMessageDelivery, self.delivery, lambda: None


def start_server(tmp_path, inbox, tls=True):
    ca, server_pem = make_pki(tmp_path, "smtp")
    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(alerter=b"s3cret")
    the_portal = portal.Portal(_Realm(MailDelivery(inbox)), [checker])
    factory = smtp.SMTPFactory()
    factory.protocol = smtp.ESMTP

    def build(addr):
        p = smtp.ESMTP()
        p.factory = factory
        p.portal = the_portal
        p.challengers = {b"LOGIN": smtp.LOGINCredentials}
        p.host = b"localhost"
        if tls:
            p.ctx = ssl.PrivateCertificate.loadPEM(server_pem).options()
        return p
    factory.buildProtocol = build
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    with open(ca, "rb") as f:
        client_tls = ssl.optionsForClientTLS(
            "localhost", trustRoot=ssl.Certificate.loadPEM(f.read()))
    return port, client_tls


def message():
    return channels.build_email("centaure@example.com", ["noc@example.com"], "subject é",
                                "text body", "<p>html</p>", "1:raised:2.0", 1.0)


@pytest_twisted.ensureDeferred
async def test_starttls_and_auth(tmp_path):
    inbox = []
    port, client_tls = start_server(tmp_path, inbox)
    try:
        kw = dict(host="127.0.0.1", port=port.getHost().port, sender="centaure@example.com",
                  recipients=["noc@example.com"], message=message(), starttls="always",
                  timeout=10, tls_options=client_tls)
        await channels.send_email(reactor, username="alerter", password=Secret("s3cret"), **kw)
        assert len(inbox) == 1
        m = inbox[0]
        assert m["Idempotency-Key"] == "1:raised:2.0"
        with pytest.raises(channels.DeliveryError) as e:
            await channels.send_email(reactor, username="alerter", password=Secret("wrong"),
                                      **kw)
        assert "wrong" not in e.value.reason and "s3cret" not in e.value.reason
        assert not e.value.retryable, e.value.reason  # 535: a setting to fix, not a retry
        assert len(inbox) == 1
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_starttls_always_refuses_a_relay_without_it(tmp_path):
    inbox = []
    port, client_tls = start_server(tmp_path, inbox, tls=False)
    try:
        with pytest.raises(channels.DeliveryError):
            await channels.send_email(reactor, host="127.0.0.1", port=port.getHost().port,
                                      sender="centaure@example.com",
                                      recipients=["noc@example.com"], message=message(),
                                      starttls="always", timeout=10, tls_options=client_tls)
        assert inbox == []
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_relay_down_is_retryable():
    with pytest.raises(channels.DeliveryError) as e:
        await channels.send_email(reactor, host="127.0.0.1", port=1, sender="a@b.c",
                                  recipients=["x@y.z"], message=message(), starttls="never",
                                  timeout=5)
    assert e.value.retryable


@pytest_twisted.ensureDeferred
async def test_webhook_over_https_checks_the_certificate(tmp_path):
    from twisted.web import server
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    from tests.integration.test_notify_smtp_webhook import Hook

    ca, server_pem = make_pki(tmp_path, "web")
    hook = Hook([200])
    options = ssl.PrivateCertificate.loadPEM(server_pem).options()
    port = reactor.listenSSL(0, server.Site(hook), options, interface="127.0.0.1")
    url = f"https://localhost:{port.getHost().port}/hook"
    try:
        with open(ca, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust))
        code = await channels.post_webhook(reactor, url, b'{"a": 1}', idempotency_key="k",
                                           secret="s", timeout=5, agent=agent)
        assert code == 200 and hook.requests[0][1] == b'{"a": 1}'
        # The default Agent trusts the system's CAs only: this test CA is refused.
        with pytest.raises(channels.DeliveryError):
            await channels.post_webhook(reactor, url, b"{}", idempotency_key="k", timeout=5)
        assert len(hook.requests) == 1
    finally:
        await port.stopListening()
