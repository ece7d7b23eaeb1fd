"""The grouper's journal: what the notifier stores is only what changed, and it is enough.

Replaying the journal's changes onto a copy of the saved state must always
give the grouper's whole state (random alarms, holds, flushes); a rollback
must give back the state before the journal.
"""

from __future__ import annotations

import json
import random

import pytest

from connector_alerter.grouping import Grouper
from connector_alerter.routes import parse_routes

T0 = 1_795_000_000.0


def make_routes():
    return parse_routes({"routes": [
        {"name": "r", "email": "a@x.org", "group_wait": 5, "group_interval": 20,
         "repeat_interval": 60, "group_by": ["host"]},
        {"name": "s", "email": "b@x.org", "group_wait": 0, "group_interval": 10,
         "repeat_interval": 0, "group_by": ["host", "name"]}]}).routes


def apply(saved_groups, saved_last, journal, grouper):
    groups, last = journal.changes(grouper)
    for gid, text in groups.items():
        if text is None:
            saved_groups.pop(gid, None)
        else:
            saved_groups[gid] = json.loads(text)
    for ref, rec in last.items():
        if rec is None:
            saved_last.pop(ref, None)
        else:
            saved_last[ref] = rec
    return len(groups)


@pytest.mark.parametrize("seed", range(20))
def test_journal_changes_rebuild_the_whole_state(seed):
    rnd = random.Random(seed)
    routes = make_routes()
    g = Grouper(routes)
    saved_groups, saved_last = {}, {}
    alarms = {}
    now = T0
    held = set()

    def hold(route, a, t):
        return "held" if a["ref"] in held else None

    for _step in range(300):
        now += rnd.choice([0, 0.5, 3, 11, 70])
        op = rnd.random()
        if op < 0.6:
            ref = rnd.randrange(30)
            a = alarms.get(ref)
            if a is None or a["state"] == "cleared" and rnd.random() < 0.5:
                a = {"ref": ref, "host": f"h{ref % 4}", "name": f"n{ref % 3}",
                     "severity": "major", "state": "raised", "message": "m",
                     "first_seen": now, "last_seen": now, "cleared_at": None, "count": 1,
                     "origin": "trap", "acked_by": None, "flapping": False, "cause_ref": None}
            elif a["state"] != "cleared":
                a = dict(a, state="cleared", cleared_at=now, last_seen=now)
            else:
                a = dict(a, last_seen=now)
            alarms[ref] = a
            for route in routes:
                g.add(route, route.group_labels(a, {}), a, now)
        elif op < 0.7:
            held ^= {rnd.randrange(30)}
        else:
            g.due(now, hold)
            if rnd.random() < 0.1:
                g.forget_last(now - 100)
        if rnd.random() < 0.3:
            before = (json.loads(json.dumps(g.groups)), json.loads(json.dumps(g.last)))
            journal = g.take_journal()
            if rnd.random() < 0.2:
                g.rollback(journal)      # a failed commit
                assert (g.groups, g.last) == before_saved(saved_groups, saved_last)
                continue
            apply(saved_groups, saved_last, journal, g)
            assert saved_groups == before[0] and saved_last == before[1]


def before_saved(groups, last):
    return json.loads(json.dumps(groups)), json.loads(json.dumps(last))


def test_adding_to_one_group_journals_only_that_group():
    routes = make_routes()[:1]
    g = Grouper(routes)
    for i in range(500):
        a = {"ref": i, "host": f"h{i}", "name": "x", "severity": "major", "state": "raised",
             "message": "m", "first_seen": T0, "last_seen": T0, "count": 1, "origin": "trap"}
        g.add(routes[0], routes[0].group_labels(a, {}), a, T0)
    g.take_journal()
    a = {"ref": 9999, "host": "h7", "name": "x", "severity": "major", "state": "raised",
         "message": "m", "first_seen": T0, "last_seen": T0, "count": 1, "origin": "trap"}
    g.add(routes[0], routes[0].group_labels(a, {}), a, T0 + 1)
    groups, last = g.take_journal().changes(g)
    assert list(groups) == [g.add(routes[0], {"host": "h7"}, a, T0 + 1)] and last == {}
    # A flush at group_wait tells all 500 groups: each is journaled once.
    assert len(g.due(T0 + 5, lambda r, a, t: None)) == 500
    groups, last = g.take_journal().changes(g)
    assert len(groups) == 500 and len(last) == 501
    assert g.due(T0 + 6, lambda r, a, t: None) == []
    assert not g.take_journal()
