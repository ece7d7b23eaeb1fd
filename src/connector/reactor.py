"""The reactor choice: Twisted's asyncio reactor, installed before any other.

pysnmp 7 only runs on asyncio, so every Centaure process (twistd plugins, the
``centaure`` command, the tests) runs Twisted on top of an asyncio loop. The
reactor must be installed before anything imports ``twisted.internet.reactor``.
"""

from __future__ import annotations

import sys


class ReactorError(RuntimeError):
    """Another reactor was installed first."""


def install_asyncio_reactor() -> None:
    """Install the asyncio reactor unless it already is the installed one."""
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        if type(reactor).__name__ != "AsyncioSelectorReactor":
            raise ReactorError(
                f"Centaure needs Twisted's asyncio reactor (pysnmp 7 is asyncio-only) "
                f"but {type(reactor).__name__} is already installed: run twistd with "
                f"--reactor=asyncio or import connector.reactor first"
            )
        return
    import asyncio

    from twisted.internet import asyncioreactor

    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
