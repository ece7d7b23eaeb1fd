"""Helpers for integration tests against the real broker."""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pika
import pytest
import yaml
from twisted.internet import defer, reactor, task, threads

from centaure.shipped import example_path
from connector import messages
from connector.settings import load_settings
from tests.conftest import AMQP_URL, MARIADB_URL, rabbitmqctl, settings_text
from tests.integration.daemons import TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port


def perf(i: int, host: str = "dev") -> messages.Perf:
    """A perf message carrying its sequence number ``i``."""
    return messages.Perf(
        source="test@testnode", host=f"{host}{i % 7}", address="127.0.0.1", device_type="test",
        metrics=[messages.Metric(name="seq", value=i, kind="gauge", oid="1.3.6.1.4.1.1")])


def seq_of(body: bytes) -> int:
    """The sequence number a ``perf`` body carries."""
    return int(messages.decode(body).metrics[0].value)


def declare_check_queue(prefix: str, msg_type: str = "perf") -> str:
    """A durable queue that receives every ``msg_type`` message of ``prefix``."""
    name = f"{prefix}.check"
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.exchange_declare(exchange=f"{prefix}.{msg_type}", exchange_type="topic", durable=True)
    ch.queue_declare(queue=name, durable=True)
    ch.queue_bind(queue=name, exchange=f"{prefix}.{msg_type}", routing_key="#")
    conn.close()
    return name


def drain(queue: str, idle: float = 1.0) -> list[tuple[bytes, dict]]:
    """Every message of ``queue`` (body, headers), acked, in delivery order."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    out = []
    for method, props, body in ch.consume(queue, inactivity_timeout=idle):
        if method is None:
            break
        out.append((body, props))
        ch.basic_ack(method.delivery_tag)
    ch.cancel()
    conn.close()
    return out


def collect(queue: str, want: int, timeout: float = 30, settle: float = 1.0) -> list[tuple]:
    """(properties, body) of ``queue``'s messages: ``want`` of them, then ``settle`` s for extras.

    Returns what came by ``timeout`` if fewer did: the caller asserts on it.
    """
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    got: list[tuple] = []
    deadline = time.monotonic() + timeout
    extra_until = None
    try:
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                got.append((props, body))
                continue
            now = time.monotonic()
            if len(got) >= want:
                extra_until = extra_until or now + settle
                if now >= extra_until:
                    break
            elif now > deadline:
                break
            time.sleep(0.05)
    finally:
        conn.close()
    return got


def assert_all_in_order(seqs: list[int], n: int) -> None:
    """Every 0..n-1 arrived, and first arrivals are in publish order.

    Redeliveries after a failure are allowed (at-least-once); losses are not.
    """
    missing = sorted(set(range(n)) - set(seqs))
    assert not missing, f"{len(missing)} message(s) lost, e.g. {missing[:10]}"
    first = []
    seen = set()
    for s in seqs:
        if s not in seen:
            seen.add(s)
            first.append(s)
    out_of_order = [(a, b) for a, b in zip(first, first[1:]) if b < a]
    assert not out_of_order, f"first arrivals out of order, e.g. {out_of_order[:5]}"


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def wait_until(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await sleep(step)


async def until_while_alive(daemons, predicate, what: str, timeout: float,
                            seen: Callable[[], object] = lambda: "") -> None:
    """Poll ``predicate`` while every daemon runs; fail naming ``what``, ``seen()`` and the last logs."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for d in daemons:
            assert d.alive(), d.logs()[-3000:]
        assert time.monotonic() < deadline, \
            f"timed out waiting for {what}: {seen()}\n{daemons[-1].logs()[-3000:]}"
        await sleep(0.05)


async def ctl(*args: str) -> str:
    """rabbitmqctl, off the reactor thread."""
    return await threads.deferToThread(rabbitmqctl, *args)


async def start_bus(settings_path: str, app_id: str = "test"):
    """An AMQP bus service for ``settings_path``, started and connected."""
    from connector.amqp.bus import AMQPBus

    s = load_settings(settings_path)
    bus = AMQPBus(reactor, s.bus, s.buffer, app_id)
    await bus.startService()
    await wait_until(lambda: bus.connected, 20, "the bus to connect")
    return bus


async def publish_paced(publisher, n: int, rate: float, start: int = 0) -> list[defer.Deferred]:
    """Publish ``start``..``n-1`` at about ``rate`` messages/s; return their Deferreds."""
    ds = []
    chunk = max(1, int(rate / 50))
    t0 = time.monotonic()
    for i in range(start, n):
        ds.append(publisher.publish(perf(i)))
        if (i - start) % chunk == chunk - 1:
            ahead = (i - start + 1) / rate - (time.monotonic() - t0)
            await sleep(max(ahead, 0))
    return ds


async def settle(bus, timeout: float = 60) -> None:
    """Wait until the publisher has nothing buffered or in flight."""
    p = bus.publisher("test")
    await wait_until(lambda: p.backlog == 0 and p.in_flight == 0, timeout,
                     f"the publisher to drain (backlog {p.backlog}, in flight {p.in_flight})")


def declare_consumer_queues(prefix: str, *connectors: str, dead_letters: bool = False) -> None:
    """What ``centaure bus-config`` declares for these connectors: queues and bindings."""
    from connector.topology import connector_queue, dead_letter_queue

    specs = [connector_queue(prefix, name) for name in connectors]
    if dead_letters:
        specs.append(dead_letter_queue(prefix))
    declare_specs(specs)


