"""The trap journal (segments on disk), its pump, the drop log and the request peek."""

from __future__ import annotations

import os
import stat

import pytest

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger

from connector.metrics import Counters
from connector_traps.journal import KIND_ANSWERED, KIND_RAW, Journal, JournalError
from connector_traps.model import Trap
from connector_traps.receiver import (
    DropLog,
    JournalPump,
    TrapReceiver,
    is_request,
    trap_from_bytes,
    trap_to_bytes,
)
from snmpwire import ber

TRAP_OID = "1.3.6.1.6.3.1.1.5.3"


def v2c(request_id: int, pdu: str = "trap", community: bytes = b"public") -> bytes:
    varbinds = [("1.3.6.1.2.1.1.3.0", ber.TIMETICKS, 100 + request_id),
                ("1.3.6.1.6.3.1.1.4.1.0", ber.OBJECT_IDENTIFIER, TRAP_OID),
                ("1.3.6.1.2.1.2.2.1.1.1", ber.INTEGER, request_id)]
    if pdu == "inform":
        return ber.encode_message(1, community, ber.INFORM_REQUEST, request_id, 0, 0, varbinds)
    return ber.encode_trap_v2(community, request_id, varbinds)


def records(j: Journal, n: int = 1000) -> list[tuple]:
    return j.read(n)


def test_append_flush_read_commit_and_reopen(tmp_path):
    j = Journal(str(tmp_path / "j"), 1024 * 1024, segment_bytes=4096)
    j.open()
    assert stat.S_IMODE(os.stat(tmp_path / "j").st_mode) == 0o700
    for i in range(100):
        assert j.append(KIND_RAW, 1000.0 + i, "10.0.0.1", 5000 + i, v2c(i))
    assert records(j) == []  # nothing written yet
    j.flush()
    for i in range(100, 200):
        j.append(KIND_ANSWERED, 1000.0 + i, "::1", 162, v2c(i))
        if i % 10 == 0:
            j.flush()
    j.flush()
    got = records(j, 150)
    assert len(got) == 150
    assert [g[5] for g in got[:3]] == [5000, 5001, 5002]
    assert got[0][3:7] == (1000.0, "10.0.0.1", 5000, v2c(0))
    assert got[120][2] == KIND_ANSWERED and got[120][4] == "::1"
    segments = [n for n in os.listdir(tmp_path / "j") if n.endswith(".seg")]
    assert len(segments) > 2
    for name in os.listdir(tmp_path / "j"):
        assert stat.S_IMODE(os.stat(tmp_path / "j" / name).st_mode) == 0o600
    seg, off = got[99][0], got[99][1]
    j.commit(seg, off)
    j.save(force=True)
    left = [n for n in os.listdir(tmp_path / "j") if n.endswith(".seg")]
    assert len(left) < len(segments)
    # A second process is refused while the first holds the journal.
    other = Journal(str(tmp_path / "j"), 1024 * 1024)
    with pytest.raises(JournalError, match="used by another process"):
        other.open()
    # A crash: reopened without close (the lock goes with the process), the
    # records after the saved position come back.
    os.close(j._pfd)
    j2 = Journal(str(tmp_path / "j"), 1024 * 1024, segment_bytes=4096)
    j2.open()
    again = records(j2)
    assert j2.recovered_records == 100
    assert [r[5] for r in again] == [162] * 100
    assert again[0][6] == v2c(100)


def test_torn_tail_is_cut(tmp_path):
    j = Journal(str(tmp_path / "j"), 1024 * 1024)
    j.open()
    for i in range(10):
        j.append(KIND_RAW, 1.0, "10.0.0.1", 1, v2c(i))
    j.close()
    (seg,) = [n for n in os.listdir(tmp_path / "j") if n.endswith(".seg")]
    with open(tmp_path / "j" / seg, "ab") as f:
        f.write(b"\x00\xff\xff")  # a write cut short
    j = Journal(str(tmp_path / "j"), 1024 * 1024)
    j.open()
    assert len(records(j)) == 10
    j.append(KIND_RAW, 2.0, "10.0.0.1", 1, v2c(99))
    j.flush()
    assert records(j)[0][6] == v2c(99)


def test_full_journal_refuses_and_frees_on_commit(tmp_path):
    j = Journal(str(tmp_path / "j"), 8192, segment_bytes=2048)
    j.open()
    accepted = 0
    while j.append(KIND_RAW, 1.0, "10.0.0.1", 1, v2c(accepted)):
        accepted += 1
        j.flush()
    assert 40 < accepted < 8192 // 50
    assert j.used_bytes <= 8192
    got = records(j, 10_000)
    assert len(got) == accepted
    j.commit(got[-1][0], got[-1][1])
    assert j.append(KIND_RAW, 1.0, "10.0.0.1", 1, v2c(1))


