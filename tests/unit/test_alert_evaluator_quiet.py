"""The evaluator's shortcut for quiet values gives what its feeders alone give.

A metric whose rules are all plain ordered comparisons is skipped for a
numeric value that none of them reaches (``_entry``), unless a leaf
holds for the value's index. Compared here with the same evaluator whose
shortcut is switched off (every value through every feeder), on mixed
values: ints, floats, bools, NaN, text, None, values equal to a threshold.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.messages import Metric, Perf
from connector_alerter import evaluator as evaluator_module
from connector_alerter.evaluator import Evaluator, _entry
from connector_alerter.rules import build_rules

SOURCE = "alerter@test"
OPS = (">", ">=", "<", "<=", "==", "!=")


def rules(records):
    return build_rules([(f"rule {i + 1}", r) for i, r in enumerate(records)], "test")


def perf(ts, values):
    metrics = [Metric(name=name, index=index, value=value,
                      kind="text" if isinstance(value, str) else "gauge", oid="1.3.6.1")
               for name, index, value in values]
    return Perf(source="poller@test", ts=ts, host="h", address="10.0.0.1",
                device_type="t", metrics=metrics)


def without_shortcut(records) -> Evaluator:
    ev = Evaluator(rules(records), {}, SOURCE)
    resolve = ev._resolve

    def no_quiet(plan, name):
        feeders = resolve(plan, name)[0]
        plan[name] = entry = (feeders, float("inf"), float("-inf"), ())
        return entry
    ev._resolve = no_quiet
    return ev


def summary(out):
    return [(t.rule, t.state, [(v.metric, v.index, v.value) for v in t.values]) for t in out]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


values = st.one_of(st.integers(-5, 5), st.floats(-5, 5), st.sampled_from(
    [True, False, None, "x", "2", float("nan"), 2, 2.0, -2, 10**20, float("inf")]))
leaf = st.fixed_dictionaries({"metric": st.sampled_from(["a", "b"]), "op": st.sampled_from(OPS),
                              "value": st.sampled_from([-2, 0, 2, 2.5, 3])})


@settings(max_examples=300, deadline=None)
@given(leaves=st.lists(leaf, min_size=1, max_size=5),
       polls=st.lists(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["", "1"]),
                                         values), max_size=6), min_size=1, max_size=12))
def test_shortcut_gives_what_the_feeders_give(leaves, polls):
    records = [{"name": f"r{i}", "when": lf} for i, lf in enumerate(leaves)]
    fast, slow = Evaluator(rules(records), {}, SOURCE), without_shortcut(records)
    for i, poll in enumerate(polls):
        a, b = summary(fast.evaluate(perf(i, poll))), summary(slow.evaluate(perf(i, poll)))
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x[:2] == y[:2]
            assert len(x[2]) == len(y[2]) and all(
                p[:2] == q[:2] and same(p[2], q[2]) for p, q in zip(x[2], y[2]))
    assert fast.breached() == slow.breached()


def test_quiet_range_only_for_plain_ordered_comparisons():
    ev = Evaluator(rules([{"name": "w", "when": {"metric": "a", "op": ">", "value": 80}},
                          {"name": "c", "when": {"metric": "a", "op": ">=", "value": 95}},
                          {"name": "l", "when": {"metric": "a", "op": "<", "value": 5}},
                          {"name": "e", "when": {"metric": "b", "op": "==", "value": 3}},
                          {"name": "h", "when": {"metric": "d", "op": ">", "value": 3,
                                                 "consecutive": 2}}]), {}, SOURCE)
    ev.evaluate(perf(1, [("a", "", 1.0), ("b", "", 1), ("d", "", 1)]))
    plan = ev._plans["h"]
    _, above, below, checks = plan["a"]
    assert (above, below, len(checks)) == (5, 80, 3)
    for name in ("b", "d"):                     # equality, window: never quiet
        assert plan[name][1] > plan[name][2] and plan[name][3] == ()
    assert _entry(()) == ((), float("-inf"), float("inf"), ())
    assert evaluator_module._ORDERED == frozenset((">", ">=", "<", "<="))
