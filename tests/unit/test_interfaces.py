"""Every ``@implementer`` in src/ provides its interface: ``verifyClass``, and
``verifyObject`` on an instance wherever one is cheap to build."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from twisted.internet import task
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface.verify import verifyClass, verifyObject

from centaure_shared.storage.schema import make_schema
from connector.amqp.bus import AMQPBus, _Subscriber as AMQPBusSubscriber
from connector.amqp.connection import FailoverEndpoint
from connector.embedded import EmbeddedBus, EmbeddedPublisher, EmbeddedSubscriber
from connector.interfaces import (IBatchStore, IBus, IMembership, IMessageHandler, IPublisher,
                                  IStore, ISubscriber)
from connector.membership import SingleNodeMembership
from connector.publisher import ReliablePublisher
from connector_alarms.service import CorrelatorService
from connector_alarms.store import IAlarmStateStore, StateStore
from connector_alerter.channels import (CommandChannel, EmailChannel, INotifierChannel,
                                        WebhookChannel)
from connector_alerter.outbox import IOutboxStore, OutboxStore
from connector_alerter.service import AlerterService
from connector_alerter.state import EvalStateStore, StateSaver
from connector_db.per_device import PerDeviceStore
from connector_db.store import NormalizedStore
from connector_db.writer import SqlWriter

CLASSES = [
    (IBus, AMQPBus), (ISubscriber, AMQPBusSubscriber),
    (IStreamClientEndpoint, FailoverEndpoint), (IPublisher, ReliablePublisher),
    (IBus, EmbeddedBus), (IPublisher, EmbeddedPublisher), (ISubscriber, EmbeddedSubscriber),
    (IMembership, SingleNodeMembership),
    (IStore, NormalizedStore), (IStore, PerDeviceStore),
    (IMessageHandler, SqlWriter), (IBatchStore, SqlWriter),
    (IMessageHandler, CorrelatorService), (IBatchStore, CorrelatorService),
    (IMessageHandler, AlerterService), (IBatchStore, StateSaver),
    (IAlarmStateStore, StateStore), (IOutboxStore, OutboxStore),
    (INotifierChannel, EmailChannel), (INotifierChannel, WebhookChannel),
    (INotifierChannel, CommandChannel),
]


@pytest.mark.parametrize("iface, cls", CLASSES, ids=lambda x: x.__name__)
def test_class_implements(iface, cls):
    assert verifyClass(iface, cls)


@pytest.fixture
def engine(tmp_path):
    e = sa.create_engine(f"sqlite:///{tmp_path}/i.sqlite3")
    yield e
    e.dispose()


def test_embedded_bus_and_its_publisher_and_subscriber():
    bus = EmbeddedBus(task.Clock())
    assert verifyObject(IBus, bus)
    assert verifyObject(IPublisher, bus.publisher("t"))
    assert verifyObject(ISubscriber, bus.subscriber("t"))


def test_single_node_membership():
    assert verifyObject(IMembership, SingleNodeMembership("n1"))


def test_sql_writer_and_normalized_store(engine):
    store = NormalizedStore(engine, make_schema("c_"))
    assert verifyObject(IStore, store)
    w = SqlWriter(store, task.Clock())
    try:
        assert verifyObject(IMessageHandler, w) and verifyObject(IBatchStore, w)
    finally:
        w.stop_pool()


def test_alarm_state_store_and_outbox(engine):
    assert verifyObject(IAlarmStateStore, StateStore(engine, "corr_"))
    assert verifyObject(IOutboxStore, OutboxStore(engine, "alert_"))


def test_state_saver(engine):
    saver = StateSaver(task.Clock(), EvalStateStore(engine), dict)
    assert verifyObject(IBatchStore, saver)


def test_notifier_channels_registry():
    from connector_alerter.notifier import DeliveryOptions, Notifier
    from connector_alerter.routes import Routes

    n = Notifier(routes=Routes(()), store=None, publish=lambda m: None, reactor=task.Clock(),
                 options=DeliveryOptions())
    assert set(n.channels) == {"email", "webhook", "command"}
    for name, channel in n.channels.items():
        assert verifyObject(INotifierChannel, channel) and channel.name == name
