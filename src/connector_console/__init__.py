"""The web console (centaure-console): the live alarm board, alarm pages and operators' commands."""

from connector.registry import ConnectorSpec
from connector.service import Options, makeService as _make

__all__ = ["CONNECTOR", "Options", "makeService"]

#: What this connector declares of itself (entry point ``centaure.connectors``).
CONNECTOR = ConnectorSpec(
    name="console",
    build="connector_console.service:build",
    consumes=("alarm",),
    publishes=("alarm_command",),
    commands="connector_console.cli:add_commands",
    start_order=60,
)


def makeService(options):
    """The console alone in its process (``twistd centaure-console``)."""
    return _make(options, [CONNECTOR.name], CONNECTOR.name)
