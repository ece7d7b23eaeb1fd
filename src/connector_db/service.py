"""The ``centaure-db`` connector: the bus's messages, stored in SQL.

Start-up: the schema is made ready (created or upgraded by the Alembic
migrations with ``[db] migrate = auto``, only checked with ``check``) on a
thread, retried with backoff while the database is unreachable (or another
process holds the upgrade lock); a schema this code cannot use (not upgraded
under ``check``, or newer than this code) stops the process with one line
and exit code 1. Only then does the connector subscribe to its queue
(``<prefix>.db``), so nothing is taken from the bus before it can be
written. Messages go to a :class:`~connector_db.writer.SqlWriter` over the
configured layout's store.

While the database is down, the writer keeps its batch and retries it; no
message is acked, the broker's prefetch window fills and everything else
waits in the queue. ``/health`` says ``degraded`` (HTTP 503) meanwhile.
"""

from __future__ import annotations


import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from connector import startup
from connector.retry import retry_in_thread
from connector.settings import mask_url
from connector.topology import connector_queue

from centaure_shared.storage.schema import make_schema
from .store import NormalizedStore
from .writer import SqlWriter
from centaure_shared.sql import error_summary, is_outage, make_engine

__all__ = ["CONNECTOR", "DbService", "build"]

CONNECTOR = "db"




def _device_ids(settings) -> dict[str, str]:
    """Inventory host name -> device id, for the per-device layout's table names."""
    from centaure_shared.inventory import load_optional_inventory

    inventory = load_optional_inventory(settings)
    return {} if inventory is None else {d.name: d.id or d.name for d in inventory}


class DbService(service.Service):
    """Makes the schema ready, then subscribes the writer to the ``db`` queue."""

    log = Logger()

    #: Seconds between two checks that the time partitions of the tables are made ahead.
    PARTITION_CHECK_INTERVAL = 3600.0

    def __init__(self, runtime, engine: sa.Engine, store_factory, partition_check=None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.db = self.settings.section("db")
        self.engine = engine
        self.store_factory = store_factory
        self.counters = runtime.counters(CONNECTOR)
        self.writer: SqlWriter | None = None
        self.schema_state = "waiting"
        self.schema_error: str | None = None
        self._starting: defer.Deferred | None = None
        self._stopping = False
        # partition_check(): the partitions made, None when a maintenance pass holds the lock.
        self.partition_check = partition_check
        self._partition_loop: task.LoopingCall | None = None
        runtime.health_checks[CONNECTOR] = self.health

    def startService(self) -> None:
        super().startService()
        self._starting = defer.ensureDeferred(self._start())
        self._starting.addErrback(self._start_failed)

    def _start_failed(self, failure) -> None:
        """A start-up step failed for good: the process stops with one line saying why."""
        if self._stopping:
            return
        self.schema_state, self.schema_error = "failed", error_summary(failure.value)
        startup.fail_start(CONNECTOR, failure, self.schema_error, self.runtime.reactor)

    async def _start(self) -> None:
        revision = await self._schema_ready()
        if revision is None:
            return  # stopped while waiting
        self.schema_state, self.schema_error = "ready", None
        self.log.info("database {url} ready (schema {rev}, layout {layout})",
                      url=mask_url(self.settings.database.url.reveal()), rev=revision,
                      layout=self.db.layout)
        if self.partition_check is not None:
            await self._check_partitions()
            self._partition_loop = task.LoopingCall(self._check_partitions)
            self._partition_loop.clock = self.runtime.reactor
            self._partition_loop.start(self.PARTITION_CHECK_INTERVAL, now=False)
        store = await threads.deferToThread(self.store_factory)
        if self._stopping:
            # Stopped while starting: no writer (its thread would keep the process alive).
            return
        self.writer = SqlWriter(store, self.runtime.reactor, batch_size=self.db.batch_size,
                                batch_interval=self.db.batch_interval,
                                retry_initial=self.db.retry_initial,
                                retry_max=self.db.retry_max,
                                name=self.db.table_prefix or CONNECTOR,
                                counters=self.counters)
        queue = connector_queue(self.settings.bus.exchange_prefix, CONNECTOR,
                                self.settings.bus.queue_type)
        self.runtime.bus.subscriber(CONNECTOR).subscribe(queue, self.writer)

    async def _schema_ready(self) -> str | None:
        """Create/upgrade or check the schema; wait out outages. The revision."""
        from . import migrate

        prefix = self.db.table_prefix

        def step() -> str:
            if self.db.migrate == "auto":
                return migrate.upgrade(self.engine, prefix)
            # The upgrade hint names the settings file this process was started with.
            return migrate.MIGRATIONS.check(self.engine, prefix,
                                            self.settings.source or "settings.ini")

        def waiting(exc: BaseException) -> None:
            self.schema_state, self.schema_error = "waiting", error_summary(exc)

        def transient(exc: BaseException) -> bool:
            # Waiting helps while the server is down or another process holds
            # the upgrade lock; a schema that is not the one this code needs
            # (not upgraded under migrate = check, or newer than this code)
            # stays so until someone acts: the process stops and says what to do.
            return is_outage(exc) or isinstance(exc, migrate.MigrationLockTimeout)

        return await retry_in_thread(
            self.runtime.reactor, step, transient,
            self.db.retry_initial, self.db.retry_max, "database schema",
            lambda: self._stopping, waiting)

    async def _check_partitions(self) -> None:
        """Make tomorrow's partitions of every partitioned table if missing (samples, events,
        alarm history, thresholds, notifications); a failure is logged, not fatal.

        A catch-all partition takes rows meanwhile, so a failed check loses nothing.
        """
        try:
            made = await threads.deferToThread(self.partition_check)
        except Exception as exc:
            self.log.warn("time partitions not checked: {error}",
                          error=error_summary(exc))
            return
        if made:
            self.log.info("time partitions made ahead: {names}", names=", ".join(made))

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        if self._partition_loop is not None and self._partition_loop.running:
            self._partition_loop.stop()
        super().stopService()
        if self.writer is not None:
            yield self.writer.close()
        yield threads.deferToThread(self.engine.dispose)

    def health(self) -> dict:
        """Schema state and the writer's health, for /health and heartbeats."""
        body = {"schema": self.schema_state, "layout": self.db.layout}
        if self.writer is not None:
            body.update(self.writer.health())
        else:
            body["degraded"] = True
            body["last_error"] = self.schema_error
        return body


def build(runtime) -> DbService:
    """The SQL writer of ``runtime``'s process (no I/O here: it starts in startService)."""
    settings = runtime.settings
    db = settings.section("db")
    url = settings.database.url.reveal()
    try:
        engine = make_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
        raise ValueError(f"[database] url {mask_url(url)}: {e}") from None
    schema = make_schema(db.table_prefix)

    def store_factory():
        normalized = NormalizedStore(engine, schema)
        if db.layout == "normalized":
            return normalized
        from .per_device import PerDeviceStore

        return PerDeviceStore.from_settings(engine, db, _device_ids(settings), normalized)

    from .maintain import Retention, ensure_partitions

    retention = Retention.from_settings(settings.section("retention"))

    def partition_check():
        return ensure_partitions(engine, schema, retention)

    return DbService(runtime, engine, store_factory, partition_check)

