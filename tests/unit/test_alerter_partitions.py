"""The alerter's pieces for several nodes: hosts dropped and moved, the notifier's queue, halt."""

from __future__ import annotations


from connector import messages
from connector_alerter.evaluator import Evaluator
from connector_alerter.service import notifier_queue
from tests.unit.test_alert_evaluator import SOURCE, perf, rules

RULE = {"name": "cpu", "when": {"metric": "cpu", "op": ">", "value": 90}}


def test_dropped_hosts_are_forgotten_and_a_moved_state_goes_on_elsewhere():
    one = Evaluator(rules(RULE), {}, SOURCE)
    for host in ("h1", "h2"):
        assert [t.state for t in one.evaluate(perf(host, 1000.0, ("cpu", 95)))] == ["breached"]
    one.take_changes()
    moved = one.export_host("h1")
    one.drop_hosts(["h1"])
    assert one.hosts() == {"h2"} and set(one.export_state()) == {"h2"}
    assert "h1" not in one.take_changes() and "h1" not in one.breached()
    # The node taking h1 over loads its saved state: the breach recovers once, no new breach.
    two = Evaluator(rules(RULE), {}, SOURCE)
    two.import_state({"h1": moved})
    assert two.evaluate(perf("h1", 1060.0, ("cpu", 99))) == []
    assert [t.state for t in two.evaluate(perf("h1", 1120.0, ("cpu", 10)))] == ["recovered"]
    # Dropped without its state, h1 would start afresh: its recovery would go unseen.
    assert one.evaluate(perf("h1", 1120.0, ("cpu", 10))) == []


def test_the_notifier_queue_gets_every_alarm_one_consumer_at_a_time():
    spec = notifier_queue("c")
    assert spec.name == "c.alerter.notifier"
    assert [(b.exchange, b.pattern) for b in spec.bindings] == [("c.alarm", "#")]
    assert spec.arguments["x-queue-type"] == "quorum"
    assert spec.arguments["x-single-active-consumer"] is True
    assert spec.arguments["x-dead-letter-exchange"] == "c.dead"
    alarm = messages.Alarm(source="correlator@n", host="sw1.example.net", ref=1, name="a",
                           severity="major", state="raised", message="m", first_seen=1.0,
                           last_seen=1.0, count=1, origin="trap")
    assert messages.routing_key(alarm, 8).startswith("alarm.")


# --- the notifier's hand-over (halt: token lost; finish: token handed on) ---------------

import pytest_twisted  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402

from tests.unit.test_notify_notifier import T0, Fake, counting, host_alarm  # noqa: E402,F401


async def _five_queued_one_slow(counting_store):
    f = Fake(counting_store, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                              "group_wait": 0}, max_concurrent=1)
    await f.n.start(tick_interval=None)
    for i in range(5):
        await f.n.handle_alarm(host_alarm(i), T0)
    slow = defer.Deferred()
    fast_send = f._send
    f.n._send = lambda row: slow if row.ref == "0" else fast_send(row)
    delivering = defer.ensureDeferred(f.tick(T0))
    for _ in range(5):
        await task.deferLater(reactor, 0, lambda: None)
    assert {r.ref: r.state for r in counting_store.rows()} == dict.fromkeys("01234", "pending")
    return f, slow, delivering


async def _taken_over(counting_store) -> list[str]:
    other = Fake(counting_store, {"name": "r", "email": "a@x.org", "group_by": ["host"],
                                  "group_wait": 0})
    await other.n.start(tick_interval=None)
    await other.tick(T0 + 1)
    return sorted(r.ref for r in other.sent)


@pytest_twisted.ensureDeferred
async def test_halted_notifier_starts_no_send_and_the_next_holder_sends_the_rest(counting):
    f, slow, delivering = await _five_queued_one_slow(counting)
    f.n.halt()
    slow.callback(None)            # the send in flight ends on its own, and is recorded
    await delivering
    assert f.n.halted and len(f.sent) == 0
    states = {r.ref: r.state for r in counting.rows()}
    assert states == {"0": "sent", "1": "pending", "2": "pending", "3": "pending",
                      "4": "pending"}
    assert await _taken_over(counting) == ["1", "2", "3", "4"]


@pytest_twisted.ensureDeferred
async def test_finishing_notifier_ends_its_sends_before_handing_on(counting):
    f, slow, delivering = await _five_queued_one_slow(counting)
    finished = defer.ensureDeferred(f.n.finish())
    await task.deferLater(reactor, 0, lambda: None)
    assert not finished.called     # waits for the send in flight
    slow.callback(None)
    await delivering
    await finished
    assert {r.ref: r.state for r in counting.rows()}["0"] == "sent"
    assert await _taken_over(counting) == ["1", "2", "3", "4"]