def declare_specs(specs) -> None:
    """Declare these queues, their exchanges and bindings, as ``bus-config`` does."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    for spec in specs:
        for b in spec.bindings:
            ch.exchange_declare(exchange=b.exchange, exchange_type="topic", durable=True)
        ch.queue_declare(queue=spec.name, durable=True, arguments=spec.arguments)
        for b in spec.bindings:
            ch.queue_bind(queue=spec.name, exchange=b.exchange, routing_key=b.pattern)
    conn.close()


def queue_depth(name: str) -> int:
    """Messages ready in queue ``name``."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return conn.channel().queue_declare(queue=name, passive=True).method.message_count
    finally:
        conn.close()


@pytest.fixture
def sql_tables() -> Iterator[dict[str, str]]:
    """Table prefixes of the test's own for the daemons that keep SQL tables (``db``,
    ``correlator``, ``alerter``); every table they begin on MariaDB is dropped at the end."""
    tag = uuid.uuid4().hex[:8]
    names = {"db": f"w{tag}_", "correlator": f"c{tag}_", "alerter": f"a{tag}_"}
    yield names
    drop_prefixed_tables(MARIADB_URL, tuple(names.values()))


def drop_prefixed_tables(url: str, table_prefix: str | tuple[str, ...]) -> None:
    """Drop every table whose name starts with ``table_prefix`` (test clean-up)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        md = sa.MetaData()
        md.reflect(engine, only=lambda name, _md: name.startswith(table_prefix))
        md.drop_all(engine)
    finally:
        engine.dispose()


def publish_confirmed(prefix: str, items: Iterable[messages.MessageBase]) -> None:
    """As the daemons publish: to ``<prefix>.<type>`` with the message's routing key,
    persistent, with a message id, each confirmed by the broker."""
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for m in items:
            ch.basic_publish(messages.exchange_name(prefix, m.msg_type), messages.routing_key(m),
                             messages.encode(m),
                             pika.BasicProperties(message_id=uuid.uuid4().hex, type=m.msg_type,
                                                  delivery_mode=2))
    finally:
        conn.close()


def run_on_embedded_bus(plugin: str, folder: Path, reload: str | None = None,
                        **sections: dict[str, str]) -> tuple[str, str]:
    """Run ``twistd <plugin>`` on the embedded bus in ``folder`` (an empty inventory, /health
    on a free port, ``sections`` added to its settings.ini) until /health says 200; with
    ``reload``, send it SIGHUP and wait for that log line; then stop it.

    Returns its log as it was once healthy (before any reload) and as it is at the end.
    """
    (folder / "inventory.yaml").write_text("devices: []\n")
    port = free_tcp_port()
    settings = folder / "settings.ini"
    connector = dict(sections.pop("connector", {}), http_port=str(port))
    settings.write_text(settings_text("centaure", folder, url="embedded", connector=connector,
                                      **sections))
    daemon = TwistdDaemon(plugin, settings, http_port=port)
    try:
        daemon.wait_health(lambda status, body: status == 200, timeout=60)
        started = daemon.logs()
        if reload is not None:
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.wait_log(reload)
    finally:
        daemon.stop()
    return started, daemon.logs()


def connector_metrics(http_port: int, connector: str) -> dict[str, float]:
    """A daemon's ``/metrics`` of one connector: name (no ``centaure_`` nor ``_total``) ->
    value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or f'connector="{connector}"' not in line:
            continue
        name, _, value = line.rpartition(" ")
        out[name.split("{")[0].removeprefix("centaure_").removesuffix("_total")] = float(value)
    return out


def traps_folder(folder: Path) -> tuple[int, int]:
    """A trap receiver's files in ``folder`` (the shipped traps.yaml, an inventory of one
    switch ``sw-core`` at 127.0.0.1); a free UDP port for its traps and a TCP one for
    /health."""
    from tests.snmp.snmpd import free_udp_port

    shutil.copy(example_path("traps.yaml"), folder / "traps.yaml")
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": "sw-core", "address": "127.0.0.1", "device_type": "switch"}]}))
    return free_udp_port(), free_tcp_port()


def traps_settings(folder: Path, prefix: str, port: int, http_port: int,
                   url: str = AMQP_URL, traps: dict[str, str] | None = None,
                   connector: dict[str, str] | None = None,
                   **sections: dict[str, str]) -> Path:
    """Write ``folder``/settings.ini for a trap receiver of :func:`traps_folder` listening
    on ``port`` (``traps``, ``connector`` and ``sections`` added); its path."""
    path = folder / "settings.ini"
    path.write_text(settings_text(
        prefix, folder, url=url, inventory={"path": "inventory.yaml"},
        traps={"listen": f"127.0.0.1:{port}", "definitions": "traps.yaml", **(traps or {})},
        connector={"http_port": str(http_port), "node": "testnode", **(connector or {})},
        **sections))
    return path


class UdpLoop:
    """A UDP socket on 127.0.0.1 (``port``, or any free one) served by a thread that hands
    each datagram to :meth:`handle` until :meth:`close`."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        # Short, so that close() is seen quickly.
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def handle(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram from ``addr``."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.handle(data, addr)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
