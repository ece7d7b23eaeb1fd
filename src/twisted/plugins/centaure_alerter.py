"""twistd plugin ``centaure-alerter``: threshold rules and notifications."""

from connector.reactor import install_asyncio_reactor

install_asyncio_reactor()

from twisted.application.service import ServiceMaker  # noqa: E402

centaure_alerter = ServiceMaker(
    "centaure-alerter",
    "connector_alerter",
    "Centaure alerter: threshold rules on the perf stream, notifications",
    "centaure-alerter",
)
