"""The correlator's persistence (StateStore, its schema and migrations), on SQLite files.

The same essentials against MariaDB and PostgreSQL are in
tests/integration/test_alarm_store_sql.py (which reuses the helpers here).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connector_alarms import migrate, store as store_module
from connector_alarms.model import AlarmRecord, HostState, SeenIds
from connector_alarms.schema import make_schema
from connector_alarms.store import (ALARM_FIELDS, HOST_FIELDS, HOST_RUNTIME_FIELDS,
                                    HOST_TABLE_FIELDS, Snapshot,
                                    StateStore, UnpersistedFields, check_mapping)
from connector_db import migrate as db_migrate
from tests.unit.test_db_migrate import Statements, drop_prefixed, new_prefix, tables
from tests.unit.test_db_migrate import run_concurrent_upgrades as db_run_concurrent_upgrades

MAX_REF = 2**64 - 1
TS = 1_700_000_000.123456  # not a multiple of a microsecond in binary: stored bit for bit
HEAD = "correlator_0002"


# -- helpers (shared with the integration tests) --------------------------------------------


def full_record(ref: int, host: str, i: int = 0, **kw) -> AlarmRecord:
    """An alarm with every field away from its default (a field left at default proves nothing)."""
    values = dict(
        ref=ref, host=host, name=f"linkDown{i}", identity=f"ifIndex={i}|é✓",
        origin="trap", severity="warning", base_severity="critical",
        message=f"link {i} down — «quoted» \"text\"", active=True,
        first_seen=TS + i / 7, last_seen=TS + i / 3 + 0.1, count=2**40 + i,
        cleared_at=TS + 1 / 9, clear_reason="operator", changed_ts=TS + i / 11,
        acked_by="ops-ñ", acked_at=TS + 0.3,
        notes=[[TS + 0.25, "alice", "looking"], [TS + 1, "bob", "ünïcode, \"quotes\"\n"]],
        flapping=True, history=[1, 0, 1, 1, 0], cause_ref=MAX_REF - 1 - i,
        published_at=12345.678901234, pending_update=True, seq=7 + i)
    values.update(kw)
    return AlarmRecord(**values)


def host_state(host: str, refs: list[int], active: bool = True) -> HostState:
    """A host with one full alarm per ref and seen ids out of sorted order."""
    state = HostState(host=host, snapshot_ts=TS + 0.5,
                      seen_ids=SeenIds([f"{host}:z", f"{host}:a", f"{host}:m"]),
                      dirty=True)
    for i, ref in enumerate(refs):
        state.alarms[ref] = full_record(ref, host, i, active=active)
    return state


def assert_same_states(got: dict[str, HostState], want: dict[str, HostState]) -> None:
    """Equal field by field, seen_ids order included, every value of the same type."""
    assert sorted(got) == sorted(want)
    for host, w in want.items():
        g = got[host]
        assert (g.host, g.snapshot_ts) == (w.host, w.snapshot_ts)
        assert list(g.seen_ids) == list(w.seen_ids)
        assert sorted(g.alarms) == sorted(w.alarms), host
        for ref, wa in w.alarms.items():
            ga = g.alarms[ref]
            for f in dataclasses.fields(AlarmRecord):
                gv, wv = getattr(ga, f.name), getattr(wa, f.name)
                assert gv == wv and type(gv) is type(wv), (host, ref, f.name, gv, wv)
        # Marks of the running process, not state.
        assert dataclasses.replace(g, touched=None) == dataclasses.replace(
            w, dirty=False, touched=None)


def alarm_schema_diffs(engine, prefix: str) -> list:
    """What Alembic's autogenerate finds between the database and the correlator's make_schema."""
    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={
            "compare_type": True,
            "version_table": f"{prefix}alembic_version",
            "include_name": lambda name, type_, parent: type_ != "table" or name.startswith(prefix),
        })
        return compare_metadata(ctx, make_schema(prefix).metadata)


def count(engine, table) -> int:
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path):
    e = sa.create_engine(f"sqlite:///{tmp_path / 'centaure.sqlite3'}")
    yield e
    e.dispose()


@pytest.fixture
def tprefix(engine):
    p = new_prefix()
    yield p
    drop_prefixed(engine, p)


@pytest.fixture
def store(engine, tprefix) -> StateStore:
    migrate.upgrade(engine, tprefix)
    return StateStore(engine, tprefix)


# -- the mapping --------------------------------------------------------------------------------


def test_every_dataclass_field_is_persisted():
    """Fails as soon as machine.py (or anyone) adds a field the store does not save."""
    assert {f.name for f in dataclasses.fields(AlarmRecord)} == set(ALARM_FIELDS)
    assert {f.name for f in dataclasses.fields(HostState)} == (
        set(HOST_FIELDS) | set(HOST_TABLE_FIELDS) | set(HOST_RUNTIME_FIELDS))
    schema = make_schema("x_")
    assert set(schema.alarms.columns.keys()) == set(ALARM_FIELDS)
    assert set(schema.hosts.columns.keys()) == set(HOST_FIELDS)
    check_mapping(schema)


def test_an_unmapped_field_fails_loudly(monkeypatch, engine):
    grown = dataclasses.make_dataclass("AlarmRecord", [("escalated", bool, False)],
                                       bases=(AlarmRecord,))
    monkeypatch.setattr(store_module, "AlarmRecord", grown)
    with pytest.raises(UnpersistedFields,
                       match=r"AlarmRecord fields not persisted: \['escalated'\]"):
        check_mapping()
    with pytest.raises(UnpersistedFields):
        StateStore(engine, "x_")
    monkeypatch.undo()
    grown_host = dataclasses.make_dataclass("HostState", [("owner", str, "")], bases=(HostState,))
    monkeypatch.setattr(store_module, "HostState", grown_host)
    with pytest.raises(UnpersistedFields, match=r"HostState fields not persisted: \['owner'\]"):
        check_mapping()


# -- round trips --------------------------------------------------------------------------------


def test_round_trip_of_every_field(store):
    states = {"r1.example.net": host_state("r1.example.net", [MAX_REF, 1, 2**63]),
              "R1.example.net": host_state("R1.example.net", [0, 2**63 - 1]),
              "quiet": HostState(host="quiet", snapshot_ts=0.0)}
    states["quiet"].seen("only-id")
    states["r1.example.net"].alarms[1].cause_ref = None
    store.save(store.snapshot(states.values()))
    assert not any(s.dirty for s in states.values())
    got, outbox = store.load(keep_cleared_since=0.0)
    assert outbox == []
    assert_same_states(got, states)
    assert got["r1.example.net"].alarms[MAX_REF].ref == MAX_REF
    assert got["r1.example.net"].alarms[MAX_REF].cause_ref == MAX_REF - 1
    assert list(got["r1.example.net"].seen_ids) == ["r1.example.net:z", "r1.example.net:a",
                                                    "r1.example.net:m"]


def test_none_and_empty_values_round_trip(store):
    state = HostState(host="h")
    state.alarms[5] = AlarmRecord(ref=5, host="h", name="n", identity="", origin="poll",
                                  severity="info", base_severity="info", message="",
                                  active=True, first_seen=0.0, last_seen=0.0)
    store.save(store.snapshot([state]))
    got, _ = store.load(0.0)
    assert_same_states(got, {"h": state})


def test_snapshot_is_a_copy(store):
    state = host_state("h", [10])
    snap = store.snapshot([state])
    assert state.dirty is False
    rec = state.alarms[10]
    rec.notes.append([TS, "carol", "after the snapshot"])
    rec.history.append(1)
    rec.count += 1
    state.seen("later")
    store.save(snap)
    got, _ = store.load(0.0)
    assert_same_states(got, {"h": host_state("h", [10])})


def test_updates_overwrite_every_column(store):
    state = host_state("h", [10])
    store.save(store.snapshot([state]))
    rec = state.alarms[10]
    state.touch(10)
    rec.active, rec.cleared_at, rec.clear_reason = False, TS + 50, "trap"
    rec.acked_by = rec.acked_at = rec.cause_ref = None
    rec.notes, rec.history, rec.flapping, rec.count, rec.seq = [], [0], False, 1, 9
    state.snapshot_ts = TS + 60
    for i in range(5):
        state.seen(f"new{i}")
    store.save(store.snapshot([state]))
    got, _ = store.load(0.0)
    assert_same_states(got, {"h": state})


def test_save_is_idempotent(store):
    states = [host_state("a", [1, 2]), host_state("b", [3])]
    snap = store.snapshot(states)
    outbox = [("alarm:1:1", b'{"ref":1}'), ("alarm:3:1", b'{"ref":3}')]
    store.save(snap, outbox)
    store.save(snap, outbox)
    got, box = store.load(0.0)
    assert_same_states(got, {s.host: s for s in states})
    assert box == outbox
    s = store.schema
    assert (count(store.engine, s.alarms), count(store.engine, s.hosts),
            count(store.engine, s.outbox)) == (3, 2, 2)


def test_only_changed_alarms_are_written(store):
    states = [host_state("a", [1, 2, 3]), host_state("b", [4])]
    first = store.snapshot(states)
    assert len(first.alarms) == 4
    store.save(first)
    again = store.snapshot(states)  # every snapshot is saved, in order: that is the contract
    assert not again, again  # no host row, alarm row or seen id changed
    states[1].snapshot_ts += 1
    again = store.snapshot(states)
    assert [h["host"] for h in again.hosts] == ["b"] and again.alarms == []
    store.save(again)
    a = states[0]
    a.alarms[2].count += 1
    a.alarms[3].notes[0][2] = "edited in place"  # nested mutation seen too
    a.alarms[5] = full_record(5, "a")
    a.touched.update((1, 2, 3, 5))  # 1: touched but unchanged, so not written
    snap = store.snapshot(states)
    assert sorted(r["ref"] for r in snap.alarms) == [2, 3, 5]
    store.save(snap)
    a.alarms[1].count += 1  # changed but not touched: the contract says touch it
    untouched = store.snapshot(states)
    assert untouched.alarms == []
    store.save(untouched)
    a.touch(1)
    snap = store.snapshot(states)
    assert [r["ref"] for r in snap.alarms] == [1]
    store.save(snap)
    got, _ = store.load(0.0)
    assert_same_states(got, {s.host: s for s in states})
    # The rows read by load are what the next snapshot compares with (a
    # loaded state is not tracked yet: every alarm is compared once).
    assert all(s.touched is None for s in got.values())
    assert store.snapshot(got.values()).alarms == []
    got["b"].alarms[4].acked_by = "dave"
    got["b"].touch(4)
    assert [r["ref"] for r in store.snapshot(got.values()).alarms] == [4]


def test_a_failed_save_is_retried_with_the_same_snapshot(store, monkeypatch):
    state = host_state("h", [1])
    store.save(store.snapshot([state]))
    state.alarms[1].count += 5
    state.touch(1)
    snap = store.snapshot([state])
    with monkeypatch.context() as m:
        m.setattr(store, "_alarm_upsert", sa.text("SELECT no_such_column"))
        with pytest.raises(sa.exc.OperationalError):
            store.save(snap)
    store.save(snap)
    got, _ = store.load(0.0)
    assert got["h"].alarms[1].count == state.alarms[1].count


def test_alarms_of_a_failed_save_are_taken_again(store, monkeypatch):
    """A snapshot whose save failed and is dropped loses no alarm row."""
    state = host_state("h", [1, 2])
    store.save(store.snapshot([state]))
    state.alarms[1].count += 5
    state.touch(1)
    with monkeypatch.context() as m:
        m.setattr(store, "_alarm_upsert", sa.text("SELECT no_such_column"))
        with pytest.raises(sa.exc.OperationalError):
            store.save(store.snapshot([state]))
    snap = store.snapshot([state])
    assert [r["ref"] for r in snap.alarms] == [1]
    store.save(snap)
    got, _ = store.load(0.0)
    assert_same_states(got, {"h": state})


def test_a_ref_outside_64_bits_is_refused_on_snapshot(store):
    state = HostState(host="h")
    state.alarms[2**64] = full_record(2**64, "h")
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        store.snapshot([state])


def test_forgotten_refs_are_deleted(store):
    state = host_state("h", [1, 2, 3])
    other = host_state("o", [4])
    store.save(store.snapshot([state, other]))
    del state.alarms[2]
    state.touch(2)
    snap = store.snapshot([state], forgotten=[2, 99])  # 99: never stored, nothing to do
    assert snap.forgotten == [2, 99]
    store.save(snap)
    got, _ = store.load(0.0)
    assert sorted(got["h"].alarms) == [1, 3] and sorted(got["o"].alarms) == [4]
    # Forgotten, then back in memory before the snapshot: its row is written, not deleted.
    state.alarms[2] = full_record(2, "h")
    del state.alarms[3]
    state.touch(2)
    state.touch(3)
    snap = store.snapshot([state], forgotten=[2, 3])
    assert snap.forgotten == [3]
    store.save(snap)
    got, _ = store.load(0.0)
    assert sorted(got["h"].alarms) == [1, 2]
    assert_same_states(got, {"h": state, "o": other})


def test_load_keeps_active_and_recently_cleared(store):
    state = HostState(host="h")
    since = TS + 100
    for ref, active, cleared_at in ((1, True, None), (2, False, since), (3, False, since + 1),
                                    (4, False, since - 0.001), (5, True, since - 50)):
        # Not flapping: a cleared alarm shown as flapping is always loaded.
        state.alarms[ref] = full_record(ref, "h", active=active, cleared_at=cleared_at,
                                        flapping=False)
    store.save(store.snapshot([state]))
    got, _ = store.load(keep_cleared_since=since)
    assert sorted(got["h"].alarms) == [1, 2, 3, 5]
    assert count(store.engine, store.schema.alarms) == 5  # older ones stay queryable
    got, _ = store.load(keep_cleared_since=0.0)
    assert sorted(got["h"].alarms) == [1, 2, 3, 4, 5]


def test_alarms_load_in_first_seen_order(store):
    state = HostState(host="h")
    for ref, first in ((30, TS + 2), (10, TS + 3), (20, TS + 1)):
        state.alarms[ref] = full_record(ref, "h", first_seen=first)
    store.save(store.snapshot([state]))
    got, _ = store.load(0.0)
    assert list(got["h"].alarms) == [20, 30, 10]


def test_outbox_add_done_and_order(store):
    empty = Snapshot()
    assert not empty
    ids = [f"alarm:{n}:1" for n in (9, 3, 7, 1)]  # insertion order is not id order
    store.save(empty, [(i, f"body {i}".encode()) for i in ids[:2]])
    store.save(empty, [(i, f"body {i}".encode()) for i in ids[2:]]
               + [(ids[0], b"a replayed add keeps the first body and place")])
    _, box = store.load(0.0)
    assert box == [(i, f"body {i}".encode()) for i in ids]
    store.save(empty, outbox_done=[ids[1], ids[1], "never-added"])
    _, box = store.load(0.0)
    assert [m for m, _ in box] == [ids[0], ids[2], ids[3]]
    # Added and confirmed in one save: nothing left; binary bodies kept as they are.
    store.save(empty, [("x", b"\x00\xff"), ("y", bytearray(b"\x01"))], outbox_done=["x"])
    _, box = store.load(0.0)
    assert box[-1] == ("y", b"\x01") and "x" not in dict(box)
    assert isinstance(box[-1][1], bytes)


def test_a_failed_save_commits_nothing(store):
    state = host_state("h", [1])
    store.save(store.snapshot([state]), [("m1", b"1")])
    state.snapshot_ts = TS + 999
    state.alarms[2] = full_record(2, None)  # NOT NULL: the alarm upsert fails
    state.touch(2)
    with pytest.raises(sa.exc.IntegrityError):
        store.save(store.snapshot([state]), [("m2", b"2")], outbox_done=["m1"])
    got, box = store.load(0.0)
    assert got["h"].snapshot_ts == TS + 0.5 and sorted(got["h"].alarms) == [1]
    assert box == [("m1", b"1")]


def test_many_alarms_in_one_save(store):
    states = [host_state(f"h{i}", list(range(i * 100, i * 100 + 100))) for i in range(25)]
    store.save(store.snapshot(states), [(f"alarm:{i}:1", b"{}") for i in range(2500)])
    got, box = store.load(0.0)
    assert sum(len(s.alarms) for s in got.values()) == 2500 and len(box) == 2500
    store.save(store.snapshot([], forgotten=range(2500)),
               outbox_done=[f"alarm:{i}:1" for i in range(2500)])
    got, box = store.load(0.0)
    assert sum(len(s.alarms) for s in got.values()) == 0 and box == []


def test_store_needs_a_valid_prefix(engine):
    with pytest.raises(ValueError, match="invalid table prefix"):
        StateStore(engine, "X; DROP TABLE")


# -- migrations ---------------------------------------------------------------------------------


def test_head_is_the_initial_revision():
    assert migrate.head() == HEAD


def test_upgrade_creates_the_tables_of_make_schema(engine, tprefix):
    assert migrate.current(engine, tprefix) is None
    assert migrate.upgrade(engine, tprefix) == HEAD
    assert tables(engine, tprefix) == (set(make_schema(tprefix).metadata.tables)
                                       | {f"{tprefix}alembic_version"})
    assert tables(engine, tprefix) == {f"{tprefix}{n}" for n in
                                       ("alarms", "hosts", "outbox", "seen_ids", "alembic_version")}
    assert migrate.current(engine, tprefix) == HEAD
    assert alarm_schema_diffs(engine, tprefix) == []
    with engine.connect() as c:
        names = {i["name"] for i in sa.inspect(c).get_indexes(f"{tprefix}alarms")}
    assert names == {f"{tprefix}ix_alarms_host", f"{tprefix}ix_alarms_active_host"}


def test_diff_check_sees_a_schema_change(engine, tprefix):
    """The no-diff check is not vacuous."""
    migrate.upgrade(engine, tprefix)
    with engine.begin() as c:
        c.execute(sa.text(f"DROP INDEX {tprefix}ix_alarms_active_host"))
    diffs = alarm_schema_diffs(engine, tprefix)
    assert [d[0] for d in diffs] == ["add_index"]


def test_upgrade_twice_writes_nothing(engine, tprefix):
    migrate.upgrade(engine, tprefix)
    with Statements(engine) as sql:
        assert migrate.upgrade(engine, tprefix) == HEAD
    assert sql.seen and sql.writes() == []


def test_check_and_current(engine, tprefix):
    with pytest.raises(migrate.SchemaOutOfDate) as info:
        migrate.check(engine, tprefix)
    assert info.value.revision is None and info.value.head == HEAD
    assert str(info.value) == (f"the correlator's schema is at revision None, this Centaure "
                               f"needs {HEAD}: centaure-correlator creates or upgrades it at "
                               f"start-up")
    assert isinstance(info.value, db_migrate.SchemaOutOfDate)  # one except for both
    migrate.upgrade(engine, tprefix)
    assert migrate.check(engine, tprefix) is None
    assert migrate.current(engine, tprefix) == HEAD
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT version_num FROM {tprefix}alembic_version")).all() == [
            (HEAD,)]


def test_bad_prefix_is_refused(engine):
    for fn in (migrate.upgrade, migrate.current, migrate.check):
        with pytest.raises(ValueError, match="invalid table prefix"):
            fn(engine, "X; DROP TABLE")


def test_beside_the_writers_layout(engine):
    """Own history and version table: the writer's and the correlator's revisions don't mix."""
    w, c = new_prefix(), new_prefix()
    try:
        db_migrate.upgrade(engine, w)
        assert migrate.current(engine, c) is None
        assert migrate.upgrade(engine, c) == HEAD
        assert db_migrate.current(engine, w) == db_migrate.head() and migrate.current(engine, c) == HEAD
        assert alarm_schema_diffs(engine, c) == []
        # One prefix for both: each refuses the other's revision, nothing is created.
        with pytest.raises(migrate.SchemaOutOfDate, match="share a table_prefix"):
            migrate.upgrade(engine, w)
        with pytest.raises(db_migrate.SchemaOutOfDate, match="does not know"):
            db_migrate.upgrade(engine, c)
        assert f"{w}hosts" not in tables(engine, w) and f"{c}devices" not in tables(engine, c)
        assert db_migrate.current(engine, w) == db_migrate.head() and migrate.current(engine, c) == HEAD
    finally:
        drop_prefixed(engine, w)
        drop_prefixed(engine, c)


