"""The SQL writer connector (centaure-db): bus messages stored with SQLAlchemy."""

from connector.registry import ConnectorSpec
from connector.service import Options, makeService as _make

__all__ = ["CONNECTOR", "Options", "makeService"]

#: What this connector declares of itself (entry point ``centaure.connectors``).
CONNECTOR = ConnectorSpec(
    name="db",
    build="connector_db.service:build",
    consumes=("perf", "event", "alarm", "threshold", "notification"),
    publishes=(),
    commands="connector_db.cli:add_commands",
    start_order=30,
)


def makeService(options):
    """The SQL writer alone in its process (``twistd centaure-db``)."""
    return _make(options, [CONNECTOR.name], CONNECTOR.name)
