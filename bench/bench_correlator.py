"""The alarm correlator (``twistd centaure-correlator``) against the real RabbitMQ and MariaDB.

Events correlated per second with the state persisted in
MariaDB, through the real RabbitMQ, for 100,000 events over 10,000 distinct
alarms; and the latency from a trap sent to its ``alarm`` published, at
1,000 traps/s. Goal: >= 10,000 events/s; p99 trap -> alarm < 100 ms.

Parts (each prints its figures; medians of ``--runs``):

1. ``throughput``: ``<prefix>.correlator`` is pre-filled with ``--events``
   persistent ``event`` messages (each with a message id, as the trap
   receiver's publisher gives them) over ``--hosts`` x ``--keys`` distinct
   alarms (linkDown keyed by ifIndex, as ``traps.yaml`` defines it): every
   alarm raised once, then random reports on random alarms -- a repeat of the
   raise while active (most of them), a clear (linkUp) with probability
   ``--clear-ratio``, a re-raise when cleared. ``twistd centaure-correlator``
   then drains the queue into fresh tables in MariaDB (a unique
   ``[correlator] table_prefix``, dropped afterwards), publishing its
   ``alarm`` messages to a durable queue bound to ``<prefix>.alarm`` (as the
   SQL writer's would be). The rate is the daemon's own ``applied`` counter
   (inputs committed, their alarms confirmed, then acked: /metrics) between
   10% and 90% of the work, start-up excluded. In the same run, the
   references on the very same messages, in this process:

   * ``apply``: ``machine.Correlator.apply`` alone (pure, in memory);
   * ``no bus``: what the daemon does minus the bus, one batch at a time --
     decode, apply, ``StateStore.snapshot``, encode the alarms, then
     ``StateStore.save`` of the state and outbox on MariaDB.

   The daemon's CPU time (``/proc``) says whether it waits or computes.
2. ``latency``: ``twistd centaure-traps`` (product defaults: rate limit
   200/s per source, dedup, shipped ``traps.yaml``) and ``twistd
   centaure-correlator`` on the same broker. This process sends pre-encoded
   v2c linkDown traps at ``--rate`` for ``--seconds`` from ``--sources``
   loopback addresses (127.0.1.x; traps from unknown senders are named by
   their address), each trap a new ifIndex, hence a new alarm and one
   ``raised`` message. A consumer process reads a queue bound to
   ``<prefix>.alarm`` (and one bound to ``<prefix>.event``) and stamps each
   message on arrival; a trap is matched to its alarm by ref (``alarm_ref(host,
   "linkDown", ifIndex)``). Printed: p50, p99 and max of trap sent -> alarm
   received (and of trap sent -> event received, the receiver's share), and
   how many traps have no alarm (lost: must be 0). The alarm's ``ts`` (the
   correlator's clock when the trap's batch began) splits the latency into the
   wait for a batch and the batch's processing (apply, commit, publish).

Options worth knowing: ``--seen-ids 1024`` starts every host with a full
window of seen message ids (the steady state of a long run; the window is
persisted with the host); ``--code DIR`` runs the daemons from another source
tree (``git archive <commit> | tar -x -C DIR``) to compare a product change
before/after; ``--profile FILE`` runs the correlator under twistd's cProfile.

Usage:
    .venv/bin/python bench/bench_correlator.py [--runs 3] [--events 100000] [--hosts 1000]
        [--keys 10] [--seen-ids 0] [--prefetch 2000] [--batch-size N] [--batch-interval 50ms]
        [--rate 1000] [--seconds 20] [--sources 100] [--code DIR] [--profile FILE]
        [--skip-references] [--skip-throughput] [--skip-latency]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pika  # noqa: E402

from bench.bench_db import (  # noqa: E402
    AMQP_URL, BIN, MARIADB_URL, drop_prefixed, free_tcp_port, sustained_rate,
)
from bench.bench_traps import IF_ENTRY, LINK_DOWN, SNMP_TRAP_OID_0, SYS_UPTIME_0  # noqa: E402
from connector import messages  # noqa: E402
from connector.topology import (  # noqa: E402
    connector_queue, dead_letter_exchange, dead_letter_queue, exchange_names, status_queue,
)
from connector_alarms.keys import alarm_ref  # noqa: E402
from centaure.shipped import example_path

LINK_UP = "1.3.6.1.6.3.1.1.5.4"
#: Where the daemons' code comes from (``--code``): this tree, or another one to compare.
DAEMON_ROOT = ROOT
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- daemons ---------------------------------------------------------------------------

def daemon_path() -> str:
    """PYTHONPATH of the daemons: the packages of ``--code`` (its ``src/`` since that layout)."""
    src = os.path.join(DAEMON_ROOT, "src")
    return src if os.path.isdir(src) else DAEMON_ROOT


class Daemon:
    """A ``twistd -n <plugin>`` in folder ``d`` with a settings file of its own.

    ``sections`` are written after ``[bus]``, ``[buffer]`` and ``[connector]``
    (the real broker, ``bus_prefix``, an HTTP port for /health and /metrics).
    """

    def __init__(self, d: str, plugin: str, bus_prefix: str, prefetch: int,
                 sections: dict[str, dict[str, object]], profile: str = "") -> None:
        self.plugin = plugin
        self.port = free_tcp_port()
        base = {"bus": {"url": AMQP_URL, "exchange_prefix": bus_prefix, "prefetch": prefetch},
                "buffer": {"path": f"{d}/buffer-{{connector}}.sqlite3"},
                "connector": {"http_port": self.port, "node": "bench"}}
        base.update(sections)
        path = os.path.join(d, f"{plugin}.ini")
        with open(path, "w") as f:
            for name, values in base.items():
                f.write(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n")
        self.log_path = os.path.join(d, f"{plugin}-{self.port}.log")
        self.log = open(self.log_path, "w")
        options = [f"--profile={profile}", "--profiler=cprofile", "--savestats"] if profile else []
        self.proc = subprocess.Popen([f"{BIN}/twistd", "-n", "--pidfile=", *options, plugin,
                                      "-c", path],
                                     cwd=d, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONPATH=daemon_path()))

    def _get(self, what: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{what}", timeout=5) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            return e.read()
        except OSError:
            return None

    def health(self) -> dict:
        """/health as a dict ({} while the HTTP server is not up)."""
        body = self._get("health")
        return json.loads(body) if body else {}

    def counter(self, name: str, connector: str) -> float:
        """The counter ``name`` of ``connector`` on /metrics (0 when absent)."""
        body = (self._get("metrics") or b"").decode()
        m = re.search(rf'^centaure_{name}_total{{connector="{connector}"}} (\S+)$', body, re.M)
        return float(m.group(1)) if m else 0.0

    def counters(self, connector: str) -> dict[str, float]:
        """Every ``*_total`` counter of ``connector`` on /metrics."""
        body = (self._get("metrics") or b"").decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            rf'^centaure_(\w+)_total{{connector="{connector}"}} (\S+)$', body, re.M)}

    def cpu_seconds(self) -> float:
        """User + system CPU time of the daemon so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.plugin} exited ({self.proc.returncode}): see {self.log_path}")

    def follow(self, counter: str, connector: str, total: int, limit: float,
               every: float = 0.1, progress: str = "") -> list[tuple[float, int]]:
        """Poll ``counter`` until it reaches ``total``: the (monotonic time, value) seen.

        Prints ``value of total <progress>`` every 5 s when ``progress`` is given;
        exits naming the log when the daemon dies or ``limit`` seconds pass.
        """
        seen: list[tuple[float, int]] = []
        deadline = time.monotonic() + limit
        last_print = 0.0
        while True:
            value = int(self.counter(counter, connector))
            now = time.monotonic()
            seen.append((now, value))
            if progress and now - last_print > 5:
                print(f"  {value:,} of {total:,} {progress}", flush=True)
                last_print = now
            if value >= total:
                return seen
            self.check_alive()
            if now > deadline:
                raise SystemExit(f"{connector} stopped at {value:,} of {total:,} {counter}: "
                                 f"{self.log_path}")
            time.sleep(every)

    def wait_healthy(self, connector: str, timeout: float = 60) -> None:
        """Until /health is not degraded and ``connector`` says ready (when it has a state)."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            c = h.get("connectors", {}).get(connector)
            if h and not h.get("degraded") and c is not None and c.get("state", "ready") == "ready":
                return
            self.check_alive()
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.plugin} not ready after {timeout:.0f} s: {h}; "
                                 f"see {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def correlator(d: str, bus_prefix: str, table_prefix: str, args: argparse.Namespace) -> Daemon:
    """``twistd centaure-correlator`` on MariaDB, tables ``table_prefix``*."""
    corr: dict[str, object] = {"table_prefix": table_prefix}
    if args.batch_size:
        corr["batch_size"] = args.batch_size
    if args.batch_interval:
        corr["batch_interval"] = args.batch_interval
    return Daemon(d, "centaure-correlator", bus_prefix, args.prefetch,
                  {"database": {"url": MARIADB_URL}, "correlator": corr},
                  profile=args.profile and f"{args.profile}.{uuid.uuid4().hex[:6]}")


# --- the bus ---------------------------------------------------------------------------

def amqp() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(AMQP_URL))


def declare(ch, name: str, exchange: str, arguments: dict | None = None) -> None:
    """A durable queue ``name`` bound to the topic ``exchange`` with ``#``."""
    ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue=name, durable=True, arguments=arguments)
    ch.queue_bind(queue=name, exchange=exchange, routing_key="#")


