"""centaure_shared.storage.query on SQLite, filled through the real SqlWriter at known times."""

from __future__ import annotations

import math

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector.consumer import Delivery
from connector.messages import Alarm, Event, Metric, Perf, Varbind
from centaure_shared.storage import query
from centaure_shared.storage.query import AlarmRow, DeviceRow, EventRow, QueryError, SampleRow
from centaure_shared.storage.schema import create_all, make_schema
from connector_db.store import NormalizedStore
from connector_db.writer import SqlWriter

T0 = 1_700_000_000.125  # 2023-11-14T22:13:20.125Z
R1, R2 = "r1.example.net", "r2.example.net"
MAX_REF = 2**64 - 1


def perf(host: str, ts: float, metrics: list[Metric]) -> Perf:
    return Perf(ts=ts, source="centaure-snmp@n1", host=host,
                address="10.0.0.1" if host == R1 else "10.0.0.2",
                device_type="router" if host == R1 else "ups", metrics=metrics)


def m(name: str, value, index: str = "", kind: str = "gauge", unit: str | None = None) -> Metric:
    return Metric(name=name, index=index, value=value, kind=kind, unit=unit, oid="1.3.6.1.2.1")


def r1_poll(k: int) -> Perf:
    """Poll k (0, 1, 2) of r1, 60 s apart."""
    return perf(R1, T0 + 60 * k, [
        m("cpu", 10.0 + k, unit="%"),
        m("ifInOctets", 1000 * k, index="1", kind="counter", unit="octets"),
        m("ifInOctets", 2000 * k + 0.5, index="2", kind="counter", unit="octets"),
        m("sysDescr", f"IOS {k}", kind="text"),
        m("temperature", None, unit="C"),
    ])


def event(ts: float, host: str, name: str, *, address: str = "10.0.0.1",
          unknown: bool = False) -> Event:
    return Event(ts=ts, source="centaure-traps@n1", host=host, address=address,
                 snmp_version="v2c", trap_oid="1.3.6.1.6.3.1.1.5.3", name=name,
                 severity="major", message=f"{name} on {host}", action="raise",
                 alarm=name, key="3", unknown_sender=unknown,
                 varbinds=[Varbind(oid="1.3.6.1.2.1.2.2.1.1.3", type="Integer", value=3),
                           Varbind(oid="1.3.6.1.2.1.2.2.1.2.3", name="ifDescr",
                                   type="OctetString", value="Gi0/3")])


def alarm(ref: int, host: str, name: str, state: str, last_seen: float,
          ts: float | None = None) -> Alarm:
    return Alarm(ts=last_seen if ts is None else ts, source="centaure-correlator@n1",
                 host=host, ref=ref, name=name, severity="major", state=state,
                 message=f"{name} {state}", first_seen=T0, last_seen=last_seen,
                 cleared_at=last_seen if state == "cleared" else None, count=2,
                 origin="trap", acked_by="ops" if ref == 2 else None, flapping=ref == 2)


