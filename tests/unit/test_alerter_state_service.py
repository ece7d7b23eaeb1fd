"""centaure-alerter restarted: its saved state and the samples stored meanwhile (embedded bus, SQLite).

The writer, the correlator and the alerter run in one process as in
:mod:`tests.unit.test_alerter_service`. A user's view: a value that recovered
while the alerter was down clears the alarm once the alerter is back (one
``recovered``); a restart with nothing new publishes nothing.
"""

from __future__ import annotations

import contextlib
import json

import pytest_twisted
from twisted.internet import reactor, task

from tests.unit.test_alerter_service import RULES, make, perf, ready, rows, until


def thresholds(tmp_path) -> list[tuple]:
    return rows(tmp_path, "SELECT rule, state FROM thresholds ORDER BY ts, id")


def saved(tmp_path) -> dict:
    return {host: (json.loads(state), ts)
            for host, state, ts in rows(tmp_path, "SELECT host, state, ts FROM alert_eval_state")}


def _find(root):
    from connector_alerter.service import AlerterService

    stack = [root]
    while stack:
        s = stack.pop()
        if isinstance(s, AlerterService):
            return s
        stack.extend(getattr(s, "services", ()))
    raise AssertionError("no alerter service")


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_recovery_while_down_is_published_once_and_clears_the_alarm(tmp_path):
    (tmp_path / "rules.yaml").write_text(RULES)
    async with running(tmp_path) as root:
        publisher = root.runtime.bus.publisher("snmp")
        await publisher.publish(perf(0, 95.0))
        await publisher.publish(perf(1, 97.0))
        await until(lambda: rows(tmp_path, "SELECT name, state FROM alarms")
                    == [("cpu-high", "raised")], "the alarm")
        # The breach is in the saved state (saved soon after the threshold).
        await until(lambda: saved(tmp_path).get("r1", ({}, 0))[0].get("breached"),
                    "the breach saved")

    # The alerter is down; the poller and the writer go on: the value recovers.
    async with running(tmp_path, ("db",)) as writer:
        await writer.runtime.bus.publisher("snmp").publish(perf(2, 40.0))
        await until(lambda: rows(tmp_path, "SELECT COUNT(*) FROM samples") == [(3,)],
                    "the recovering sample stored")
    assert thresholds(tmp_path) == [("cpu-high", "breached")]

    async with running(tmp_path) as root:
        await until(lambda: rows(tmp_path, "SELECT state FROM alarms") == [("cleared",)],
                    "the alarm cleared")
        await until(lambda: thresholds(tmp_path) == [("cpu-high", "breached"),
                                                     ("cpu-high", "recovered")],
                    "the recovery stored")
        # Its time is the sample's, not the restart's.
        (ts,) = rows(tmp_path, "SELECT ts FROM thresholds WHERE state = 'recovered'")[0]
        assert abs(ts / 1000.0 - perf(2, 40.0).ts) < 0.002
        await until(lambda: abs(saved(tmp_path)["r1"][1] - perf(2, 40.0).ts) < 0.002,
                    "the replayed time saved")
        assert saved(tmp_path)["r1"][0]["breached"] == []

    # Nothing new: a restart publishes nothing, and a value still under stays quiet.
    async with running(tmp_path) as root:
        await root.runtime.bus.publisher("snmp").publish(perf(3, 30.0))
        await until(lambda: rows(tmp_path, "SELECT COUNT(*) FROM samples") == [(4,)],
                    "the fourth sample")
        await sleep(1.5)          # a save period: nothing more comes out
        assert thresholds(tmp_path) == [("cpu-high", "breached"), ("cpu-high", "recovered")]
        assert rows(tmp_path, "SELECT state, count FROM alarms") == [("cleared", 1)]
        assert _find(root).counters.get("thresholds_published") == 0


