"""The correlator with ``[bus] partitions``: load some hosts, forget them, never write them stale.

Pure pieces (the store's host filter and fence, the states' drop, the
correlator's adopt) and the service's rules with a fake runtime (no bus) on
SQLite: what a batch made before its partition was forgotten is neither
saved nor published, whether the forget comes before the snapshot, during
the commit, or after a failed save.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector import messages
from connector.consumer import Delivery, RejectedMessage
from connector.metrics import Counters
from connector.partitions import partition_of
from connector.settings import settings_from_string
from connector_alarms import migrate
from connector_alarms.keys import alarm_ref
from connector_alarms.machine import Correlator, MemoryHostStates
from connector_alarms.model import AlarmRecord, HostState
from connector_alarms.service import (CorrelatorService, NotOwned, fence_snapshot,
                                      stale_partitions)
from connector_alarms.store import Snapshot, StateStore, fence

P = 8
TS = 1_790_000_000.0


def hosts_in(p: int, n: int = 2) -> list[str]:
    """``n`` host names of partition ``p``."""
    found = []
    i = 0
    while len(found) < n:
        host = f"h{i}"
        if partition_of(host, P) == p:
            found.append(host)
        i += 1
    return found


A, A2 = hosts_in(1)
B, B2 = hosts_in(2)


def record(host: str, key: str = "k", active: bool = True, **kw) -> AlarmRecord:
    values = dict(ref=alarm_ref(host, "linkDown", key), host=host, name="linkDown",
                  identity=key, origin="trap", severity="major", base_severity="major",
                  message="down", active=active, first_seen=TS, last_seen=TS, count=1,
                  changed_ts=TS, seq=1)
    values.update(kw)
    return AlarmRecord(**values)


def event(host: str, action: str = "raise", i: int = 0, key: str = "k") -> messages.Event:
    return messages.Event(ts=TS + 10 + i, source="traps@n1", host=host, address="10.0.0.1",
                          snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name="linkDown",
                          severity="major" if action == "raise" else "info", varbinds=[],
                          message="down", action=action, alarm="linkDown", key=key)


# --- pure pieces -------------------------------------------------------------------------------


def test_memory_states_drop_keeps_other_hosts_and_their_forgotten_refs():
    states = MemoryHostStates()
    for host in (A, B):
        state = HostState(host=host)
        for key in ("k1", "k2"):
            rec = record(host, key)
            state.alarms[rec.ref] = rec
        states.add(state)
    a_ref, b_ref = record(A, "k1").ref, record(B, "k1").ref
    states.forget(a_ref)
    states.forget(b_ref)
    dropped = states.drop([A])
    assert [s.host for s in dropped] == [A]
    assert states.hosts() == [B] and states.peek(A) is None
    assert states.host_of(record(A, "k2").ref) is None
    assert states.host_of(record(B, "k2").ref) == B
    # A's pending deletion was a change of a state no longer ours: gone; B's stays.
    assert states.take_forgotten_hosts() == [(b_ref, B)]
    assert states.drop([A, "nobody"]) == []


def test_correlator_adopt_replaces_and_drop_unschedules():
    settings = settings_from_string("[correlator]\nexpire_after = major=60s\n",
                                    discover=True).section("correlator")
    states = MemoryHostStates()
    corr = Correlator(states, settings, "correlator@n1", clock_now=lambda: TS)
    old = HostState(host=A)
    rec = record(A, count=1)
    old.alarms[rec.ref] = rec
    corr.adopt([old], TS)
    assert corr.due_count() == 1
    new = HostState(host=A)
    newer = record(A, count=5)
    new.alarms[newer.ref] = newer
    corr.adopt([new], TS)  # SQL's state replaces memory's
    assert states.peek(A) is new and corr.due_count() == 1
    corr.drop([A])
    assert corr.due_count() == 0 and states.peek(A) is None
    # The expiry due for A's alarm touches nothing once A is gone.
    assert corr.tick(TS + 3600) == [] and states.peek(A) is None


def test_fence_leaves_out_the_rows_of_refused_hosts():
    snap = Snapshot(hosts=[{"host": A, "snapshot_ts": 1.0}, {"host": B, "snapshot_ts": 2.0}],
                    alarms=[{"ref": 1, "host": A}, {"ref": 2, "host": B}],
                    forgotten=[3, 4, 5], seen=[{"host": A, "chunk": 0, "ids": "[]"}],
                    seen_dropped=[(A, 0), (B, 1)], forgotten_hosts={3: A, 4: B}, tag=(7,))
    kept = fence(snap, lambda host: host != A)
    assert kept.hosts == [{"host": B, "snapshot_ts": 2.0}]
    assert kept.alarms == [{"ref": 2, "host": B}]
    assert kept.forgotten == [4, 5]  # 5: host unknown, kept
    assert kept.seen == [] and kept.seen_dropped == [(B, 1)]
    assert kept.forgotten_hosts == {4: B} and kept.tag == (7,)
    assert fence(snap, lambda host: True) is snap


def test_stale_partitions_and_fence_snapshot():
    assert stale_partitions(None, (1, 2)) == frozenset()
    assert stale_partitions((0, 2, 3), (1, 2, 4)) == {0, 2}
    snap = Snapshot(hosts=[{"host": A, "snapshot_ts": 1.0}, {"host": B, "snapshot_ts": 1.0}],
                    tag=tuple([0] * P))
    now = [0] * P
    assert fence_snapshot(snap, tuple(now), P) is snap
    now[partition_of(A, P)] += 1
    assert fence_snapshot(snap, tuple(now), P).hosts == [{"host": B, "snapshot_ts": 1.0}]
    untagged = Snapshot(hosts=[{"host": A, "snapshot_ts": 1.0}])
    assert fence_snapshot(untagged, tuple(now), P) is untagged


def test_load_hosts_reads_only_the_wanted_hosts_and_adopt_resets_the_comparison(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/c.sqlite3")
    migrate.upgrade(engine, "corr_")
    store = StateStore(engine)
    states = []
    for host in (A, A2, B):
        state = HostState(host=host, snapshot_ts=TS)
        rec = record(host)
        state.alarms[rec.ref] = rec
        state.seen(f"{host}:m1")
        states.append(state)
    store.save(store.snapshot(states))
    loaded = store.load_hosts(0.0, lambda h: partition_of(h, P) == 1)
    assert sorted(loaded.states) == sorted([A, A2])
    assert set(loaded.rows) == {record(A).ref, record(A2).ref}
    assert loaded.states[A].seen("A:other") is False and loaded.states[A].seen(f"{A}:m1")
    # Forgotten then adopted again: a state equal to SQL's is not rewritten.
    store.drop_hosts(lambda h: partition_of(h, P) == 1)
    store.adopt(loaded, lambda h: partition_of(h, P) == 1)
    assert not store.snapshot([loaded.states[A]]).alarms
    engine.dispose()


# --- the service's rules, with a fake runtime ----------------------------------------------------


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def publish_raw(self, exchange, key, body, props, durable=False):
        self.sent.append((key, props["message_id"], messages.decode(body).state))
        return defer.succeed(None)


class FakeBus:
    def __init__(self) -> None:
        self.publishers = FakePublisher()

    def publisher(self, name):
        return self.publishers


class FakeOwnership:
    """Held by the test: no broker."""

    owned = frozenset()

    def add_listener(self, listener) -> None:
        self.listener = listener


class FakeRuntime:
    def __init__(self, settings) -> None:
        self.reactor = reactor
        self.settings = settings
        self.node = "n1"
        self.bus = FakeBus()
        self.health_checks: dict = {}
        self.ownerships = {"correlator": FakeOwnership()}
        self._counters: dict = {}

    def counters(self, name):
        return self._counters.setdefault(name, Counters(name))


async def started(tmp_path) -> CorrelatorService:
    settings = settings_from_string(
        "[bus]\nurl = amqp://guest:guest@127.0.0.1:1/\nexchange_prefix = t\n"
        f"partitions = {P}\n\n[database]\nurl = sqlite:///{tmp_path}/c.sqlite3\n\n"
        "[correlator]\nupdate_interval = 0\n", source=str(tmp_path / "settings.ini"))
    service = CorrelatorService(FakeRuntime(settings), sa.create_engine(
        f"sqlite:///{tmp_path}/c.sqlite3"), {})
    await service._start()
    service._ticker.stop()  # the test runs every batch itself
    return service


def saved(service: CorrelatorService) -> dict[str, int]:
    """host -> count of its alarm in SQL."""
    with service.engine.connect() as c:
        return dict(c.execute(sa.text("SELECT host, count FROM corr_alarms")).all())


def delivery(host: str | None, msg_type: str = "event", partition: int | None = None,
             user_id: str | None = "guest") -> Delivery:
    if host is None:
        key = f"{msg_type}._"
    else:
        p = partition_of(host, P) if partition is None else partition
        key = f"{msg_type}.{p}.{host}"
    return Delivery(body=b"", exchange="t.event", routing_key=key, message_id="m",
                    user_id=user_id)


async def run_batch(service, values, forget_at=None):
    """apply, snapshot, commit, committed, as the batch committer does; forget where asked."""
    pa = frozenset({partition_of(A, P)})
    applied = service.apply(values)
    if forget_at == "before snapshot":
        service.forget(pa)
    work = service.snapshot(applied)
    if forget_at == "before commit":
        service.forget(pa)
    result = None if work is None else service.commit(work)
    return await service.committed(applied, result)


@pytest_twisted.ensureDeferred
async def test_prepare_loads_only_its_partitions_then_forget_drops_them(tmp_path):
    service = await started(tmp_path)
    try:
        both = frozenset({partition_of(A, P), partition_of(B, P)})
        await service.prepare(both)
        await run_batch(service, [(event(A), "e1"), (event(B), "e2"), (event(A2), "e3")])
        assert saved(service) == {A: 1, B: 1, A2: 1}
        keys = [k for k, _, _ in service.publisher.sent]
        # Partitioned routing keys, for the alerter's partition queues.
        assert sorted(keys) == sorted(messages.host_routing_key("alarm", h, P)
                                      for h in (A, B, A2))
        service.forget({partition_of(A, P)})
        assert sorted(service.states.hosts()) == [B]
        assert service.health()["partitions"] == [partition_of(B, P)]
        # Another node changed A in SQL meanwhile: prepare takes SQL's word.
        with service.engine.begin() as c:
            c.execute(sa.text("UPDATE corr_alarms SET count = 9 WHERE host = :h"), {"h": A})
        await service.prepare({partition_of(A, P)})
        assert service.states.peek(A).alarms[record(A).ref].count == 9
        assert service.correlator.due_count() >= 0
    finally:
        service.engine.dispose()


@pytest.mark.parametrize("forget_at", ["before snapshot", "before commit"])
@pytest_twisted.ensureDeferred
async def test_a_batch_of_a_forgotten_partition_is_neither_saved_nor_published(tmp_path,
                                                                               forget_at):
    service = await started(tmp_path)
    try:
        await service.prepare(frozenset({partition_of(A, P), partition_of(B, P)}))
        await run_batch(service, [(event(A), "e1"), (event(B), "e2")])
        service.publisher.sent.clear()
        # A second raise for A and B; A's partition goes before the batch is written.
        await run_batch(service, [(event(A, i=1), "e3"), (event(B, i=1), "e4")],
                        forget_at=forget_at)
        assert saved(service) == {A: 1, B: 2}
        assert [(k.split(".")[-1], state) for k, _, state in service.publisher.sent] == [
            (B, "updated")]
        with service.engine.connect() as c:
            outbox = c.execute(sa.text("SELECT message_id FROM corr_outbox")).scalars().all()
        assert all(str(record(A).ref) not in mid for mid in outbox)
        # The next owner (here: us again) loads what SQL says, and gets e3 again.
        await service.prepare({partition_of(A, P)})
        assert service.states.peek(A).alarms[record(A).ref].count == 1
        await run_batch(service, [(event(A, i=1), "e3")])
        assert saved(service) == {A: 2, B: 2}
    finally:
        service.engine.dispose()


@pytest_twisted.ensureDeferred
async def test_inputs_of_a_partition_let_go_after_delivery_are_not_applied(tmp_path):
    service = await started(tmp_path)
    try:
        await service.prepare(frozenset({partition_of(B, P)}))
        outcomes = await run_batch(service, [(event(A), "e1"), (event(B), "e2")])
        assert isinstance(outcomes[0], NotOwned) and outcomes[1] is None
        assert service.states.peek(A) is None and saved(service) == {B: 1}
    finally:
        service.engine.dispose()


@pytest_twisted.ensureDeferred
async def test_a_failed_save_taken_again_leaves_out_a_forgotten_partition(tmp_path):
    service = await started(tmp_path)
    try:
        await service.prepare(frozenset({partition_of(A, P), partition_of(B, P)}))
        applied = service.apply([(event(A), "e1"), (event(B), "e2")])
        work = service.snapshot(applied)
        real = service.store.engine
        service.store.engine = sa.create_engine(f"sqlite:///{tmp_path}/missing/x.sqlite3")
        with pytest.raises(sa.exc.OperationalError):
            service.commit(work)  # the database is away: the store keeps it to take again
        service.store.engine = real
        service.forget({partition_of(A, P)})
        await run_batch(service, [])  # the next snapshot takes the failed rows again
        assert saved(service) == {B: 1}
    finally:
        service.engine.dispose()


@pytest_twisted.ensureDeferred
async def test_commands_and_misrouted_messages_are_refused(tmp_path):
    service = await started(tmp_path)
    try:
        await service.prepare(frozenset({partition_of(A, P)}))
        await run_batch(service, [(event(A), "e1")])
        ref = record(A).ref
        ack = messages.AlarmCommand(source="cli@x", ref=ref, action="ack", user="u", ts=TS)
        with_host = messages.AlarmCommand(source="cli@x", ref=ref, action="ack", user="u",
                                          ts=TS, host=A)
        wrong = messages.AlarmCommand(source="cli@x", ref=ref + 1, action="ack", user="u",
                                      ts=TS, host=A)

        async def outcome(message, d):
            try:
                await service.handle(message, d)
            except Exception as e:  # noqa: BLE001 - the outcome is the exception
                return e
            return None

        e = await outcome(ack, delivery(None, "alarm_command"))
        assert isinstance(e, RejectedMessage) and "without host" in str(e)
        e = await outcome(wrong, delivery(A, "alarm_command"))
        assert isinstance(e, RejectedMessage) and "not an alarm of host" in str(e)
        other = next(p for p in range(P) if p not in (partition_of(A, P), partition_of(B, P)))
        service._owned = service._owned | {other}
        e = await outcome(event(A), delivery(A, partition=other))
        assert isinstance(e, RejectedMessage) and "routing key" in str(e)
        e = await outcome(event(B), delivery(B))  # B's partition is not ours: late delivery
        assert isinstance(e, NotOwned)
        service.batches.batch_interval = 0.01
        e = await outcome(with_host, delivery(A, "alarm_command", user_id="mallory"))
        assert isinstance(e, RejectedMessage) and "broker user 'mallory'" in str(e)
        assert service.states.peek(A).alarms[ref].acked_by is None
        assert await outcome(with_host, delivery(A, "alarm_command")) is None
        # Recorded under the broker user (an operator), not the name in the body.
        assert service.states.peek(A).alarms[ref].acked_by == "guest"
    finally:
        await service.batches.close(drain=False)
        service.engine.dispose()
