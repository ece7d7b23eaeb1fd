"""Old rows of the correlator's tables go on schedule (SQLite; MariaDB and PostgreSQL in
tests/integration/test_own_tables_retention_sql.py, which reuses the helpers here).

What an operator checks: an alarm that cleared long ago (before a restart, so the
correlator's memory never held it) no longer fills ``corr_alarms`` and ``centaure
alarms --all``; active alarms, recently cleared ones and cleared ones still shown as
flapping stay; the same alarm raised again afterwards is a new alarm, nothing lost.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor, task
from twisted.logger import Logger, formatEvent

from connector import messages
from connector.metrics import Counters, render_prometheus
from connector.service import makeService
from connector.settings import settings_from_string
from connector_alarms import migrate
from connector_alarms.keys import alarm_ref
from connector_alarms.machine import Correlator, MemoryHostStates
from connector_alarms.model import AlarmRecord, HostState
from connector_alarms.retention import GRACE, Purger
from connector_alarms.settings import CorrelatorSettings
from connector_alarms.store import StateStore

DAY = 86400.0
NOW = 1_790_000_000.0


def record(ref: int, host: str, *, active: bool = False, cleared_ago: float | None = None,
           flapping: bool = False, now: float = NOW) -> AlarmRecord:
    """An alarm of ``host``; cleared ``cleared_ago`` seconds before ``now`` unless active."""
    cleared_at = None if active or cleared_ago is None else now - cleared_ago
    seen = (cleared_at or now) - 60
    return AlarmRecord(ref=ref, host=host, name=f"linkDown{ref}", identity=str(ref),
                       origin="trap", severity="major", base_severity="major",
                       message="link down", active=active, first_seen=seen - 60, last_seen=seen,
                       count=1, cleared_at=cleared_at,
                       clear_reason=None if active else "trap",
                       changed_ts=cleared_at or seen, flapping=flapping,
                       history=[1, 0, 1, 0, 1, 0] if flapping else [1, 0])


def save_states(store: StateStore, *records: AlarmRecord) -> None:
    states: dict[str, HostState] = {}
    for r in records:
        states.setdefault(r.host, HostState(host=r.host)).alarms[r.ref] = r
    store.save(store.snapshot(states.values()))


def refs(engine: sa.Engine, store: StateStore) -> list[int]:
    t = store.schema.alarms
    with engine.connect() as c:
        return sorted(c.scalars(sa.select(t.c.ref)))


def scenario_rows(now: float = NOW) -> list[AlarmRecord]:
    """Rows of every kind: the purge (keep_cleared 1 d, before = now - 1 d - GRACE) takes 2, 3, 7."""
    return [
        record(1, "r1", active=True, now=now),                       # active: stays
        record(2, "r1", cleared_ago=3 * DAY, now=now),               # old: goes
        record(3, "r2", cleared_ago=400 * DAY, now=now),             # very old: goes
        record(4, "r2", cleared_ago=3600, now=now),                  # recent: stays
        record(5, "r2", cleared_ago=3 * DAY, flapping=True, now=now),  # shown flapping: stays
        record(6, "r3", cleared_ago=DAY + GRACE / 2, now=now),       # inside the grace: stays
        record(2**64 - 1, "r3", cleared_ago=30 * DAY, now=now),      # the largest ref: goes
    ]


PURGED = {2, 3, 2**64 - 1}


@pytest.fixture
def store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/c.sqlite3")
    migrate.upgrade(engine, "corr_")
    yield StateStore(engine, "corr_")
    engine.dispose()


def test_purge_deletes_old_cleared_rows_only(store):
    rows = scenario_rows()
    save_states(store, *rows)
    before = NOW - DAY - GRACE
    assert store.purge_cleared(before, batch=2) == len(PURGED)
    assert refs(store.engine, store) == sorted({r.ref for r in rows} - PURGED)
    # A second pass finds nothing: idempotent.
    assert store.purge_cleared(before, batch=2) == 0


def test_purge_pages_through_refs_in_sqlite_signed_order(store):
    """Refs above 2**63 are stored negative on SQLite: the pages still cover them all."""
    big = [record(2**63 + i, "r1", cleared_ago=10 * DAY) for i in range(5)]
    small = [record(i, "r1", cleared_ago=10 * DAY) for i in range(1, 6)]
    save_states(store, *big, *small)
    assert store.purge_cleared(NOW - DAY, batch=3) == 10
    assert refs(store.engine, store) == []


def test_purge_only_the_hosts_kept(store):
    save_states(store, *scenario_rows())
    n = store.purge_cleared(NOW - DAY - GRACE, keep=lambda host: host != "r2", batch=1)
    assert n == 2  # ref 3 belongs to r2: another node's
    assert 3 in refs(store.engine, store)


def test_a_row_raised_again_during_the_purge_stays(store):
    """The delete checks the conditions again: a row made active meanwhile is kept."""
    save_states(store, record(2, "r1", cleared_ago=3 * DAY), record(3, "r1", cleared_ago=3 * DAY))
    t = store.schema.alarms

    def keep(host: str) -> bool:
        with store.engine.begin() as c:  # the owner commits a raise of ref 2 now
            c.execute(t.update().where(t.c.ref == 2).values(active=True, cleared_at=None))
        return True

    assert store.purge_cleared(NOW - DAY, keep=keep) == 1
    assert refs(store.engine, store) == [2]


def test_load_reads_a_cleared_alarm_shown_flapping_whatever_its_age(store):
    """Consumers see it active until flapping stops: a restart must not lose it."""
    save_states(store, record(5, "r2", cleared_ago=30 * DAY, flapping=True),
                record(6, "r2", cleared_ago=30 * DAY))
    states, _ = store.load(NOW - DAY)
    assert sorted(states["r2"].alarms) == [5]


def test_the_purge_takes_exactly_what_no_load_reads_any_more(store):
    """Purged at t, the load of any later start reads the same alarms as without the purge."""
    save_states(store, *scenario_rows())
    keep_cleared = DAY
    without, _ = store.load(NOW + 60 - keep_cleared)
    store.purge_cleared(NOW - keep_cleared - GRACE)
    with_purge, _ = store.load(NOW + 60 - keep_cleared)
    assert {h: sorted(s.alarms) for h, s in with_purge.items()} == \
        {h: sorted(s.alarms) for h, s in without.items()}


def raise_event(ts: float, key: str = "3") -> messages.Event:
    return messages.Event(ts=ts, source="traps@n1", host="r1", address="10.0.0.1",
                          snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown",
                          severity="major", varbinds=[], message=f"link {key} down",
                          action="raise", alarm="linkDown", key=key)


def clear_event(ts: float, key: str = "3") -> messages.Event:
    return messages.Event(ts=ts, source="traps@n1", host="r1", address="10.0.0.1",
                          snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.4", name="linkUp",
                          severity="info", varbinds=[], message=f"link {key} up",
                          action="clear", alarm="linkDown", key=key)


def correlator_of(store: StateStore, now: float) -> tuple[Correlator, MemoryHostStates]:
    conf = CorrelatorSettings()
    states, _ = store.load(now - conf.keep_cleared)
    memory = MemoryHostStates()
    for s in states.values():
        memory.add(s)
    c = Correlator(memory, conf, "correlator@t", {})
    c.adopt(list(states.values()))
    return c, memory


def commit(store: StateStore, memory: MemoryHostStates) -> None:
    store.save(store.snapshot(memory.dirty(), memory.take_forgotten()))


def test_raised_again_after_its_row_was_purged_is_a_new_alarm(store):
    """Raised, cleared, the correlator stopped for days: purged; raised again: raised, count 1."""
    t0 = NOW - 10 * DAY
    c, memory = correlator_of(store, t0)
    c.apply(raise_event(t0), "m1", now=t0)
    c.apply(raise_event(t0 + 1), "m2", now=t0 + 1)
    c.apply(clear_event(t0 + 2), "m3", now=t0 + 2)
    commit(store, memory)
    ref = alarm_ref("r1", "linkDown", "3")
    assert refs(store.engine, store) == [ref]
    # Restarted ten days later: memory does not hold the old cleared alarm, the purge goes.
    c, memory = correlator_of(store, NOW)
    assert memory.peek("r1") is None or ref not in memory.peek("r1").alarms
    assert store.purge_cleared(NOW - DAY - GRACE) == 1
    out = c.apply(raise_event(NOW), "m4", now=NOW)
    commit(store, memory)
    assert [(a.state, a.count, a.ref) for _, a in out] == [("raised", 1, ref)]
    states, _ = store.load(NOW - DAY)
    rec = states["r1"].alarms[ref]
    assert (rec.active, rec.count, rec.first_seen) == (True, 1, NOW)


def sync_run(fn, *args):
    try:
        return defer.succeed(fn(*args))
    except Exception:
        return defer.fail()


def test_purger_pass_counts_logs_and_survives_errors(store):
    save_states(store, *scenario_rows())
    counters = Counters("correlator")
    clock = task.Clock()
    lines: list[str] = []
    purger = Purger(clock, store.purge_cleared, lambda: DAY, counters, 3600.0,
                    clock=lambda: NOW, run=sync_run)
    purger.log = Logger(observer=lambda event: lines.append(formatEvent(event)))
    purger.start()  # a pass at once
    assert purger.deleted == len(PURGED) and counters.get("purged_alarms") == len(PURGED)
    assert len(lines) == 1 and f"{len(PURGED)} rows of alarms cleared before" in lines[0]
    clock.advance(3600)  # nothing left: no line
    assert purger.passes == 2 and len(lines) == 1

    def broken(before, keep):
        raise sa.exc.OperationalError("DELETE", {}, Exception("database is locked"))
    purger.purge = broken
    clock.advance(3600)
    assert counters.get("purge_errors") == 1 and "database is locked" in lines[-1]
    purger.purge = store.purge_cleared
    clock.advance(3600)  # the loop goes on after a failure
    assert purger.passes == 3  # passes that ended without error
    purger.stop()


# -- the daemon: the purge on its timer, the correlator going on -----------------------


async def until(predicate, what: str, timeout: float = 20.0):
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


async def daemon_purges_and_goes_on(url: str, table_prefix: str, tmp_path) -> None:
    """Old cleared rows of a site go while the correlator runs; new alarms are handled.

    Shared with the integration tests (``url``: SQLite, MariaDB or PostgreSQL).
    """
    engine = sa.create_engine(url)
    migrate.upgrade(engine, table_prefix)
    store = StateStore(engine, table_prefix)
    now = time.time()
    rows = scenario_rows(now)
    save_states(store, *rows)
    settings = settings_from_string(
        f"[bus]\nurl = embedded\n\n[buffer]\npath = {tmp_path}/b-{{connector}}.sqlite3\n\n"
        f"[connector]\nhttp_port = 0\n\n[database]\nurl = {url}\n\n"
        f"[correlator]\nbatch_interval = 10ms\nupdate_interval = 0\n"
        f"table_prefix = {table_prefix}\npurge_interval = 1s\n",
        source=str(tmp_path / "settings.ini"))
    root = makeService({"settings": settings}, ["correlator"], "correlator")
    publisher = root.runtime.bus.publisher("traps")
    root.startService()
    try:
        await until(lambda: not (PURGED & set(refs(engine, store))), "the old rows purged")
        assert refs(engine, store) == sorted({r.ref for r in rows} - PURGED)
        # The pass counts once its thread is back on the reactor, after the rows are gone.
        purged = f'centaure_purged_alarms_total{{connector="correlator"}} {len(PURGED)}'
        await until(lambda: purged in render_prometheus(root.runtime.all_counters()),
                    "the purge counted on /metrics")
        # The purged alarm 2 raised again: a new alarm, stored; the daemon goes on.
        event = messages.Event(ts=now, source="traps@n1", host="r1", address="10.0.0.1",
                               snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3",
                               name="linkDown2", severity="major", varbinds=[], message="down",
                               action="raise", alarm="linkDown2", key="again")
        await publisher.publish(event)
        again = alarm_ref("r1", "linkDown2", "again")
        await until(lambda: again in refs(engine, store), "the new alarm stored")
        health = root.runtime.health()["connectors"]["correlator"]
        assert health["state"] == "ready" and health["alarms"]["raised"] == 1
        await task.deferLater(reactor, 1.5, lambda: None)  # more passes: rows kept stay
        assert refs(engine, store) == sorted({r.ref for r in rows} - PURGED | {again})
    finally:
        await root.stopService()
        engine.dispose()


@pytest_twisted.ensureDeferred
async def test_daemon_purges_on_its_timer_and_goes_on(tmp_path):
    await daemon_purges_and_goes_on(f"sqlite:///{tmp_path}/c.sqlite3", "corr_", tmp_path)


# -- several nodes: each purges the hosts it owns ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_with_partitions_a_node_purges_only_the_hosts_it_owns(tmp_path):
    from connector.partitions import partition_of
    from tests.unit import test_correlator_partitions as parts

    service = await parts.started(tmp_path)
    try:
        store = service.store
        now = time.time()
        mine, theirs = record(1, parts.A, cleared_ago=3 * DAY, now=now), \
            record(2, parts.B, cleared_ago=3 * DAY, now=now)
        save_states(store, mine, theirs)
        await service.purger.run_once()            # nothing owned yet: nothing goes
        assert refs(store.engine, store) == [1, 2]
        await service.prepare({partition_of(parts.A, parts.P)})
        assert await service.purger.run_once() == 1
        assert refs(store.engine, store) == [2]    # B's partition is another node's
        assert service.runtime.counters("correlator").get("purged_alarms") == 1
    finally:
        await service.stopService()


def test_a_reload_changes_the_purge_interval(store):
    clock = task.Clock()
    purger = Purger(clock, store.purge_cleared, lambda: DAY, Counters("correlator"), 3600.0,
                    clock=lambda: NOW, run=sync_run)
    purger.start()
    assert purger.passes == 1
    purger.set_interval(60.0)                 # [correlator] purge_interval = 1m, SIGHUP
    clock.advance(60)
    assert purger.passes == 2
    clock.pump([60] * 59)
    assert purger.passes == 61
    purger.stop()
    clock.advance(3600)
    assert purger.passes == 61
