"""The alarm correlator connector (centaure-correlator): events, snapshots and thresholds to alarms."""

from connector.registry import ConnectorSpec
from connector.service import Options, makeService as _make

__all__ = ["CONNECTOR", "Options", "makeService"]

#: What this connector declares of itself (entry point ``centaure.connectors``).
CONNECTOR = ConnectorSpec(
    name="correlator",
    build="connector_alarms.service:build",
    consumes=("event", "alarm_snapshot", "threshold", "alarm_command"),
    publishes=("alarm",),
    commands="connector_alarms.cli:add_commands",
    start_order=40,
)


def makeService(options):
    """The correlator alone in its process (``twistd centaure-correlator``)."""
    return _make(options, [CONNECTOR.name], CONNECTOR.name)
