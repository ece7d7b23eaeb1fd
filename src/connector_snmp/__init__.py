"""The SNMP poller connector (centaure-snmp)."""

from connector.registry import ConnectorSpec
from connector.service import Options, makeService as _make

__all__ = ["CONNECTOR", "Options", "makeService"]

#: What this connector declares of itself (entry point ``centaure.connectors``).
CONNECTOR = ConnectorSpec(
    name="snmp",
    build="connector_snmp.service:build",
    consumes=(),
    publishes=("perf", "alarm_snapshot"),
    commands="connector_snmp.cli:add_commands",
    start_order=10,
)


def makeService(options):
    """The poller alone in its process (``twistd centaure-snmp``)."""
    return _make(options, [CONNECTOR.name], CONNECTOR.name)