def declare_correlator_queue(ch, prefix: str) -> str:
    """``<prefix>.correlator`` as the daemon declares it (connector.topology)."""
    spec = connector_queue(prefix, "correlator")
    for b in spec.bindings:
        ch.exchange_declare(exchange=b.exchange, exchange_type="topic", durable=True)
    ch.queue_declare(queue=spec.name, durable=True, arguments=spec.arguments)
    for b in spec.bindings:
        ch.queue_bind(queue=spec.name, exchange=b.exchange, routing_key=b.pattern)
    return spec.name


def queue_count(name: str) -> int:
    conn = amqp()
    try:
        return conn.channel().queue_declare(queue=name, passive=True).method.message_count
    finally:
        conn.close()


def delete_bus(prefix: str, queues: list[str], connector: str = "correlator") -> None:
    """Every queue and exchange of ``prefix`` that the bench or ``connector``'s daemon made."""
    conn = amqp()
    ch = conn.channel()
    for q in [connector_queue(prefix, connector).name, dead_letter_queue(prefix).name,
              status_queue(prefix).name, *queues]:
        ch.queue_delete(queue=q)
    for x in (*exchange_names(prefix), dead_letter_exchange(prefix)):
        ch.exchange_delete(exchange=x)
    conn.close()


def clean_up(prefix: str, table_prefix: str, queues: list[str]) -> None:
    """Drop the run's tables, then its queues and exchanges; say what could not be done."""
    for what, step in ((f"tables {table_prefix}*", lambda: drop_prefixed(MARIADB_URL,
                                                                         table_prefix)),
                       (f"queues and exchanges {prefix}.*", lambda: delete_bus(prefix, queues))):
        try:
            step()
        except Exception as e:  # the broker or the database went away: report, go on
            print(f"  WARNING: could not delete the {what}: {e!r}", flush=True)


