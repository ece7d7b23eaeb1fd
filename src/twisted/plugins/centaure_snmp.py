"""twistd plugin ``centaure-snmp``: the SNMP poller."""

from connector.reactor import install_asyncio_reactor

install_asyncio_reactor()

from twisted.application.service import ServiceMaker  # noqa: E402

centaure_snmp = ServiceMaker(
    "centaure-snmp",
    "connector_snmp",
    "Centaure SNMP poller: polls devices, publishes perf and alarm_snapshot",
    "centaure-snmp",
)
