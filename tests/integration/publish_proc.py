"""A publishing process for the kill -9 test.

Usage: publish_proc.py SETTINGS N ACCEPTED_FILE RATE

Publishes every sequence number in 0..N-1 not already listed in
ACCEPTED_FILE, at about RATE messages/s, and appends each number to that
file (flushed at once) when the publisher accepts it as durable. Exits 0 once
everything it published is confirmed by the broker.
"""

import os
import sys

from connector.reactor import install_asyncio_reactor

install_asyncio_reactor()

from twisted.internet import defer, task  # noqa: E402

from tests.integration.support import perf, settle, start_bus  # noqa: E402


async def main(reactor, settings, n, accepted_path, rate):
    done = set()
    if os.path.exists(accepted_path):
        with open(accepted_path) as f:
            done = {int(line) for line in f if line.strip()}
    out = open(accepted_path, "a", buffering=1)
    bus = await start_bus(settings)
    publisher = bus.publisher("test")
    print("ready", flush=True)
    todo = [i for i in range(n) if i not in done]
    ds = []
    chunk = max(1, int(rate / 50))
    for k, i in enumerate(todo):
        d = publisher.publish(perf(i), durable=True)
        d.addCallback(lambda _, i=i: out.write(f"{i}\n"))
        ds.append(d)
        if k % chunk == chunk - 1:
            await task.deferLater(reactor, chunk / rate, lambda: None)
    await defer.gatherResults(ds)
    await settle(bus)
    await bus.stopService()
    out.close()
    print("done", flush=True)


if __name__ == "__main__":
    settings, n, accepted, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    task.react(lambda r: defer.ensureDeferred(main(r, settings, n, accepted, rate)))
