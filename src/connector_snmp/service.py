"""The ``centaure-snmp`` connector: inventory, profiles, scheduler, publishing.

Everything the poller reads from files (inventory, profiles, credentials,
user operators) is loaded and checked when the service is built, so a bad
file stops start-up with one clear line; later reloads (SIGHUP and every
``[inventory] reload_interval``) keep the running configuration when the
new one is invalid, and never interrupt polls in flight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from connector.membership import SingleNodeMembership
from connector.settings import settings_dir
from connector.reload import reload_on_sighup
from centaure_shared import operators as ops
from connector_snmp.client import SnmpClient
from connector_snmp.credentials import load_credentials, resolve_targets
from centaure_shared.inventory import load_inventory
from connector_snmp.model import SnmpTarget
from centaure_shared.inventory import Device
from connector_snmp.poller import DevicePoller, PollPlan, compile_plan
from connector_snmp.profiles import load_profile_folders
from connector_snmp.scheduler import Scheduler

CONNECTOR = "snmp"


class PollerConfigError(Exception):
    """The poller's inventory, profiles, credentials or operators are unusable."""


@dataclass
class PollerConfig:
    """Everything loaded from files: devices, their targets and poll plans."""

    devices: dict[str, Device]
    targets: dict[str, SnmpTarget]
    plans: dict[str, PollPlan]
    intervals: dict[str, float]
    skipped: dict[str, str]


def build_registry(snmp) -> "ops.Registry":
    """The built-in operators plus the user's, checked now."""
    registry = ops.default_registry()
    if snmp.operators:
        ops.load_user_operators(registry, list(snmp.operators))
    return registry


def load_config(settings, registry) -> PollerConfig:
    """Read inventory, profiles and credentials; compile each device's plan."""
    snmp, inv = settings.section("snmp"), settings.section("inventory")
    root = settings_dir(settings)
    try:
        inventory = load_inventory(inv, root)
        profiles = load_profile_folders(snmp.profiles, root)
        cred_path = os.path.join(root, snmp.credentials)
        credentials = load_credentials(cred_path if os.path.exists(cred_path) else None)
        targets, skipped = resolve_targets(list(inventory), credentials, snmp)
        plans: dict[str, PollPlan] = {}
        intervals: dict[str, float] = {}
        by_profiles: dict[tuple[str, ...], PollPlan] = {}
        for device in inventory:
            if device.name not in targets:
                continue
            chosen = profiles.for_device(device)
            if not chosen:
                skipped[device.name] = f"no profile for device type {device.device_type!r}"
                continue
            key = tuple(p.name for p in chosen)
            if key not in by_profiles:
                by_profiles[key] = compile_plan(registry, chosen)
            plans[device.name] = by_profiles[key]
            intervals[device.name] = device.interval or next(
                (p.interval for p in chosen if p.interval), snmp.interval)
    except (ValueError, OSError, ops.OperatorError) as e:
        raise PollerConfigError(str(e)) from None
    return PollerConfig({d.name: d for d in inventory}, targets, plans, intervals, skipped)


class PollerService(service.Service):
    """Polls the devices this node owns and publishes what they say."""

    log = Logger()

    def __init__(self, runtime, config: PollerConfig, registry) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.snmp = self.settings.section("snmp")
        self.config = config
        self.registry = registry
        self.counters = runtime.counters(CONNECTOR)
        self.publisher = runtime.bus.publisher(CONNECTOR)
        self.membership = SingleNodeMembership(runtime.node)
        self.client = SnmpClient(runtime.reactor, self.snmp.max_in_flight_per_agent,
                                 self.snmp.recv_buffer)
        self.poller = DevicePoller(self.client, f"{CONNECTOR}@{runtime.node}", ops.StateStore())
        self.scheduler = Scheduler(runtime.reactor, self._poll, self.counters,
                                   self.snmp.max_concurrent_polls)
        self.latency = self.counters.histogram("poll_seconds")
        self._reload_loop = None
        self._reloading: defer.Deferred | None = None
        runtime.health_checks[CONNECTOR] = self.health

    def health(self) -> dict:
        return {"devices": len(self.scheduler.schedules),
                "unreachable": len(self.poller.unreachable), "degraded": False}

    def startService(self):
        super().startService()
        self.client.start()
        self._apply(self.config)
        inv = self.settings.section("inventory")
        if inv.reload_interval:
            self._reload_loop = task.LoopingCall(self.reload)
            self._reload_loop.clock = self.runtime.reactor
            self._reload_loop.start(inv.reload_interval, now=False)
        reload_on_sighup(self.runtime.reactor, self.reload)

    def stopService(self):
        super().stopService()
        if self._reload_loop is not None and self._reload_loop.running:
            self._reload_loop.stop()
        self.scheduler.stop()
        return self.client.stop()

    def reload(self) -> defer.Deferred:
        """Read the files again; keep the running configuration if they are bad.

        The inventory may come from SQL: it is read in a thread, never on
        the reactor.
        """
        if self._reloading is not None:
            return self._reloading
        d = threads.deferToThread(load_config, self.settings, self.registry)

        def loaded(config: PollerConfig) -> None:
            self._apply(config)
            self.log.info("configuration reloaded: {n} devices", n=len(config.plans))

        def refused(failure) -> None:
            failure.trap(PollerConfigError)
            self.log.error("reload refused, keeping the running configuration: {error}",
                           error=failure.value)
            self.counters.inc("reload_errors")

        def done(result):
            self._reloading = None
            return result

        d.addCallbacks(loaded, refused)
        d.addErrback(lambda f: self.log.failure("reload failed", f))
        d.addBoth(done)
        self._reloading = d
        return d

    def _apply(self, config: PollerConfig) -> None:
        self.config = config
        for name, why in config.skipped.items():
            self.log.warn("device {name} not polled: {why}", name=name, why=why)
        owned = {name: interval for name, interval in config.intervals.items()
                 if self.membership.owns(CONNECTOR, name)}
        self.scheduler.set_devices(owned)
        self.counters.set("devices", len(owned))

    async def _poll(self, name: str) -> bool:
        config = self.config
        device = config.devices.get(name)
        if device is None or name not in config.plans:
            return True
        outcome = await self.poller.poll(device, config.targets[name], config.plans[name])
        self.counters.inc("polls")
        self.latency.observe(outcome.seconds)
        self.counters.inc("varbinds", outcome.varbinds)
        self.counters.set("devices_unreachable", len(self.poller.unreachable))
        if not outcome.reachable:
            self.counters.inc("timeouts")
        elif outcome.error:
            self.counters.inc("poll_errors")
        # Fires once the publisher holds the messages (sent, or on disk): a blocked or
        # slow broker never holds the poll up, so the device's next tick is not skipped.
        ds = [self.publisher.publish(m) for m in (outcome.perf, outcome.snapshot) if m is not None]
        if ds:
            results = await defer.DeferredList(ds, consumeErrors=True)
            for ok, failure in results:
                if not ok:
                    self.counters.inc("publish_errors")
                    self.log.error("could not publish a poll of {name}: {error}", name=name,
                                   error=failure.getErrorMessage())
        return outcome.reachable


def build(runtime) -> PollerService:
    """The poller of ``runtime``'s process (raises PollerConfigError on bad files)."""
    registry = build_registry(runtime.settings.section("snmp"))
    return PollerService(runtime, load_config(runtime.settings, registry), registry)
