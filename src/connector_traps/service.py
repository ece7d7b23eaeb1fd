"""The ``centaure-traps`` connector: receive, classify, protect, publish.

Datagrams go from the UDP receivers (bounded intake, v1/v2c decoded by our
BER codec, v3 through the USM module) to ``TrapService.handle``: per-source
rate limit, host mapping through the inventory, classification by the trap
definitions, duplicate suppression, then an ``event`` message. Definitions
and inventory reload on SIGHUP (read in a thread; a bad file is refused and
the running ones kept).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from connector import messages, startup
from connector.reload import reload_on_sighup
from connector.settings import settings_dir
from connector_traps.boots import BootsError, boots_path, next_engine_boots
from centaure_shared.inventory import load_inventory
from connector_traps.convert import varbind_to_json
from connector_traps.definitions import load_definitions
from connector_traps.model import Trap, trap_message_id
from connector_traps.journal import Journal, JournalError
from connector_traps.receiver import DropLog, JournalPump, TrapReceiver
from connector_traps.relays import TrustedRelays
from connector_traps.settings import parse_endpoint
from connector_traps.storm import Deduplicator, RateLimiter, ReportLimiter

CONNECTOR = "traps"
STORM_TRAP_OID = "centaure:trapStorm"


class TrapConfigError(Exception):
    """The receiver's definitions, inventory or v3 users are unusable."""


@dataclass
class TrapConfig:
    """What the receiver reads from files."""

    definitions: object
    inventory: object | None
    v3: object | None
    mib_names: object | None = None
    #: Warnings: v3 users or key files someone other than the daemon may read.
    loose_files: tuple[str, ...] = ()


def load_config(settings) -> TrapConfig:
    """Definitions, the inventory (for host names) and v3 users, checked."""
    traps = settings.section("traps")
    root = settings_dir(settings)
    try:
        definitions = load_definitions(traps, root)
        try:
            inventory = load_inventory(settings.section("inventory"), root)
        except FileNotFoundError:
            inventory = None
        v3 = _load_v3(traps, root, settings.connector.node)
        loose: tuple[str, ...] = ()
        if v3 is not None:
            from connector_traps.usm import loose_user_files

            loose = tuple(loose_user_files(os.path.join(root, traps.v3_users), v3.users))
        mib_names = None
        if traps.mibs:
            from connector_traps.mibs import load_mib_names

            mib_names = load_mib_names([os.path.join(root, p) for p in traps.mibs],
                                       os.path.join(root, traps.mib_cache))
    except (ValueError, OSError) as e:
        raise TrapConfigError(str(e)) from None
    return TrapConfig(definitions, inventory, v3, mib_names, loose)


def engine_id_for(node: str) -> bytes:
    """A stable SNMP engine ID for ``node`` (RFC 3411 format 5: octets).

    The enterprise part is 0 (none registered); set ``[traps] engine_id`` to
    use your own. Derived from the node name so it survives restarts.
    """
    return bytes([0x80, 0, 0, 0, 5]) + hashlib.sha256(node.encode()).digest()[:12]


def _load_v3(traps, root: str, node: str):
    path = os.path.join(root, traps.v3_users)
    if not os.path.exists(path):
        return None
    from connector_traps.usm import V3Receiver, load_users

    engine = bytes.fromhex(traps.engine_id) if traps.engine_id else engine_id_for(node)
    return V3Receiver(load_users(path), engine, trap_time_window=traps.v3_time_window)


def listen_udp(reactor, address: str, port: int, protocol):
    """Listen on ``address:port``; an IPv6 socket takes IPv6 only.

    Linux lets an IPv6 socket also take IPv4 traffic (bindv6only=0), so
    ``0.0.0.0:162`` and ``[::]:162`` would clash; the IPv6 socket is made
    here with IPV6_V6ONLY and handed to the reactor.
    """
    if ":" not in address:
        return reactor.listenUDP(port, protocol, interface=address)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.setblocking(False)
        listening = reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET6, protocol)
    finally:
        sock.close()  # the reactor holds its own duplicate of the descriptor
    return listening


