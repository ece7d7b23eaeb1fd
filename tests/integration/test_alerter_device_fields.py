"""Which inventory columns notifications carry: ``[alerter] device_fields``.

A real settings file and inventory file are loaded as the alerter loads them;
the notifier POSTs to a real HTTP server (twisted.web) on the real reactor.
An inventory column such as ``community`` (what the credentials'
``__community__`` token reads) must not reach the default webhook body nor
a user's template unless the settings list it.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import yaml
from twisted.internet import defer, reactor
from twisted.web import resource, server

from centaure_shared.inventory import load_optional_inventory
from connector.messages import Alarm, decode, encode
from connector.settings import load_settings
from connector_alerter.notifier import DeliveryOptions, Notifier
from connector_alerter.routes import parse_routes
from connector_alerter.service import device_record
from tests.outbox import sqlite_outbox

T0 = 1_795_000_000.0
COMMUNITY = "s3cret-per-device-community"

store = pytest.fixture(sqlite_outbox, name="store")


class Hook(resource.Resource):
    """Records the bodies POSTed to it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: dict[str, bytes] = {}

    def render_POST(self, request) -> bytes:
        self.bodies[request.path.decode()] = request.content.read()
        return b"ok"


@pytest.fixture
def hook():
    h = Hook()
    port = reactor.listenTCP(0, server.Site(h), interface="127.0.0.1")
    yield h, f"http://127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def alarm() -> dict:
    return decode(encode(Alarm(source="centaure-correlator@n1", ts=T0, host="r1", ref=1,
                               name="linkDown", severity="major", state="raised",
                               message="link down", first_seen=T0, last_seen=T0, count=1,
                               origin="trap")))


async def notify(tmp_path, store, hook, alerter_lines: str) -> tuple[dict, dict]:
    """Load settings and inventory from files, notify one alarm; (default body, template's)."""
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": "r1", "address": "10.0.0.1", "device_type": "router", "model": "ISR4331",
         "id": "42", "tags": "core", "site": "paris-1", "community": COMMUNITY}]}))
    (tmp_path / "settings.ini").write_text(f"[alerter]\n{alerter_lines}\n")
    settings = load_settings(tmp_path / "settings.ini")
    devices = {d.name: device_record(d) for d in load_optional_inventory(settings)}
    received, base = hook
    routes = parse_routes({"routes": [
        {"name": "shipped", "group_wait": 0, "continue": True, "webhook": f"{base}/shipped"},
        {"name": "mine", "group_wait": 0, "webhook": f"{base}/mine",
         "templates": {"webhook": "{{ alarms[0].inventory | tojson }}"}}]})
    published: list = []
    n = Notifier(routes=routes, store=store, publish=published.append, reactor=reactor,
                 options=DeliveryOptions.from_settings(settings), clock=lambda: T0,
                 inventory=lambda h: devices.get(h, {}),
                 run_blocking=lambda f, *a: defer.maybeDeferred(f, *a))
    await n.start(tick_interval=None)
    await n.handle_alarm(alarm(), T0)
    await n.tick(T0)
    assert [p.state for p in published] == ["sent", "sent"], [p.reason for p in published]
    return json.loads(received.bodies["/shipped"]), json.loads(received.bodies["/mine"])


@pytest_twisted.ensureDeferred
async def test_inventory_columns_stay_out_of_notifications_by_default(tmp_path, store, hook):
    shipped, mine = await notify(tmp_path, store, hook, "")
    assert COMMUNITY.encode() not in hook[0].bodies["/shipped"] + hook[0].bodies["/mine"]
    for inventory in (shipped["alarms"][0]["inventory"], mine):
        assert set(inventory) == {"name", "address", "device_type", "model", "id", "tags"}
        assert (inventory["address"], inventory["model"], inventory["id"]) == (
            "10.0.0.1", "ISR4331", "42")


@pytest_twisted.ensureDeferred
async def test_listed_columns_are_shown(tmp_path, store, hook):
    shipped, mine = await notify(tmp_path, store, hook, "device_fields = site, community")
    for inventory in (shipped["alarms"][0]["inventory"], mine):
        assert inventory["community"] == COMMUNITY and inventory["site"] == "paris-1"
        assert inventory["model"] == "ISR4331"