def test_trap_round_trip():
    trap = Trap(source=("10.0.0.1", 161), version="v3", pdu="inform", trap_oid=TRAP_OID,
                uptime=5, agent_address="10.0.0.1",
                varbinds=(("1.3.6.1.2.1.2.2.1.1.1", "Integer", 1),
                          ("1.3.6.1.2.1.2.2.1.2.1", "OctetString", b"\xffx"),
                          ("1.3.6.1.2.1.2.2.1.3.1", "Null", None)),
                received=12.5, user="alice", engine_id=b"\x80\x00\x00\x00\x01", request_id=7,
                context_engine_id=b"\x80\x00\x00\x00\x02")
    assert trap_from_bytes(trap_to_bytes(trap)) == trap


def test_is_request():
    assert is_request(v2c(1, "inform"))
    assert not is_request(v2c(1))
    assert not is_request(b"")
    assert not is_request(b"\x30\x03\x02\x01")


def test_drop_log_one_line_per_interval():
    clock = Clock()
    lines = []
    log = Logger(observer=lambda e: lines.append(e))
    counters = Counters("traps")
    drops = DropLog(clock, counters, log, interval=10)
    drops.drop("journal_full")
    for _ in range(999):
        drops.drop("journal_full")
    drops.drop("oversized", 3)
    assert len(lines) == 1
    clock.advance(10)
    assert len(lines) == 2
    assert "999 journal full" in lines[1]["counts"] and "3 oversized" in lines[1]["counts"]
    assert counters.get("dropped_journal_full") == 1000
    clock.advance(30)
    assert len(lines) == 2


def test_pump_commits_in_order_and_reads_again_after_a_refusal(tmp_path):
    clock = Clock()
    j = Journal(str(tmp_path / "j"), 1024 * 1024)
    j.open()
    counters = Counters("traps")
    pump = JournalPump(clock, j, counters, window=4, retry_delay=1.0)
    handled = []
    waiting: list[defer.Deferred] = []

    def handle(kind, received, host, port, data):
        handled.append(port)
        d = defer.Deferred()
        waiting.append(d)
        return d

    pump.handle = handle
    pump.start()
    for i in range(10):
        pump.append(KIND_RAW, 1.0, "10.0.0.1", i, b"x" * 10)
    clock.advance(0)  # flush
    clock.advance(0)  # process
    assert handled == [0, 1, 2, 3]  # the window
    committed = (j._cseg, j._coff)
    waiting[1].callback(None)
    assert (j._cseg, j._coff) == committed  # 0 not accepted yet
    waiting[0].callback(None)
    assert (j._cseg, j._coff) > committed  # 0 and 1 done
    clock.advance(0)
    assert handled == [0, 1, 2, 3, 4, 5]
    from twisted.python.failure import Failure
    waiting[2].errback(Failure(RuntimeError("buffer full")))
    clock.advance(0)
    assert handled == [0, 1, 2, 3, 4, 5]  # paused
    clock.advance(1.0)
    clock.advance(0)
    assert handled[6:] == [2, 3, 4, 5]  # read again from the last accepted one
    for d in waiting[6:]:
        d.callback(None)
    for _ in range(5):
        clock.advance(0)
    assert handled[10:] == [6, 7, 8, 9]
    for d in waiting:
        if not d.called:
            d.callback(None)
    pump.stop()
    j2 = Journal(str(tmp_path / "j"), 1024 * 1024)
    j2.open()
    assert j2.read(100) == []


class _Transport:
    def __init__(self):
        self.sent = []

    def write(self, data, addr):
        self.sent.append((data, addr))


def test_receiver_journals_answers_informs_at_once_and_drops_oversized(tmp_path):
    clock = Clock()
    j = Journal(str(tmp_path / "j"), 1024 * 1024)
    j.open()
    counters = Counters("traps")
    pump = JournalPump(clock, j, counters)
    got = []
    r = TrapReceiver(clock, got.append, counters, pump=pump, max_datagram=1000)
    r.transport = _Transport()
    pump.handle = r.process_record
    pump.start()
    r.datagramReceived(v2c(1), ("127.0.0.1", 4000))
    r.datagramReceived(v2c(2, "inform"), ("127.0.0.1", 4001))
    assert len(r.transport.sent) == 1  # answered before anything is processed
    r.datagramReceived(b"\x30" + b"\x00" * 1200, ("127.0.0.1", 4002))
    assert counters.get("dropped_oversized") == 1
    clock.advance(0)
    clock.advance(0)
    assert [t.request_id for t in got] == [1, 2]
    assert [t.pdu for t in got] == ["trap", "inform"]
    assert len(r.transport.sent) == 1  # not answered twice
    assert counters.get("informs_answered") == 1
    pump.stop()
