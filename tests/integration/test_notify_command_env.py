"""A route's command runs with a minimal environment plus its ``command_env``.

The alerter's environment holds the ``env:`` secrets of its settings; a
notification script must not inherit them. A real child process (``/bin/sh``
running ``env``) writes what it received; the notifier runs on the real
reactor, its outbox in SQLite.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from connector.messages import Alarm, decode, encode
from connector_alerter.notifier import DeliveryOptions, Notifier
from connector_alerter.routes import RoutesError, parse_routes
from tests.outbox import sqlite_outbox

T0 = 1_795_000_000.0

store = pytest.fixture(sqlite_outbox, name="store")


def alarm() -> dict:
    return decode(encode(Alarm(source="centaure-correlator@n1", ts=T0, host="r1", ref=1,
                               name="linkDown", severity="major", state="raised",
                               message="link down", first_seen=T0, last_seen=T0, count=1,
                               origin="trap")))


async def notify(store, routes) -> None:
    """Notify one alarm through ``routes`` (one command route), sent."""
    published: list = []
    n = Notifier(routes=routes, store=store, publish=published.append, reactor=reactor,
                 options=DeliveryOptions(), clock=lambda: T0, inventory=lambda h: {},
                 run_blocking=lambda f, *a: defer.maybeDeferred(f, *a))
    await n.start(tick_interval=None)
    await n.handle_alarm(alarm(), T0)
    await n.tick(T0)
    assert [p.state for p in published] == ["sent"], [p.reason for p in published]


def read_env(path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest_twisted.ensureDeferred
async def test_command_gets_a_minimal_environment_and_its_route_variables(
        store, tmp_path, monkeypatch):
    # What a daemon started with its settings' secrets in its environment has.
    monkeypatch.setenv("CENTAURE_SMTP_PASSWORD", "hunter2-smtp")
    monkeypatch.setenv("CENTAURE_BUS_URL", "amqp://centaure:s3cret@broker/")
    monkeypatch.setenv("PAGER_TOKEN", "pager-t0ken")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_TIME", "C")
    (tmp_path / "team").write_text("noc-team\n")
    out = tmp_path / "env.txt"
    script = tmp_path / "cmd.sh"
    script.write_text(f"#!/bin/sh\ncat > /dev/null\nenv > {out}\n")
    script.chmod(0o755)
    routes = parse_routes({
        "defaults": {"command_env": ["PAGER_TOKEN"]},
        "routes": [{"name": "c", "group_wait": 0, "command": [str(script)],
                    "command_env": {"TEAM": f"file:{tmp_path / 'team'}", "LEVEL": 2}}]})
    await notify(store, routes)
    env = read_env(out)
    assert "CENTAURE_SMTP_PASSWORD" not in env and "CENTAURE_BUS_URL" not in env
    assert "hunter2-smtp" not in out.read_text() and "s3cret" not in out.read_text()
    assert env["PAGER_TOKEN"] == "pager-t0ken"
    assert env["TEAM"] == "noc-team" and env["LEVEL"] == "2"
    assert env["LANG"] == "C.UTF-8" and env["LC_TIME"] == "C"
    assert env["PATH"] and env["HOME"]
    # Nothing else than the minimal set and the route's variables (sh adds PWD, SHLVL, _).
    extra = {k for k in env if not k.startswith("LC_")} - {"PWD", "SHLVL", "_", "OLDPWD"}
    assert extra <= {"PATH", "HOME", "TMPDIR", "TZ", "LANG", "LANGUAGE",
                     "PAGER_TOKEN", "TEAM", "LEVEL"}, extra


@pytest.mark.parametrize("command_env, says", [
    ({"1BAD": "x"}, "'1BAD' is not an environment variable name"),
    ({"TOKEN": "env:NOT_SET_ANYWHERE_XYZ"}, "environment variable NOT_SET_ANYWHERE_XYZ is not set"),
    ("TOKEN", "expected a mapping of variable names"),
])
def test_a_bad_command_env_is_refused_naming_the_route(command_env, says):
    with pytest.raises(RoutesError) as info:
        parse_routes({"routes": [{"name": "c", "command": ["/bin/true"],
                                  "command_env": command_env}]}, environ={})
    assert "route 'c'.command_env" in str(info.value) and says in str(info.value)
