"""/metrics names as Prometheus wants them; scrapes that do not fill the process log."""

from __future__ import annotations

import re
import urllib.request

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.logger import (
    LogBeginner,
    LogLevel,
    LogPublisher,
    Logger,
    globalLogPublisher,
)

from connector.http import make_site
from connector.logs import configure_logging
from connector.metrics import Counters, render_prometheus

# A sample line: name, optional labels, value.
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? \S+$")


def test_a_counter_named_total_is_exposed_with_one_total_suffix():
    c = Counters("bus")
    c.inc("messages_buffered", 4)
    c.inc("legacy_total", 2)
    text = render_prometheus([c])
    assert 'centaure_messages_buffered_total{connector="bus"} 4' in text
    assert "# TYPE centaure_legacy_total counter" in text
    assert 'centaure_legacy_total{connector="bus"} 2' in text
    assert "_total_total" not in text


def _families(text: str) -> dict[str, str]:
    """metric family -> type, from the ``# TYPE`` lines; every sample belongs to one."""
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"{name} has no # TYPE"
    return types


class _Capture:
    """Every log event published while it is attached."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def lines(self, text: str) -> list[tuple[LogLevel, str]]:
        from twisted.logger import formatEvent

        found = []
        for e in self.events:
            message = formatEvent(e) if "log_format" in e else " ".join(e.get("message", ()))
            if text in message:
                found.append((e.get("log_level"), message))
        return found


@pytest_twisted.ensureDeferred
async def test_scrapes_are_debug_events_and_names_are_valid():
    counters = Counters("bus")
    counters.inc("messages_buffered", 3)
    counters.set("buffered", 1)
    counters.histogram("poll_seconds").observe(0.2)
    port = reactor.listenTCP(0, make_site(lambda: [counters], lambda: {"degraded": False}),
                             interface="127.0.0.1")
    capture = _Capture()
    globalLogPublisher.addObserver(capture)
    try:
        url = f"http://127.0.0.1:{port.getHost().port}"

        def get(path: str) -> str:
            with urllib.request.urlopen(url + path, timeout=10) as r:
                return r.read().decode()

        text = await threads.deferToThread(get, "/metrics")
        await threads.deferToThread(get, "/health")
    finally:
        await port.stopListening()
        globalLogPublisher.removeObserver(capture)
    types = _families(text)
    assert types["centaure_messages_buffered_total"] == "counter"
    assert types["centaure_buffered"] == "gauge"
    assert not [n for n in types if n.endswith("_total_total")]
    # Each request is still told, at debug level only: the default "info"
    # filter keeps scrapes out of the log.
    for path in ("GET /metrics", "GET /health"):
        seen = capture.lines(path)
        assert seen and all(level == LogLevel.debug for level, _ in seen), seen


def test_the_level_applies_to_observers_installed_after_the_settings_are_read():
    """twistd reads the settings (makeService) before it installs its observers."""
    publisher = LogPublisher()
    errors = _Stream()
    beginner = LogBeginner(publisher, errors, _Stdio(), _Warnings())
    configure_logging("warning", "text", publisher=publisher, beginner=beginner)
    log = Logger(observer=publisher)
    log.info("early info")
    log.critical("early critical")
    seen: list[str] = []
    beginner.beginLoggingTo([lambda e: seen.append(e["log_format"])], redirectStandardIO=False)
    log.info("late info")
    log.warn("late warning")
    log.critical("late critical")
    # The early events are replayed through the filter; critical ones were
    # copied to the error stream before logging began, and only then.
    assert seen == ["early critical", "late warning", "late critical"]
    assert errors.text.count("early critical") == 1 and "late critical" not in errors.text


class _Stream:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


class _Stdio:
    stdout = _Stream()
    stderr = _Stream()


class _Warnings:
    showwarning = staticmethod(lambda *a, **k: None)
