"""Webhook signatures cover a timestamp and the body: a replayed request is rejected (issue 18).

The receiver here implements the check documented in ``connector_alerter.channels``
and docs/deployment.md by itself (not with Centaure's code): parse ``t=`` and
``v1=``, recompute the HMAC-SHA256 of ``<t>.<body>``, compare in constant time,
reject when ``|now - t| > 300``. Its clock is faked to replay 6 minutes later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web import resource, server
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from connector.settings import Secret
from connector_alerter import channels

pytestmark = pytest.mark.integration

SECRET = b"k3y"


class Receiver(resource.Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.now = time.time  # the receiver's clock, faked below
        self.requests, self.accepted = [], []

    def check(self, header: str, body: bytes) -> bool:
        fields = dict(p.strip().partition("=")[::2] for p in header.split(","))
        try:
            t = int(fields["t"])
        except (KeyError, ValueError):
            return False
        if abs(self.now() - t) > 300:
            return False
        expected = hmac.new(SECRET, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields.get("v1", ""))

    def render_POST(self, request):
        headers = {k.decode(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        body = request.content.read()
        self.requests.append((headers, body))
        ok = self.check(headers.get("X-Centaure-Signature", ""), body)
        self.accepted.append(ok)
        request.setResponseCode(200 if ok else 401)
        return b"ok" if ok else b"bad signature"


async def replay(url, headers, body):
    hdrs = Headers({k.encode(): [v.encode()] for k, v in headers.items()
                    if k.lower() not in ("content-length", "host", "connection")})
    from io import BytesIO
    response = await Agent(reactor).request(b"POST", url.encode(), hdrs,
                                            FileBodyProducer(BytesIO(body)))
    return response.code


@pytest_twisted.ensureDeferred
async def test_replayed_webhook_rejected_by_the_documented_check():
    receiver = Receiver()
    port = reactor.listenTCP(0, server.Site(receiver), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/hook"
    try:
        body = b'{"alarms": [{"ref": 1}]}'
        code = await channels.post_webhook(reactor, url, body, idempotency_key="1:raised:2.0",
                                           secret=Secret(SECRET.decode()), timeout=5)
        assert code == 200 and receiver.accepted == [True]
        headers, got = receiver.requests[0]
        assert got == body
        # The same captured request, replayed at once: still fresh (the
        # idempotency key is the receiver's defence there).
        assert await replay(url, headers, body) == 200
        # Replayed 6 minutes later: the timestamp is too old.
        t0 = time.time()
        receiver.now = lambda: t0 + 360
        assert await replay(url, headers, body) == 401
        assert receiver.accepted == [True, True, False]
        # Nor can the attacker move the timestamp: the HMAC covers it.
        forged = dict(headers)
        sig = forged["X-Centaure-Signature"]
        forged["X-Centaure-Signature"] = f"t={int(t0 + 360)}," + sig.split(",", 1)[1]
        assert await replay(url, forged, body) == 401
    finally:
        await port.stopListening()


def test_verify_signature_matches_the_documented_check():
    body = b"{}"
    header = channels.sign("s", body, 1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert channels.verify_signature("s", body, header, now=1_800_000_000 + 299)
    assert not channels.verify_signature("s", body, header, now=1_800_000_000 + 301)
    assert not channels.verify_signature("s", body, header, now=1_800_000_000 - 301)
    assert not channels.verify_signature("x", body, header, now=1_800_000_000)
    assert not channels.verify_signature("s", b"{ }", header, now=1_800_000_000)
    assert not channels.verify_signature("s", body, "", now=1_800_000_000)