@pytest_twisted.ensureDeferred
async def test_queued_perf_already_replayed_is_not_evaluated_again(tmp_path):
    """After a crash, the broker redelivers what the replay already went through: skipped."""
    (tmp_path / "rules.yaml").write_text(RULES)
    async with running(tmp_path) as root:
        publisher = root.runtime.bus.publisher("snmp")
        await publisher.publish(perf(0, 95.0))
        await until(lambda: saved(tmp_path).get("r1"), "the state saved")
    # Stored while the alerter was down: 97 (a breach with the saved 95), then 30.
    async with running(tmp_path, ("db",)) as writer:
        for i, cpu in ((1, 97.0), (2, 30.0)):
            await writer.runtime.bus.publisher("snmp").publish(perf(i, cpu))
        await until(lambda: rows(tmp_path, "SELECT COUNT(*) FROM samples") == [(3,)], "stored")

    async with running(tmp_path) as root:
        service = _find(root)
        await until(lambda: len(thresholds(tmp_path)) == 2, "the replay's transitions")
        assert thresholds(tmp_path) == [("cpu-high", "breached"), ("cpu-high", "recovered")]
        # The same polls, still queued for the alerter (redelivered after a kill -9).
        publisher = root.runtime.bus.publisher("snmp")
        for i, cpu in ((1, 97.0), (2, 30.0)):
            await publisher.publish(perf(i, cpu))
        await until(lambda: service.counters.get("perf_replayed_skipped") == 2, "skipped")
        await publisher.publish(perf(3, 96.0))
        await publisher.publish(perf(4, 98.0))        # newer: evaluated, a new breach
        await until(lambda: len(thresholds(tmp_path)) == 3, "the new breach")
        assert thresholds(tmp_path)[-1] == ("cpu-high", "breached")
        assert service.counters.get("perf_evaluated") == 2


def ready_db(root) -> bool:
    return root.runtime.health()["connectors"]["db"].get("schema") == "ready"


@contextlib.contextmanager
def log_lines(start: str):
    """The log lines (formatted) that begin with ``start``, logged while inside."""
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event):
        if event.get("log_format", "").startswith(start):
            lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


@contextlib.asynccontextmanager
async def running(tmp_path, connectors=("db", "correlator", "alerter")):
    """The connectors started in one process and ready; stopped on the way out."""
    root = make(tmp_path, connectors)
    root.startService()
    try:
        await until(lambda: ready_db(root) if connectors == ("db",) else ready(root),
                    f"{', '.join(connectors)} ready")
        yield root
    finally:
        await root.stopService()


GLOB_RULES = """\
- name: cpu-any-high
  device_types: [router]
  when: {metric: 'cpu*', op: '>', value: 90, consecutive: 2}
"""


@pytest_twisted.ensureDeferred
async def test_a_glob_rule_on_a_device_type_replays_what_was_stored_while_down(tmp_path,
                                                                              monkeypatch):
    """The host is not in any inventory: its stored type selects the rule, as its perf did."""
    from connector_alerter import replay

    monkeypatch.setattr(replay, "PROGRESS_EVERY", 0.0)   # a progress line for every host
    (tmp_path / "rules.yaml").write_text(GLOB_RULES)
    async with running(tmp_path) as root:
        await root.runtime.bus.publisher("snmp").publish(perf(0, 95.0))
        await until(lambda: saved(tmp_path).get("r1"), "the first value in the saved state")
    assert thresholds(tmp_path) == []                 # one value of the two needed
    # Stored while the alerter is down: the second value over the threshold.
    async with running(tmp_path, ("db",)) as writer:
        await writer.runtime.bus.publisher("snmp").publish(perf(1, 97.0))
        await until(lambda: rows(tmp_path, "SELECT COUNT(*) FROM samples") == [(2,)], "stored")
    with log_lines("replaying stored samples") as logged:
        async with running(tmp_path):
            await until(lambda: thresholds(tmp_path) == [("cpu-any-high", "breached")],
                        "the breach found by the replay")
            await until(lambda: rows(tmp_path, "SELECT name, state FROM alarms")
                        == [("cpu-any-high", "raised")], "the alarm")
    assert logged == ["replaying stored samples: 0 of 1 hosts, 0 samples so far"]


@pytest_twisted.ensureDeferred
async def test_per_device_layout_says_why_nothing_is_replayed(tmp_path):
    (tmp_path / "rules.yaml").write_text(RULES)
    with log_lines("backfill") as logged:
        root = make(tmp_path, ("alerter",), db="layout = per_device\n")
        root.startService()
        try:
            await until(lambda: _find(root).state == "ready", "the alerter ready")
        finally:
            await root.stopService()
    assert len(logged) == 1 and "layout = per_device" in logged[0], logged
