"""The correlator's group commit: state and outbox always go together.

With several batches applied while a commit runs, the next snapshot takes
the state *and* the alarms of all of them (a batch's seen ids are never
committed without its alarms, which a redelivery would then drop as
duplicates); a batch whose alarms an earlier commit took has no
transaction of its own; if that commit failed, it takes its alarms again.
Service with a fake runtime (no bus) on SQLite, steps run by hand as the
batch committer runs them.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.python.failure import Failure

from connector.settings import settings_from_string
from connector_alarms.service import CorrelatorService

from tests.unit.test_correlator_partitions import FakeRuntime, event

A, B, C = "ha", "hb", "hc"


async def single_node(tmp_path) -> CorrelatorService:
    settings = settings_from_string(
        "[bus]\nurl = amqp://guest:guest@127.0.0.1:1/\nexchange_prefix = t\n\n"
        f"[database]\nurl = sqlite:///{tmp_path}/c.sqlite3\n\n"
        "[correlator]\nupdate_interval = 0\n", source=str(tmp_path / "settings.ini"))
    runtime = FakeRuntime(settings)
    runtime.bus.subscriber = lambda name: type("S", (), {"subscribe": lambda *a: None})()
    service = CorrelatorService(runtime, sa.create_engine(f"sqlite:///{tmp_path}/c.sqlite3"), {})
    await service._start()
    service._ticker.stop()
    return service


def outbox(service) -> list[str]:
    with service.engine.connect() as c:
        return c.execute(sa.text("SELECT message_id FROM corr_outbox ORDER BY id")).scalars().all()


def seen(service) -> set[str]:
    with service.engine.connect() as c:
        return set(c.execute(sa.text("SELECT host FROM corr_seen_ids")).scalars().all())


@pytest_twisted.ensureDeferred
async def test_batches_applied_during_a_commit_are_written_by_the_next_one(tmp_path):
    service = await single_node(tmp_path)
    try:
        first = service.apply([(event(A), "e1")])
        # While first's commit would run, two more batches are applied.
        second = service.apply([(event(B), "e2")])
        third = service.apply([(event(C), "e3")])
        work = service.snapshot(first)
        assert work is not None
        service.commit(work)
        # One transaction wrote the three batches: state and alarms together.
        assert seen(service) == {A, B, C}
        assert len(outbox(service)) == 3
        await service.committed(first, None)
        assert service.snapshot(second) is None  # nothing of its own left
        await service.committed(second, None)
        assert service.snapshot(third) is None
        await service.committed(third, None)
        hosts = [k.split(".")[-1] for k, _, _ in service.publisher.sent]
        assert hosts == [A, B, C]  # each published once, in order
        assert service.counters.get("applied") == 3
        # The next commit deletes the published ids from the outbox.
        service.commit(service.snapshot(service.apply([])))
        assert outbox(service) == []
    finally:
        service.engine.dispose()


@pytest_twisted.ensureDeferred
async def test_after_a_failed_group_commit_the_waiting_batches_write_their_alarms_again(
        tmp_path):
    service = await single_node(tmp_path)
    try:
        first = service.apply([(event(A), "e1")])
        second = service.apply([(event(B), "e2")])
        third = service.apply([(event(C), "e3")])
        work = service.snapshot(first)
        real = service.store.engine
        service.store.engine = sa.create_engine(f"sqlite:///{tmp_path}/missing/x.sqlite3")
        with pytest.raises(sa.exc.OperationalError) as e:
            service.commit(work)
        service.store.engine = real
        service.failed(first, work, Failure(e.value))  # first's input goes back to the broker
        work = service.snapshot(second)
        assert work is not None  # second and third take their alarms again
        service.commit(work)
        assert len(outbox(service)) == 2
        assert service.snapshot(third) is None
        await service.committed(second, None)
        await service.committed(third, None)
        hosts = [k.split(".")[-1] for k, _, _ in service.publisher.sent]
        assert hosts == [B, C]
    finally:
        service.engine.dispose()