# --- 1. throughput ---------------------------------------------------------------------

def make_events(n: int, hosts: int, keys: int, clear_ratio: float, seed: int = 7
                ) -> tuple[list[tuple[str, str, bytes, messages.Event]], dict[str, int]]:
    """``n`` linkDown/linkUp events over ``hosts`` x ``keys`` alarms, as the receiver makes them.

    Each alarm is reported at least once; the other reports pick an alarm at
    random: a raise when it is not active (the first raise, or a re-raise
    after a clear), else a clear with probability ``clear_ratio``, else a
    repeat of the raise. Returns (message_id, routing key, body, event) and
    the mix.
    """
    rnd = random.Random(seed)
    n_alarms = hosts * keys
    order = list(range(n_alarms)) + [rnd.randrange(n_alarms) for _ in range(n - n_alarms)]
    rnd.shuffle(order)
    active = [False] * n_alarms
    seen = [False] * n_alarms
    mix = {"first raises": 0, "repeats": 0, "clears": 0, "re-raises": 0}
    id_prefix = uuid.uuid4().hex[:16] + "-"  # as connector.publisher numbers its messages
    t0 = time.time()
    out = []
    for i, a in enumerate(order):
        h, k = divmod(a, keys)
        host = host_name(h)
        idx = k + 1
        if active[a] and rnd.random() < clear_ratio:
            action, oid, name, severity, word = "clear", LINK_UP, "linkUp", "info", "up"
            active[a] = False
            mix["clears"] += 1
        else:
            action, oid, name, severity, word = "raise", LINK_DOWN, "linkDown", "major", "down"
            mix["repeats" if active[a] else "re-raises" if seen[a] else "first raises"] += 1
            active[a] = seen[a] = True
        event = messages.Event(
            source="traps@bench", ts=t0 + i * 1e-4, host=host,
            address=f"10.{h // 250}.{h % 250}.1", snmp_version="v2c", trap_oid=oid, name=name,
            severity=severity, varbinds=[
                messages.Varbind(oid=f"{IF_ENTRY}.1.{idx}", name="ifIndex", type="Integer",
                                 value=idx),
                messages.Varbind(oid=f"{IF_ENTRY}.2.{idx}", name="ifDescr", type="OctetString",
                                 value=f"GigabitEthernet0/{idx}"),
                messages.Varbind(oid=f"{IF_ENTRY}.7.{idx}", name="ifAdminStatus",
                                 type="Integer", value="up"),
                messages.Varbind(oid=f"{IF_ENTRY}.8.{idx}", name="ifOperStatus",
                                 type="Integer", value=word),
            ],
            message=f"Interface {idx} {word} (admin up, oper {word})",
            action=action, alarm="linkDown", key=str(idx))
        out.append((f"{id_prefix}{i:x}", messages.routing_key(event), messages.encode(event),
                    event))
    return out, mix


def host_name(h: int) -> str:
    return f"router{h:04d}.example.net"


def seed_seen_ids(store, hosts: int, n: int) -> list:
    """Save ``hosts`` host states whose window of seen message ids holds ``n`` ids.

    The steady state of a long run: after ``SEEN_IDS_PER_HOST`` messages per
    host, every host row carries a full window, rewritten with each batch
    that touches the host. Returns the states (for an in-memory correlator).
    """
    from connector_alarms.model import HostState, SeenIds

    states = [HostState(host=host_name(h), seen_ids=SeenIds(
        f"{uuid.uuid4().hex[:16]}-{i:x}" for i in range(n))) for h in range(hosts)]
    if n:
        store.save(store.snapshot(states))
    return states


def prefill(prefix: str, events: list[tuple[str, str, bytes, messages.Event]]) -> str:
    """Queue every event (persistent, with its id) in ``<prefix>.correlator``; its name."""
    conn = amqp()
    ch = conn.channel()
    queue = declare_correlator_queue(ch, prefix)
    exchange = messages.exchange_name(prefix, "event")
    for i, (mid, key, body, _) in enumerate(events):
        props = pika.BasicProperties(type="event", delivery_mode=2, message_id=mid,
                                     content_type="application/json")
        ch.basic_publish(exchange, key, body, props)
        if i % 50000 == 49999:
            print(f"  queued {i + 1:,} of {len(events):,}", flush=True)
    while ch.queue_declare(queue=queue, passive=True).method.message_count < len(events):
        time.sleep(0.2)
    conn.close()
    return queue


