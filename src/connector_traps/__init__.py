"""The SNMP trap and inform receiver connector (centaure-traps)."""

from connector.registry import ConnectorSpec
from connector.service import Options, makeService as _make

__all__ = ["CONNECTOR", "Options", "makeService"]

#: What this connector declares of itself (entry point ``centaure.connectors``).
CONNECTOR = ConnectorSpec(
    name="traps",
    build="connector_traps.service:build",
    consumes=(),
    publishes=("event",),
    commands=None,
    start_order=20,
)


def makeService(options):
    """The trap receiver alone in its process (``twistd centaure-traps``)."""
    return _make(options, [CONNECTOR.name], CONNECTOR.name)