@pytest.fixture
def db(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/q.sqlite3")
    schema = make_schema("q_")
    create_all(engine, schema)
    yield engine, schema
    engine.dispose()


async def store(db, messages) -> None:
    """Write ``messages`` through the real writer; return once all are committed."""
    w = SqlWriter(NormalizedStore(*db), reactor, batch_interval=0.01)
    try:
        await defer.gatherResults(
            [w.handle(msg, Delivery(body=b"", exchange="x", routing_key="k",
                                    message_id=f"id{i}"))
             for i, msg in enumerate(messages)], consumeErrors=True)
        await w.close()
    finally:
        w.stop_pool()


async def fill(db) -> None:
    """r1 polled 3 times, r2 once; 3 events; 3 alarms."""
    await store(db, [r1_poll(0), r1_poll(1), r1_poll(2),
                perf(R2, T0 + 30, [m("cpu", 55.5, unit="%"), m("battery", 98.0, unit="%")]),
                event(T0 + 10, R1, "linkDown"), event(T0 + 20, R1, "linkUp"),
                event(T0 + 30, "10.9.9.9", "coldStart", address="10.9.9.9", unknown=True),
                alarm(1, R1, "linkDown", "raised", T0 + 100),
                alarm(2, R1, "fanFail", "raised", T0 + 50),
                alarm(2, R1, "fanFail", "cleared", T0 + 150),
                alarm(MAX_REF, R2, "onBattery", "updated", T0 + 200)])


def s(metric: str, k: int, value, index: str = "", kind: str = "gauge", unit=None,
      host: str = R1, ts: float | None = None) -> SampleRow:
    return SampleRow(host, metric, kind, unit, index, T0 + 60 * k if ts is None else ts, value)


def cpu(k: int) -> SampleRow:
    return s("cpu", k, 10.0 + k, unit="%")


def octets(k: int, index: str) -> SampleRow:
    value = float(1000 * k) if index == "1" else 2000 * k + 0.5
    return s("ifInOctets", k, value, index=index, kind="counter", unit="octets")


def poll_rows(k: int) -> list[SampleRow]:
    """Every sample of r1's poll k, in the API's order within one ts."""
    return [cpu(k), octets(k, "1"), octets(k, "2"), s("sysDescr", k, f"IOS {k}", kind="text"),
            s("temperature", k, None, unit="C")]


# --- samples -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_all_samples_of_a_host_newest_first(db):
    await fill(db)
    rows = query.samples(*db, R1)
    assert rows == poll_rows(2) + poll_rows(1) + poll_rows(0)
    assert rows[0].ts == T0 + 120  # float seconds, milliseconds kept
    assert isinstance(rows[0].ts, float)


@pytest_twisted.ensureDeferred
async def test_samples_oldest_first(db):
    await fill(db)
    # asc reverses time; within one ts the order stays metric, index.
    assert query.samples(*db, R1, order="asc") == poll_rows(0) + poll_rows(1) + poll_rows(2)


@pytest_twisted.ensureDeferred
async def test_samples_by_metric_and_index(db):
    await fill(db)
    assert query.samples(*db, R1, "cpu") == [cpu(2), cpu(1), cpu(0)]
    assert query.samples(*db, R1, "ifInOctets") == [
        octets(2, "1"), octets(2, "2"), octets(1, "1"), octets(1, "2"),
        octets(0, "1"), octets(0, "2")]
    assert query.samples(*db, R1, "ifInOctets", index="2") == [
        octets(2, "2"), octets(1, "2"), octets(0, "2")]
    # Only the host asked for: r2 has cpu too.
    assert query.samples(*db, R2, "cpu") == [
        s("cpu", 0, 55.5, unit="%", host=R2, ts=T0 + 30)]


@pytest_twisted.ensureDeferred
async def test_samples_of_several_metrics_in_one_query(db):
    await fill(db)
    assert query.samples(*db, R1, metrics=["cpu", "ifInOctets"], order="asc") == [
        row for k in range(3) for row in (cpu(k), octets(k, "1"), octets(k, "2"))]
    # A name never stored, or one this host does not have, gives no rows: no error.
    assert query.samples(*db, R2, metrics=["cpu", "ifInOctets", "notYet"]) == [
        s("cpu", 0, 55.5, unit="%", host=R2, ts=T0 + 30)]
    assert query.samples(*db, R1, metrics=["notYet"]) == []
    assert query.samples(*db, R1, metrics=[]) == []
    with pytest.raises(QueryError, match="metric or metrics, not both"):
        query.samples(*db, R1, "cpu", metrics=["cpu"])
    with pytest.raises(QueryError, match="no device named .nope."):
        query.samples(*db, "nope", metrics=["cpu"])


@pytest_twisted.ensureDeferred
async def test_samples_index_without_metric(db):
    await fill(db)
    assert query.samples(*db, R1, index="1") == [octets(2, "1"), octets(1, "1"), octets(0, "1")]


@pytest_twisted.ensureDeferred
async def test_text_and_missing_values(db):
    await fill(db)
    assert [r.value for r in query.samples(*db, R1, "sysDescr")] == ["IOS 2", "IOS 1", "IOS 0"]
    assert [r.value for r in query.samples(*db, R1, "temperature")] == [None, None, None]


@pytest_twisted.ensureDeferred
async def test_samples_time_range_is_inclusive_at_both_ends(db):
    await fill(db)
    assert query.samples(*db, R1, "cpu", start=T0 + 60, end=T0 + 120) == [cpu(2), cpu(1)]
    assert query.samples(*db, R1, "cpu", start=T0 + 60, end=T0 + 60) == [cpu(1)]
    assert query.samples(*db, R1, "cpu", start=T0 + 60.001) == [cpu(2)]
    assert query.samples(*db, R1, "cpu", end=T0 + 59.999) == [cpu(0)]
    assert query.samples(*db, R1, "cpu", start=T0 + 121) == []
    # Integers are seconds too.
    assert query.samples(*db, R1, "cpu", start=int(T0) + 61) == [cpu(2)]


@pytest_twisted.ensureDeferred
async def test_samples_limit_keeps_the_first_rows_in_the_order_asked(db):
    await fill(db)
    assert query.samples(*db, R1, "cpu", limit=2) == [cpu(2), cpu(1)]
    assert query.samples(*db, R1, "cpu", limit=2, order="asc") == [cpu(0), cpu(1)]
    assert query.samples(*db, R1, limit=3) == poll_rows(2)[:3]
    assert query.samples(*db, R1, "cpu", limit=1, start=T0 + 1) == [cpu(2)]


@pytest_twisted.ensureDeferred
async def test_known_metric_with_nothing_in_range_is_an_empty_result(db):
    await fill(db)
    assert query.samples(*db, R1, "ifInOctets", index="9") == []
    assert query.samples(*db, R1, "cpu", end=T0 - 1) == []


# --- latest_samples, devices ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_latest_samples_takes_the_newest_of_each_host_metric_index(db):
    await fill(db)
    rows = query.latest_samples(*db)
    r2 = [s("battery", 0, 98.0, unit="%", host=R2, ts=T0 + 30),
          s("cpu", 0, 55.5, unit="%", host=R2, ts=T0 + 30)]
    assert rows == poll_rows(2) + r2  # sorted by host, metric, index


@pytest_twisted.ensureDeferred
async def test_latest_samples_after_an_older_replayed_poll(db):
    await fill(db)
    # A late (replayed) old poll must not hide the newest sample of a key.
    await store(db, [
        perf(R1, T0 - 3600, [m("cpu", 1.0, unit="%")]),
        perf(R1, T0 + 500, [m("ifInOctets", 7.0, index="1", kind="counter",
                              unit="octets")])])
    rows = query.latest_samples(*db, host=R1, metrics=["cpu", "ifInOctets"])
    assert rows == [cpu(2),
                    s("ifInOctets", 0, 7.0, index="1", kind="counter", unit="octets",
                      ts=T0 + 500),
                    octets(2, "2")]


@pytest_twisted.ensureDeferred
async def test_latest_samples_filters_and_limit(db):
    await fill(db)
    assert query.latest_samples(*db, host=R2) == [
        s("battery", 0, 98.0, unit="%", host=R2, ts=T0 + 30),
        s("cpu", 0, 55.5, unit="%", host=R2, ts=T0 + 30)]
    assert query.latest_samples(*db, metrics="cpu") == [
        cpu(2), s("cpu", 0, 55.5, unit="%", host=R2, ts=T0 + 30)]
    # A name never stored (a metric not polled yet) gives no rows, no error.
    assert query.latest_samples(*db, metrics=["cpu", "notYet"], host=R1) == [cpu(2)]
    assert query.latest_samples(*db, metrics=[]) == []
    assert query.latest_samples(*db, limit=2) == poll_rows(2)[:2]


def test_latest_samples_of_an_empty_database(db):
    assert query.latest_samples(*db) == []
    assert query.devices(*db) == []
    assert query.metric_names(*db) == []


@pytest_twisted.ensureDeferred
async def test_devices_with_their_newest_sample(db):
    await fill(db)
    assert query.devices(*db) == [DeviceRow(R1, "10.0.0.1", "router", T0 + 120),
                                  DeviceRow(R2, "10.0.0.2", "ups", T0 + 30)]
    # Every name stored, once, whichever devices and kinds it has.
    assert query.metric_names(*db) == sorted({r.metric for r in query.latest_samples(*db)})
    assert "cpu" in query.metric_names(*db)


# --- events -------------------------------------------------------------------------------------


def ev(ts: float, host: str, name: str, address: str = "10.0.0.1",
       unknown: bool = False) -> EventRow:
    return EventRow(ts=ts, host=host, address=address, name=name, severity="major",
                    action="raise", message=f"{name} on {host}",
                    trap_oid="1.3.6.1.6.3.1.1.5.3",
                    varbinds=({"oid": "1.3.6.1.2.1.2.2.1.1.3", "name": None, "type": "Integer",
                               "value": 3},
                              {"oid": "1.3.6.1.2.1.2.2.1.2.3", "name": "ifDescr",
                               "type": "OctetString", "value": "Gi0/3"}),
                    snmp_version="v2c", alarm=name, key="3", unknown_sender=unknown)


E1 = ev(T0 + 10, R1, "linkDown")
E2 = ev(T0 + 20, R1, "linkUp")
E3 = ev(T0 + 30, "10.9.9.9", "coldStart", address="10.9.9.9", unknown=True)


@pytest_twisted.ensureDeferred
async def test_events_newest_first_with_varbinds_decoded(db):
    await fill(db)
    assert query.events(*db) == [E3, E2, E1]
    assert query.events(*db, order="asc") == [E1, E2, E3]
    assert hash(E1) == hash(ev(T0 + 10, R1, "linkDown"))  # rows stay hashable


@pytest_twisted.ensureDeferred
async def test_events_filters(db):
    await fill(db)
    assert query.events(*db, host=R1) == [E2, E1]
    assert query.events(*db, host="10.9.9.9") == [E3]  # an unknown sender, by its address
    assert query.events(*db, start=T0 + 20) == [E3, E2]
    assert query.events(*db, start=T0 + 10, end=T0 + 20, order="asc") == [E1, E2]
    assert query.events(*db, limit=1) == [E3]
    assert query.events(*db, limit=1, order="asc") == [E1]
    # A device without events: nothing, not an error.
    assert query.events(*db, host=R2) == []
    assert query.events(*db, host=R1, start=T0 + 1000) == []


# --- alarms -------------------------------------------------------------------------------------


A1 = AlarmRow(ref=1, host=R1, name="linkDown", severity="major", state="raised",
              message="linkDown raised", first_seen=T0, last_seen=T0 + 100, cleared_at=None,
              count=2, origin="trap", acked_by=None, flapping=False, cause_ref=None)
A2 = AlarmRow(ref=2, host=R1, name="fanFail", severity="major", state="cleared",
              message="fanFail cleared", first_seen=T0, last_seen=T0 + 150,
              cleared_at=T0 + 150, count=2, origin="trap", acked_by="ops", flapping=True,
              cause_ref=None)
A3 = AlarmRow(ref=MAX_REF, host=R2, name="onBattery", severity="major", state="updated",
              message="onBattery updated", first_seen=T0, last_seen=T0 + 200,
              cleared_at=None, count=2, origin="trap", acked_by=None, flapping=False,
              cause_ref=None)


@pytest_twisted.ensureDeferred
async def test_alarms_current_state_most_recently_seen_first(db):
    await fill(db)
    assert query.alarms(*db) == [A3, A2, A1]
    assert query.alarms(*db)[0].ref == MAX_REF  # unsigned 64-bit, exact


@pytest_twisted.ensureDeferred
async def test_alarms_active_host_and_limit(db):
    await fill(db)
    assert query.alarms(*db, active=True) == [A3, A1]
    assert query.alarms(*db, host=R1) == [A2, A1]
    assert query.alarms(*db, host=R1, active=True) == [A1]
    assert query.alarms(*db, limit=1) == [A3]
    # Known through its events only: no alarms, no error.
    assert query.alarms(*db, host="10.9.9.9") == []


# --- errors -------------------------------------------------------------------------------------


def message(exc_info) -> str:
    return str(exc_info.value)


@pytest_twisted.ensureDeferred
async def test_unknown_host_lists_the_known_ones_and_suggests(db):
    await fill(db)
    with pytest.raises(QueryError) as e:
        query.samples(*db, "r1.exmple.net")
    assert message(e) == (f"no device named 'r1.exmple.net' in the database "
                          f"(did you mean '{R1}'?); known: {R1}, {R2}")
    assert isinstance(e.value, ValueError)
    with pytest.raises(QueryError) as e:
        query.latest_samples(*db, host="zzz")
    assert message(e) == f"no device named 'zzz' in the database; known: {R1}, {R2}"


@pytest_twisted.ensureDeferred
async def test_unknown_host_for_events_and_alarms_counts_trap_senders(db):
    await fill(db)
    for fn in (query.events, query.alarms):
        with pytest.raises(QueryError) as e:
            fn(*db, host="10.9.9.8")
        assert message(e) == ("no device named '10.9.9.8' in the database "
                              f"(did you mean '10.9.9.9'?); known: 10.9.9.9, {R1}, {R2}")


@pytest_twisted.ensureDeferred
async def test_unknown_host_lists_at_most_ten_names(db):
    hosts = [f"sw{i:02d}.example.net" for i in range(25)]
    await store(db, [
        perf(h, T0, [m("cpu", 1.0)]) for h in hosts])
    with pytest.raises(QueryError) as e:
        query.samples(*db, "sw07.exmple.net")
    assert message(e) == (
        "no device named 'sw07.exmple.net' in the database (did you mean "
        "'sw07.example.net'?); known: " + ", ".join(hosts[:10]) + ", ... (25 devices in all)")


def test_unknown_host_in_an_empty_database(db):
    with pytest.raises(QueryError) as e:
        query.samples(*db, R1)
    assert message(e) == f"no device named '{R1}' in the database; it has no devices yet"


@pytest_twisted.ensureDeferred
async def test_unknown_metric_for_the_host_suggests_its_close_names(db):
    await fill(db)
    with pytest.raises(QueryError) as e:
        query.samples(*db, R1, "ifInOctet")
    assert message(e) == (f"device '{R1}' has no metric 'ifInOctet' (did you mean "
                          "'ifInOctets'?); its metrics: cpu, ifInOctets, sysDescr, temperature")
    # A metric other devices have is still unknown for this one.
    with pytest.raises(QueryError) as e:
        query.samples(*db, R2, "ifInOctets")
    assert message(e) == (f"device '{R2}' has no metric 'ifInOctets'; "
                          "its metrics: battery, cpu")
    with pytest.raises(QueryError) as e:
        query.samples(*db, R2, "ifInOctets", start=T0, end=T0 + 1)
    assert "has no metric 'ifInOctets'" in message(e)


@pytest_twisted.ensureDeferred
async def test_bad_arguments(db):
    await fill(db)
    cases = [
        (dict(order="newest"), "order must be 'asc' (oldest first) or 'desc' (newest first), "
                               "not 'newest'"),
        (dict(limit=0), "limit must be a whole number of at least 1, not 0"),
        (dict(limit=True), "limit must be a whole number of at least 1, not True"),
        (dict(limit=2.5), "limit must be a whole number of at least 1, not 2.5"),
        (dict(start=T0 + 60, end=T0), "the start of the time range "
                                      "(2023-11-14T22:14:20.125Z) is after its end "
                                      "(2023-11-14T22:13:20.125Z)"),
        (dict(start=math.nan), "start must be a finite number of UNIX seconds, not nan"),
        (dict(end="yesterday"), "end must be a finite number of UNIX seconds, not 'yesterday'"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(QueryError) as e:
            query.samples(*db, R1, **kwargs)
        assert message(e) == expected, kwargs
    with pytest.raises(QueryError, match="^order must be"):
        query.events(*db, order="up")
    with pytest.raises(QueryError, match="^limit must be"):
        query.alarms(*db, limit=-1)
    with pytest.raises(QueryError, match="^limit must be"):
        query.latest_samples(*db, limit=0)
    with pytest.raises(QueryError, match="^the start of the time range"):
        query.events(*db, start=2.0, end=1.0)


def test_missing_tables(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/empty.sqlite3")
    schema = make_schema("nope_")
    expected = (f"no Centaure tables with prefix 'nope_' in sqlite:///{tmp_path}/empty.sqlite3: "
                "run 'centaure db upgrade -c settings.ini' or start centaure-db")
    try:
        for call in (lambda: query.samples(engine, schema, R1),
                     lambda: query.latest_samples(engine, schema),
                     lambda: query.devices(engine, schema),
                     lambda: query.metric_names(engine, schema),
                     lambda: query.events(engine, schema),
                     lambda: query.alarms(engine, schema, active=True)):
            with pytest.raises(QueryError) as e:
                call()
            assert message(e) == expected
    finally:
        engine.dispose()


@pytest_twisted.ensureDeferred
async def test_other_database_errors_are_not_hidden(db):
    await fill(db)
    engine, schema = db
    with engine.begin() as c:  # tables there, one column gone: not "missing tables"
        c.execute(sa.text("ALTER TABLE q_alarms DROP COLUMN origin"))
    with pytest.raises(sa.exc.OperationalError):
        query.alarms(engine, schema)
