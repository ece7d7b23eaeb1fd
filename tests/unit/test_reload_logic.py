"""Pure logic of the SIGHUP reloads and of rules' own emails.

* :meth:`Evaluator.with_rules`: an unchanged rule keeps its breach (no
  repeat), a changed or removed one is recovered, a new one starts;
* :meth:`Correlator.reconfigure`: masks follow the new topology both ways,
  and a new ``mask_severity`` shows on alarms masked already;
* the notifier's routes of rules' ``emails``: an address a matching route
  mails is left out of the rule's message, unless that route is muted now;
  a reload that removes a route drops its pending groups.
"""

from __future__ import annotations

import dataclasses

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector import messages
from connector_alarms.machine import Correlator, MemoryHostStates
from connector_alarms.model import UNREACHABLE
from connector_alarms.settings import CorrelatorSettings
from connector_alerter import migrate
from connector_alerter.evaluator import Evaluator
from connector_alerter.notifier import DeliveryOptions, Notifier
from connector_alerter.outbox import OutboxStore
from connector_alerter.routes import RoutesError, parse_routes
from connector_alerter.rules import RulesError, build_rules

T0 = 1_790_000_000.0


def rules(*specs: dict):
    return build_rules(((f"rule {i}", s) for i, s in enumerate(specs)), "test")


def perf(t: float, **values: float) -> messages.Perf:
    return messages.Perf(source="snmp@n1", ts=t, host="r1", address="10.0.0.1",
                         device_type="router",
                         metrics=[messages.Metric(name=k, value=v, kind="gauge", oid="1.3.6.1.4.1")
                                  for k, v in values.items()])


CPU = {"name": "cpu", "when": {"metric": "cpuLoad", "op": ">", "value": 90}}
MEM = {"name": "mem", "when": {"metric": "memUsed", "op": ">", "value": 90}}


def test_with_rules_keeps_unchanged_breaches_and_recovers_changed_ones():
    ev = Evaluator(rules(CPU, MEM), {}, "alerter@n1")
    assert {(t.rule, t.state) for t in ev.evaluate(perf(T0, cpuLoad=95, memUsed=95))} == {
        ("cpu", "breached"), ("mem", "breached")}
    # cpu: only its text changes; mem: its threshold changes; disk: new.
    new_rules = rules(dict(CPU, message="CPU hot", severity="major"),
                      dict(MEM, when={"metric": "memUsed", "op": ">", "value": 80}),
                      {"name": "disk", "when": {"metric": "diskUsed", "op": ">", "value": 90}})
    ev2, out = ev.with_rules(new_rules, T0 + 1)
    assert [(t.host, t.rule, t.state) for t in out] == [("r1", "mem", "recovered")]
    assert ev2.breached() == {"r1": [("cpu", "")]}
    # cpu stays breached (no repeat); mem breaches again under its new rule; disk is new.
    got = ev2.evaluate(perf(T0 + 2, cpuLoad=96, memUsed=85, diskUsed=99))
    assert sorted((t.rule, t.state) for t in got) == [("disk", "breached"), ("mem", "breached")]
    assert [(t.rule, t.state) for t in ev2.evaluate(perf(T0 + 3, cpuLoad=10))] == [
        ("cpu", "recovered")]
    # The old evaluator's pending changes and the reload's are handed to the saver.
    assert "r1" in ev2.take_changes()


def test_rule_emails_must_be_addresses():
    with pytest.raises(RulesError) as e:
        rules(dict(CPU, emails="ops@example.com; not-an-address"))
    assert "emails: not an email address: 'not-an-address'" in str(e.value)
    assert rules(dict(CPU, emails="a@x.org, b@x.org"))[0].emails == ("a@x.org", "b@x.org")


def test_route_names_of_rules_are_reserved():
    with pytest.raises(RoutesError, match="rule:"):
        parse_routes({"routes": [{"name": "rule:cpu", "email": "a@x.org"}]})


def unreachable(host: str, down: bool, t: float) -> messages.AlarmSnapshot:
    rows = [messages.SnapshotAlarm(key=UNREACHABLE, name=UNREACHABLE, severity="major",
                                   message="down")] if down else []
    return messages.AlarmSnapshot(source="snmp@n1", ts=t, host=host, alarms=rows)