def test_downgrade_drops_the_tables(engine, tprefix):
    migrate.upgrade(engine, tprefix)
    with engine.connect() as c:
        command.downgrade(migrate.MIGRATIONS.config(tprefix, c), "base")
        c.commit()
    assert tables(engine, tprefix) == {f"{tprefix}alembic_version"}
    assert migrate.current(engine, tprefix) is None
    migrate.upgrade(engine, tprefix)
    assert alarm_schema_diffs(engine, tprefix) == []


def run_concurrent_upgrades(url: str, prefix: str, n: int = 4) -> list[str]:
    """``n`` processes upgrading the correlator's tables at once; their outputs."""
    return db_run_concurrent_upgrades(url, prefix, n, module="connector_alarms.migrate")


def test_processes_upgrading_at_once(engine, tprefix):
    assert run_concurrent_upgrades(str(engine.url), tprefix) == [HEAD] * 4
    assert alarm_schema_diffs(engine, tprefix) == []


# -- the window of seen message ids ---------------------------------------------------------------


def test_seen_ids_are_saved_in_chunks_and_pruned(engine, tprefix):
    """A save writes the new ids only; the window loads back exactly, however it was cut."""
    migrate.upgrade(engine, tprefix)
    store = StateStore(engine, tprefix, seen_capacity=10)
    state = HostState(host="h", seen_ids=SeenIds(capacity=10))
    ids = [f"m{i}" for i in range(57)]
    chunk_sizes = [3, 1, 7, 12, 4, 4, 9, 2, 15]  # one save after each slice
    start = 0
    for size in chunk_sizes:
        for mid in ids[start:start + size]:
            state.seen(mid)
        start += size
        snap = store.snapshot([state])
        assert [json.loads(r["ids"]) for r in snap.seen] == [ids[start - size:start]]
        store.save(snap)
        with store.engine.connect() as c:
            stored = c.execute(sa.select(store.schema.seen_ids.c.ids)
                               .order_by(store.schema.seen_ids.c.chunk)).scalars().all()
        held = [i for chunk in stored for i in json.loads(chunk)]
        # Never more chunks than needed: without the oldest one, fewer than 10 ids.
        assert len(held) - len(json.loads(stored[0])) < 10 <= len(held) or len(held) < 10
        got, _ = store.load(0.0)
        assert list(got["h"].seen_ids)[-10:] == ids[:start][-10:]
        assert list(got["h"].seen_ids) == list(state.seen_ids) == ids[:start][-10:]
    assert store.snapshot([state]).seen == []  # nothing new: no chunk


