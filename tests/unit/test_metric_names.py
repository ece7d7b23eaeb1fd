"""Prometheus names on /metrics: a counter ends in ``_total`` exactly once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, task

from connector import messages
from connector.buffer import SQLiteBuffer, ThreadedBuffer
from connector.http import make_site
from connector.metrics import Counters, render_prometheus
from connector.publisher import ReliablePublisher

SRC = Path(__file__).resolve().parents[2] / "src"


def _types(text: str) -> dict[str, str]:
    """Metric family -> its # TYPE, from a Prometheus text exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def _assert_names_follow_the_rules(text: str) -> None:
    types = _types(text)
    assert types, text
    for metric, kind in types.items():
        assert not metric.endswith("_total_total"), metric
        if kind == "counter":
            assert metric.endswith("_total"), metric
        else:
            assert not metric.endswith("_total"), f"{kind} {metric} looks like a counter"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert "_total_total" not in line.split("{")[0], line


@pytest_twisted.ensureDeferred
async def test_the_publishers_numbers_render_with_one_total_suffix(tmp_path):
    counters = Counters("db")
    buf = ThreadedBuffer(SQLiteBuffer(str(tmp_path / "b.sqlite3")), reactor)
    p = ReliablePublisher(buf, "db", "centaure", counters, reactor)
    await p.start()
    try:
        # No link: the message goes to the disk buffer, counted as buffered.
        p.publish(messages.Status(source="db@n", connector="db", node="n", pid=1, version="0",
                                  state="ok", uptime=0.0, counters={}))
        for _ in range(200):
            if p.buffer.count():
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        text = render_prometheus([counters])
    finally:
        await p.stop()
    _assert_names_follow_the_rules(text)
    assert 'centaure_messages_buffered_total{connector="db"} 1' in text
    assert "# TYPE centaure_buffered gauge" in text


def test_a_counter_named_with_total_gets_the_suffix_once():
    c = Counters("x")
    c.inc("frames_total", 2)
    c.inc("frames_sent")
    c.set("queue_depth", 3)
    text = render_prometheus([c])
    _assert_names_follow_the_rules(text)
    assert 'centaure_frames_total{connector="x"} 2' in text


def test_no_counter_in_the_code_is_named_with_its_suffix():
    # The status heartbeat carries the raw names: "_total" there would read
    # doubled next to /metrics. The renderer adds the suffix.
    named = re.compile(r"""\.inc\(\s*f?["']([A-Za-z0-9_{}.]+)["']""")
    found = {}
    for path in SRC.rglob("*.py"):
        for name in named.findall(path.read_text()):
            found.setdefault(name, path)
    assert found, "no counters found: the pattern is out of date"
    offenders = {n: str(p) for n, p in found.items() if n.endswith("_total")}
    assert not offenders, offenders


def test_the_metrics_page_serves_names_that_follow_the_rules():
    from twisted.web.test.requesthelper import DummyRequest

    c = Counters("traps")
    c.inc("received", 5)
    c.set("recv_buffer_bytes", 4096)
    c.histogram("handle_seconds").observe(0.01)
    site = make_site(lambda: [c], dict)
    request = DummyRequest([b"metrics"])
    resource = site.getResourceFor(request)
    body = resource.render_GET(request)
    _assert_names_follow_the_rules(body.decode())