def bench_daemon(events: list, args: argparse.Namespace) -> dict:
    """One drain of the pre-filled queue by ``twistd centaure-correlator``."""
    prefix, tp = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}_"
    sink = f"{prefix}.bench-alarms"
    n = len(events)
    with tempfile.TemporaryDirectory() as d:
        try:
            conn = amqp()
            declare(conn.channel(), sink, messages.exchange_name(prefix, "alarm"))
            conn.close()
            queue = prefill(prefix, events)
            if args.seen_ids:
                import sqlalchemy as sa

                from connector_alarms import migrate
                from connector_alarms.store import StateStore

                engine = sa.create_engine(MARIADB_URL)
                migrate.upgrade(engine, tp)
                seed_seen_ids(StateStore(engine, tp), args.hosts, args.seen_ids)
                engine.dispose()
            daemon = correlator(d, prefix, tp, args)
            try:
                daemon.wait_healthy("correlator")
                cpu0, t_ready = daemon.cpu_seconds(), time.monotonic()
                seen = daemon.follow("applied", "correlator", n, 900,
                                     progress="events applied")
                elapsed = time.monotonic() - t_ready
                cpu = daemon.cpu_seconds() - cpu0
                health = daemon.health()["connectors"]["correlator"]
                runtime = daemon.counters("correlator")
                # The last acks and confirms settle.
                time.sleep(1.0)
                left, alarms_queued = queue_count(queue), queue_count(sink)
            finally:
                daemon.stop()
                if os.environ.get("BENCH_KEEP_LOG"):
                    shutil.copy(daemon.log_path, os.environ["BENCH_KEEP_LOG"])
        finally:
            clean_up(prefix, tp, [sink])
    return {"rate": sustained_rate(seen, n), "elapsed": elapsed, "cpu": cpu,
            "machine": health.get("alarms", {}), "runtime": runtime, "left": left,
            "alarms_queued": alarms_queued}


# --- the raw relay (reference) ---------------------------------------------------------

def run_relay(args: argparse.Namespace) -> None:
    """(Subprocess) the raw relay: consume, publish with confirms, ack, no work at all.

    pika 1.4's asynchronous ``SelectConnection`` on one channel (a pure
    Python client with no Deferreds, cheaper per message than Centaure's
    Twisted core): ``basic.qos`` of ``--prefetch`` (the daemon's), every
    delivery published at once (same body, properties and routing key,
    persistent) to ``--relay-exchange`` on the same channel in confirm mode,
    confirms pipelined (never waited for one by one), and each input acked
    only once its copy is confirmed: the longest confirmed run from the
    oldest delivery with ``multiple=True`` (what the broker's coalesced
    confirms allow). Stops after ``--expect`` acks; prints one JSON object:
    ``seen`` ((monotonic time, inputs acked) every 0.1 s) and ``cpu`` (user +
    system seconds of this process while it relayed).
    """
    import collections
    import resource

    from pika.adapters.select_connection import SelectConnection

    total = args.expect
    exchange = args.relay_exchange
    outstanding: collections.deque[int] = collections.deque()  # delivery tags, in order
    by_seq: dict[int, int] = {}  # publish sequence number -> delivery tag
    confirmed: set[int] = set()  # delivery tags whose copy is confirmed
    st = {"seq": 0, "acked": 0, "t0": 0.0, "cpu0": 0.0}
    seen: list[tuple[float, int]] = []
    chan: list = []

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def on_message(ch, method, props, body) -> None:
        ch.basic_publish(exchange, method.routing_key, body, pika.BasicProperties(
            content_type="application/json", delivery_mode=2, message_id=props.message_id,
            type=props.type))
        st["seq"] += 1
        by_seq[st["seq"]] = method.delivery_tag
        outstanding.append(method.delivery_tag)

    def on_confirm(frame) -> None:
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            raise SystemExit(f"relay: the broker nacked publish {m.delivery_tag}")
        seqs = [s for s in by_seq if s <= m.delivery_tag] if m.multiple else [m.delivery_tag]
        for s in seqs:
            confirmed.add(by_seq.pop(s))
        last = None
        while outstanding and outstanding[0] in confirmed:
            last = outstanding.popleft()
            confirmed.discard(last)
        if last is not None:
            chan[0].basic_ack(last, multiple=True)
            st["acked"] = last  # one channel, one consumer: tags count the deliveries

    def sample() -> None:
        seen.append((time.monotonic(), st["acked"]))
        if st["acked"] >= total:
            conn.close()
            return
        conn.ioloop.call_later(0.1, sample)

    def on_channel(ch) -> None:
        chan.append(ch)
        ch.confirm_delivery(on_confirm)
        ch.basic_qos(prefetch_count=args.prefetch, callback=lambda _f: start(ch))

    def start(ch) -> None:
        st["t0"], st["cpu0"] = time.monotonic(), cpu()
        ch.basic_consume(args.relay_queue, on_message)
        sample()

    conn = SelectConnection(pika.URLParameters(AMQP_URL),
                            on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                            on_close_callback=lambda c, e: c.ioloop.stop())
    conn.ioloop.start()
    print(json.dumps({"seen": seen, "cpu": cpu() - st["cpu0"],
                      "elapsed": seen[-1][0] - st["t0"] if seen else 0.0}), flush=True)


