"""A daemon's log under twistd: ``[logging]`` obeyed, scrapes of /metrics and /health not logged."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from centaure.shipped import example_path
from tests.conftest import settings_text
from tests.integration.daemons import TwistdDaemon

pytestmark = pytest.mark.integration


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traps_daemon(folder, level: str, fmt: str) -> TwistdDaemon:
    """``centaure-traps`` on the embedded bus, with ``[logging]`` as given."""
    folder.mkdir()
    (folder / "inventory.yaml").write_text("devices: []\n")
    port = _free_port(socket.SOCK_STREAM)
    settings = folder / "settings.ini"
    settings.write_text(settings_text(
        "centaure", folder, url="embedded",
        connector={"http_port": str(port)}, logging={"level": level, "format": fmt},
        traps={"listen": f"127.0.0.1:{_free_port(socket.SOCK_DGRAM)}",
               "definitions": example_path("traps.yaml")}))
    return TwistdDaemon("centaure-traps", settings, http_port=port)


def _scrape(daemon: TwistdDaemon, times: int) -> str:
    text = ""
    for _ in range(times):
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        daemon.health()
    return text


def test_scrapes_stay_out_of_the_log_unless_debug_and_json_lines_are_all_json(tmp_path):
    daemons = {name: _traps_daemon(tmp_path / name, level, fmt) for name, level, fmt in (
        ("info", "info", "text"), ("debug", "debug", "text"), ("json", "info", "json"))}
    try:
        for d in daemons.values():
            d.wait_health(lambda status, body: status == 200, timeout=60)
        metrics = _scrape(daemons["info"], 3)
        _scrape(daemons["debug"], 1)
        _scrape(daemons["json"], 1)
    finally:
        for d in daemons.values():
            d.stop()
    assert "_total_total" not in metrics
    assert 'centaure_recv_buffer_bytes{connector="traps"}' in metrics

    info = daemons["info"].logs()
    assert "receiving traps on 127.0.0.1" in info          # the daemon does log at info
    assert "GET /metrics" not in info and "GET /health" not in info
    assert "#debug]" not in info

    debug = daemons["debug"].logs()
    assert '"GET /metrics HTTP/1.1" 200' in debug and '"GET /health HTTP/1.1" 200' in debug

    lines = [line for line in daemons["json"].logs().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]        # every line is one JSON event
    texts = [e.get("log_text") or e.get("log_format", "") for e in events]
    assert any("receiving traps on" in t for t in texts)
    assert not any("GET /metrics" in t for t in texts)
