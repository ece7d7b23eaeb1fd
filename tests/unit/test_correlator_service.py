"""centaure-correlator with the SQL writer on the embedded bus and SQLite.

The whole path inside one process: events in, state committed, alarm
messages published and stored by the writer; a restart resumes the same
alarms (same refs, counts carried on).
"""

from __future__ import annotations

import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor, task

from connector import messages
from connector.service import makeService
from connector.settings import settings_from_string
from connector_alarms.keys import alarm_ref

TS = 1_790_000_000.0


def trap(i: int, action: str) -> messages.Event:
    return messages.Event(ts=TS + i, source="traps@n1", host="r1", address="10.0.0.1",
                          snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3",
                          name="linkDown" if action == "raise" else "linkUp",
                          severity="major" if action == "raise" else "info", varbinds=[],
                          message="link 3 down" if action == "raise" else "link 3 up",
                          action=action, alarm="linkDown", key="3")


def make(tmp_path):
    settings = settings_from_string(
        f"[bus]\nurl = embedded\n\n[buffer]\npath = {tmp_path}/b-{{connector}}.sqlite3\n\n"
        f"[connector]\nhttp_port = 0\n\n[database]\nurl = sqlite:///{tmp_path}/c.sqlite3\n\n"
        "[db]\nbatch_interval = 10ms\n\n[correlator]\nbatch_interval = 10ms\n"
        "update_interval = 0\n", source=str(tmp_path / "settings.ini"))
    return makeService({"settings": settings}, ["db", "correlator"], "all")


async def until(predicate, what: str, timeout: float = 20.0):
    for _ in range(int(timeout / 0.02)):
        value = predicate()
        if value:
            return value
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


def stored_alarm(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/c.sqlite3")
    try:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT state, count FROM alarms")).first()
    except sa.exc.OperationalError:
        return None
    finally:
        engine.dispose()


@pytest_twisted.ensureDeferred
async def test_trap_raise_repeat_clear_and_restart(tmp_path):
    root = make(tmp_path)
    publisher = root.runtime.bus.publisher("traps")
    root.startService()
    try:
        await until(lambda: root.runtime.health()["connectors"]["correlator"]["state"] == "ready",
                    "the correlator to start")
        await publisher.publish(trap(0, "raise"))
        await until(lambda: (stored_alarm(tmp_path) or (None,))[0] == "raised", "raised")
        await publisher.publish(trap(1, "raise"))
        await until(lambda: stored_alarm(tmp_path) == ("updated", 2), "count 2")
    finally:
        await root.stopService()
    # A new process: the state comes back from the database.
    root = make(tmp_path)
    publisher = root.runtime.bus.publisher("traps")
    root.startService()
    try:
        await until(lambda: root.runtime.health()["connectors"]["correlator"]["state"] == "ready",
                    "the correlator to restart")
        await publisher.publish(trap(2, "raise"))
        await until(lambda: stored_alarm(tmp_path) == ("updated", 3), "count 3 after restart")
        await publisher.publish(trap(3, "clear"))
        await until(lambda: (stored_alarm(tmp_path) or (None,))[0] == "cleared", "cleared")
        engine = sa.create_engine(f"sqlite:///{tmp_path}/c.sqlite3")
        with engine.connect() as c:
            refs = {r[0] for r in c.execute(sa.text("SELECT ref FROM alarms"))}
            history = [r[0] for r in c.execute(sa.text(
                "SELECT state FROM alarm_history ORDER BY ts, id"))]
        engine.dispose()
        assert refs == {alarm_ref("r1", "linkDown", "3")}
        assert history == ["raised", "updated", "updated", "cleared"]
    finally:
        await root.stopService()


@pytest_twisted.ensureDeferred
async def test_a_batch_is_full_at_the_bus_prefetch(tmp_path):
    """No waiting for messages that cannot come: the broker sends no more than prefetch."""
    settings = settings_from_string(
        f"[bus]\nurl = embedded\nprefetch = 5\n\n"
        f"[buffer]\npath = {tmp_path}/b-{{connector}}.sqlite3\n\n"
        f"[connector]\nhttp_port = 0\n\n[database]\nurl = sqlite:///{tmp_path}/c.sqlite3\n\n"
        "[correlator]\nbatch_size = 2000\nbatch_interval = 10s\ntick_interval = 1h\n",
        source=str(tmp_path / "settings.ini"))
    root = makeService({"settings": settings}, ["correlator"], "correlator")
    publisher = root.runtime.bus.publisher("traps")
    root.startService()
    try:
        await until(lambda: root.runtime.health()["connectors"]["correlator"]["state"] == "ready",
                    "the correlator to start")
        for i in range(5):
            await publisher.publish(trap(i, "raise"))
        # Five messages fill the prefetch window: applied now, not after the 10 s interval.
        await until(lambda: root.runtime.health()["connectors"]["correlator"]["alarms"]
                    .get("messages") == 5, "the full batch applied", timeout=5)
    finally:
        await root.stopService()
