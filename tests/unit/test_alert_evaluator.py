"""The threshold evaluator: transitions, windows, time, backfill and state."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.messages import Metric, Perf, decode, encode
from connector_alerter.evaluator import Evaluator
from connector_alerter.rules import build_rules
from centaure_shared.inventory import Device

SOURCE = "alerter@test"
MONDAY = 1795392000.0                       # 2026-11-23 00:00 UTC, a Monday


def rules(*records):
    return build_rules([(f"rule {i + 1}", r) for i, r in enumerate(records)], "test")


def perf(host, ts, *values, device_type="vertiv"):
    """values: (name, value) or (name, index, value)."""
    metrics = []
    for item in values:
        name, index, value = item if len(item) == 3 else (item[0], "", item[1])
        kind = "text" if isinstance(value, str) else "gauge"
        metrics.append(Metric(name=name, index=index, value=value, kind=kind, oid="1.3.6.1"))
    return Perf(source="poller@test", ts=ts, host=host, address="10.0.0.1",
                device_type=device_type, metrics=metrics)


def states(out):
    return [(t.host, t.rule, t.state) for t in out]


def feed(ev, host, metric, values, start=1000.0, step=60.0, index=""):
    """Feed values one poll each; the transitions as (position, state)."""
    seen = []
    for i, v in enumerate(values):
        for t in ev.evaluate(perf(host, start + i * step, (metric, index, v))):
            seen.append((i, t.state))
    return seen


def test_breach_and_recovery_once_each():
    ev = Evaluator(rules({"name": "cpu", "when": {"metric": "cpu", "op": ">", "value": 90}}), {}, SOURCE)
    assert ev.evaluate(perf("h", 1, ("cpu", 50))) == []
    out = ev.evaluate(perf("h", 2, ("cpu", 95)))
    assert states(out) == [("h", "cpu", "breached")]
    t = out[0]
    assert decode(encode(t)) == t and t.source == SOURCE
    assert [(v.metric, v.index, v.value) for v in t.values] == [("cpu", "", 95)]
    assert ev.evaluate(perf("h", 3, ("cpu", 99))) == []                 # still breached
    assert ev.evaluate(perf("h", 4, ("cpu", "n/a"))) == []              # text ignored
    assert states(ev.evaluate(perf("h", 5, ("cpu", 10)))) == [("h", "cpu", "recovered")]
    assert ev.evaluate(perf("other", 5, ("cpu", 10))) == []


def test_thresholds_carry_the_rules_severity_and_message():
    ev = Evaluator(rules({"name": "hot", "severity": "major", "message": "Too hot",
                          "when": {"metric": "temp", "op": ">", "value": 40}},
                         {"name": "plain", "when": {"metric": "temp", "op": ">", "value": 45}}),
                   {}, SOURCE)
    out = {t.rule: t for t in ev.evaluate(perf("h", 1, ("temp", 48)))}
    assert (out["hot"].severity, out["hot"].message) == ("major", "Too hot")
    assert (out["plain"].severity, out["plain"].message) == ("warning", "")
    assert decode(encode(out["hot"])) == out["hot"]


def test_every_comparison_and_range_and_text():
    ev = Evaluator(rules(
        {"name": "ge", "when": {"metric": "a", "op": ">=", "value": 5}},
        {"name": "lt", "when": {"metric": "a", "op": "<", "value": 0}},
        {"name": "le", "when": {"metric": "a", "op": "<=", "value": 0}},
        {"name": "eq", "when": {"metric": "a", "op": "==", "value": 3}},
        {"name": "ne", "when": {"metric": "a", "op": "!=", "value": 3}},
        {"name": "out", "when": {"metric": "a", "range": "1:4"}},
        {"name": "in", "when": {"metric": "a", "range": "@2:3"}},
        {"name": "down", "when": {"metric": "status", "op": "!=", "value": "up"}},
        {"name": "err", "when": {"metric": "status", "match": "err|fail"}},
    ), {}, SOURCE)
    def breached_after(value, metric="a"):
        ev.evaluate(perf("h", 1, (metric, value)))
        return sorted(rule for rule, _ in ev.breached().get("h", []))
    assert breached_after(3) == ["eq", "in"]
    assert breached_after(5) == ["ge", "ne", "out"]
    assert breached_after(0) == ["le", "ne", "out"]
    assert breached_after(-1) == ["le", "lt", "ne", "out"]
    assert breached_after(2.5) == ["in", "ne"]
    assert "down" not in breached_after("up", "status")
    assert {"down", "err"} <= set(breached_after("failed", "status"))


def test_and_or_per_index():
    ev = Evaluator(rules({"name": "port", "when": {"all": [
        {"metric": "ifInErrors", "index": "*", "op": ">", "value": 10},
        {"any": [{"metric": "ifOperStatus", "index": "*", "op": "==", "value": "up"},
                 {"metric": "ifAdmin", "index": "*", "op": "==", "value": 1}]}]}}), {}, SOURCE)
    out = ev.evaluate(perf("sw", 1, ("ifInErrors", "1", 50), ("ifOperStatus", "2", "up")))
    assert out == []                                           # different indexes
    out = ev.evaluate(perf("sw", 2, ("ifOperStatus", "1", "up")))
    assert states(out) == [("sw", "port", "breached")]
    assert {(v.metric, v.index) for v in out[0].values} == {("ifInErrors", "1"), ("ifOperStatus", "1")}
    assert ev.breached() == {"sw": [("port", "1")]}


def test_glob_metric_and_index():
    ev = Evaluator(rules({"name": "temp", "when": {"metric": "temperature*", "index": "1.*",
                                                    "range": "5:45"}}), {}, SOURCE)
    out = ev.evaluate(perf("h", 1, ("temperatureInlet", "1.1", 50), ("temperatureOutlet", "1.1", 20),
                           ("temperatureInlet", "2.1", 99), ("humidity", "1.1", 99)))
    assert states(out) == [("h", "temp", "breached")]
    assert [(v.metric, v.index, v.value) for v in out[0].values] == [("temperatureInlet", "1.1", 50)]
    # Still breached while one sensor of the index is out of range.
    assert ev.evaluate(perf("h", 2, ("temperatureOutlet", "1.1", 50))) == []
    assert ev.evaluate(perf("h", 3, ("temperatureInlet", "1.1", 20))) == []
    assert states(ev.evaluate(perf("h", 4, ("temperatureOutlet", "1.1", 20)))) == [("h", "temp", "recovered")]


def test_hysteresis_does_not_flap():
    ev = Evaluator(rules({"name": "temp", "when": {"metric": "t", "op": ">", "value": 50,
                                                    "hysteresis": 5}}), {}, SOURCE)
    seen = feed(ev, "h", "t", [49, 51, 49, 51, 48, 46, 45.5, 44.9, 49, 51])
    assert seen == [(1, "breached"), (7, "recovered"), (9, "breached")]
    # Without hysteresis the same values flap at every poll.
    flappy = Evaluator(rules({"name": "temp", "when": {"metric": "t", "op": ">", "value": 50}}), {}, SOURCE)
    assert len(feed(flappy, "h", "t", [49, 51, 49, 51])) == 3


def test_range_hysteresis_and_recovery_condition():
    ev = Evaluator(rules({"name": "v", "when": {"metric": "v", "outside": [10, 20], "hysteresis": 1}},
                         {"name": "cpu", "when": {"metric": "cpu", "op": ">", "value": 90},
                          "recovery": {"metric": "cpu", "op": "<", "value": 70}}), {}, SOURCE)
    assert feed(ev, "h", "v", [15, 21, 19.5, 18.9, 9, 10.5, 11]) == [
        (1, "breached"), (3, "recovered"), (4, "breached"), (6, "recovered")]
    assert feed(ev, "h", "cpu", [95, 80, 89, 71, 69, 91]) == [
        (0, "breached"), (4, "recovered"), (5, "breached")]


def test_consecutive_and_n_of_m():
    ev = Evaluator(rules({"name": "c3", "when": {"metric": "x", "op": ">", "value": 0, "consecutive": 3}},
                         {"name": "n2m4", "when": {"metric": "y", "op": ">", "value": 0,
                                                   "n_of_m": [2, 4]}}), {}, SOURCE)
    assert feed(ev, "h", "x", [1, 1, 0, 1, 1, 1, 1, 0]) == [(5, "breached"), (7, "recovered")]
    assert feed(ev, "h", "y", [1, 0, 0, 1, 0, 0, 0, 0, 1, 1]) == [
        (3, "breached"), (4, "recovered"), (9, "breached")]


def test_rate_of_change():
    ev = Evaluator(rules({"name": "errs", "when": {"metric": "ifInErrors", "index": "*", "rate": True,
                                                    "op": ">", "value": 10}}), {}, SOURCE)
    # 60 s apart: +300 is 5/s, +1200 is 20/s.
    assert feed(ev, "h", "ifInErrors", [0, 300, 1500, 2700, 2800], index="3") == [
        (2, "breached"), (4, "recovered")]


def test_deadman_via_tick_and_silent_inventory_device():
    devices = {"quiet": Device(name="quiet", address="10.0.0.9", device_type="vertiv")}
    ev = Evaluator(rules({"name": "silent", "when": {"metric": "*", "absent": "10m"}}), devices, SOURCE)
    assert ev.tick(0.0) == []
    ev.evaluate(perf("h", 100.0, ("cpu", 1), ("mem", 2)))
    assert ev.tick(599.0) == []
    assert states(ev.tick(600.0)) == [("quiet", "silent", "breached")]
    assert states(ev.tick(700.0)) == [("h", "silent", "breached")]
    assert ev.tick(800.0) == []                                       # no repeat
    out = ev.evaluate(perf("h", 801.0, ("mem", 3)))
    assert states(out) == [("h", "silent", "recovered")]


def test_for_duration():
    ev = Evaluator(rules({"name": "cpu", "for": "5m",
                          "when": {"metric": "cpu", "op": ">", "value": 90}}), {}, SOURCE)
    assert ev.evaluate(perf("h", 0, ("cpu", 95))) == []
    assert ev.tick(200) == []
    assert ev.evaluate(perf("h", 240, ("cpu", 50))) == []             # interrupted: restart
    assert ev.evaluate(perf("h", 300, ("cpu", 95))) == []
    assert ev.tick(599) == []
    assert states(ev.tick(600)) == [("h", "cpu", "breached")]
    assert ev.tick(900) == []
    assert states(ev.evaluate(perf("h", 960, ("cpu", 10)))) == [("h", "cpu", "recovered")]
    # A value arriving after the duration breaches without waiting for tick.
    assert ev.evaluate(perf("h", 1000, ("cpu", 95))) == []
    assert states(ev.evaluate(perf("h", 1300, ("cpu", 96)))) == [("h", "cpu", "breached")]


def test_schedule_and_valid_until():
    sched = {"timezone": "UTC", "windows": [{"days": ["mon"], "hours": "08:00-18:00"}]}
    ev = Evaluator(rules({"name": "day", "schedule": sched, "when": {"metric": "x", "op": ">", "value": 1}},
                         {"name": "old", "valid_until": MONDAY + 12 * 3600,
                          "when": {"metric": "x", "op": ">", "value": 1}}), {}, SOURCE)
    assert ev.tick(MONDAY) == []
    out = ev.evaluate(perf("h", MONDAY + 60, ("x", 5)))                # 00:01: day is off
    assert states(out) == [("h", "old", "breached")]
    assert states(ev.tick(MONDAY + 8 * 3600)) == [("h", "day", "breached")]   # on: holds already
    assert states(ev.tick(MONDAY + 12 * 3600)) == [("h", "old", "recovered")]  # expired
    assert ev.evaluate(perf("h", MONDAY + 12 * 3600 + 60, ("x", 0), ("y", 1))) != []  # day recovers
    ev.evaluate(perf("h", MONDAY + 13 * 3600, ("x", 5)))
    assert states(ev.tick(MONDAY + 18 * 3600)) == [("h", "day", "recovered")]  # off again


def test_selectors_with_inventory():
    devices = {"a": Device(name="a", address="1", device_type="vertiv", model="NetSure 701",
                           tags=("power",)),
               "b": Device(name="b", address="2", device_type="vertiv", model="NetSure 701")}
    ev = Evaluator(rules({"name": "r", "tags": ["power"], "models": ["NetSure*"],
                          "when": {"metric": "v", "op": "<", "value": 48}},
                         {"name": "by-host", "hosts": ["b"], "when": {"metric": "v", "op": "<", "value": 48}},
                         {"name": "huawei", "device_types": ["huawei"],
                          "when": {"metric": "v", "op": "<", "value": 48}}), devices, SOURCE)
    assert states(ev.evaluate(perf("a", 1, ("v", 40)))) == [("a", "r", "breached")]
    assert states(ev.evaluate(perf("b", 1, ("v", 40)))) == [("b", "by-host", "breached")]
    assert states(ev.evaluate(perf("c", 1, ("v", 40), device_type="huawei"))) == [("c", "huawei", "breached")]


def test_legacy_rule_end_to_end():
    conditions = ('[{"metrique": "phase_1_courant ; phase_2_courant", "type_condition": "seuil", '
                  '"valeur_max": "100", "valeur_differente": "2147483647", "nombre_valeurs_seuil": 2, '
                  '"logic_operator": "ET"}]')
    ev = Evaluator(rules({"name": "phase haute", "hosts": ["ups"], "seed": conditions}), {}, SOURCE)
    assert ev.evaluate(perf("ups", 1, ("phase_1_courant", 120), ("phase_2_courant", 2147483647))) == []
    assert ev.evaluate(perf("ups", 2, ("phase_1_courant", 120), ("phase_2_courant", 110))) == []
    out = ev.evaluate(perf("ups", 3, ("phase_1_courant", 120), ("phase_2_courant", 110)))
    assert states(out) == [("ups", "phase haute", "breached")]


def test_backfill_then_no_repeated_breach_and_state_round_trip():
    spec = {"name": "c3", "when": {"metric": "x", "index": "*", "op": ">", "value": 0, "consecutive": 3}}
    samples = [("h", "x", "1", 10.0 * i, v) for i, v in enumerate([1, 1, 1, 1])]
    ev = Evaluator(rules(spec), {}, SOURCE)
    assert ev.backfill(reversed(samples)) == []                       # newest first is fine
    assert ev.breached() == {"h": [("c3", "1")]}
    assert ev.evaluate(perf("h", 50, ("x", "1", 5))) == []            # no repeated breach
    # Windows too: two values after backfill complete a window of three.
    ev2 = Evaluator(rules(spec), {}, SOURCE)
    ev2.backfill([("h", "x", "2", 1.0, 1), ("h", "x", "2", 2.0, 1)])
    assert states(ev2.evaluate(perf("h", 3, ("x", "2", 1)))) == [("h", "c3", "breached")]
    # export -> JSON -> import into a fresh evaluator: the same future.
    state = json.loads(json.dumps(ev2.export_state()))
    ev3 = Evaluator(rules(spec), {}, SOURCE)
    ev3.import_state(state)
    assert ev3.export_state() == ev2.export_state()
    assert ev3.evaluate(perf("h", 4, ("x", "2", 2))) == []
    assert states(ev3.evaluate(perf("h", 5, ("x", "2", 0)))) == [("h", "c3", "recovered")]


def test_backfill_emit_reports_what_happened_while_down():
    spec = {"name": "hi", "when": {"metric": "x", "op": ">", "value": 0}}
    ev = Evaluator(rules(spec), {}, SOURCE)
    ev.evaluate(perf("h", 1, ("x", 5)))
    saved = ev.export_state()
    restarted = Evaluator(rules(spec), {}, SOURCE)
    restarted.import_state(saved)
    out = restarted.backfill([("h", "x", "", 2.0, 7), ("h", "x", "", 3.0, 0)], emit=True)
    assert [t.state for t in out] == ["recovered"]


def test_state_for_windowed_hysteresis_and_deadman_round_trip():
    spec = [{"name": "w", "when": {"metric": "x", "op": ">", "value": 0, "consecutive": 2, "hysteresis": 1}},
            {"name": "n", "when": {"metric": "x", "op": ">", "value": 0, "n_of_m": [2, 3]}},
            {"name": "d", "when": {"metric": "x", "absent": "1m"}},
            {"name": "f", "for": "1m", "when": {"metric": "x", "op": ">", "value": 0}}]
    ev = Evaluator(rules(*spec), {}, SOURCE)
    ev.evaluate(perf("h", 1, ("x", 1)))
    state = json.loads(json.dumps(ev.export_state()))
    ev2 = Evaluator(rules(*spec), {}, SOURCE)
    ev2.import_state(state)
    assert ev2.export_state() == ev.export_state()
    assert sorted(states(ev2.evaluate(perf("h", 2, ("x", 1))))) == [("h", "n", "breached"), ("h", "w", "breached")]
    assert states(ev2.tick(61)) == [("h", "f", "breached")]
    assert states(ev2.tick(200)) == [("h", "d", "breached")]


# --- properties ----------------------------------------------------------------

bits = st.lists(st.booleans(), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(values=bits, n=st.integers(1, 6), general=st.booleans())
def test_property_consecutive(values, n, general):
    leaf = {"metric": "x", "op": ">", "value": 0, "consecutive": n}
    if general:
        leaf["index"] = "*"                      # the general feeder instead of the generated one
    ev = Evaluator(rules({"name": "r", "when": leaf}), {}, SOURCE)
    for i, v in enumerate(values):
        ev.evaluate(perf("h", i, ("x", 1 if v else 0)))
        expected = i + 1 >= n and all(values[i + 1 - n:i + 1])
        assert bool(ev.breached()) == expected


@settings(max_examples=150, deadline=None)
@given(values=bits, data=st.data())
def test_property_n_of_m(values, data):
    m = data.draw(st.integers(1, 8))
    n = data.draw(st.integers(1, m))
    ev = Evaluator(rules({"name": "r", "when": {"metric": "x", "op": ">", "value": 0,
                                                 "n_of_m": [n, m]}}), {}, SOURCE)
    for i, v in enumerate(values):
        ev.evaluate(perf("h", i, ("x", 1 if v else 0)))
        assert bool(ev.breached()) == (sum(values[max(0, i + 1 - m):i + 1]) >= n)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=30),
       h=st.floats(0, 5), n=st.integers(1, 3))
def test_property_generated_and_general_feeders_agree(values, h, n):
    leaf = {"metric": "x", "op": ">", "value": 0, "hysteresis": h, "consecutive": n}
    fast = Evaluator(rules({"name": "r", "when": leaf}), {}, SOURCE)
    general = Evaluator(rules({"name": "r", "when": dict(leaf, index="*")}), {}, SOURCE)
    for i, v in enumerate(values):
        a = states(fast.evaluate(perf("h", i, ("x", v))))
        b = states(general.evaluate(perf("h", i, ("x", v))))
        assert a == b


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(-3, 3), min_size=2, max_size=30), cut=st.integers(0, 30))
def test_property_backfill_equals_live(values, cut):
    """Backfilling a prefix then going live gives the same state as live all along."""
    spec = {"name": "r", "when": {"metric": "x", "op": ">", "value": 0, "n_of_m": [2, 3]}}
    cut = min(cut, len(values))
    live = Evaluator(rules(spec), {}, SOURCE)
    for i, v in enumerate(values):
        live.evaluate(perf("h", i, ("x", v)))
    restarted = Evaluator(rules(spec), {}, SOURCE)
    restarted.backfill(("h", "x", "", float(i), v) for i, v in enumerate(values[:cut]))
    for i, v in enumerate(values[cut:], start=cut):
        restarted.evaluate(perf("h", i, ("x", v)))
    assert restarted.export_state() == live.export_state()
