"""Notifications end to end on real servers started here: Twisted's ESMTP server, twisted.web.

The notifier runs on the real reactor with a fake clock for grouping and
retry times; SQL state in SQLite (through the migrations).
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor
from twisted.web import resource, server

from connector.messages import Alarm, decode, encode
from connector_alerter import channels, silences
from connector_alerter.notifier import DeliveryOptions, Notifier
from connector_alerter.routes import parse_routes
from tests.outbox import sqlite_outbox
from tests.smtpserver import running_smtp_server

T0 = 1_795_000_000.0



smtp_server = pytest.fixture(running_smtp_server, name="smtp_server")


store = pytest.fixture(sqlite_outbox, name="store")


def blocking(f, *args):
    return defer.maybeDeferred(f, *args)


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def alarm(ref, host="r1", state="raised", t=T0, **kw):
    base = dict(source="centaure-correlator@n1", ts=t, host=host, ref=ref, name=f"linkDown{ref}",
                severity="major", state=state, message=f"link {ref} down", first_seen=t,
                last_seen=t, count=1, origin="trap")
    base.update(kw)
    return decode(encode(Alarm(**base)))


def make(store, routes, clock, published, **opts):
    o = dict(smtp_port=25, retry_initial=5, retry_max=60, max_attempts=5, webhook_timeout=0.5,
             link_template="https://noc.example/alarms/{ref}", smtp_timeout=5)
    o.update(opts)
    inventory = {"r1": {"device_type": "router", "model": "ISR4331", "address": "10.0.0.1"}}
    # Round-trip every record: the writer's consumer validates what we publish.
    return Notifier(routes=routes, store=store,
                    publish=lambda m: published.append(decode(encode(m))), reactor=reactor,
                    options=DeliveryOptions(**o), clock=clock,
                    inventory=lambda h: inventory.get(h, {}), run_blocking=blocking)


@pytest_twisted.ensureDeferred
async def test_grouped_email_recovery_restart_and_smtp_outage(smtp_server, store):
    routes = parse_routes({"routes": [{"name": "noc", "email": "noc@example.com",
                                       "group_wait": 30, "group_interval": 60,
                                       "repeat_interval": 0}]})
    clock, published = Clock(T0), []
    n = make(store, routes, clock, published, smtp_port=smtp_server.port)
    await n.start(tick_interval=None)

    # Two alarms of r1 within group_wait: one email.
    await n.handle_alarm(alarm(1), T0)
    await n.handle_alarm(alarm(2, t=T0 + 5), T0 + 5)
    assert await n.tick(T0 + 29) == []
    clock.t = T0 + 30
    await n.tick(T0 + 30)
    assert len(smtp_server.inbox) == 1
    m = smtp_server.inbox[0]
    assert m["Subject"] == "[Centaure] 2 active - r1: linkDown1 and more"
    assert m["X-Centaure-Idempotency-Key"] == m["Idempotency-Key"]
    text = m.get_body(("plain",)).get_content()
    html = m.get_body(("html",)).get_content()
    assert "[MAJOR] r1 - linkDown1 (new)" in text and "[MAJOR] r1 - linkDown2 (new)" in text
    assert "https://noc.example/alarms/1" in text and "device: router ISR4331" in text
    assert '<a href="https://noc.example/alarms/2">linkDown2</a>' in html
    assert [(p.state, p.channel, p.recipient, p.attempts) for p in published] == [
        ("sent", "email", "noc@example.com", 1)]

    # A restart from the stored state repeats nothing.
    n2 = make(store, routes, clock, published, smtp_port=smtp_server.port)
    await n2.start(tick_interval=None)
    await n2.handle_alarm(alarm(1), T0 + 40)          # redelivered input
    await n2.tick(T0 + 200)
    assert len(smtp_server.inbox) == 1

    # Alarm 1 clears while "down" (n2 takes over): its recovery goes out.
    await n2.handle_alarm(alarm(1, state="cleared", last_seen=T0 + 300, cleared_at=T0 + 300),
                          T0 + 300)
    clock.t = T0 + 300
    await n2.tick(T0 + 300)
    assert len(smtp_server.inbox) == 2
    m = smtp_server.inbox[1]
    assert m["Subject"] == "[Centaure] 1 active, 1 resolved - r1: linkDown2 and more"
    assert "RESOLVED (1)" in m.get_body(("plain",)).get_content()

    # SMTP down: a new alarm is retried with backoff, then delivered once when it is back.
    await smtp_server.stop()
    await n2.handle_alarm(alarm(9, host="r2", t=T0 + 400), T0 + 400)
    clock.t = T0 + 430
    await n2.tick(T0 + 430)
    assert published[-1].state == "failed" and "retry in" in published[-1].reason
    row = store.rows()[-1]
    assert row.state == "pending" and row.attempts == 1 and row.next_at > T0 + 430
    clock.t = row.next_at
    await n2.tick(clock.t)
    assert store.rows()[-1].attempts == 2
    smtp_server.start()                                # back, same port
    await n2.tick(clock.t + 1)                         # not due yet: nothing
    assert len(smtp_server.inbox) == 2
    clock.t = store.rows()[-1].next_at
    await n2.tick(clock.t)
    await n2.tick(clock.t + 1000)
    assert len(smtp_server.inbox) == 3
    assert smtp_server.inbox[2]["Idempotency-Key"] == f"9:raised:{T0 + 400!r}"
    assert [p.state for p in published if p.host == "r2"] == ["failed", "failed", "sent"]
    assert store.rows()[-1].state == "sent" and store.rows()[-1].attempts == 3
    assert len({m["Message-ID"] for m in smtp_server.inbox}) == 3


@pytest_twisted.ensureDeferred
async def test_silence_suppresses_then_tells_when_it_ends(smtp_server, store):
    routes = parse_routes({"routes": [{"name": "noc", "email": "noc@example.com",
                                       "group_wait": 10}]})
    clock, published = Clock(T0), []
    n = make(store, routes, clock, published, smtp_port=smtp_server.port)
    await n.start(tick_interval=None)
    s = silences.add(store.engine, "alert_", duration=3600, comment="maintenance", host="r1",
                     now=T0)
    await n.handle_alarm(alarm(1), T0)
    await n.handle_alarm(alarm(2), T0)
    await n.tick(T0 + 10)
    assert smtp_server.inbox == []
    assert [(p.state, p.ref) for p in published] == [("suppressed", 1), ("suppressed", 2)]
    assert f"silence {s.id}" in published[0].reason
    # Alarm 2 clears under the silence; the silence ends: 1 is told active, 2 resolved.
    await n.handle_alarm(alarm(2, state="cleared", last_seen=T0 + 100, cleared_at=T0 + 100),
                         T0 + 100)
    await n.tick(T0 + 200)
    assert smtp_server.inbox == []
    clock.t = T0 + 3600
    await n.tick(T0 + 3600)
    assert len(smtp_server.inbox) == 1
    assert smtp_server.inbox[0]["Subject"] == (
        "[Centaure] 1 active, 1 resolved - r1: linkDown1 and more")


# --- a real HTTP server -------------------------------------------------------------


class Hook(resource.Resource):
    isLeaf = True

    def __init__(self, answers):
        super().__init__()
        self.answers, self.requests = list(answers), []

    def render_POST(self, request):
        self.requests.append((dict((k.decode(), v[0].decode())
                                   for k, v in request.requestHeaders.getAllRawHeaders()),
                              request.content.read()))
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":
            return server.NOT_DONE_YET
        request.setResponseCode(answer)
        return b"ok"


@pytest_twisted.ensureDeferred
async def test_webhook_500_and_timeout_retried_same_key_hmac(store):
    hook = Hook([500, "hang", 200])
    port = reactor.listenTCP(0, server.Site(hook), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        routes = parse_routes({"routes": [{"name": "chat", "group_wait": 0, "webhook": [
            {"url": url, "secret": "env:HOOK_SECRET"}]}]}, environ={"HOOK_SECRET": "k3y"})
        clock, published = Clock(T0), []
        n = make(store, routes, clock, published)
        await n.start(tick_interval=None)
        await n.handle_alarm(alarm(4), T0)
        for _ in range(3):
            await n.tick(clock.t)
            rows = store.rows()
            if rows[0].state == "pending":
                clock.t = rows[0].next_at
        await n.tick(clock.t + 1000)
        assert len(hook.requests) == 3
        keys = {h["Idempotency-Key"] for h, _ in hook.requests}
        assert keys == {f"4:raised:{T0!r}"}
        assert {h["X-Centaure-Idempotency-Key"] for h, _ in hook.requests} == keys
        for headers, body in hook.requests:
            assert channels.verify_signature("k3y", body, headers["X-Centaure-Signature"])
            assert not channels.verify_signature("wrong", body, headers["X-Centaure-Signature"])
            doc = json.loads(body)
            assert doc["idempotency_key"] == f"4:raised:{T0!r}"
            assert doc["alarms"][0]["inventory"]["model"] == "ISR4331"
        assert [p.state for p in published] == ["failed", "failed", "sent"]
        assert "HTTP 500" in published[0].reason and "no answer within" in published[1].reason
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_webhook_4xx_is_not_retried(store):
    hook = Hook([404])
    port = reactor.listenTCP(0, server.Site(hook), interface="127.0.0.1")
    try:
        routes = parse_routes({"routes": [{"name": "chat", "group_wait": 0, "webhook":
                                           f"http://127.0.0.1:{port.getHost().port}/x"}]})
        published = []
        n = make(store, routes, Clock(T0), published)
        await n.start(tick_interval=None)
        await n.handle_alarm(alarm(4), T0)
        await n.tick(T0)
        await n.tick(T0 + 10000)
        assert len(hook.requests) == 1 and store.rows()[0].state == "failed"
        assert "not retryable" in published[-1].reason
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_command_gets_json_on_stdin(store, tmp_path):
    out = tmp_path / "got.json"
    script = tmp_path / "cmd.sh"
    script.write_text(f"#!/bin/sh\ncat > {out}\n")
    script.chmod(0o755)
    routes = parse_routes({"routes": [{"name": "c", "group_wait": 0, "command": [str(script)]}]})
    published = []
    n = make(store, routes, Clock(T0), published)
    await n.start(tick_interval=None)
    await n.handle_alarm(alarm(5), T0)
    await n.tick(T0)
    doc = json.loads(out.read_text())
    assert doc["alarms"][0]["ref"] == 5 and published[-1].state == "sent"


@pytest_twisted.ensureDeferred
async def test_queued_before_a_crash_is_delivered_once_by_the_next_process(smtp_server, store):
    routes = parse_routes({"routes": [{"name": "noc", "email": ["a@x.org", "b@x.org"],
                                       "group_wait": 10}]})
    clock, published = Clock(T0 + 10), []
    n = make(store, routes, clock, published, smtp_port=smtp_server.port)
    await n.start(tick_interval=None)
    await n.handle_alarm(alarm(1), T0)
    await n.tick(T0 + 10, deliver=False)               # queued, then "killed"
    assert [r.state for r in store.rows()] == ["pending", "pending"]
    n2 = make(store, routes, clock, published, smtp_port=smtp_server.port)
    await n2.start(tick_interval=None)
    await n2.tick(T0 + 11)
    await n2.tick(T0 + 500)
    assert sorted(m["To"] for m in smtp_server.inbox) == ["a@x.org", "b@x.org"]


@pytest_twisted.ensureDeferred
async def test_a_failed_save_changes_nothing(smtp_server, store):
    routes = parse_routes({"routes": [{"name": "noc", "email": "a@x.org", "group_wait": 10}]})
    clock, published = Clock(T0 + 10), []
    n = make(store, routes, clock, published, smtp_port=smtp_server.port)
    await n.start(tick_interval=None)
    await n.handle_alarm(alarm(1), T0)
    real = store.save

    def broken(*args):
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is down"))
    store.save = broken
    with pytest.raises(sa.exc.OperationalError):
        await n.tick(T0 + 10)
    with pytest.raises(sa.exc.OperationalError):
        await n.handle_alarm(alarm(2), T0 + 10)          # not acked: redelivered later
    store.save = real
    await n.handle_alarm(alarm(2), T0 + 10)
    await n.tick(T0 + 11)
    assert len(smtp_server.inbox) == 1 and "2 active" in smtp_server.inbox[0]["Subject"]


@pytest_twisted.ensureDeferred
async def test_open_notifier_from_settings(smtp_server, tmp_path):
    from connector.settings import load_settings
    from connector_alerter.notifier import open_notifier

    (tmp_path / "routes.yaml").write_text(
        "routes:\n  - name: all\n    group_wait: 0s\n    email: [ops@example.com]\n")
    (tmp_path / "settings.ini").write_text(
        f"[database]\nurl = sqlite:///{tmp_path / 's.sqlite3'}\n"
        "[alerter]\nroutes = routes.yaml\nlink_template = https://noc/{ref}\n"
        f"[smtp]\nport = {smtp_server.port}\nstarttls = never\nsender = c@example.com\n")
    published = []
    n = await open_notifier(load_settings(str(tmp_path / "settings.ini")), reactor,
                            published.append, source="centaure-alerter@t", tick_interval=None)
    await n.handle_alarm(alarm(3))
    await n.tick()
    assert len(smtp_server.inbox) == 1 and smtp_server.inbox[0]["From"] == "c@example.com"
    assert "https://noc/3" in smtp_server.inbox[0].get_body(("plain",)).get_content()
    assert published[-1].source == "centaure-alerter@t" and published[-1].state == "sent"
    n.store.engine.dispose()


@pytest_twisted.ensureDeferred
async def test_plain_auth_allowed_is_warned_at_start(tmp_path):
    from twisted.logger import globalLogPublisher

    from connector.settings import load_settings
    from connector_alerter.notifier import open_notifier

    (tmp_path / "settings.ini").write_text(
        f"[database]\nurl = sqlite:///{tmp_path / 's.sqlite3'}\n"
        "[smtp]\nport = 2525\nstarttls = auto\nusername = relay-user\npassword = s3cret\n"
        "allow_plain_auth = true\n")
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        n = await open_notifier(load_settings(str(tmp_path / "settings.ini")), reactor,
                                lambda _: None, source="centaure-alerter@t",
                                tick_interval=None)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    warnings = [e for e in seen if "allow_plain_auth" in e.get("log_format", "")]
    assert warnings and warnings[0]["user"] == "relay-user"
    # The password itself is never logged.
    assert not any("s3cret" in repr(e) for e in seen)
    n.store.engine.dispose()
