"""Outbox, state and silences in SQL (SQLite via the migrations): dedup, marks, round trip."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from connector_alerter import migrate, silences
from connector_alerter.outbox import OutboxStore, dedup_key
from connector_alerter.silences import parse_severity

T0 = 1_795_000_000.0


@pytest.fixture
def store(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    assert migrate.upgrade(engine, "t_") == migrate.head()
    yield OutboxStore(engine, "t_")
    engine.dispose()


def row(key="1:raised:1.0", recipient="a@x.org"):
    return {"idem_key": key, "route": "r", "channel": "email", "recipient": recipient,
            "ref": 1, "host": "h1", "payload": {"subject": "s"}}


def test_rows_are_queued_once_per_key_and_receiver(store):
    assert len(store.save([row(), row(recipient="b@x.org")], {}, {}, T0)) == 2
    assert store.save([row()], {}, {}, T0 + 1) == []        # same transition: skipped
    assert [r.recipient for r in store.due(T0)] == ["a@x.org", "b@x.org"]
    assert dedup_key("k", "email", "a") != dedup_key("k", "webhook", "a")


def test_marks_and_retry_times(store):
    (rid,) = store.save([row()], {}, {}, T0)
    store.mark(rid, "pending", 1, T0, next_at=T0 + 10, error="421 try later")
    assert store.due(T0 + 9) == [] and store.next_due() == T0 + 10
    assert store.due(T0 + 10)[0].attempts == 1
    store.mark(rid, "sent", 2, T0 + 10)
    assert store.due(T0 + 100) == [] and store.rows("sent")[0].attempts == 2
    assert store.purge(T0 + 11) == 1


def test_group_and_last_state_round_trip(store):
    store.save([], {"g1": {"route": "r", "alarms": {}}}, {"7": {"key": "k"}}, T0)
    assert store.load() == ({"g1": {"route": "r", "alarms": {}}}, {"7": {"key": "k"}})
    store.save([], {"g1": None}, {"7": None}, T0)
    assert store.load() == ({}, {})


def test_silences_add_list_remove(store):
    s = silences.add(store.engine, "t_", duration=7200, comment="maintenance", host="r*",
                     severity=">=major", now=T0)
    assert s.severity == ("critical", "major")
    assert s.matches({"host": "r1", "severity": "major", "name": "x"}, {}, T0 + 10)
    assert not s.matches({"host": "r1", "severity": "minor", "name": "x"}, {}, T0 + 10)
    assert not s.matches({"host": "r1", "severity": "major"}, {}, T0 + 7200)
    assert [x.id for x in silences.list_(store.engine, "t_", now=T0)] == [s.id]
    assert silences.remove(store.engine, "t_", s.id, now=T0 + 60)
    assert not silences.remove(store.engine, "t_", s.id, now=T0 + 61)
    assert silences.list_(store.engine, "t_", now=T0 + 61) == []
    assert [x.id for x in store.silences(T0 + 61)] == [s.id]   # kept a day, inactive
    with pytest.raises(ValueError):
        silences.add(store.engine, "t_", duration=60, comment="x")
    with pytest.raises(ValueError):
        parse_severity("loud")
