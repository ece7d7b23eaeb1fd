"""twistd plugin ``centaure-traps``: the SNMP trap and inform receiver."""

from connector.reactor import install_asyncio_reactor

install_asyncio_reactor()

from twisted.application.service import ServiceMaker  # noqa: E402

centaure_traps = ServiceMaker(
    "centaure-traps",
    "connector_traps",
    "Centaure trap receiver: SNMP v1/v2c/v3 traps and informs to event messages",
    "centaure-traps",
)
