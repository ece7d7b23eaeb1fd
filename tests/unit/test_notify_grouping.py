"""Grouping with a fake clock: group_wait, group_interval, repeat, recovery, holds, keys."""

from __future__ import annotations

import json

from connector_alerter.grouping import Grouper, transition_key
from connector_alerter.routes import parse_routes

T0 = 1_795_000_000.0


def routes(**opts):
    spec = {"name": "r", "email": "a@x.org", "group_wait": 30, "group_interval": 300,
            "repeat_interval": 3600}
    spec.update(opts)
    return parse_routes({"routes": [spec]}).routes[0]


def alarm(ref, state="raised", host="h1", t=T0, **kw):
    a = {"ref": ref, "host": host, "name": f"a{ref}", "severity": "major", "state": state,
         "message": "m", "first_seen": t, "last_seen": t, "cleared_at": None, "count": 1,
         "origin": "trap", "acked_by": None, "flapping": False}
    a.update(kw)
    return a


def nohold(route, a, now):
    return None


class Clock:
    def __init__(self, route, hold=nohold):
        self.route, self.g, self.hold = route, Grouper([route]), hold

    def add(self, a, now):
        self.g.add(self.route, self.route.group_labels(a, {}), a, now)

    def due(self, now):
        return self.g.due(now, self.hold)


def test_group_wait_collects_then_one_message():
    c = Clock(routes())
    c.add(alarm(1), T0)
    c.add(alarm(2, t=T0 + 10), T0 + 10)
    c.add(alarm(3, host="h2"), T0 + 10)
    assert c.due(T0 + 29) == []
    assert c.g.next_wakeup() == T0 + 30
    out = c.due(T0 + 30)
    assert len(out) == 1 and [a["ref"] for a in out[0].firing] == [1, 2]
    assert out[0].labels == {"host": "h1"}
    assert [a["ref"] for b in c.due(T0 + 40) for a in b.firing] == [3]
    assert c.due(T0 + 41) == []


def test_group_interval_for_changes_and_recovery():
    c = Clock(routes())
    c.add(alarm(1), T0)
    c.due(T0 + 30)
    c.add(alarm(2, t=T0 + 60), T0 + 60)
    assert c.due(T0 + 100) == []          # waits for group_interval after the last message
    b = c.due(T0 + 330)[0]
    assert [(a["ref"], a["new"]) for a in b.firing] == [(1, False), (2, True)]
    c.add(alarm(1, "cleared", last_seen=T0 + 400, cleared_at=T0 + 400), T0 + 400)
    b = c.due(T0 + 630)[0]
    assert [a["ref"] for a in b.resolved] == [1] and [a["ref"] for a in b.firing] == [2]
    assert b.resolved[0]["idempotency_key"] == f"1:cleared:{T0 + 400!r}"


def test_repeat_interval_reminds_of_active_alarms():
    c = Clock(routes())
    c.add(alarm(1), T0)
    first = c.due(T0 + 30)[0]
    assert c.g.next_wakeup() == T0 + 30 + 3600
    assert c.due(T0 + 3629) == []
    again = c.due(T0 + 3630)[0]
    assert again.repeat == 1 and again.key != first.key and again.firing[0]["new"] is False
    assert c.due(T0 + 3631) == []


def test_cleared_within_group_wait_sends_nothing_and_no_resolved_when_off():
    c = Clock(routes())
    c.add(alarm(1), T0)
    c.add(alarm(1, "cleared", last_seen=T0 + 5, cleared_at=T0 + 5), T0 + 5)
    assert c.due(T0 + 30) == [] and c.g.groups == {}
    c = Clock(routes(send_resolved=False))
    c.add(alarm(1), T0)
    c.due(T0 + 30)
    c.add(alarm(1, "cleared", last_seen=T0 + 50, cleared_at=T0 + 50), T0 + 50)
    assert c.due(T0 + 1000) == [] and c.g.groups == {}


def test_idempotency_key_single_transition_and_stable_after_restart():
    c = Clock(routes())
    c.add(alarm(5), T0)
    state = json.loads(json.dumps(c.g.export()))
    b1 = c.due(T0 + 30)[0]
    assert b1.key == transition_key(alarm(5)) == f"5:raised:{T0!r}"
    # The same state restored elsewhere yields the same message and key.
    other = Clock(routes())
    other.g.load(state)
    b2 = other.due(T0 + 30)[0]
    assert (b2.key, b2.firing) == (b1.key, b1.firing)
    # Two alarms: a digest, the same whatever their order.
    k = []
    for order in ((1, 2), (2, 1)):
        c = Clock(routes())
        for r in order:
            c.add(alarm(r), T0)
        k.append(c.due(T0 + 30)[0].key)
    assert k[0] == k[1] and k[0].startswith("g:")


