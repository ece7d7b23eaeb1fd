"""A change of an alarm reaches every group holding it, whatever its route matches now.

A route matching on severity takes an alarm raised major; the correlator
then lowers its severity (masking) and clears it: the route must show the
update, tell the recovery and remind no more. Fake clock, fake sends.
"""

from __future__ import annotations

import random

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector_alerter import migrate
from connector_alerter.grouping import Grouper
from connector_alerter.notifier import DeliveryOptions, Notifier
from connector_alerter.outbox import OutboxStore
from connector_alerter.routes import parse_routes

T0 = 1_795_000_000.0
TIMES = {"group_wait": 30, "group_interval": 300, "repeat_interval": 3600,
         "send_resolved": True}


@pytest.fixture
def store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'n.sqlite3'}")
    migrate.upgrade(engine)
    yield OutboxStore(engine)
    engine.dispose()


def alarm(ref, state="raised", t=T0, **kw):
    a = {"ref": ref, "host": "h1", "name": f"a{ref}", "severity": "major", "state": state,
         "message": "m", "first_seen": T0, "last_seen": t, "cleared_at": None, "count": 1,
         "origin": "trap", "acked_by": None, "flapping": False, "cause_ref": None}
    a.update(kw)
    return a


class Fake:
    """A notifier with a ``>=major`` route and a ``minor`` one; sends recorded."""

    def __init__(self, store):
        self.sent = []
        self.n = Notifier(
            routes=parse_routes({"routes": [
                dict(TIMES, name="major", email="oncall@x.org", match={"severity": ">=major"}),
                dict(TIMES, name="minor", email="team@x.org", match={"severity": "minor"})]}),
            store=store, publish=lambda m: None, reactor=reactor,
            options=DeliveryOptions(), clock=lambda: T0,
            run_blocking=lambda f, *a: defer.maybeDeferred(f, *a))
        self.n._send = lambda row: defer.succeed(self.sent.append(row))

    async def tick(self, t):
        """What was told at ``t``: {route: [(kind, ref, severity), ...]} (sent rows too)."""
        self.sent.clear()
        told = {}
        for b in await self.n.tick(t):
            told.setdefault(b.route, []).extend(
                [("repeat" if b.repeat else "firing", a["ref"], a["severity"]) for a in b.firing]
                + [("resolved", a["ref"], a["severity"]) for a in b.resolved])
        assert sorted(r.route for r in self.sent) == sorted(told)
        return told


@pytest_twisted.ensureDeferred
async def test_a_lowered_then_cleared_alarm_is_updated_and_resolved_on_the_route_that_told_it(
        store):
    f = Fake(store)
    await f.n.start(tick_interval=None)
    assert await f.n.handle_alarm(alarm(1), T0) == 1
    assert await f.tick(T0 + 30) == {"major": [("firing", 1, "major")]}

    # Masked under a root cause: minor now, which the major route does not match.
    masked = alarm(1, t=T0 + 100, severity="minor", cause_ref=9)
    assert await f.n.handle_alarm(masked, T0 + 100) == 2
    (gid,) = [g for g in f.n.grouper.holding(1)
              if f.n.grouper.groups[g]["route"] == "major"]
    assert f.n.grouper.groups[gid]["alarms"]["1"]["alarm"]["severity"] == "minor"
    # The minor route takes it as a new alarm, as any alarm it matches.
    assert await f.tick(T0 + 130) == {"minor": [("firing", 1, "minor")]}
    # The major route's reminder shows it as it is now.
    assert await f.tick(T0 + 30 + 3600) == {"major": [("repeat", 1, "minor")]}

    cleared = alarm(1, state="cleared", t=T0 + 4000, severity="minor", cause_ref=9,
                    cleared_at=T0 + 4000)
    assert await f.n.handle_alarm(cleared, T0 + 4000) == 2
    told = await f.tick(T0 + 4000)
    told.update(await f.tick(T0 + 4030))
    assert told == {"major": [("resolved", 1, "minor")], "minor": [("resolved", 1, "minor")]}
    # No reminder of a cleared alarm, however long we wait.
    for t in (T0 + 30 + 2 * 3600, T0 + 130 + 2 * 3600, T0 + 10 * 3600):
        assert await f.tick(t) == {}
    assert f.n.grouper.groups == {} and f.n.grouper.holding(1) == []
    assert f.n.grouper.next_wakeup() is None


@pytest_twisted.ensureDeferred
async def test_a_new_occurrence_is_taken_only_by_the_routes_matching_it(store):
    f = Fake(store)
    await f.n.start(tick_interval=None)
    await f.n.handle_alarm(alarm(1), T0)
    await f.tick(T0 + 30)
    await f.n.handle_alarm(alarm(1, state="cleared", t=T0 + 50, cleared_at=T0 + 50), T0 + 50)
    assert await f.tick(T0 + 330) == {"major": [("resolved", 1, "major")]}
    again = alarm(1, t=T0 + 400, first_seen=T0 + 400, severity="minor")
    assert await f.n.handle_alarm(again, T0 + 400) == 1
    assert await f.tick(T0 + 430) == {"minor": [("firing", 1, "minor")]}


def test_the_index_by_ref_follows_adds_flushes_rollbacks_and_loads():
    routes = parse_routes({"routes": [
        {"name": "r", "email": "a@x.org", "group_wait": 5, "group_interval": 20,
         "repeat_interval": 60, "group_by": ["host"], "continue": True},
        {"name": "s", "email": "b@x.org", "group_wait": 0, "group_interval": 10,
         "repeat_interval": 0, "group_by": ["host", "name"]}]}).routes
    rnd = random.Random(7)
    g = Grouper(routes)

    def scan():
        held = {}
        for gid, grp in g.groups.items():
            for ref in grp["alarms"]:
                held.setdefault(ref, []).append(gid)
        return {ref: sorted(gids) for ref, gids in held.items()}

    now, alarms, saved = T0, {}, g.export()
    for _ in range(400):
        now += rnd.choice([0, 3, 11, 70])
        op = rnd.random()
        if op < 0.6:
            ref = rnd.randrange(20)
            a = alarms.get(ref)
            if a is None or a["state"] == "cleared":
                a = alarm(ref, t=now, first_seen=now, host=f"h{ref % 3}")
            else:
                a = dict(a, state="cleared", cleared_at=now, last_seen=now)
            alarms[ref] = a
            for route in routes:
                g.add(route, route.group_labels(a, {}), a, now)
        elif op < 0.8:
            g.due(now, lambda route, a, t: None)
        elif op < 0.9:
            g.rollback()
        else:
            g.take_journal()
            saved = g.export()
        assert {ref: g.holding(ref) for ref in scan()} == scan()
        assert all(g.holding(ref) == [] for ref in range(20) if str(ref) not in scan())
    g.load(saved)
    assert {ref: g.holding(ref) for ref in scan()} == scan()
