"""The evaluator's persisted state: change tracking, saves, and replay after a restart.

What a user relies on: a restart (clean or kill -9) neither misses nor
repeats a breach. The evaluator's state is saved per host; a restart imports
it and replays the samples stored since; the transitions found are those the
live stream found, with the same message ids, so that the correlator drops
the ones it already applied.
"""

from __future__ import annotations

import pytest_twisted
import sqlalchemy as sa

from connector.messages import Metric, Perf
from connector_alarms.machine import Correlator, MemoryHostStates
from connector_alarms.settings import CorrelatorSettings
from connector_alerter import migrate
from connector_alerter.evaluator import Evaluator
from connector_alerter.rules import build_rules
from connector_alerter.state import EvalStateStore, StateSaver, ms, threshold_message_id

SOURCE = "alerter@test"
T0 = 1_795_000_000.0
RULES = build_rules([("r1", {"name": "cpu-high", "when": {"metric": "cpuLoad", "op": ">",
                                                             "value": 90, "consecutive": 2}}),
                     ("r2", {"name": "if-errors", "when": {"metric": "ifInErrors", "op": ">",
                                                              "value": 10}}),
                     ("r3", {"name": "silent", "when": {"metric": "cpuLoad", "absent": "5m"}})],
                    "test")


def perf(host: str, ts: float, *values) -> Perf:
    """values: (name, index, value)."""
    return Perf(source="poller@test", ts=ts, host=host, address="10.0.0.1", device_type="router",
                metrics=[Metric(name=n, index=i, value=v, kind="gauge", oid="1.3.6.1")
                         for n, i, v in values])


def stored(perfs) -> list[tuple]:
    """The samples as the writer stores and the query API gives them back (ms, floats)."""
    return [(p.host, m.name, m.index, ms(p.ts) / 1000.0, float(m.value))
            for p in perfs for m in p.metrics]


def ids(thresholds) -> list[str]:
    return [threshold_message_id(t) for t in thresholds]


# A breach of cpu-high at 2, two if-errors instances breaching together at 3, recoveries.
POLLS = [
    perf("r1", T0 + 0.1234, ("cpuLoad", "", 95), ("ifInErrors", "1", 0), ("ifInErrors", "2", 0)),
    perf("r1", T0 + 60.5678, ("cpuLoad", "", 50), ("ifInErrors", "1", 0), ("ifInErrors", "2", 0)),
    perf("r1", T0 + 120.0, ("cpuLoad", "", 96), ("ifInErrors", "1", 0), ("ifInErrors", "2", 0)),
    perf("r1", T0 + 180.0, ("cpuLoad", "", 97), ("ifInErrors", "1", 50), ("ifInErrors", "2", 60)),
    perf("r1", T0 + 240.0, ("cpuLoad", "", 40), ("ifInErrors", "1", 0), ("ifInErrors", "2", 70)),
    perf("r1", T0 + 300.0, ("cpuLoad", "", 30), ("ifInErrors", "1", 0), ("ifInErrors", "2", 0)),
]


def live(polls) -> tuple[Evaluator, list]:
    ev = Evaluator(RULES, {}, SOURCE)
    out = []
    for p in polls:
        out.extend(ev.evaluate(p))
    return ev, out


def test_replay_from_a_checkpoint_finds_the_same_transitions_and_ids():
    """Killed after publishing, before saving: the replay repeats them with the same ids."""
    ev, _ = live(POLLS[:2])
    checkpoint = ev.take_changes()["r1"]
    live_out = []
    for p in POLLS[2:]:
        live_out.extend(ev.evaluate(p))
    assert [(t.rule, t.state) for t in live_out] == [
        ("cpu-high", "breached"), ("if-errors", "breached"), ("if-errors", "breached"),
        ("cpu-high", "recovered"), ("if-errors", "recovered"), ("if-errors", "recovered")]
    assert len(set(ids(live_out))) == 6

    restarted = Evaluator(RULES, {}, SOURCE)
    state, ts, _ = checkpoint
    assert ts == POLLS[1].ts
    restarted.import_state({"r1": state})
    replayed = restarted.backfill([s for s in stored(POLLS) if ms(s[3]) > ms(ts)], emit=True)
    assert [(t.rule, t.state, [(v.metric, v.index, v.value) for v in t.values])
            for t in replayed] == [
        (t.rule, t.state, [(v.metric, v.index, float(v.value)) for v in t.values])
        for t in live_out]
    assert ids(replayed) == ids(live_out)
    assert restarted.export_state() == ev.export_state()

    # The correlator drops the repeats: one alarm per instance, raised then cleared, once.
    states = MemoryHostStates()
    corr = Correlator(states, CorrelatorSettings(update_interval=0), "correlator@test",
                      clock_now=lambda: T0 + 400)
    first = [m for t, mid in zip(live_out, ids(live_out)) for m in corr.apply(t, mid)]
    again = [m for t, mid in zip(replayed, ids(replayed)) for m in corr.apply(t, mid)]
    assert sorted(alarm.state for _mid, alarm in first) == ["cleared"] * 3 + ["raised"] * 3
    assert again == []
    assert corr.counters["duplicates"] == 6


