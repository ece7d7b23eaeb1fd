"""The evaluator's saved state on real SQL servers (and SQLite): migration, round trip."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic import command

from connector.messages import Metric, Perf
from connector_alerter import migrate
from connector_alerter.evaluator import Evaluator
from connector_alerter.rules import build_rules
from connector_alerter.state import EvalStateStore
from tests.conftest import SQL_URLS
from tests.unit.test_db_migrate import prefixed_engine, tables

pytestmark = pytest.mark.integration

T0 = 1_795_000_000.123456
RULES = build_rules([("r", {"name": "temp-hot", "when": {
    "metric": "temperature", "op": ">", "value": 40, "consecutive": 3, "hysteresis": 2}})], "t")


@pytest.fixture(params=["sqlite", *sorted(SQL_URLS)])
def db(request, tmp_path):
    url = (f"sqlite:///{tmp_path}/a.sqlite3" if request.param == "sqlite"
           else SQL_URLS[request.param])
    with prefixed_engine(url) as db:
        yield db


def test_upgrade_from_0001_adds_the_state_table_and_keeps_the_rest(db):
    engine, prefix = db
    with engine.begin() as c:
        command.upgrade(migrate.MIGRATIONS.config(prefix, c), "alerter_0001")
    assert f"{prefix}eval_state" not in tables(engine, prefix)
    assert migrate.current(engine, prefix) == "alerter_0001"
    assert migrate.upgrade(engine, prefix) == migrate.head() == "alerter_0002"
    assert f"{prefix}eval_state" in tables(engine, prefix)
    assert schema_diffs_alerter(engine, prefix) == []
    with engine.begin() as c:
        command.downgrade(migrate.MIGRATIONS.config(prefix, c), "alerter_0001")
    assert f"{prefix}eval_state" not in tables(engine, prefix)
    assert f"{prefix}outbox" in tables(engine, prefix)


def schema_diffs_alerter(engine, prefix: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from connector_alerter.schema import make_schema

    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={
            "compare_type": True, "version_table": f"{prefix}alembic_version",
            "include_name": lambda name, type_, parent: type_ != "table"
            or name.startswith(prefix)})
        return compare_metadata(ctx, make_schema(prefix).metadata)


def test_saved_state_loads_back_exactly(db):
    engine, prefix = db
    migrate.upgrade(engine, prefix)
    store = EvalStateStore(engine, prefix)
    ev = Evaluator(RULES, {}, "alerter@t")
    for i, value in enumerate((41, 45.5, 47)):
        ev.evaluate(Perf(source="p@t", ts=T0 + i, host="R1", address="a", device_type="x",
                         metrics=[Metric(name="temperature", index="slot é", value=value,
                                         kind="gauge", oid="1.3")]))
    ev.evaluate(Perf(source="p@t", ts=T0, host="r1", address="a", device_type="x",
                     metrics=[Metric(name="temperature", value=1, kind="gauge", oid="1.3")]))
    long_host = "h" * 240                     # the longest host name a message may carry
    ev.evaluate(Perf(source="p@t", ts=T0, host=long_host, address="a", device_type="x",
                     metrics=[Metric(name="temperature", value=50, kind="gauge", oid="1.3")]))
    changes = ev.take_changes()
    store.save({h: (json.dumps(s), ts) for h, (s, ts, _) in changes.items()}, T0 + 10)
    loaded = store.load()
    # "R1" and "r1" are two hosts (byte-exact keys on MariaDB too); DOUBLE times exact.
    assert set(loaded) == {"R1", "r1", long_host}
    assert loaded["R1"] == (ev.export_host("R1"), T0 + 2)
    assert loaded["R1"][0]["breached"] == [["temp-hot", "slot é", T0 + 2]]
    again = Evaluator(RULES, {}, "alerter@t")
    again.import_state({h: s for h, (s, _) in loaded.items()})
    assert again.export_state() == ev.export_state()

    # A save replaces the host's row (one row per host), others untouched.
    store.save({"R1": ("{}", T0 + 20)}, T0 + 21)
    assert store.load(["R1", "nobody"]) == {"R1": ({}, T0 + 20)}
    assert store.load()["r1"][1] == T0
    with engine.connect() as c:
        t = store.schema.eval_state
        assert c.scalar(sa.select(sa.func.count()).select_from(t)) == 3
        assert c.scalar(sa.select(t.c.updated).where(t.c.host == "R1")) == T0 + 21
    store.delete(["R1"])
    assert set(store.load()) == {"r1", long_host}
