"""The alerter's start-up replay on a real MariaDB that goes away in the middle.

A private ``mariadbd`` holds 12 hosts' stored samples: each host has a saved
state from before its last two polls, both over the rule's threshold, so the
replay must publish one breach per host. The server is killed (-9) after the
fifth host; the replay stops with the outage error, the server starts again,
and the next call goes on with the sixth host. The result is the same as a
replay with no outage: every breach once, every sample fed once.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from connector_alerter.evaluator import Evaluator
from connector_alerter.replay import Replay
from connector_alerter.rules import build_rules
from connector_db import migrate
from centaure_shared.storage.schema import make_schema
from centaure_shared.sql import is_outage
from tests.integration.private_mariadb import private_mariadb
from tests.sql_samples import insert_samples

pytestmark = pytest.mark.integration

HOSTS = 12
PREFIX = "rp_"


def evaluator() -> Evaluator:
    rules = build_rules([("r1", {"name": "cpu-high", "when": {
        "metric": "cpu", "op": ">", "value": 90, "consecutive": 2}})], "test")
    return Evaluator(rules, {}, "alerter@test")


def fill(engine: sa.Engine, now: float) -> dict[str, float]:
    """Three polls a minute apart per host (50, 95, 97); the saved time: the first poll."""
    migrate.upgrade(engine, PREFIX)
    schema = make_schema(PREFIX)
    first = now - 180
    with engine.begin() as conn:
        conn.execute(schema.devices.insert(), [
            {"id": h + 1, "name": f"h{h:02d}", "address": "10.0.0.1", "device_type": "router"}
            for h in range(HOSTS)])
        conn.execute(schema.metrics.insert(), [{"id": 1, "name": "cpu", "kind": "gauge"}])
        insert_samples(conn, schema, [
            {"device_id": h + 1, "metric_id": 1, "idx": "", "ts": int((first + 60 * p) * 1000),
             "value_num": value, "value_text": None}
            for h in range(HOSTS) for p, value in enumerate((50.0, 95.0, 97.0))])
    return {f"h{h:02d}": first for h in range(HOSTS)}


def test_an_outage_in_the_middle_resumes_with_the_host_that_failed(tmp_path):
    server = private_mariadb(str(tmp_path / "mariadb"))
    engine = sa.create_engine(server.url, pool_pre_ping=True)
    try:
        now = time.time()
        since = fill(engine, now)
        reference = Replay(evaluator(), engine, PREFIX, since, now=now).run()
        assert reference.samples == 2 * HOSTS
        assert sorted((t.host, t.state) for t in reference.thresholds) == [
            (f"h{h:02d}", "breached") for h in range(HOSTS)]

        replay = Replay(evaluator(), engine, PREFIX, since, now=now)
        calls = 0

        def kill_after_five() -> bool:
            nonlocal calls
            calls += 1
            if calls == 6:      # five hosts done: the database goes away
                server.kill()
            return False

        with pytest.raises(sa.exc.SQLAlchemyError) as failed:
            replay.run(kill_after_five)
        assert is_outage(failed.value), failed.value
        assert replay.hosts_done == 5
        with pytest.raises(sa.exc.SQLAlchemyError):
            replay.run()    # still away: still where it was
        assert replay.hosts_done == 5
        server.start()
        replay.run()
        assert replay.hosts_done == HOSTS
        assert replay.samples == reference.samples
        assert [(t.host, t.rule, t.state, t.ts) for t in replay.thresholds] == [
            (t.host, t.rule, t.state, t.ts) for t in reference.thresholds]
        assert replay.replayed == reference.replayed
    finally:
        engine.dispose()
        server.kill()
