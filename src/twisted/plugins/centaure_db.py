"""twistd plugin ``centaure-db``: the SQL writer."""

from connector.reactor import install_asyncio_reactor

install_asyncio_reactor()

from twisted.application.service import ServiceMaker  # noqa: E402

centaure_db = ServiceMaker(
    "centaure-db",
    "connector_db",
    "Centaure SQL writer: perf, events, alarms, thresholds and notifications to SQL",
    "centaure-db",
)
