"""twistd plugin ``centaure-console``: the web console."""

from connector.reactor import install_asyncio_reactor

install_asyncio_reactor()

from twisted.application.service import ServiceMaker  # noqa: E402

centaure_console = ServiceMaker(
    "centaure-console",
    "connector_console",
    "Centaure web console: live alarm board, alarm pages, operators' commands",
    "centaure-console",
)
