"""twistd plugin ``centaure-all``: every connector in one process."""

from connector.reactor import install_asyncio_reactor

install_asyncio_reactor()

from twisted.application.service import ServiceMaker  # noqa: E402

centaure_all = ServiceMaker(
    "centaure-all",
    "centaure.all",
    "Every Centaure connector in one process",
    "centaure-all",
)
