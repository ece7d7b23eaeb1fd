"""What every ``centaure`` subcommand shares: a coroutine run on the reactor, one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from connector.reactor import install_asyncio_reactor

__all__ = ["require_broker", "run_on_reactor"]


def run_on_reactor(name: str, coro_fn: Callable[..., Awaitable[int | None]], *args: Any) -> int:
    """Run ``coro_fn(reactor, *args)`` on the reactor; return its exit code.

    An exception ends the command with one line naming it (no traceback) and
    exit code 1.
    """
    install_asyncio_reactor()
    from twisted.internet import defer, task

    result = {"code": 0}

    async def main(reactor) -> None:
        try:
            result["code"] = await coro_fn(reactor, *args) or 0
        except Exception as e:
            print(f"centaure {name}: {e.__class__.__name__}: {e}", file=sys.stderr)
            result["code"] = 1

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return e.code if isinstance(e.code, int) else 1
    return result["code"]


def require_broker(settings: Any) -> None:
    """Stop the command with one line unless ``[bus] url`` names a real broker."""
    if [u.reveal() for u in settings.bus.urls] == ["embedded"]:
        raise SystemExit("centaure: [bus] url is 'embedded': there is no broker to talk to "
                         "(set [bus] url to amqp://... in the settings file)")
