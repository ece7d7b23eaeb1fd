"""twistd plugin ``centaure-correlator``: the alarm correlator."""

from connector.reactor import install_asyncio_reactor

install_asyncio_reactor()

from twisted.application.service import ServiceMaker  # noqa: E402

centaure_correlator = ServiceMaker(
    "centaure-correlator",
    "connector_alarms",
    "Centaure alarm correlator: traps, polled alarm tables and thresholds to alarms",
    "centaure-correlator",
)
