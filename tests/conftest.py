"""Shared fixtures: the real RabbitMQ of this machine, isolated per test.

pytest runs with ``-p pytest_twisted --reactor=asyncio`` (pyproject.toml), so
the asyncio reactor is installed before any test imports the reactor.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


def restore_broker() -> None:
    """Undo what fault tests do to the broker (safe to call any time)."""
    subprocess.run(["rabbitmqctl", "-q", "start_app"], capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "set_vm_memory_high_watermark", "0.4"],
                   capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "-q", "await_startup"], capture_output=True, timeout=120)


@pytest.fixture
def prefix():
    """A unique exchange prefix: tests never see each other's messages.

    Every exchange and queue named with it is deleted afterwards.
    """
    p = f"t{uuid.uuid4().hex[:10]}"
    yield p
    _delete_prefixed(p)


def _delete_prefixed(p: str) -> None:
    import pika

    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except Exception:
        return
    ch = conn.channel()
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True,
                         text=True).stdout.split()
    for name in out:
        if name.startswith(p + "."):
            ch.queue_delete(queue=name)
    out = subprocess.run(["rabbitmqctl", "-q", "list_exchanges", "name"], capture_output=True,
                         text=True).stdout.split()
    for name in out:
        if name.startswith(p + "."):
            ch.exchange_delete(exchange=name)
    conn.close()


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


@pytest.fixture(scope="session")
def rabbit_cluster():
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
