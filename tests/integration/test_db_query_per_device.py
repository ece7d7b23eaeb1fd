"""``centaure query`` on the per_device layout, against the real MariaDB of this machine.

Samples are stored by the real SqlWriter with a PerDeviceStore (tables named
``t<hex>_{metric}_{device}``, the device id from an inventory file); the
command, run as a subprocess with ``[db] layout = per_device``, reads them
back. Every table of a test is dropped afterwards.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from datetime import datetime, timezone

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor

from connector.consumer import Delivery
from connector.messages import Perf
from connector_db.per_device import PerDeviceLayout, PerDeviceStore
from centaure_shared.storage.query import QueryError
from connector_db.per_device_query import per_device_metrics, per_device_samples
from connector_db.settings import DbSettings
from connector_db.writer import SqlWriter
from tests.integration.test_db_query_cli import centaure_query, failed, ok, poll

pytestmark = pytest.mark.integration

URL = os.environ.get("CENTAURE_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
R1, R2 = "r1.example.net", "r2.example.net"
IDS = {R1: "42"}  # r2 has no id: its tables are named after its host name... which has dots
LEGACY = ",".join(str(c) for c in DbSettings().table_struct)
RICH = "ts_ms:ts_ms:bigint, idx:index:varchar(32), num:value_num:double, txt:value_text:text, " \
       "kind:kind:varchar(16), unit:unit:varchar(16)"
# Whole seconds plus 250 ms: the legacy struct keeps whole seconds, the rich one milliseconds.
NOW = math.floor(time.time()) - 1 + 0.25


def iso(ts: float) -> str:
    ms = round(ts * 1000)
    return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") \
        + f".{ms % 1000:03d}Z"


class Db:
    """One test's engine and table prefix."""

    def __init__(self) -> None:
        self.engine = sa.create_engine(URL)
        self.prefix = f"t{uuid.uuid4().hex[:10]}_"
        self.template = self.prefix + "{metric}_{device}"

    async def fill(self, struct: str, messages: list[Perf]) -> None:
        store = PerDeviceStore(self.engine, [s.strip() for s in struct.split(",")],
                               self.template, IDS,
                               registry_table=self.prefix + "per_device_registry")
        w = SqlWriter(store, reactor, batch_interval=0.01)
        try:
            await defer.gatherResults(
                [w.handle(m, Delivery(body=b"", exchange="x", routing_key="k",
                                      message_id=f"m{i}")) for i, m in enumerate(messages)],
                consumeErrors=True)
            await w.close()
        finally:
            w.stop_pool()

    def tables(self) -> set[str]:
        with self.engine.connect() as c:
            return {n for n in sa.inspect(c).get_table_names() if n.startswith(self.prefix)}

    def settings(self, tmp_path, struct: str) -> str:
        (tmp_path / "inventory.yaml").write_text(
            f"- {{name: {R1}, address: 10.0.0.1, id: '42'}}\n"
            f"- {{name: {R2}, address: 10.0.0.2}}\n", encoding="utf-8")
        path = tmp_path / "settings.ini"
        path.write_text(f"[database]\nurl = {URL}\n\n[db]\nlayout = per_device\n"
                        f"table_template = {self.template}\ntable_struct = {struct}\n\n"
                        "[inventory]\npath = inventory.yaml\n", encoding="utf-8")
        return str(path)


@pytest.fixture
def db():
    d = Db()
    try:
        yield d
    finally:
        with d.engine.begin() as c:
            for name in d.tables():
                sa.Table(name, sa.MetaData()).drop(c)
        left = d.tables()
        d.engine.dispose()
        assert not left, left


@pytest_twisted.ensureDeferred
async def test_table_and_json_from_legacy_struct(db, tmp_path):
    await db.fill(LEGACY, [poll(R1, NOW - 7200, 0), poll(R1, NOW - 1800, 1), poll(R1, NOW - 60, 2)])
    assert f"{db.prefix}cpu_42" in db.tables()  # the writer named them after the inventory id
    cfg = db.settings(tmp_path, LEGACY)
    # The legacy struct keeps whole seconds ('datetime:ts:int'): times lose their 250 ms.
    out = ok(centaure_query(cfg, R1, "cpu", "--since", "1h"))
    assert out.splitlines() == [
        "TIME                      METRIC  INDEX  VALUE  UNIT",
        f"{iso(NOW - 60.25)}  cpu     0      12     -",
        f"{iso(NOW - 1800.25)}  cpu     0      11     -",
        "2 samples (newest first)",
    ]
    out = ok(centaure_query(cfg, R1, "ifInOctets", "--index", "2", "--json"))
    assert json.loads(out) == [
        {"host": R1, "metric": "ifInOctets", "kind": "", "unit": None, "index": "2",
         "ts": iso(NOW - t - 0.25), "value": v}
        for t, v in ((60, 4000.5), (1800, 2000.5), (7200, 0.5))]
    # Every metric of the host, merged in time order, cut at --limit.
    lines = ok(centaure_query(cfg, R1, "--order", "asc", "--limit", "5")).splitlines()
    assert [line.split()[:4] for line in lines[1:6]] == [
        [iso(NOW - 7200.25), "cpu", "0", "10"],
        [iso(NOW - 7200.25), "ifInOctets", "1", "0"],
        [iso(NOW - 7200.25), "ifInOctets", "2", "0.5"],
        [iso(NOW - 7200.25), "sysDescr", "0", "IOS,"],
        [iso(NOW - 1800.25), "cpu", "0", "11"],
    ]
    assert lines[6] == "5 samples (oldest first); --limit 5 reached, there may be more"
    assert ok(centaure_query(cfg, R1, "cpu", "--since", "1s")) == \
        f"no samples for {R1} cpu in the last 1s\n"