def test_restart_from_saved_breach_publishes_only_what_changed():
    ev, out = live(POLLS[:4])
    assert {t.state for t in out} == {"breached"}
    state, ts, transitions = ev.take_changes()["r1"]
    assert transitions and ts == POLLS[3].ts

    # Nothing stored since the save: nothing to publish, breaches kept.
    quiet = Evaluator(RULES, {}, SOURCE)
    quiet.import_state({"r1": state})
    assert quiet.backfill([], emit=True) == []
    assert quiet.breached() == ev.breached()

    # Recovered while down: published once, relative to the saved breach status.
    down = Evaluator(RULES, {}, SOURCE)
    down.import_state({"r1": state})
    after = down.backfill(stored(POLLS[4:]), emit=True)
    assert [(t.rule, t.state, [v.index for v in t.values]) for t in after] == [
        ("cpu-high", "recovered", [""]), ("if-errors", "recovered", ["1"]),
        ("if-errors", "recovered", ["2"])]
    assert down.breached() == {}


def test_take_changes_reports_fed_hosts_and_transitions_once():
    ev = Evaluator(RULES, {}, SOURCE)
    assert ev.take_changes() == {}
    ev.evaluate(perf("a", T0, ("cpuLoad", "", 10)))
    ev.evaluate(perf("b", T0 + 1, ("ifInErrors", "1", 11)))
    changes = ev.take_changes()
    assert {h: (c[1], c[2]) for h, c in changes.items()} == {"a": (T0, False),
                                                             "b": (T0 + 1, True)}
    assert changes["b"][0]["breached"] == [["if-errors", "1", T0 + 1]]
    assert ev.take_changes() == {}
    # Time alone (the deadman rule) changes a host too; its data time stays.
    ev.tick(T0 + 1)
    ev.tick(T0 + 400)
    changes = ev.take_changes()
    assert changes["a"][1] == T0 and changes["a"][2] is True      # silent: breached
    assert changes["a"][0]["seen"] == [["silent#when", "", T0]]


def test_export_host_matches_export_state_and_imports_back():
    ev, _ = live(POLLS[:4])
    ev.evaluate(perf("other", T0, ("cpuLoad", "", 1)))
    whole = ev.export_state()
    assert set(whole) == {"r1", "other"}
    assert {h: ev.export_host(h) for h in whole} == whole
    again = Evaluator(RULES, {}, SOURCE)
    again.import_state(whole)
    assert again.export_state() == whole
    # Importing a host again replaces its deadman times (no stale entries left).
    again.import_state({"other": dict(whole["other"], seen=[])})
    assert again.export_host("other")["seen"] == []


# --- the saver, with SQLite -------------------------------------------------------


def make_store(tmp_path, migrated: bool = True) -> EvalStateStore:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/state.sqlite3")
    if migrated:
        migrate.upgrade(engine, "alert_")
    return EvalStateStore(engine, "alert_")


@pytest_twisted.ensureDeferred
async def test_saver_writes_changed_hosts_only(tmp_path):
    from twisted.internet import reactor

    store = make_store(tmp_path)
    ev = Evaluator(RULES, {}, SOURCE)
    saver = StateSaver(reactor, store, ev.take_changes)
    ev.evaluate(perf("a", T0, ("ifInErrors", "1", 0)))
    ev.evaluate(perf("b", T0, ("ifInErrors", "1", 0)))
    await saver.flush()
    assert {h: ts for h, (_, ts) in store.load().items()} == {"a": T0, "b": T0}
    assert saver.saves == 1

    # Same state: not rewritten (its row stays a valid checkpoint).
    ev.evaluate(perf("a", T0 + 60, ("ifInErrors", "1", 0)))
    await saver.flush()
    assert saver.saves == 1 and store.load()["a"][1] == T0

    # A breach and its recovery between two saves leave the same state, yet the
    # row moves past them: a restart must not replay (and repeat) them.
    assert ev.evaluate(perf("a", T0 + 120, ("ifInErrors", "1", 99)))
    assert ev.evaluate(perf("a", T0 + 180, ("ifInErrors", "1", 0)))
    await saver.flush()
    assert saver.saves == 2 and store.load()["a"][1] == T0 + 180
    assert store.load()["b"][1] == T0
    store.engine.dispose()


@pytest_twisted.ensureDeferred
async def test_saver_survives_database_errors_and_saves_later(tmp_path):
    from twisted.internet import reactor

    store = make_store(tmp_path, migrated=False)     # no table yet: every save fails
    ev = Evaluator(RULES, {}, SOURCE)
    saver = StateSaver(reactor, store, ev.take_changes)
    ev.evaluate(perf("a", T0, ("ifInErrors", "1", 50)))
    await saver.flush()                               # logged, not raised
    assert (saver.saves, saver.errors, len(saver.waiting)) == (0, 1, 1)
    assert "eval_state" in saver.health()["last_error"]
    ev.evaluate(perf("a", T0 + 60, ("ifInErrors", "1", 0)))   # newer state meanwhile
    migrate.upgrade(store.engine, "alert_")
    await saver.stop()                                # the final save
    assert (saver.saves, saver.waiting) == (1, {})
    (state, ts), = store.load().values()
    assert ts == T0 + 60 and state["breached"] == []
    store.engine.dispose()
