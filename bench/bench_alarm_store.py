"""The correlator's StateStore against the real MariaDB: save of a batch of changed alarms.

A batch at the correlator's goal (10,000 events/s over 10,000 distinct alarms,
committed every ``[correlator] batch_size``) upserts up to ~2,000 alarm rows.
This builds ``--alarms`` alarms over ``--hosts`` hosts in a fresh layout,
saves them once (inserts), then ``--runs`` times changes every alarm (count,
last_seen, history) and times:

* ``snapshot``: copying the states into plain rows (reactor thread, no I/O;
  with ``--unchanged``, alarms that did not change are compared and skipped);
* ``save``: the transaction (hosts and alarms upserted, and with ``--outbox``
  one outbox message per alarm added and the previous batch's confirmed).

It prints alarm rows/s of ``save`` (median of the runs) and the number of
INSERT statements MariaDB ran per save (its ``Com_insert`` counter): a few,
not thousands, as PyMySQL sends each executemany of ``INSERT ... ON
DUPLICATE KEY UPDATE`` as multi-row statements. The layout is dropped
afterwards.

Usage:
    .venv/bin/python bench/bench_alarm_store.py [--alarms 2000] [--hosts 100] [--runs 3]
        [--unchanged 0] [--seen-ids 0] [--outbox]
        [--url mysql+pymysql://root@127.0.0.1:3306/test]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sqlalchemy as sa  # noqa: E402

from connector_alarms import migrate  # noqa: E402
from connector_alarms.keys import alarm_ref  # noqa: E402
from connector_alarms.model import AlarmRecord, HostState, SeenIds  # noqa: E402
from connector_alarms.store import StateStore  # noqa: E402

MARIADB_URL = os.environ.get("CENTAURE_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
TS = 1_790_000_000.0


def build(alarms: int, hosts: int, seen_ids: int) -> tuple[list[HostState], list[AlarmRecord]]:
    """``alarms`` active alarms spread over ``hosts`` hosts, fields filled as in production.

    Returns the states and the alarms in creation order (round robin over the hosts).
    """
    states = [HostState(host=f"router{h:05}.example.net", snapshot_ts=TS,
                        seen_ids=SeenIds(f"centaure-traps@n1:{h}:{i}" for i in range(seen_ids)))
              for h in range(hosts)]
    records = []
    for i in range(alarms):
        state = states[i % hosts]
        ifindex = i // hosts
        ref = alarm_ref(state.host, "linkDown", str(ifindex))
        state.alarms[ref] = AlarmRecord(
            ref=ref, host=state.host, name="linkDown", identity=str(ifindex), origin="trap",
            severity="major", base_severity="major",
            message=f"interface GigabitEthernet0/{ifindex} is down", active=True,
            first_seen=TS + i * 0.001, last_seen=TS + i * 0.001, changed_ts=TS + i * 0.001,
            history=[1], published_at=TS, seq=1)
        records.append(state.alarms[ref])
    return states, records


def change(records: list[AlarmRecord], run: int) -> None:
    """What a trap storm does to these alarms: count, last_seen, flap history."""
    for rec in records:
        rec.count += 1
        rec.last_seen += 1.0
        rec.history = (rec.history + [run % 2])[-21:]
        rec.pending_update = True


def com_insert(engine: sa.Engine) -> int:
    with engine.connect() as c:  # pool of one: the session the saves used
        return int(c.execute(sa.text("SHOW SESSION STATUS LIKE 'Com_insert'")).one()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=MARIADB_URL)
    ap.add_argument("--alarms", type=int, default=2000)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--unchanged", type=int, default=0,
                    help="more alarms on the same hosts, never changed (snapshot skips them)")
    ap.add_argument("--seen-ids", type=int, default=0,
                    help="message ids remembered per host (written with the host's row)")
    ap.add_argument("--outbox", action="store_true",
                    help="also add one outbox message per alarm and confirm the previous ones")
    args = ap.parse_args()

    engine = sa.create_engine(args.url, pool_size=1, max_overflow=0)
    mariadb = engine.dialect.name in ("mysql", "mariadb")
    prefix = f"b{uuid.uuid4().hex[:8]}_"
    try:
        migrate.upgrade(engine, prefix)
        store = StateStore(engine, prefix)
        states, records = build(args.alarms + args.unchanged, args.hosts, args.seen_ids)
        store.save(store.snapshot(states))  # the rows exist: what follows are updates
        changing = records[:args.alarms]  # round robin: every host is dirty
        by_host = {state.host: state for state in states}
        pending: list[str] = []
        snap_s, save_s, inserts = [], [], []
        for run in range(args.runs):
            change(changing, run)
            for record in changing:  # one applied message per change: its id is remembered
                by_host[record.host].seen(f"centaure-traps@n1:{run}:{record.ref}")
                by_host[record.host].touch(record.ref)
            t0 = time.perf_counter()
            snap = store.snapshot(states)
            t1 = time.perf_counter()
            assert len(snap.alarms) == args.alarms and len(snap.seen) == args.hosts
            add = ([(f"alarm:{r['ref']}:{run + 2}", b'{"state":"updated"}' * 20)
                    for r in snap.alarms] if args.outbox else [])
            before = com_insert(engine) if mariadb else 0
            t2 = time.perf_counter()
            store.save(snap, add, pending)
            t3 = time.perf_counter()
            inserts.append(com_insert(engine) - before if mariadb else 0)
            pending = [mid for mid, _ in add]
            snap_s.append(t1 - t0)
            save_s.append(t3 - t2)
            print(f"run {run + 1}: snapshot {(t1 - t0) * 1000:.1f} ms, "
                  f"save {(t3 - t2) * 1000:.1f} ms "
                  f"({len(snap.alarms) / (t3 - t2):,.0f} alarm rows/s)"
                  + (f", {inserts[-1]} INSERT statements" if mariadb else ""))
        assert len(store.load(0.0)[0]) == args.hosts
    finally:
        md = sa.MetaData()
        md.reflect(engine, only=lambda name, _md: name.startswith(prefix))
        md.drop_all(engine)
        engine.dispose()

    rate = args.alarms / statistics.median(save_s)
    what = (f"{args.alarms} changed alarms over {args.hosts} hosts"
            + (f" ({args.unchanged} more unchanged)" if args.unchanged else "")
            + (f", {args.seen_ids} seen ids per host" if args.seen_ids else "")
            + (f", {args.alarms} outbox messages added and as many confirmed"
               if args.outbox else ""))
    print(f"{engine.dialect.name}: save of {what}: {rate:,.0f} alarm rows/s "
          f"(median of {args.runs}; save {statistics.median(save_s) * 1000:.1f} ms, "
          f"snapshot {statistics.median(snap_s) * 1000:.1f} ms on the reactor thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
