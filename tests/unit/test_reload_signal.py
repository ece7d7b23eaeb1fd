"""One SIGHUP reaches every connector of the process, whatever order they started in."""

from __future__ import annotations

import os
import signal
import time

from connector.reload import reload_on_sighup


class ImmediateReactor:
    """Runs what is handed to the reactor thread at once (the signal arrives on the main thread)."""

    def callFromThread(self, f, *args):  # noqa: N802 - Twisted's name
        f(*args)


def test_every_chained_reload_runs_on_one_signal():
    before = signal.getsignal(signal.SIGHUP)
    calls = []
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        reactor = ImmediateReactor()
        for name in ("alerter", "snmp", "traps"):
            reload_on_sighup(reactor, lambda name=name: calls.append(name))
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGHUP, before)
    assert sorted(calls) == ["alerter", "snmp", "traps"]
