"""Start-up failures: the one line, and a publisher whose buffer did not open."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from connector import messages
from connector.buffer import BufferOpenError, SQLiteBuffer, ThreadedBuffer
from connector.metrics import Counters
from connector.publisher import PublisherClosed, ReliablePublisher
from connector.startup import startup_line


def test_the_line_names_the_process_and_stays_one_line():
    assert startup_line("db", ValueError("schema too old")) == "centaure-db: cannot start: schema too old"
    line = startup_line("all", "first\n  second\n")
    assert line == "centaure-all: cannot start: first second" and "\n" not in line


def _status() -> messages.Status:
    return messages.Status(source="db@n", connector="db", node="n", pid=1, version="0",
                           state="ok", uptime=0.0, counters={})


@pytest_twisted.ensureDeferred
async def test_messages_waiting_for_a_buffer_that_fails_to_open_are_refused_as_closed(tmp_path):
    # A folder where the buffer file should be: the open fails.
    (tmp_path / "buffer.sqlite3").mkdir()
    buf = ThreadedBuffer(SQLiteBuffer(str(tmp_path / "buffer.sqlite3")), reactor)
    p = ReliablePublisher(buf, "db", "centaure", Counters("db"), reactor)
    early = p.publish(_status())  # a first heartbeat, published before the buffer is open
    with pytest.raises(BufferOpenError):
        await p.start()
    # Refused at once, naming the open error: not a "buffer full" that never happened.
    with pytest.raises(PublisherClosed, match="directory"):
        await early
    with pytest.raises(PublisherClosed, match="did not open"):
        await p.publish(_status())
    await p.stop()  # nothing left to refuse, nothing to close


@pytest_twisted.ensureDeferred
async def test_a_publisher_stopped_before_its_buffer_opened_refuses_as_closed(tmp_path):
    buf = ThreadedBuffer(SQLiteBuffer(str(tmp_path / "buffer.sqlite3")), reactor)
    p = ReliablePublisher(buf, "db", "centaure", Counters("db"), reactor)
    early = p.publish(_status())
    await p.stop()
    with pytest.raises(PublisherClosed, match="stopped before"):
        await early