def bench_relay(events: list, args: argparse.Namespace) -> dict:
    """One drain of the same pre-filled queue by the raw relay (:func:`run_relay`)."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    sink = f"{prefix}.bench-alarms"
    n = len(events)
    exchange = messages.exchange_name(prefix, "alarm")
    try:
        conn = amqp()
        declare(conn.channel(), sink, exchange)
        conn.close()
        queue = prefill(prefix, events)
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--role", "relay", "--relay-queue",
             queue, "--relay-exchange", exchange, "--expect", str(n),
             "--prefetch", str(args.prefetch)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT, timeout=900, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        time.sleep(1.0)  # the last acks settle
        left, queued = queue_count(queue), queue_count(sink)
    finally:
        try:
            delete_bus(prefix, [sink])
        except Exception as e:  # the broker went away: report, go on
            print(f"  WARNING: could not delete the queues and exchanges {prefix}.*: {e!r}",
                  flush=True)
    return {"rate": sustained_rate([tuple(s) for s in r["seen"]], n), "cpu": r["cpu"],
            "elapsed": r["elapsed"], "left": left, "queued": queued}


def settings_for(args: argparse.Namespace):
    """The ``[correlator]`` settings the daemon runs with (same file contents)."""
    from connector.settings import settings_from_string

    lines = ["[correlator]"]
    if args.batch_size:
        lines.append(f"batch_size = {args.batch_size}")
    if args.batch_interval:
        lines.append(f"batch_interval = {args.batch_interval}")
    return settings_from_string("\n".join(lines) + "\n", source="<bench>").section("correlator")


def bench_apply(events: list) -> float:
    """Events/s of ``Correlator.apply`` alone, in memory (the pure state machine)."""
    from connector_alarms.machine import Correlator, MemoryHostStates

    conf = settings_for(ARGS)
    corr = Correlator(MemoryHostStates(), conf, "correlator@bench")
    apply = corr.apply
    now = time.time()
    started = time.perf_counter()
    for mid, _, _, event in events:
        apply(event, mid, now)
    return len(events) / (time.perf_counter() - started)


def bench_no_bus(events: list) -> dict:
    """Events/s of the daemon's batch steps without the bus, on MariaDB, one batch at a time.

    Per batch of ``[correlator] batch_size``: decode the bodies, apply, take
    the snapshot, encode the alarms (reactor thread in the daemon), then
    ``StateStore.save`` with the alarms added to the outbox and the previous
    batch's confirmed (the daemon's SQL thread). Also returns the seconds
    spent in each part.
    """
    import sqlalchemy as sa

    from connector_alarms import migrate
    from connector_alarms.machine import Correlator, MemoryHostStates
    from connector_alarms.store import StateStore

    conf = settings_for(ARGS)
    tp = f"b{uuid.uuid4().hex[:8]}_"
    engine = sa.create_engine(MARIADB_URL, pool_size=1, max_overflow=0)
    try:
        migrate.upgrade(engine, tp)
        store = StateStore(engine, tp)
        store.load(0.0)
        states = MemoryHostStates()
        if ARGS.seen_ids:
            for state in seed_seen_ids(store, ARGS.hosts, ARGS.seen_ids):
                states.add(state)
        corr = Correlator(states, conf, "correlator@bench")
        decode = messages.decode
        confirmed: list[str] = []
        cpu = 0.0
        sql = 0.0
        alarms = 0
        started = time.perf_counter()
        for i in range(0, len(events), conf.batch_size):
            t0 = time.perf_counter()
            now = time.time()
            out = []
            for mid, _, body, _ in events[i:i + conf.batch_size]:
                out.extend(corr.apply(decode(body), mid, now))
            snap = store.snapshot(states.dirty(), states.take_forgotten())
            encoded = [(mid, messages.encode(alarm)) for mid, alarm in out]
            t1 = time.perf_counter()
            store.save(snap, encoded, confirmed)
            t2 = time.perf_counter()
            confirmed = [mid for mid, _ in encoded]
            alarms += len(out)
            cpu += t1 - t0
            sql += t2 - t1
        total = time.perf_counter() - started
    finally:
        engine.dispose()
        drop_prefixed(MARIADB_URL, tp)
    return {"rate": len(events) / total, "reactor_s": cpu, "save_s": sql, "alarms": alarms}


def run_throughput(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    events, mix = make_events(args.events, args.hosts, args.keys, args.clear_ratio)
    size = statistics.mean(len(b) for _, _, b, _ in events)
    conf = settings_for(args)
    print(f"\n== throughput: {len(events):,} events over {args.hosts * args.keys:,} alarms "
          f"({args.hosts:,} hosts x {args.keys} ifIndex), {size:.0f}-byte bodies "
          f"(built in {time.perf_counter() - t0:.1f} s); mix: "
          + ", ".join(f"{k} {v:,}" for k, v in mix.items())
          + f"; [correlator] batch_size {conf.batch_size}, batch_interval "
          f"{conf.batch_interval * 1000:.0f} ms; [bus] prefetch {args.prefetch}"
          + (f"; every host starts with {args.seen_ids} seen message ids" if args.seen_ids
             else ""), flush=True)
    applies, no_bus, daemon, relays = [], [], [], []
    for run in range(args.runs):
        if args.skip_references:
            applies.append(float("nan"))
            no_bus.append({"rate": float("nan")})
        else:
            applies.append(bench_apply(events))
            print(f"apply run {run + 1}: {applies[-1]:,.0f} events/s", flush=True)
            no_bus.append(bench_no_bus(events))
            r = no_bus[-1]
            print(f"no-bus run {run + 1}: {r['rate']:,.0f} events/s (decode+apply+snapshot+"
                  f"encode {r['reactor_s']:.2f} s, save {r['save_s']:.2f} s, {r['alarms']:,} "
                  f"alarms)", flush=True)
        if not args.skip_relay:
            relays.append(bench_relay(events, args))
            r = relays[-1]
            print(f"raw relay run {run + 1}: {r['rate']:,.0f} events/s sustained (10%-90%); "
                  f"relay CPU {r['cpu']:.1f} s over {r['elapsed']:.1f} s "
                  f"({100 * r['cpu'] / r['elapsed']:.0f}% of a core); left in queue "
                  f"{r['left']}, copies queued {r['queued']:,}", flush=True)
            if r["left"] or r["queued"] != len(events):
                print("  WARNING: relay input left in the queue or copies missing", flush=True)
        daemon.append(bench_daemon(events, args))
        r = daemon[-1]
        m = r["machine"]
        print(f"daemon run {run + 1}: {r['rate']:,.0f} events/s sustained (10%-90%); "
              f"{len(events) / r['elapsed']:,.0f} overall from ready; daemon CPU "
              f"{r['cpu']:.1f} s over {r['elapsed']:.1f} s ({100 * r['cpu'] / r['elapsed']:.0f}% "
              f"of a core, {1e6 * r['cpu'] / len(events):.0f} us/event); "
              f"machine: messages {m.get('messages')}, raised {m.get('raised')}, repeats "
              f"{m.get('repeats')}, cleared {m.get('cleared')}, duplicates "
              f"{m.get('duplicates')}, published {m.get('published')}; runtime: "
              f"applied {r['runtime'].get('applied', 0):.0f}, alarms_published "
              f"{r['runtime'].get('alarms_published', 0):.0f}, commit_retries "
              f"{r['runtime'].get('commit_retries', 0):.0f}; left in queue {r['left']}, "
              f"alarm messages queued {r['alarms_queued']:,}", flush=True)
        if r["left"] or r["alarms_queued"] != r["runtime"].get("alarms_published"):
            print("  WARNING: input left in the queue or alarm messages missing", flush=True)
    a = statistics.median(applies)
    nb = statistics.median(r["rate"] for r in no_bus)
    dm = statistics.median(r["rate"] for r in daemon)
    cpu = statistics.median(r["cpu"] / r["elapsed"] for r in daemon)
    if not args.skip_references:
        print(f"\nmachine.Correlator.apply alone, in memory: {a:,.0f} events/s "
              f"(median of {args.runs})")
        print(f"no bus (decode, apply, snapshot, encode, StateStore.save on MariaDB, batches "
              f"of {conf.batch_size}): {nb:,.0f} events/s (median of {args.runs})")
    if relays:
        rl = statistics.median(r["rate"] for r in relays)
        rl_cpu = statistics.median(r["cpu"] / r["elapsed"] for r in relays)
        print(f"raw relay (pika SelectConnection, prefetch {args.prefetch}: consume, one "
              f"persistent publish per message with pipelined confirms, ack once confirmed, "
              f"no work): {rl:,.0f} events/s (median of {args.runs}), {100 * rl_cpu:.0f}% of "
              f"a core")
        per_run = ", ".join(f"{d['rate'] / r['rate']:.2f}" for d, r in zip(daemon, relays))
    ratios = "" if args.skip_references else f"{dm / nb:.2f}x no bus, {dm / a:.3f}x apply; "
    print(f"twistd centaure-correlator, RabbitMQ -> MariaDB: {dm:,.0f} events/s "
          f"(median of {args.runs}); {ratios}daemon at {100 * cpu:.0f}% of a core, "
          f"{1e6 * statistics.median(r['cpu'] for r in daemon) / len(events):.0f} us/event; "
          f"goal 10,000: {'met' if dm >= 10_000 else 'NOT met'}", flush=True)
    if relays:
        print(f"daemon / raw relay: {dm / rl:.2f}x (medians; per run {per_run}); goal "
              f">= 0.8x: {'met' if dm >= 0.8 * rl else 'NOT met'}", flush=True)


# --- 2. latency ------------------------------------------------------------------------

def build_traps(n: int, sources: int) -> list[tuple[int, str, str, bytes]]:
    """``n`` v2c linkDown traps, trap i from source ``i % sources`` with a new ifIndex.

    Returns (source number, host, ifIndex, datagram); the host is the source
    address (an unknown sender is named by its address).
    """
    from snmpwire import ber

    out = []
    for i in range(n):
        s, idx = i % sources, 1 + i // sources
        out.append((s, source_address(s), str(idx), ber.encode_trap_v2(b"public", 1000 + i, [
            (SYS_UPTIME_0, ber.TIMETICKS, 123456 + i),
            (SNMP_TRAP_OID_0, ber.OBJECT_IDENTIFIER, LINK_DOWN),
            (f"{IF_ENTRY}.1.{idx}", ber.INTEGER, idx),
            (f"{IF_ENTRY}.2.{idx}", ber.OCTET_STRING, f"GigabitEthernet0/{idx}".encode()),
            (f"{IF_ENTRY}.7.{idx}", ber.INTEGER, 1),
            (f"{IF_ENTRY}.8.{idx}", ber.INTEGER, 2),
        ])))
    return out


def source_address(s: int) -> str:
    return f"127.0.1.{1 + s}"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_paced(port: int, traps: list, sources: int, rate: int) -> list[float]:
    """Send every trap at ``rate``/s (paced every 0.5 ms); the time each was sent."""
    socks = []
    for s in range(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source_address(s), 0))
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    sent_at = [0.0] * len(traps)
    perf, clock = time.perf_counter, time.time
    start = perf()
    i = 0
    total = len(traps)
    while i < total:
        target = min(total, int((perf() - start) * rate) + 1)
        while i < target:
            s, _, _, datagram = traps[i]
            sent_at[i] = clock()
            socks[s].send(datagram)
            i += 1
        time.sleep(0.0005)
    for sock in socks:
        sock.close()
    return sent_at


def run_consumer(args: argparse.Namespace) -> None:
    """(Subprocess) consume the alarm and event queues, stamp each message, print them.

    Stops when ``--expect`` alarms and events have arrived, or after
    ``--idle`` seconds without a message once one came, or at ``--max-wait``.
    Prints one JSON list per message: [time, "alarm", host, ref, state, ts] or
    [time, "event", host, key].
    """
    conn = amqp()
    ch = conn.channel()
    got: list[tuple[float, str, bytes]] = []

    def on(kind: str):
        def cb(_ch, _method, _props, body: bytes) -> None:
            got.append((time.time(), kind, body))
        return cb

    ch.basic_consume(args.alarm_queue, on("alarm"), auto_ack=True)
    ch.basic_consume(args.event_queue, on("event"), auto_ack=True)
    print("ready", flush=True)
    started = last = time.monotonic()
    count = 0
    while True:
        conn.process_data_events(time_limit=0.05)
        now = time.monotonic()
        if len(got) > count:
            count, last = len(got), now
        if count >= 2 * args.expect or now - started > args.max_wait:
            break
        if count and now - last > args.idle:
            break
    conn.close()
    for t, kind, body in got:
        m = messages.decode(body)
        if kind == "alarm":
            print(json.dumps([t, kind, m.host, m.ref, m.state, m.ts]))
        else:
            print(json.dumps([t, kind, m.host, m.key]))


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def bench_latency(traps: list, args: argparse.Namespace) -> dict:
    """One run: fresh daemons and tables, traps sent at ``args.rate``, latencies."""
    prefix, tp = f"b{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}_"
    alarm_q, event_q = f"{prefix}.bench-alarms", f"{prefix}.bench-events"
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(example_path("traps.yaml"), os.path.join(d, "traps.yaml"))
        with open(os.path.join(d, "inventory.yaml"), "w") as f:
            f.write("devices: []\n")  # every sender unknown: named by its address
        daemons: list[Daemon] = []
        consumer = None
        try:
            conn = amqp()
            ch = conn.channel()
            declare(ch, alarm_q, messages.exchange_name(prefix, "alarm"))
            declare(ch, event_q, messages.exchange_name(prefix, "event"))
            # Declared before any trap: no event can miss the correlator's queue.
            declare_correlator_queue(ch, prefix)
            conn.close()
            port = free_udp_port()
            corr = correlator(d, prefix, tp, args)
            daemons.append(corr)
            traps_d = Daemon(d, "centaure-traps", prefix, args.prefetch,
                             {"traps": {"listen": f"127.0.0.1:{port}",
                                        "definitions": "traps.yaml"}})
            daemons.append(traps_d)
            corr.wait_healthy("correlator")
            traps_d.wait_healthy("traps")
            consumer = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--role", "consumer",
                 "--alarm-queue", alarm_q, "--event-queue", event_q,
                 "--expect", str(len(traps)), "--idle", "10",
                 "--max-wait", str(len(traps) / args.rate + 120)],
                stdout=subprocess.PIPE, text=True, cwd=ROOT)
            assert consumer.stdout.readline().strip() == "ready"
            cpu0 = corr.cpu_seconds()
            sent_at = send_paced(port, traps, args.sources, args.rate)
            send_s = sent_at[-1] - sent_at[0]
            out, _ = consumer.communicate(timeout=len(traps) / args.rate + 180)
            cpu = corr.cpu_seconds() - cpu0
            traps_c = traps_d.counters("traps")
            corr_h = corr.health().get("connectors", {}).get("correlator", {})
        finally:
            if consumer is not None and consumer.poll() is None:
                consumer.kill()
                consumer.wait()
            for daemon in daemons:
                daemon.stop()
            clean_up(prefix, tp, [alarm_q, event_q])
    alarm_at: dict[tuple[str, int], float] = {}
    applied_at: dict[tuple[str, int], float] = {}  # the alarm's ts: when its batch began
    event_at: dict[tuple[str, str], float] = {}
    other = 0
    for line in out.splitlines():
        row = json.loads(line)
        if row[1] == "alarm":
            if row[4] == "raised":
                alarm_at.setdefault((row[2], row[3]), row[0])
                applied_at.setdefault((row[2], row[3]), row[5])
            else:
                other += 1
        else:
            event_at.setdefault((row[2], row[3]), row[0])
    to_alarm, to_event, to_apply, apply_to_alarm = [], [], [], []
    quarters: list[list[float]] = [[], [], [], []]
    for i, ((s, host, key, _), t) in enumerate(zip(traps, sent_at)):
        ref = (host, alarm_ref(host, "linkDown", key))
        a = alarm_at.get(ref)
        if a is not None:
            to_alarm.append(a - t)
            to_apply.append(applied_at[ref] - t)
            apply_to_alarm.append(a - applied_at[ref])
            quarters[4 * i // len(traps)].append(a - t)
        e = event_at.get((host, key))
        if e is not None:
            to_event.append(e - t)
    return {"sent": len(traps), "send_s": send_s, "alarms": len(to_alarm),
            "lost": len(traps) - len(to_alarm), "events": len(to_event),
            "other_alarms": other,
            "p50": pct(to_alarm, 0.50), "p99": pct(to_alarm, 0.99), "max": max(to_alarm or [0]),
            "quarters": [pct(q, 0.50) for q in quarters],
            "ap_p50": pct(to_apply, 0.50), "ap_p99": pct(to_apply, 0.99),
            "pub_p50": pct(apply_to_alarm, 0.50), "pub_p99": pct(apply_to_alarm, 0.99),
            "ev_p50": pct(to_event, 0.50), "ev_p99": pct(to_event, 0.99),
            "corr_cpu": cpu, "traps": traps_c, "machine": corr_h.get("alarms", {})}


def run_latency(args: argparse.Namespace) -> None:
    n = int(args.rate * args.seconds)
    traps = build_traps(n, args.sources)
    conf = settings_for(args)
    print(f"\n== latency: {n:,} v2c linkDown traps at {args.rate:,}/s for {args.seconds:g} s "
          f"from {args.sources} sources ({args.rate / args.sources:g}/s each), each a new "
          f"alarm; centaure-traps -> RabbitMQ -> centaure-correlator (MariaDB; batch_size "
          f"{conf.batch_size}, batch_interval {conf.batch_interval * 1000:.0f} ms) -> "
          f"RabbitMQ", flush=True)
    runs = []
    for run in range(args.runs):
        r = bench_latency(traps, args)
        runs.append(r)
        t = r["traps"]
        print(f"latency run {run + 1}: sent {r['sent']:,} in {r['send_s']:.1f} s; alarms "
              f"{r['alarms']:,}, lost {r['lost']}; trap -> alarm p50 {r['p50'] * 1000:.1f} ms, "
              f"p99 {r['p99'] * 1000:.1f} ms, max {r['max'] * 1000:.1f} ms; trap -> event "
              f"p50 {r['ev_p50'] * 1000:.1f} ms, p99 {r['ev_p99'] * 1000:.1f} ms "
              f"({r['events']:,} events); trap -> batch start p50 {r['ap_p50'] * 1000:.1f} ms, "
              f"p99 {r['ap_p99'] * 1000:.1f} ms; batch start -> alarm received p50 "
              f"{r['pub_p50'] * 1000:.1f} ms, p99 {r['pub_p99'] * 1000:.1f} ms; p50 by quarter "
              f"of the run "
              + "/".join(f"{q * 1000:.0f}" for q in r["quarters"])
              + f" ms; correlator CPU {r['corr_cpu']:.1f} s; traps: "
              f"received {t.get('received', 0):.0f}, published {t.get('published_events', 0):.0f}"
              + "".join(f", {k} {t[k]:.0f}" for k in ("rate_limited", "duplicates",
                                                        "dropped_queue_full", "publish_errors")
                        if t.get(k))
              + f"; machine raised {r['machine'].get('raised')}"
              + (f"; {r['other_alarms']} non-raised alarm messages" if r["other_alarms"] else ""),
              flush=True)
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    print(f"\ntrap -> alarm at {args.rate:,} traps/s (median of {args.runs}): p50 "
          f"{med('p50') * 1000:.1f} ms, p99 {med('p99') * 1000:.1f} ms; trap -> event p50 "
          f"{med('ev_p50') * 1000:.1f} ms, p99 {med('ev_p99') * 1000:.1f} ms; trap -> batch "
          f"start p50 {med('ap_p50') * 1000:.1f} ms, p99 {med('ap_p99') * 1000:.1f} ms; batch "
          f"start -> alarm received (apply, commit, publish) p50 {med('pub_p50') * 1000:.1f} "
          f"ms, p99 {med('pub_p99') * 1000:.1f} ms; lost "
          f"{'/'.join(str(r['lost']) for r in runs)}; goal p99 < 100 ms: "
          f"{'met' if med('p99') < 0.1 and not any(r['lost'] for r in runs) else 'NOT met'}",
          flush=True)


ARGS: argparse.Namespace


def main() -> None:
    global ARGS, DAEMON_ROOT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=["bench", "consumer", "relay"], default="bench",
                    help=argparse.SUPPRESS)
    ap.add_argument("--relay-queue", help=argparse.SUPPRESS)
    ap.add_argument("--relay-exchange", help=argparse.SUPPRESS)
    ap.add_argument("--alarm-queue", help=argparse.SUPPRESS)
    ap.add_argument("--event-queue", help=argparse.SUPPRESS)
    ap.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--idle", type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument("--max-wait", type=float, default=300.0, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=10, help="alarms (ifIndex values) per host")
    ap.add_argument("--clear-ratio", type=float, default=0.1,
                    help="probability that a report on an active alarm is a clear")
    ap.add_argument("--seen-ids", type=int, default=0,
                    help="throughput: start with this many seen message ids per host (the "
                         "steady state of a long run: up to SEEN_IDS_PER_HOST = 1024)")
    ap.add_argument("--prefetch", type=int, default=2000, help="[bus] prefetch of the daemons")
    ap.add_argument("--batch-size", type=int, default=0,
                    help="[correlator] batch_size (default: the product's)")
    ap.add_argument("--batch-interval", default="",
                    help="[correlator] batch_interval, e.g. 20ms (default: the product's)")
    ap.add_argument("--rate", type=int, default=1000, help="traps/s of the latency part")
    ap.add_argument("--seconds", type=float, default=20.0, help="sending time of a latency run")
    ap.add_argument("--sources", type=int, default=100, help="trap source addresses")
    ap.add_argument("--code", default=ROOT,
                    help="run the daemons from this source tree (e.g. a 'git archive' of "
                         "another commit, to compare a product change); default: this one")
    ap.add_argument("--skip-references", action="store_true",
                    help="throughput of the daemon only (no in-process apply / no-bus runs)")
    ap.add_argument("--profile", default="",
                    help="cProfile the correlator daemons into FILE.<random> (twistd --profile)")
    ap.add_argument("--skip-relay", action="store_true",
                    help="throughput without the raw relay reference")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ARGS = ap.parse_args()
    DAEMON_ROOT = os.path.abspath(args.code)
    if args.role == "consumer":
        run_consumer(args)
        return
    if args.role == "relay":
        run_relay(args)
        return
    if DAEMON_ROOT != ROOT:
        print(f"daemons run from {DAEMON_ROOT}")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; RabbitMQ "
          f"{AMQP_URL.split('@')[-1]}, MariaDB {MARIADB_URL.split('@')[-1]}", flush=True)
    if not args.skip_throughput:
        run_throughput(args)
    if not args.skip_latency:
        run_latency(args)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
