"""Test helpers: samples written and read as (device, metric, index, ts, number, text) rows.

The normalized layout keeps a series id per (device, metric, index) and
splits numbers (``samples``) from texts and empty polls (``samples_text``);
tests that fill or check tables directly go through these two functions.
"""

from __future__ import annotations

import sqlalchemy as sa

from centaure_shared.storage.schema import Schema


def insert_samples(conn: sa.Connection, schema: Schema, rows: list[dict]) -> None:
    """Insert rows with keys device_id, metric_id, idx, ts, value_num and value_text
    (the series made as needed)."""
    se = schema.series
    keys = sorted({(r["device_id"], r["metric_id"], r["idx"]) for r in rows})
    known = {(d, m, i): id_ for id_, d, m, i in conn.execute(
        sa.select(se.c.id, se.c.device_id, se.c.metric_id, se.c.idx))}
    new = [k for k in keys if k not in known]
    if new:
        conn.execute(sa.insert(se), [{"device_id": d, "metric_id": m, "idx": i}
                                     for d, m, i in new])
        known = {(d, m, i): id_ for id_, d, m, i in conn.execute(
            sa.select(se.c.id, se.c.device_id, se.c.metric_id, se.c.idx))}
    numbers, texts = [], []
    for r in rows:
        sid = known[(r["device_id"], r["metric_id"], r["idx"])]
        if r.get("value_num") is not None:
            numbers.append({"series_id": sid, "ts": r["ts"], "value": r["value_num"]})
        else:
            texts.append({"series_id": sid, "ts": r["ts"], "value": r.get("value_text")})
    for table, part in ((schema.samples, numbers), (schema.samples_text, texts)):
        for i in range(0, len(part), 5000):
            conn.execute(sa.insert(table), part[i:i + 5000])


def sample_rows(conn: sa.Connection, schema: Schema) -> list[dict]:
    """Every stored sample as a dict (device_id, metric_id, idx, ts, value_num, value_text),
    sorted by those keys."""
    se = schema.series
    out = []
    for t, numeric in ((schema.samples, True), (schema.samples_text, False)):
        stmt = (sa.select(se.c.device_id, se.c.metric_id, se.c.idx, t.c.ts, t.c.value)
                .join_from(t, se, se.c.id == t.c.series_id))
        for d, m, i, ts, v in conn.execute(stmt):
            out.append({"device_id": d, "metric_id": m, "idx": i, "ts": ts,
                        "value_num": v if numeric else None,
                        "value_text": None if numeric else v})
    out.sort(key=lambda r: (r["device_id"], r["metric_id"], r["idx"], r["ts"]))
    return out
