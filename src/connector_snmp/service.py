"""The ``centaure-snmp`` connector: inventory, profiles, scheduler, publishing.

Everything the poller reads from files (inventory, profiles, credentials,
user operators) is loaded and checked when the service is built, so a bad
file stops start-up with one clear line; later reloads (SIGHUP and every
``[inventory] reload_interval``) keep the running configuration when the
new one is invalid, and never interrupt polls in flight.

Several pollers (``[bus] partitions = P``, the same inventory on every node)
share the fleet by the ``snmp`` ownership tokens (:mod:`connector.ownership`):
each polls exactly the devices of the partitions it owns. When partitions
are handed on (balance) it stops polling their devices and lets the polls of
them already running finish before the tokens go; when its connection drops
it stops polling every device at once (the broker gives the tokens to the
other pollers). What a takeover costs:

- one rate sample per counter: the rate operators keep the previous raw value
  in this process's memory (``ops.StateStore``), which is not handed over, so
  the new owner's first poll of a device only records the raw values and its
  rates come from the second poll on (one interval later); the old owner
  forgets the state of the devices it no longer polls;
- a device's first poll on its new owner comes within one interval of the
  takeover (its spread offset), so a device may go unpolled for up to about
  two intervals plus the time the broker takes to hand the token on (at once
  for a closed connection, up to two heartbeats for a silent one);
- the new owner does not know whether the old one had raised ``unreachable``
  for a device: its first answered poll of a device it takes over sends an
  empty ``alarm_snapshot`` (for devices without an alarm table), which clears
  one raised before.

With ``partitions = 0`` (the default) this node owns and polls every device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from zope.interface import implementer

from connector.interfaces import IOwnershipListener
from connector.ownership import ownership
from connector.partitions import partition_of
from connector.settings import settings_dir
from connector.reload import reload_on_sighup
from centaure_shared import operators as ops
from connector_snmp.client import SnmpClient
from connector_snmp.credentials import load_credentials, loose_credential_files, resolve_targets
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
    #: Warnings: credential files someone other than the daemon may read.
    loose_files: tuple[str, ...] = ()


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
        loose = tuple(loose_credential_files(credentials, inventory))
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
    return PollerConfig({d.name: d for d in inventory}, targets, plans, intervals, skipped, loose)


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
        self.membership = ownership(runtime, CONNECTOR)
        #: Ownership by tokens ([bus] partitions > 0): devices come and go with partitions.
        self.partitioned = hasattr(self.membership, "add_listener")
        #: Partitions being handed on: their devices are no longer polled.
        self._releasing: set[int] = set()
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
        self._warn_loose_files(self.config)
        self._apply(self.config)
        if self.partitioned:
            self.membership.add_listener(_PollerOwnership(self))
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
            self._warn_loose_files(config)
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

    def _warn_loose_files(self, config: PollerConfig) -> None:
        """At start and at each reload (not at each change of partitions)."""
        for line in config.loose_files:
            self.log.warn("{line}", line=line)

    def _apply(self, config: PollerConfig) -> None:
        self.config = config
        for name, why in config.skipped.items():
            self.log.warn("device {name} not polled: {why}", name=name, why=why)
        if not self.partitioned:
            owned = {name: interval for name, interval in config.intervals.items()
                     if self.membership.owns(CONNECTOR, name)}
            self.scheduler.set_devices(owned)
            self.counters.set("devices", len(owned))
            return defer.succeed(None)
        return self._apply_owned(config)

    def _apply_owned(self, config: PollerConfig) -> defer.Deferred:
        """Schedule the devices of the partitions owned here (and not being handed on).

        Fires once the polls of the devices no longer owned that had begun are done.
        """
        membership, partitions = self.membership, self.membership.partitions
        owned = {name: interval for name, interval in config.intervals.items()
                 if membership.owns(CONNECTOR, name)
                 and partition_of(name, partitions) not in self._releasing}
        before = set(self.scheduler.schedules)
        gone = before - set(owned)
        released = self.scheduler.release(gone)
        for name in gone:
            # Its next owner starts afresh; if it comes back here, so do we.
            self.poller.state.forget_device(name)
            self.poller.unreachable.discard(name)
        # A device taken over: its first answered poll clears an ``unreachable``
        # the previous owner may have raised.
        self.poller.confirm.update(set(owned) - before)
        self.poller.confirm.difference_update(gone)
        self.scheduler.set_devices(owned)
        self.counters.set("devices", len(owned))
        self.counters.set("devices_unreachable", len(self.poller.unreachable))
        if gone or len(owned) != len(before):
            self.log.info("polling {n} devices ({added} taken on, {removed} let go)",
                          n=len(owned), added=len(set(owned) - before), removed=len(gone))
        return released

    async def _poll(self, name: str) -> bool:
        config = self.config
        device = config.devices.get(name)
        if device is None or name not in config.plans:
            return True
        outcome = await self.poller.poll(device, config.targets[name], config.plans[name])
        self.counters.inc("polls")
        self.latency.observe(outcome.seconds)
        self.counters.inc("varbinds", outcome.varbinds)
        if self.partitioned and name not in self.scheduler.schedules:
            # Let go while it was polled: keep no state of a device polled elsewhere now.
            self.poller.state.forget_device(name)
            self.poller.unreachable.discard(name)
            self.poller.confirm.discard(name)
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


@implementer(IOwnershipListener)
class _PollerOwnership:
    """Keeps the poller's schedule to the devices of the partitions owned here."""

    def __init__(self, service: PollerService) -> None:
        self.service = service

    def gained(self, partitions) -> None:
        self.service._releasing.difference_update(partitions)
        if self.service.running:
            self.service._apply(self.service.config)

    def releasing(self, partitions) -> defer.Deferred | None:
        """Stop polling their devices; fires once their polls already begun are done."""
        self.service._releasing.update(partitions)
        if not self.service.running:
            return None
        return self.service._apply(self.service.config)

    def lost(self, partitions) -> None:
        """Handed on, or the connection dropped: stop polling their devices at once."""
        self.service._releasing.difference_update(partitions)
        if self.service.running:
            self.service._apply(self.service.config)


def build(runtime) -> PollerService:
    """The poller of ``runtime``'s process (raises PollerConfigError on bad files)."""
    registry = build_registry(runtime.settings.section("snmp"))
    return PollerService(runtime, load_config(runtime.settings, registry), registry)
