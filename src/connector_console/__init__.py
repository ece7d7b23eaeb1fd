"""The web console (centaure-console): the live alarm board, alarm pages and operators' commands."""

from connector.registry import ConnectorSpec
from connector.service import Options, makeService as _make

__all__ = ["CONNECTOR", "Options", "makeService"]

#: What this connector declares of itself (entry point ``centaure.connectors``).
CONNECTOR = ConnectorSpec(
    name="console",
    build="connector_console.service:build",
    # Alarms for the board, heartbeats for the connectors' table.
    consumes=("alarm", "status"),
    publishes=("alarm_command",),
    commands="connector_console.cli:add_commands",
    start_order=60,
    # Both views are rebuilt at start (alarms from SQL, heartbeats as they come).
    bounded_queue=True,
)


def makeService(options):
    """The console alone in its process (``twistd centaure-console``)."""
    return _make(options, [CONNECTOR.name], CONNECTOR.name)
