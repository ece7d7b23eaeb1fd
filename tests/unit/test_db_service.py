"""centaure-db on the embedded bus with SQLite: the path of ``centaure-all`` and the demo."""

from __future__ import annotations

import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor, task

from connector import messages
from connector.service import makeService
from connector.settings import settings_from_string


def perf(i: int) -> messages.Perf:
    return messages.Perf(ts=1_790_000_000.0 + i, source="snmp@n1", host="r1", address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name="cpu", value=float(i), kind="gauge",
                                                  oid="1.3.6.1.4.1.1")])


@pytest_twisted.ensureDeferred
async def test_messages_published_before_the_writer_subscribes_are_stored(tmp_path):
    db_path = tmp_path / "c.sqlite3"
    settings = settings_from_string(
        f"[bus]\nurl = embedded\n\n[buffer]\npath = {tmp_path}/b-{{connector}}.sqlite3\n\n"
        f"[connector]\nhttp_port = 0\n\n[database]\nurl = sqlite:///{db_path}\n\n"
        "[db]\nbatch_interval = 10ms\n", source=str(tmp_path / "settings.ini"))
    root = makeService({"settings": settings}, ["db"], "db")
    bus = root.runtime.bus
    publisher = bus.publisher("snmp")
    # Before anything runs: the writer has not subscribed (its schema is not ready).
    for i in range(5):
        await publisher.publish(perf(i))
    assert bus.health()["queued"]["centaure.db"] == 5
    root.startService()
    try:
        engine = sa.create_engine(f"sqlite:///{db_path}")
        for _ in range(500):
            await task.deferLater(reactor, 0.02, lambda: None)
            try:
                with engine.connect() as c:
                    n = c.execute(sa.text("SELECT COUNT(*) FROM samples")).scalar_one()
            except sa.exc.OperationalError:
                continue  # the migration has not created the table yet
            if n == 5:
                break
        assert n == 5
        engine.dispose()
        health = root.runtime.health()
        assert health["connectors"]["db"]["schema"] == "ready"
        assert health["degraded"] is False
    finally:
        await root.stopService()


@pytest_twisted.ensureDeferred
async def test_a_process_takes_its_own_http_port_from_http_ports(tmp_path):
    import json
    import socket

    import urllib.error
    import urllib.request

    from twisted.internet import threads

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings_from_string(
        f"[bus]\nurl = embedded\n\n[buffer]\npath = {tmp_path}/b-{{connector}}.sqlite3\n\n"
        f"[connector]\nhttp_port = 1\nhttp_ports = snmp=2, db={port}\n\n"
        f"[database]\nurl = sqlite:///{tmp_path}/c.sqlite3\n", source=str(tmp_path / "s.ini"))
    root = makeService({"settings": settings}, ["db"], "db")
    root.startService()
    try:
        def get():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:  # 503 until the schema is ready: still ours
                return json.loads(e.read())

        body = await threads.deferToThread(get)
        assert body["process"] == "db" and "db" in body["connectors"]
    finally:
        await root.stopService()
