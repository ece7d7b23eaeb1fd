"""The alerter connector (centaure-alerter): threshold rules on the perf stream, notifications."""

from connector.registry import ConnectorSpec
from connector.service import Options, makeService as _make

__all__ = ["CONNECTOR", "Options", "makeService"]

#: What this connector declares of itself (entry point ``centaure.connectors``).
CONNECTOR = ConnectorSpec(
    name="alerter",
    build="connector_alerter.service:build",
    consumes=("perf", "alarm"),
    publishes=("threshold", "notification"),
    commands="connector_alerter.cli:add_commands",
    start_order=50,
)


def makeService(options):
    """The alerter alone in its process (``twistd centaure-alerter``)."""
    return _make(options, [CONNECTOR.name], CONNECTOR.name)