def test_a_loaded_window_goes_on_chunking_where_it_stopped(store):
    state = HostState(host="h")
    for i in range(1500):
        state.seen(f"a{i}")
    store.save(store.snapshot([state]))
    got, _ = store.load(0.0)
    loaded = got["h"]
    assert list(loaded.seen_ids) == [f"a{i}" for i in range(476, 1500)]
    assert loaded.seen("a1499") and not loaded.seen("a475")  # redelivered vs. too old
    for i in range(1024):
        loaded.seen(f"b{i}")
    snap = store.snapshot([loaded])
    # Chunk 0 (1,500 ids) is no longer needed: the new chunk holds a whole window.
    assert [r["chunk"] for r in snap.seen] == [1] and snap.seen_dropped == [("h", 0)]
    store.save(snap)
    assert count(store.engine, store.schema.seen_ids) == 1
    again, _ = store.load(0.0)
    assert list(again["h"].seen_ids) == [f"b{i}" for i in range(1024)]
    assert list(again["h"].seen_ids) == list(loaded.seen_ids)


def test_seen_ids_of_a_failed_save_are_saved_by_the_next(store, monkeypatch):
    """A dropped snapshot (save failed, not retried) loses no seen id."""
    state = HostState(host="h")
    state.seen("first")
    store.save(store.snapshot([state]))
    state.seen("second")
    with monkeypatch.context() as m:
        m.setattr(store, "_seen_upsert", sa.text("SELECT no_such_column"))
        with pytest.raises(sa.exc.OperationalError):
            store.save(store.snapshot([state]))
    state.seen("third")
    store.save(store.snapshot([state]))
    got, _ = store.load(0.0)
    assert list(got["h"].seen_ids) == ["first", "second", "third"]


def test_seen_ids_migrate_from_the_hosts_column(engine, tprefix):
    check_seen_ids_migration(engine, tprefix)


def check_seen_ids_migration(engine, tprefix: str) -> None:
    """correlator_0001 kept the window in hosts.seen_ids: 0002 moves it, 0001 takes it back."""
    with engine.begin() as c:
        command.upgrade(migrate.MIGRATIONS.config(tprefix, c), "correlator_0001")
        c.execute(sa.text(f"INSERT INTO {tprefix}hosts (host, snapshot_ts, seen_ids) "
                          "VALUES ('h', 1.5, :ids)"), {"ids": json.dumps(["x", "y"])})
    migrate.upgrade(engine, tprefix)
    states, _ = StateStore(engine, tprefix).load(0.0)
    assert list(states["h"].seen_ids) == ["x", "y"] and states["h"].snapshot_ts == 1.5
    assert states["h"].seen("y") and not states["h"].seen("z")
    with engine.begin() as c:
        command.downgrade(migrate.MIGRATIONS.config(tprefix, c), "correlator_0001")
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT host, seen_ids FROM {tprefix}hosts")).all() == [
            ("h", json.dumps(["x", "y"]))]
