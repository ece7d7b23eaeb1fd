"""A real ESMTP server (Twisted's) in the test process, stopped and restarted at will."""

from __future__ import annotations

import email
import email.policy

from twisted.internet import defer, reactor
from twisted.mail import smtp
from zope.interface import implementer


@implementer(smtp.IMessage)
class MailMessage:
    def __init__(self, box):
        self.box, self.lines = box, []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        self.box.append(email.message_from_bytes(b"\n".join(self.lines),
                                                 policy=email.policy.default))
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class MailDelivery:
    def __init__(self, box):
        self.box = box

    def receivedHeader(self, helo, origin, recipients):
        return b"Received: by the test server"

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        return lambda: MailMessage(self.box)


class SmtpServer:
    """An in-process ESMTP server that can be stopped and restarted on its port."""

    def __init__(self):
        self.inbox = []
        self.port = None
        self.listening = None
        #: SMTP connections accepted so far.
        self.connections = 0

    def _factory(self):
        f = smtp.SMTPFactory()
        f.protocol = smtp.ESMTP
        delivery = MailDelivery(self.inbox)
        build = f.buildProtocol

        def buildProtocol(addr):
            self.connections += 1
            p = build(addr)
            p.delivery = delivery
            return p
        f.buildProtocol = buildProtocol
        return f

    def start(self):
        self.listening = reactor.listenTCP(self.port or 0, self._factory(), interface="127.0.0.1")
        self.port = self.listening.getHost().port

    async def stop(self):
        await self.listening.stopListening()
        self.listening = None


def running_smtp_server():
    """A fixture body: an SmtpServer listening for the test, stopped afterwards.

    Use as ``smtp_server = pytest.fixture(running_smtp_server, name="smtp_server")``.
    """
    s = SmtpServer()
    s.start()
    yield s
    if s.listening is not None:
        s.listening.stopListening()