@pytest_twisted.ensureDeferred
async def test_json_from_rich_struct_keeps_kind_unit_and_milliseconds(db, tmp_path):
    await db.fill(RICH, [poll(R1, NOW - 1800, 1), poll(R1, NOW - 60, 2)])
    cfg = db.settings(tmp_path, RICH)
    start = iso(NOW - 1800)
    out = ok(centaure_query(cfg, R1, "--from", start, "--to", repr(NOW - 60), "--json"))
    got = json.loads(out)
    assert got[:4] == [
        {"host": R1, "metric": "cpu", "kind": "gauge", "unit": "%", "index": "",
         "ts": iso(NOW - 60), "value": 12.0},
        {"host": R1, "metric": "ifInOctets", "kind": "counter", "unit": "octets", "index": "1",
         "ts": iso(NOW - 60), "value": 2000.0},
        {"host": R1, "metric": "ifInOctets", "kind": "counter", "unit": "octets", "index": "2",
         "ts": iso(NOW - 60), "value": 4000.5},
        {"host": R1, "metric": "sysDescr", "kind": "text", "unit": None, "index": "",
         "ts": iso(NOW - 60), "value": "IOS, v2"},
    ]
    assert len(got) == 8 and {r["ts"] for r in got[4:]} == {iso(NOW - 1800)}
    # --from is inclusive to the millisecond: one millisecond later drops the older poll.
    out = ok(centaure_query(cfg, R1, "cpu", "--from", repr(NOW - 1800 + 0.001), "--json"))
    assert [r["ts"] for r in json.loads(out)] == [iso(NOW - 60)]


@pytest_twisted.ensureDeferred
async def test_unknown_host_and_metric(db, tmp_path):
    await db.fill(LEGACY, [poll(R1, NOW - 60, 2)])
    cfg = db.settings(tmp_path, LEGACY)
    assert failed(centaure_query(cfg, R1, "ifInOctet")) == (
        f"centaure query: device '{R1}' has no metric 'ifInOctet' (did you mean "
        "'ifInOctets'?); its metrics: cpu, ifInOctets, sysDescr")
    assert failed(centaure_query(cfg, R2, "cpu")) == (
        f"centaure query: no device named '{R2}' in the database: no per_device table of it "
        f"(named like {db.template.format(metric='METRIC', device=R2)})")
    # A metric whose table name would not be an identifier is simply unknown.
    assert failed(centaure_query(cfg, R1, "cpu; DROP TABLE x")).startswith(
        f"centaure query: device '{R1}' has no metric 'cpu; DROP TABLE x'")
    assert {f"{db.prefix}{m}_42" for m in ("cpu", "ifInOctets", "sysDescr")} <= db.tables()


@pytest_twisted.ensureDeferred
async def test_python_api(db):
    await db.fill(LEGACY, [poll(R1, NOW - 60, 2), poll("r3", NOW - 60, 7)])
    layout = PerDeviceLayout(DbSettings().table_struct, db.template, IDS)
    assert per_device_metrics(db.engine, layout, R1) == ["cpu", "ifInOctets", "sysDescr"]
    assert per_device_metrics(db.engine, layout, "r3") == ["cpu", "ifInOctets", "sysDescr"]
    rows = per_device_samples(db.engine, layout, "r3", "ifInOctets", index="1")
    assert [(r.host, r.index, r.value) for r in rows] == [("r3", "1", 7000.0)]
    # An index the column cannot hold matches nothing (MariaDB would cast 'x' to 0).
    assert per_device_samples(db.engine, layout, R1, "cpu", index="x") == []
    with pytest.raises(QueryError):
        per_device_samples(db.engine, layout, "r4", "cpu")
