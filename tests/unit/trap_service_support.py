"""A trap service on a fake clock and the embedded bus, for unit tests."""

from __future__ import annotations


from twisted.internet import task

from connector import messages
from connector.embedded import EmbeddedBus
from connector.metrics import Counters
from connector.settings import settings_from_string
from connector.topology import Binding, QueueSpec
from connector_traps.service import TrapService, load_config
from centaure.shipped import example_path



class Runtime:
    """The little of connector.service.Runtime the trap service uses."""

    def __init__(self, settings, clock) -> None:
        self.settings = settings
        self.reactor = clock
        self.node = "n1"
        self.bus = EmbeddedBus(clock)
        self.health_checks = {}
        self._counters = Counters("traps")

    def counters(self, name):
        return self._counters


class Events:
    """Records the ``event`` messages the service publishes."""

    def __init__(self) -> None:
        self.seen: list[messages.Event] = []

    def handle(self, message, delivery):
        self.seen.append(message)


def make_service(tmp_path, **traps):
    """(service, clock, events, config) for ``[traps]`` values ``traps`` and one device sw1."""
    (tmp_path / "inventory.yaml").write_text(
        "devices:\n  - {name: sw1, address: 10.0.0.1, device_type: switch}\n")
    values = {"definitions": example_path("traps.yaml"), "listen": "127.0.0.1:0", **traps}
    text = "[inventory]\npath = inventory.yaml\n[traps]\n" + "".join(
        f"{k} = {v}\n" for k, v in values.items())
    path = tmp_path / "settings.ini"
    path.write_text(text)
    settings = settings_from_string(text, source=str(path))
    clock = task.Clock()
    runtime = Runtime(settings, clock)
    config = load_config(settings)
    service = TrapService(runtime, config)
    events = Events()
    runtime.bus.subscriber("t").subscribe(
        QueueSpec(name="check", bindings=(Binding("centaure.event"),)), events)
    return service, clock, events, config