class TrapService(service.Service):
    """Listens for traps and informs and publishes them as ``event`` messages."""

    log = Logger()

    def __init__(self, runtime, config: TrapConfig) -> None:
        self.runtime = runtime
        self.settings = runtime.settings.section("traps")
        self.config = config
        self.counters = runtime.counters(CONNECTOR)
        self.publisher = runtime.bus.publisher(CONNECTOR)
        self.source = f"{CONNECTOR}@{runtime.node}"
        self.exchange = messages.exchange_name(runtime.settings.bus.exchange_prefix, "event")
        clock = runtime.reactor
        self.limiter = RateLimiter(self.settings.rate_limit, self.settings.rate_burst, clock.seconds)
        self.dedup = Deduplicator(self.settings.dedup_window, clock.seconds)
        self.trusted_relays = TrustedRelays(self.settings.trusted_relays)
        self.reports = ReportLimiter(self.settings.report_rate_per_source,
                                     self.settings.report_rate_total, clock.seconds)
        self.receivers: list[TrapReceiver] = []
        self.ports = []
        self.pump: JournalPump | None = None
        self.drops = DropLog(clock, self.counters, self.log)
        self._publish_errors_logged = 0.0
        self._summary_loop = task.LoopingCall(self._publish_storm_summaries)
        self._summary_loop.clock = clock
        self._reloading = None
        self._engine: tuple[int, float] | None = None  # our SNMPv3 boots, and since when
        # The replay memory whose evictions v3_replay_memory_evicted has counted, and how many.
        self._replay: object | None = None
        self._replay_evicted = 0
        runtime.health_checks[CONNECTOR] = lambda: {
            "listening": [p.getHost().port for p in self.ports], "degraded": not self.ports}

    def startService(self):
        super().startService()
        self._warn_loose_files(self.config)
        if self.settings.v3_time_window is None:
            self.log.warn("[traps] v3_time_window = off: SNMPv3 traps are accepted whatever their "
                          "time, so a trap captured on the network can be replayed later (only "
                          "a copy within 5 minutes is refused)")
        try:
            self._start_engine(self.config.v3)
        except BootsError as e:
            startup.fail(self.runtime.process_name, f"[traps] SNMPv3 engine boots: {e}",
                         self.runtime.reactor)
            return
        if self.settings.journal_size:
            folder = self.settings.journal_folder(
                self.runtime.settings.buffer.path_for(CONNECTOR))
            journal = Journal(folder, self.settings.journal_size)
            try:
                journal.open()
            except (JournalError, OSError) as e:
                startup.fail(self.runtime.process_name,
                             f"[traps] journal_path = {folder}: {e}", self.runtime.reactor)
                return
            self.pump = JournalPump(self.runtime.reactor, journal, self.counters,
                                    window_bytes=self.settings.queue_bytes // 4)
            self.log.info("trap journal {path}: {size} bytes at most, {used} used",
                          path=folder, size=self.settings.journal_size, used=journal.used_bytes)
        for endpoint in self.settings.listen:
            address, port = parse_endpoint(endpoint)
            receiver = TrapReceiver(
                self.runtime.reactor, self.handle, self.counters,
                communities={c.encode() for c in self.settings.communities},
                queue_size=self.settings.queue_size, recv_buffer=self.settings.recv_buffer,
                v3_handler=self._v3, queue_bytes=self.settings.queue_bytes,
                max_datagram=self.settings.max_datagram, pump=self.pump, drops=self.drops,
                trusted_relays=self.trusted_relays, reports=self.reports)
            try:
                self.ports.append(listen_udp(self.runtime.reactor, address, port, receiver))
            except (CannotListenError, OSError) as e:
                # Taken by another receiver (snmptrapd), or a port below 1024
                # without the privilege: the process stops, in one line.
                error = getattr(e, "socketError", e)
                startup.fail(self.runtime.process_name,
                             f"[traps] listen = {endpoint}: cannot listen on it "
                             f"({getattr(error, 'strerror', None) or error})",
                             self.runtime.reactor)
                return
            self.receivers.append(receiver)
            self.log.info("receiving traps on {address}:{port}",
                          address=f"[{address}]" if ":" in address else address,
                          port=self.ports[-1].getHost().port)
        if self.pump is not None and self.receivers:
            self.pump.handle = self.receivers[0].process_record
            self.pump.start()
        self._summary_loop.start(10, now=False)
        reload_on_sighup(self.runtime.reactor, self.reload)

    def stopService(self):
        super().stopService()
        if self._summary_loop.running:
            self._summary_loop.stop()
        d = defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])

        def stopped(result):
            self.drops.stop()
            if self.pump is not None and self.pump.running:
                # What was read and not yet accepted stays in the journal for the next start.
                self.pump.stop()
            return result

        return d.addBoth(stopped)

    def _start_engine(self, v3) -> None:
        """Our SNMPv3 engine's boots grow once per process (when v3 is first configured),
        stored next to the [buffer] file; raises BootsError."""
        if v3 is None:
            return
        self.counters.inc("v3_replay_memory_evicted", 0)  # on /metrics from the start
        if self._engine is None:
            folder = os.path.dirname(self.runtime.settings.buffer.path_for(CONNECTOR))
            self._engine = (next_engine_boots(boots_path(folder, v3.engine_id)), v3.clock())
            self.log.info("SNMPv3 engine {engine}: start number {boots}",
                          engine=v3.engine_id.hex(), boots=self._engine[0])
        v3.start(*self._engine)

    def _warn_loose_files(self, config: TrapConfig) -> None:
        for line in config.loose_files:
            self.log.warn("{line}", line=line)

    def _v3(self, data: bytes, source: tuple[str, int]):
        """SNMPv3 datagrams: (response to send back, trap to publish), either may be None."""
        if self.config.v3 is None:
            self.counters.inc("v3_not_configured")
            return None
        v3 = self.config.v3
        result = v3.handle(data, source)
        if result.error:
            self.counters.inc(f"v3_{result.error}")
        replay = v3.replay
        if replay is not self._replay:  # the first v3 datagram, or a reload with a new window
            self._replay, self._replay_evicted = replay, 0
        if replay.evicted != self._replay_evicted:
            self.counters.inc("v3_replay_memory_evicted", replay.evicted - self._replay_evicted)
            self._replay_evicted = replay.evicted
        return (result.response, result.trap)

    def reload(self) -> defer.Deferred:
        """Read definitions, inventory and v3 users again (in a thread)."""
        if self._reloading is not None:
            return self._reloading
        d = threads.deferToThread(load_config, self.runtime.settings)

        def loaded(config: TrapConfig) -> None:
            if config.v3 is not None and self.config.v3 is not None:
                config.v3.adopt(self.config.v3)
            else:
                try:
                    self._start_engine(config.v3)
                except BootsError as e:
                    self.counters.inc("reload_errors")
                    self.log.error("reload refused, keeping the running configuration: {error}",
                                   error=e)
                    return
            self.config = config
            self._warn_loose_files(config)
            self.log.info("trap definitions reloaded")

        def refused(failure) -> None:
            failure.trap(TrapConfigError)
            self.counters.inc("reload_errors")
            self.log.error("reload refused, keeping the running configuration: {error}",
                           error=failure.value)

        def done(result):
            self._reloading = None
            return result

        d.addCallbacks(loaded, refused)
        d.addBoth(done)
        self._reloading = d
        return d

    # -- the hot path -------------------------------------------------------

    def handle(self, trap: Trap):
        """Turn one received trap into an ``event`` (or count why not).

        Returns the publisher's Deferred (fired once the publisher holds the event
        durably: confirmed by the broker or on its disk buffer, so that the journal
        may forget the trap), or None when nothing was published."""
        self.counters.inc("received")
        sender = trap.source[0]
        if not self.limiter.allow(sender):
            self.counters.inc("rate_limited")
            return
        host, unknown = self._host_of(trap)
        if host is None:
            self.counters.inc("unknown_sender_dropped")
            return
        definitions = self.config.definitions
        c = definitions.classify(trap, host)
        if self.dedup.is_duplicate(sender, trap.trap_oid, c.key,
                                   origin=(host, trap.claimed_address)):
            self.counters.inc("duplicates")
            return
        if not c.known:
            self.counters.inc("unknown_traps")
        names = definitions.varbind_names(trap)
        event_name = c.name
        mib = self.config.mib_names
        if mib is not None:  # MIB names where the definitions give none
            names = [n or mib.name(vb[0]) for n, vb in zip(names, trap.varbinds)]
            if not c.known:
                event_name = mib.name(trap.trap_oid) or c.name
        event = messages.Event(
            source=self.source, ts=trap.received, host=host, address=trap.agent_address,
            snmp_version=trap.version, trap_oid=trap.trap_oid, name=event_name, severity=c.severity,
            varbinds=[messages.Varbind(oid=oid, name=name, type=tag, value=value)
                      for (oid, tag, value), name in zip(
                          (varbind_to_json(*vb) for vb in trap.varbinds), names)],
            unknown_sender=unknown, message=c.message, action=c.action, alarm=c.alarm,
            key=c.key)
        # The event carries its trap's deterministic id (model.trap_message_id),
        # so that the same trap received by two receivers, or an inform
        # retransmitted, is stored and counted once.
        d = self.publisher.publish(event, message_id=trap_message_id(trap),
                                   durable=self.pump is not None)
        d.addCallbacks(self._published, self._publish_failed)
        return d

    def _published(self, result):
        self.counters.inc("published_events")
        return result

    def _publish_failed(self, failure):
        """Counted, logged at most every 10 s; the failure goes on to the journal pump
        (which reads the trap again later)."""
        self.counters.inc("publish_errors")
        now = self.runtime.reactor.seconds()
        if now - self._publish_errors_logged >= 10:
            self._publish_errors_logged = now
            self.log.error("could not publish a trap: {error} ({n} publish errors so far)",
                           error=failure.getErrorMessage(),
                           n=int(self.counters.get("publish_errors")))
        return failure if self.pump is not None else None

    def _host_of(self, trap: Trap) -> tuple[str | None, bool]:
        inventory = self.config.inventory
        for address in dict.fromkeys((trap.agent_address, trap.source[0])):
            if inventory is not None:
                found = inventory.by_address(address)
                if found:
                    return found[0].name, False
        if not self.settings.map_unknown:
            return None, True
        return trap.agent_address or trap.source[0], True

    def _publish_storm_summaries(self) -> None:
        for source, dropped, since in self.limiter.summaries():
            host, unknown = self._host_of(Trap(
                source=(source, 0), version="v2c", pdu="trap", trap_oid=STORM_TRAP_OID,
                uptime=None, agent_address=source, varbinds=(), received=time.time()))
            event = messages.Event(
                source=self.source, host=host or source, address=source, snmp_version="v2c",
                trap_oid=STORM_TRAP_OID, name="trapStorm", severity="warning", varbinds=[],
                unknown_sender=unknown,
                message=f"{dropped} traps dropped from {source} by the rate limit since "
                        f"{time.strftime('%H:%M:%S', time.localtime(since))}")
            self.publisher.publish(event).addErrback(self._publish_failed).addErrback(lambda _: None)


def build(runtime) -> TrapService:
    """The receiver of ``runtime``'s process (raises TrapConfigError on bad files)."""
    return TrapService(runtime, load_config(runtime.settings))
