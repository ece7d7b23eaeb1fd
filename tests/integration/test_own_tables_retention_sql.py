"""Old rows of the correlator's and the alerter's own tables go, on real MariaDB and PostgreSQL.

The scenarios of tests/unit/test_alarms_retention.py and test_alerter_retention.py,
run on this machine's MariaDB 10.11 and PostgreSQL 15 (refs up to 2**64 - 1 as the
servers store them, batched deletes, the daemon's own timer):

* the correlator deletes the rows of alarms cleared long ago, keeps active, recently
  cleared and flapping ones, and goes on handling alarms, one raised again after its
  row was purged included (a new alarm, nothing lost);
* the alerter deletes silences ended long ago, old sent and failed notifications and
  the last-told records of alarms in no group; active silences still hold alarms; the
  daemon (embedded bus) purges on its schedule and goes on routing alarms.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
import sqlalchemy as sa

from connector_alarms import migrate as alarms_migrate
from connector_alarms.retention import GRACE
from connector_alarms.store import StateStore
from connector_alerter import migrate as alerter_migrate
from connector_alerter.outbox import OutboxStore
from tests.conftest import SQL_URLS
from tests.integration.support import drop_prefixed_tables
from tests.unit import test_alarms_retention as corr
from tests.unit import test_alerter_retention as alert

pytestmark = pytest.mark.integration
DAY = 86400.0


@pytest.fixture(params=sorted(SQL_URLS))
def url(request):
    return SQL_URLS[request.param]


@pytest.fixture
def table_prefix(url):
    p = f"r{uuid.uuid4().hex[:8]}_"
    yield p
    drop_prefixed_tables(url, p)


@pytest.fixture
def corr_store(url, table_prefix):
    engine = sa.create_engine(url)
    alarms_migrate.upgrade(engine, table_prefix)
    yield StateStore(engine, table_prefix)
    engine.dispose()


@pytest.fixture
def alert_store(url, table_prefix):
    engine = sa.create_engine(url)
    alerter_migrate.upgrade(engine, table_prefix)
    yield OutboxStore(engine, table_prefix)
    engine.dispose()


def test_correlator_purge_takes_old_cleared_rows_only(corr_store):
    rows = corr.scenario_rows()
    corr.save_states(corr_store, *rows)
    before = corr.NOW - DAY - GRACE
    assert corr_store.purge_cleared(before, batch=2) == len(corr.PURGED)
    assert corr.refs(corr_store.engine, corr_store) == sorted({r.ref for r in rows} - corr.PURGED)
    assert corr_store.purge_cleared(before, batch=2) == 0


def test_correlator_purge_pages_cover_every_ref(corr_store):
    big = [corr.record(2**63 + i, "r1", cleared_ago=10 * DAY) for i in range(5)]
    small = [corr.record(i, "r1", cleared_ago=10 * DAY) for i in range(1, 6)]
    corr.save_states(corr_store, *big, *small, corr.record(2**64 - 1, "r1", active=True))
    assert corr_store.purge_cleared(corr.NOW - DAY, batch=3) == 10
    assert corr.refs(corr_store.engine, corr_store) == [2**64 - 1]


def test_correlator_loads_are_the_same_with_and_without_the_purge(corr_store):
    corr.test_the_purge_takes_exactly_what_no_load_reads_any_more(corr_store)


def test_correlator_loads_a_cleared_alarm_shown_flapping(corr_store):
    corr.test_load_reads_a_cleared_alarm_shown_flapping_whatever_its_age(corr_store)


def test_correlator_row_raised_again_during_the_purge_stays(corr_store):
    corr.test_a_row_raised_again_during_the_purge_stays(corr_store)


def test_correlator_alarm_raised_again_after_its_purge_is_new(corr_store):
    corr.test_raised_again_after_its_row_was_purged_is_a_new_alarm(corr_store)


@pytest_twisted.ensureDeferred
async def test_correlator_daemon_purges_and_goes_on(url, table_prefix, tmp_path):
    await corr.daemon_purges_and_goes_on(url, table_prefix, tmp_path)


def test_alerter_outbox_purge_keeps_pending_and_recent(alert_store):
    alert.test_outbox_purge_in_batches_keeps_pending_and_recent(alert_store)


def test_alerter_silences_ended_long_ago_go(alert_store):
    alert.test_silences_ended_before_the_retention_go(alert_store)


@pytest_twisted.ensureDeferred
async def test_alerter_housekeeping_on_schedule(alert_store, monkeypatch):
    await alert.housekeeping_purges_on_schedule(alert_store, monkeypatch)


@pytest_twisted.ensureDeferred
async def test_alerter_daemon_purges_and_goes_on(url, table_prefix, tmp_path):
    await alert.alerter_daemon_purges_and_goes_on(url, table_prefix, tmp_path)