def test_reconfigure_masks_and_unmasks_by_the_new_topology():
    conf = CorrelatorSettings()
    corr = Correlator(MemoryHostStates(), conf, "correlator@n1", {})
    for host in ("core", "edge", "leaf"):
        corr.apply(unreachable(host, True, T0), None, T0)
    out = corr.reconfigure(conf, {"edge": "core", "leaf": "core"}, T0 + 1)
    assert sorted((a.host, a.state, a.severity, a.cause_ref is not None) for _, a in out) == [
        ("edge", "updated", "warning", True), ("leaf", "updated", "warning", True)]
    # Same topology, a new mask severity: shown on the masked alarms; leaf loses its parent.
    out = corr.reconfigure(dataclasses.replace(conf, mask_severity="info"), {"edge": "core"},
                           T0 + 2)
    assert sorted((a.host, a.severity, a.cause_ref is not None) for _, a in out) == [
        ("edge", "info", True), ("leaf", "major", False)]
    assert corr.reconfigure(dataclasses.replace(conf, mask_severity="info"), {"edge": "core"},
                            T0 + 3) == []


@pytest.fixture
def store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'n.sqlite3'}")
    migrate.upgrade(engine)
    yield OutboxStore(engine)
    engine.dispose()


def alarm(ref: int, name: str, state: str = "raised") -> dict:
    return {"ref": ref, "host": "h1", "name": name, "severity": "major", "state": state,
            "message": "m", "first_seen": T0, "last_seen": T0,
            "cleared_at": T0 + 5 if state == "cleared" else None, "count": 1,
            "origin": "threshold", "acked_by": None, "flapping": False, "cause_ref": None}


def notifier(store, routes: dict, rule_emails: dict) -> Notifier:
    return Notifier(routes=parse_routes(routes), store=store, publish=lambda n: None,
                    reactor=reactor, options=DeliveryOptions(), clock=lambda: T0,
                    run_blocking=lambda f, *a: defer.maybeDeferred(f, *a),
                    rule_emails=rule_emails)


def queued(store) -> list[tuple[str, str]]:
    return sorted((r.route, r.recipient) for r in store.rows())


@pytest_twisted.ensureDeferred
async def test_rule_emails_leave_out_what_a_route_mails(store):
    routes = {"defaults": {"group_wait": 0},
              "routes": [{"name": "noc", "match": {"name": "cpu"},
                          "email": ["noc@x.org", "shared@x.org"]}]}
    n = notifier(store, routes, {"cpu": ["shared@x.org", "owner@x.org"], "disk": ["ops@x.org"]})
    await n.start(tick_interval=None)
    assert await n.handle_alarm(alarm(1, "cpu"), T0) == 2
    assert await n.handle_alarm(alarm(2, "disk"), T0) == 1   # no route: the rule's own
    assert await n.handle_alarm(dict(alarm(3, "cpu"), origin="trap"), T0) == 1  # not the rule's
    await n.tick(T0, deliver=False)
    # One message per route and host (group_by host); shared@ only from the route.
    assert queued(store) == [("noc", "noc@x.org"), ("noc", "shared@x.org"),
                             ("rule:cpu", "owner@x.org"), ("rule:disk", "ops@x.org")]


@pytest_twisted.ensureDeferred
async def test_a_muted_route_does_not_take_the_address_from_the_rule(store):
    routes = {"defaults": {"group_wait": 0},
              "routes": [{"name": "noc", "match": {"name": "cpu"}, "email": ["shared@x.org"],
                          "mute": [{"hours": "00:00-24:00"}]}]}
    n = notifier(store, routes, {"cpu": ["shared@x.org"]})
    await n.start(tick_interval=None)
    await n.handle_alarm(alarm(1, "cpu"), T0)
    await n.tick(T0, deliver=False)
    assert queued(store) == [("rule:cpu", "shared@x.org")]


@pytest_twisted.ensureDeferred
async def test_reconfigure_drops_the_groups_of_removed_routes(store):
    routes = {"defaults": {"group_wait": "1h"},
              "routes": [{"name": "noc", "email": "noc@x.org"}]}
    n = notifier(store, routes, {})
    await n.start(tick_interval=None)
    await n.handle_alarm(alarm(1, "cpu"), T0)
    assert len(store.load()[0]) == 1
    dropped = await n.reconfigure(routes=parse_routes(
        {"routes": [{"name": "other", "email": "o@x.org"}]}))
    assert dropped == 1 and store.load()[0] == {}
    await n.handle_alarm(alarm(2, "cpu"), T0)
    assert [g["route"] for g in store.load()[0].values()] == ["other"]
