"""The correlator's StateStore and migrations against the real MariaDB and PostgreSQL.

Each test works under a unique table prefix in database ``test`` and drops
every table it made (the prefixed version table too) afterwards.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from connector_alarms import migrate
from connector_alarms.model import HostState
from connector_alarms.schema import create_all, make_schema
from connector_alarms.store import StateStore
from tests.unit.test_alarm_store import (HEAD, MAX_REF, TS, alarm_schema_diffs,
                                         assert_same_states, check_seen_ids_migration, count,
                                         full_record, host_state, run_concurrent_upgrades)
from tests.unit.test_db_migrate import (Statements, describe, drop_prefixed,
                                        migrated_columns_on_mariadb, new_prefix,
                                        prefixed_engine, tables)

from tests.conftest import SQL_URLS

pytestmark = pytest.mark.integration

URLS = SQL_URLS


@pytest.fixture(params=sorted(URLS))
def db(request):
    """An engine on one real database (one pooled connection) and a fresh prefix.

    One connection so that MariaDB's per-session counters see every statement
    of a save. Every table of the prefix is dropped afterwards.
    """
    with prefixed_engine(URLS[request.param], pool_size=1, max_overflow=0) as db:
        yield db


@pytest.fixture
def store(db) -> StateStore:
    engine, prefix = db
    migrate.upgrade(engine, prefix)
    return StateStore(engine, prefix)


# -- migrations ---------------------------------------------------------------------------------


def test_migrated_schema_is_make_schema(db):
    engine, p = db
    assert migrate.current(engine, p) is None
    assert migrate.upgrade(engine, p) == migrate.head() == HEAD
    assert tables(engine, p) == set(make_schema(p).metadata.tables) | {f"{p}alembic_version"}
    assert alarm_schema_diffs(engine, p) == []
    # What autogenerate leaves out (MariaDB's UNSIGNED, MEDIUMTEXT and key
    # collations, PostgreSQL's sequences) is the same as create_all's too.
    other = new_prefix()
    try:
        create_all(engine, make_schema(other))
        migrated, reference = describe(engine, p), describe(engine, other)
    finally:
        drop_prefixed(engine, other)
    assert migrated == reference


def test_column_types_on_mariadb():
    p, cols = migrated_columns_on_mariadb(URLS["mariadb"], migrate.upgrade)
    for table, column in (("alarms", "host"), ("hosts", "host"), ("outbox", "message_id")):
        assert cols[(f"{p}{table}", column)][0] == "utf8mb4_nopad_bin", (table, column)
    for column in ("ref", "cause_ref"):
        assert cols[(f"{p}alarms", column)][1] == "bigint(20) unsigned", column
    for column in ("first_seen", "last_seen", "cleared_at", "changed_ts", "acked_at",
                   "published_at"):
        assert cols[(f"{p}alarms", column)][1] == "double", column
    for table, column in (("alarms", "notes"), ("alarms", "history"), ("alarms", "message"),
                          ("seen_ids", "ids")):
        assert cols[(f"{p}{table}", column)][1] == "mediumtext", (table, column)
    assert cols[(f"{p}outbox", "body")][1] == "mediumblob"


def test_seen_ids_move_to_their_table_and_back(db):
    check_seen_ids_migration(*db)


def test_upgrade_is_idempotent_and_checked(db):
    engine, p = db
    with pytest.raises(migrate.SchemaOutOfDate):
        migrate.check(engine, p)
    migrate.upgrade(engine, p)
    with Statements(engine) as sql:
        assert migrate.upgrade(engine, p) == HEAD
    assert sql.seen and sql.writes() == []
    migrate.check(engine, p)


def test_processes_upgrading_at_once(db):
    engine, p = db
    url = engine.url.render_as_string(hide_password=False)
    assert run_concurrent_upgrades(url, p) == [HEAD] * 4
    assert alarm_schema_diffs(engine, p) == []
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT version_num FROM {p}alembic_version")).all() == [
            (HEAD,)]


# -- the store ----------------------------------------------------------------------------------


def test_round_trip_of_every_field(store):
    # "R1" and "r1 " are other hosts than "r1": keys compare byte for byte on MariaDB too.
    states = {h: host_state(h, [MAX_REF - n, n, 2**63 + n]) for n, h in
              enumerate(("r1", "R1", "r1 ", "ü.example.net"))}
    states["quiet"] = HostState(host="quiet")
    store.save(store.snapshot(states.values()))
    got, outbox = store.load(keep_cleared_since=0.0)
    assert_same_states(got, states)
    assert outbox == []
    assert got["r1"].alarms[MAX_REF].cause_ref == MAX_REF - 1


def test_updates_forgotten_and_keep_cleared(store):
    state = host_state("h", [1, 2, 3, MAX_REF])
    store.save(store.snapshot([state]))
    rec = state.alarms[MAX_REF]
    rec.active, rec.cleared_at, rec.acked_by, rec.acked_at, rec.cause_ref = (
        False, TS + 100, None, None, None)
    rec.notes.append([TS + 2, "carol", "done"])
    # Cleared, and no longer flapping (one shown as flapping is loaded whatever its age).
    state.alarms[1].active, state.alarms[1].cleared_at = False, TS + 10
    state.alarms[1].flapping = False
    del state.alarms[3]
    for ref in (MAX_REF, 1, 3):  # what the correlator does for every alarm it changes
        state.touch(ref)
    state.seen("new-id")
    store.save(store.snapshot([state], forgotten=[3]))
    got, _ = store.load(keep_cleared_since=0.0)
    assert_same_states(got, {"h": state})
    got, _ = store.load(keep_cleared_since=TS + 50)
    assert sorted(got["h"].alarms) == [2, MAX_REF]  # 1 cleared before, still in the table
    assert count(store.engine, store.schema.alarms) == 3


def test_outbox_and_idempotent_save(store):
    state = host_state("h", [1])
    snap = store.snapshot([state])
    add = [(f"alarm:{n}:1", f"body {n}".encode() + b"\x00\xff") for n in (5, 2, 9)]
    store.save(snap, add)
    store.save(snap, add + [("alarm:5:1", b"replayed")])
    got, box = store.load(0.0)
    assert_same_states(got, {"h": state})
    assert box == add
    store.save(snap, [("alarm:7:1", b"x")], outbox_done=["alarm:2:1", "alarm:7:1", "nope"])
    _, box = store.load(0.0)
    assert box == [add[0], add[2]]


def test_a_save_retried_through_an_outage_is_written_once_more_cleanly(store, monkeypatch):
    """The service saves the same snapshot until the database is back; the next one works."""
    state = HostState(host="h")
    state.seen("first")
    store.save(store.snapshot([state]))
    state.seen("second")
    state.alarms[7] = full_record(7, "h")
    state.touch(7)
    snap = store.snapshot([state])
    with monkeypatch.context() as m:
        m.setattr(store, "_seen_upsert", sa.text("SELECT no_such_column"))
        for _ in range(3):
            with pytest.raises(sa.exc.DBAPIError):
                store.save(snap)
    store.save(snap)  # the database is back
    state.seen("third")
    after = store.snapshot([state])
    keys = [(r["host"], r["chunk"]) for r in after.seen]
    assert len(keys) == len(set(keys)) == 2  # the retried chunk once, and the new one
    store.save(after)
    got, _ = store.load(0.0)
    assert list(got["h"].seen_ids) == ["first", "second", "third"]
    assert sorted(got["h"].alarms) == [7]


def test_a_failed_save_commits_nothing(store):
    state = host_state("h", [1])
    store.save(store.snapshot([state]), [("m1", b"1")])
    state.snapshot_ts = TS + 999
    state.alarms[2] = full_record(2, "h", name="n" * 300)  # longer than the column
    state.touch(2)
    with pytest.raises(sa.exc.DBAPIError):
        store.save(store.snapshot([state]), [("m2", b"2")], outbox_done=["m1"])
    got, box = store.load(0.0)
    assert got["h"].snapshot_ts == TS + 0.5 and sorted(got["h"].alarms) == [1]
    assert box == [("m1", b"1")]


def _com_insert(engine) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.text("SHOW SESSION STATUS LIKE 'Com_insert'")).one()[1])


def test_save_of_2000_alarms(store):
    """2,000 changed alarms and their messages: one transaction, multi-row statements."""
    engine = store.engine
    states = [host_state(f"host{h:03}.example.net", [h * 20 + i for i in range(20)])
              for h in range(100)]
    for s in states:
        for _ in range(1000):
            s.seen(f"m{len(s.seen_ids)}:{s.host}")
    outbox = [(f"alarm:{ref}:1", b'{"state":"raised"}') for s in states for ref in s.alarms]
    mariadb = engine.dialect.name == "mysql"
    for rnd in range(2):  # inserts, then updates of every alarm row
        for s in states:
            for rec in s.alarms.values():
                rec.count += rnd
                rec.last_seen += rnd
                s.touch(rec.ref)
        snap = store.snapshot(states)
        assert len(snap.alarms) == 2000
        before = _com_insert(engine) if mariadb else None
        with Statements(engine) as sql:
            t0 = time.perf_counter()
            store.save(snap, outbox)
            elapsed = time.perf_counter() - t0
        inserts = [s for s in sql.seen if s.upper().startswith("INSERT")]
        if mariadb:
            # One executemany per table, which PyMySQL sends as multi-row
            # INSERT ... ON DUPLICATE KEY UPDATE statements (about 1 MB each).
            # Round 1: hosts, alarms, seen-id chunks, outbox; round 2: only the
            # alarms changed (and the outbox is sent again).
            assert len(inserts) == (4 if rnd == 0 else 2), [i[:40] for i in inserts]
            assert _com_insert(engine) - before <= 12
        else:
            # SQLAlchemy's insertmanyvalues: pages of at most 1,000 rows.
            assert len(inserts) <= 8, len(inserts)
        print(f"{engine.dialect.name}: save of 2000 alarms + 100 hosts + 2000 outbox rows "
              f"in {elapsed * 1000:.0f} ms")
    got, box = store.load(0.0)
    assert_same_states(got, {s.host: s for s in states})
    assert box == outbox
    assert all(len(s.seen_ids) == 1003 and list(s.seen_ids)[:4] == [
        f"{s.host}:z", f"{s.host}:a", f"{s.host}:m", f"m3:{s.host}"] for s in got.values())
