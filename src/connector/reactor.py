"""The reactor choice: Twisted's asyncio reactor, unless another one is already installed.

No Centaure code needs asyncio: the daemons use Twisted's own APIs only
(``defer.ensureDeferred`` drives coroutines on any reactor) and no product
module imports pysnmp (the tests use its codec and USM, which run no event
loop). The daemons measured under ``twistd --reactor=asyncio`` and
``--reactor=epoll`` (``bench/bench_reactor.py``; docs/performance.md,
"Reactor choice") cost the same CPU per trap, per varbind polled and per
metric stored, within the spread of the runs. The asyncio reactor stays the
default because it is the one the tests run; a reactor chosen with
``twistd --reactor=NAME`` is kept.
"""

from __future__ import annotations

import sys


def install_asyncio_reactor() -> None:
    """Install the asyncio reactor unless a reactor is already installed."""
    if "twisted.internet.reactor" in sys.modules:
        return
    import asyncio

    from twisted.internet import asyncioreactor

    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
