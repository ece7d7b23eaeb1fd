"""The alerter's tables on the real SQL servers: migrations match schema.py, outbox, state."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connector_alerter import migrate, silences
from connector_alerter.outbox import OutboxStore
from connector_alerter.schema import make_schema
from tests.conftest import SQL_URLS
from tests.unit.test_db_migrate import prefixed_engine

pytestmark = pytest.mark.integration

T0 = 1_795_000_000.123456


@pytest.fixture(params=sorted(SQL_URLS))
def store(request):
    with prefixed_engine(SQL_URLS[request.param]) as (engine, prefix):
        migrate.upgrade(engine, prefix)
        yield OutboxStore(engine, prefix)


def test_migrated_schema_is_make_schema(store):
    prefix = store.schema.prefix
    with store.engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={
            "compare_type": True, "version_table": f"{prefix}alembic_version",
            "include_name": lambda name, type_, parent: type_ != "table"
            or name.startswith(prefix)})
        assert compare_metadata(ctx, make_schema(prefix).metadata) == []
    assert migrate.upgrade(store.engine, prefix) == migrate.head()   # idempotent


def test_outbox_dedup_marks_and_state(store):
    rows = [{"idem_key": f"{2**64 - 1}:raised:{T0!r}", "route": "r", "channel": "webhook",
             "recipient": "https://h.example/" + "x" * 600, "ref": 2**64 - 1, "host": "R1",
             "payload": {"body": "{\"é\": 1}"}}]
    (rid,) = store.save(rows, {"g" * 400: {"route": "r", "alarms": {}}}, {"1": {"k": 1}}, T0)
    assert store.save(rows, {}, {}, T0) == []
    (row,) = store.due(T0)
    assert row.ref == str(2**64 - 1) and row.payload == {"body": "{\"é\": 1}"}
    assert row.next_at == T0                                  # DOUBLE: bit for bit
    store.mark(rid, "pending", 1, T0, next_at=T0 + 5, error="HTTP 500")
    assert store.due(T0 + 4.9) == [] and store.next_due() == T0 + 5
    store.mark(rid, "sent", 2, T0 + 5)
    assert store.rows("sent")[0].attempts == 2
    assert store.load() == ({"g" * 400: {"route": "r", "alarms": {}}}, {"1": {"k": 1}})


def test_silences(store):
    s = silences.add(store.engine, store.schema.prefix, duration=60, comment="c", host="R1",
                     now=T0)
    assert [x.id for x in silences.list_(store.engine, store.schema.prefix, now=T0)] == [s.id]
    assert silences.remove(store.engine, store.schema.prefix, s.id, now=T0 + 1)
    assert silences.list_(store.engine, store.schema.prefix, now=T0 + 1) == []