def test_replayed_messages_are_not_told_twice():
    c = Clock(routes())
    c.add(alarm(1), T0)
    c.due(T0 + 30)
    c.add(alarm(1), T0 + 40)               # redelivered raise
    assert c.due(T0 + 400) == []
    c.add(alarm(1, "cleared", last_seen=T0 + 50, cleared_at=T0 + 50), T0 + 50)
    assert c.due(T0 + 400)[0].resolved
    c.add(alarm(1, "cleared", last_seen=T0 + 50, cleared_at=T0 + 50), T0 + 500)
    c.add(alarm(1, "updated", last_seen=T0 + 20), T0 + 500)   # late, older
    assert c.due(T0 + 2000) == [] and c.g.groups == {}


def test_held_alarm_suppressed_once_then_told_when_hold_ends():
    held = {"until": T0 + 100}

    def hold(route, a, now):
        return "silenced by 1" if now < held["until"] else None

    c = Clock(routes(), hold)
    c.add(alarm(1), T0)
    b = c.due(T0 + 30)[0]
    assert not b.sends and b.suppressed[0][1] == "silenced by 1"
    assert c.due(T0 + 60) == []            # recorded once
    b = c.due(T0 + 100)[0]                 # the silence ended: told at once
    assert [a["ref"] for a in b.firing] == [1]


def test_cleared_under_silence_gets_its_recovery_when_it_ends():
    def hold(route, a, now):
        return "silenced" if now < T0 + 1000 else None

    c = Clock(routes(), hold)
    c.add(alarm(1), T0)
    assert c.due(T0 + 30)[0].suppressed
    c.add(alarm(1, "cleared", last_seen=T0 + 500, cleared_at=T0 + 500), T0 + 500)
    b = c.due(T0 + 600)[0]
    assert not b.sends and b.suppressed[0][0]["state"] == "cleared"
    b = c.due(T0 + 1000)[0]
    assert [a["ref"] for a in b.resolved] == [1] and not b.firing


def test_acked_alarm_gets_no_reminder_and_flapping_waits_until_stable():
    def hold(route, a, now):
        if a["state"] == "cleared":
            return None
        if a["acked_by"] and not route.notify_acked:
            return "acked"
        return "flapping" if a["flapping"] else None

    c = Clock(routes(), hold)
    c.add(alarm(1), T0)
    c.due(T0 + 30)
    c.add(alarm(1, "updated", acked_by="bob"), T0 + 40)
    assert c.due(T0 + 5000) == []
    c.add(alarm(2, flapping=True), T0 + 100)
    assert c.due(T0 + 5000)[0].suppressed[0][1] == "flapping"
    c.add(alarm(2, "updated", last_seen=T0 + 6000, flapping=False), T0 + 6000)
    b = c.due(T0 + 6000)[0]
    assert [a["ref"] for a in b.firing] == [2]


# --- properties ---------------------------------------------------------------------

from hypothesis import example, given, settings, strategies as st  # noqa: E402

_event = st.tuples(st.integers(1, 4),                       # ref
                   st.sampled_from(["raise", "clear"]),
                   st.integers(0, 400),                      # seconds since the last event
                   st.booleans(),                            # restart (export/load) after it
                   st.booleans())                            # replay the previous message


@settings(max_examples=200, deadline=None)
@given(st.lists(_event, max_size=30))
# A replayed clear of an earlier occurrence, with the last_seen of the raise that follows it.
@example([(1, "raise", 0, False, False), (1, "clear", 100, False, False),
          (1, "raise", 0, False, True)])
def test_no_transition_is_told_twice_and_every_raise_is_told(events):
    route = routes(group_wait=30, group_interval=60, repeat_interval=0)
    c = Clock(route)
    now = T0
    current: dict[int, dict] = {}
    told: list[str] = []
    last_msg = None
    for ref, kind, gap, restart, replay in events:
        now += gap
        a = current.get(ref)
        if kind == "raise" and (a is None or a["state"] == "cleared"):
            if a is not None and a["first_seen"] == now:
                # (ref, first_seen) names an occurrence (its transition key): a new one
                # with the same first_seen is the same occurrence to the notifier.
                continue
            a = alarm(ref, t=now)
        elif kind == "clear" and a is not None and a["state"] != "cleared":
            a = dict(a, state="cleared", last_seen=now, cleared_at=now)
        else:
            continue
        current[ref] = a
        c.add(a, now)
        if replay and last_msg is not None:
            c.add(last_msg, now)
        last_msg = a
        for b in c.due(now):
            told += [x["idempotency_key"] for x in b.firing + b.resolved if x["new"]]
        if restart:
            state, last = c.g.export(), json.loads(json.dumps(c.g.last))
            c = Clock(route)
            c.g.load(state, last)
    for _ in range(3):
        now += 1000
        for b in c.due(now):
            told += [x["idempotency_key"] for x in b.firing + b.resolved if x["new"]]
    assert len(told) == len(set(told))
    # Every alarm still active in the end has been told.
    for a in current.values():
        if a["state"] != "cleared":
            assert transition_key(a) in told
    # Every told recovery follows a told raise of that alarm.
    for k in told:
        if ":cleared:" in k:
            assert any(t.startswith(k.split(":")[0] + ":raised:") for t in told[:told.index(k)])
