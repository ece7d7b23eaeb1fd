"""Shared fixtures: the real RabbitMQ of this machine, isolated per test.

pytest runs with ``-p pytest_twisted --reactor=asyncio`` (pyproject.toml), so
the asyncio reactor is installed before any test imports the reactor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

import pytest

# Real SNMP agents (net-snmp snmpd, snmpsim) as fixtures for every test module.
pytest_plugins = ["tests.snmp.fixtures", "tests.snmp.simfixtures"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMQP_URL = os.environ.get("CENTAURE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
MARIADB_URL = os.environ.get("CENTAURE_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
POSTGRESQL_URL = os.environ.get("CENTAURE_TEST_POSTGRESQL",
                                "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
#: The real SQL servers of this machine, for tests parametrized over both.
SQL_URLS = {"mariadb": MARIADB_URL, "postgresql": POSTGRESQL_URL}


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run rabbitmqctl and return its output; raise with its stderr on failure."""
    r = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def _broker_accepts_connections() -> bool:
    """True if an AMQP connection to the test broker opens (its app runs)."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
        return True
    except Exception:
        return False


def restore_broker() -> None:
    """Undo what fault tests do to the broker (safe to call any time)."""
    # Each rabbitmqctl run starts an Erlang VM (about a second): start_app and
    # await_startup only when the app is not serving.
    serving = _broker_accepts_connections()
    if not serving:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "set_vm_memory_high_watermark", "0.4"],
                   capture_output=True, timeout=60)
    if not serving:
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], capture_output=True, timeout=120)


@pytest.fixture
def prefix():
    """A unique exchange prefix: tests never see each other's messages.

    Every exchange and queue named with it is deleted afterwards, by the
    session's :class:`BrokerJanitor`, within seconds of the test's end.
    """
    p = f"t{uuid.uuid4().hex[:10]}"
    yield p
    _janitor.add(p)


def _delete_prefixed(*prefixes: str) -> bool:
    """Delete every queue and exchange named with one of ``prefixes``; False if the
    broker could not be listed or reached (nothing is lost: try again later)."""
    import pika

    starts = tuple(p + "." for p in prefixes)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception:
        return False
    try:
        ch = conn.channel()
        for kind, delete in (("list_queues", ch.queue_delete),
                             ("list_exchanges", ch.exchange_delete)):
            r = subprocess.run(["rabbitmqctl", "-q", kind, "name"], capture_output=True,
                               text=True, timeout=120)
            if r.returncode != 0:
                return False
            for name in r.stdout.split():
                if name.startswith(starts):
                    delete(name)
        return True
    except Exception:
        return False
    finally:
        try:
            conn.close()
        except Exception:
            pass


class BrokerJanitor:
    """Deletes the queues and exchanges of finished tests' prefixes, in batches, off the
    tests' path.

    Listing the broker's queues takes a ``rabbitmqctl`` run (an Erlang VM start: about
    a second each, two per cleanup); one listing in a thread of its own serves every
    prefix finished meanwhile, instead of two runs in every test's teardown.
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    def add(self, prefix: str) -> None:
        with self._lock:
            self._pending.append(prefix)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="broker-janitor",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self.interval)
            self._sweep()

    def _sweep(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch and not _delete_prefixed(*batch):
            with self._lock:  # the broker is down for a fault test: next round
                self._pending[:0] = batch

    def close(self) -> None:
        """Stop the thread and clean what is left (once more if the broker was down)."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=300)
        self._sweep()


_janitor = BrokerJanitor()


@pytest.fixture(scope="session", autouse=True)
def _broker_janitor():
    yield _janitor
    _janitor.close()


@pytest.fixture
def broker_guard():
    """Restores the broker's app state and memory watermark, even on failure."""
    yield
    restore_broker()


def settings_text(prefix: str, tmp_path, url: str = AMQP_URL, **extra: dict) -> str:
    """A settings file for a test: real broker, buffer in ``tmp_path``."""
    sections = {
        "bus": {"url": url, "exchange_prefix": prefix, "heartbeat": "5s",
                "confirm_timeout": "5s", "backoff_initial": "0.2s", "backoff_max": "2s",
                "retry_delay": "0.1s", "retry_limit": "2"},
        "buffer": {"path": str(tmp_path / "buffer-{connector}.sqlite3")},
        "connector": {"http_port": "0", "status_interval": "1s", "node": "testnode"},
        # centaure-all runs the web console too: any free port, never a fixed one.
        "console": {"port": "0"},
    }
    for section, values in extra.items():
        sections.setdefault(section, {}).update(values)
    return "\n".join(
        f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in kv.items()) + "\n"
        for s, kv in sections.items())


@pytest.fixture
def write_settings(tmp_path, prefix):
    """Write a settings file for ``prefix``; returns its path."""

    def write(**extra) -> str:
        path = tmp_path / "settings.ini"
        path.write_text(settings_text(prefix, tmp_path, **extra))
        return str(path)

    return write


PYTHON = sys.executable


@pytest.fixture(params=["sqlite", "mariadb"])
def sql_database(request, tmp_path):
    """(url, engine, unique table name) on SQLite and on the real MariaDB.

    The table is dropped afterwards. MariaDB being down fails the test: the
    test command starts it, so a skip would only hide a broken setup.
    """
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/test.sqlite3" if request.param == "sqlite" else MARIADB_URL
    engine = sa.create_engine(url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield url, engine, name
    finally:
        sa.Table(name, sa.MetaData()).drop(engine, checkfirst=True)
        engine.dispose()


@pytest.fixture
def rabbit_cluster(rabbit_cluster_session):
    """The session's 3-node RabbitMQ cluster, every node running: a node that an
    earlier test started again in the background (``Cluster.start_again``) is waited for."""
    rabbit_cluster_session.ready()
    return rabbit_cluster_session


@pytest.fixture(scope="session")
def rabbit_cluster_session():
    """A 3-node RabbitMQ cluster on free ports, started once per run for the tests that ask.

    Its nodes and folder are removed at the end. If it cannot start, the
    tests that use it error with the reason.
    """
    import tempfile
    from pathlib import Path

    from tests.cluster import Cluster

    cluster = Cluster(Path(tempfile.mkdtemp(prefix="centaure-cluster-")))
    try:
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    try:
        yield cluster
    finally:
        cluster.destroy()
