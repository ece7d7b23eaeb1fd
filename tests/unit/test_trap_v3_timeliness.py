"""SNMPv3 timeliness around the USM: our engine's boots on disk, the
``[traps] v3_time_window`` setting, and the journal reading a trap again
after a publisher failure (no replay: it is the same reception)."""

from __future__ import annotations

import os
import stat

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from connector.metrics import Counters
from connector.settings import SettingsError, settings_from_string
from connector_traps.boots import BootsError, boots_path, next_engine_boots
from connector_traps.journal import Journal
from connector_traps.receiver import JournalPump, TrapReceiver
from connector_traps.usm import UserTable, V3Receiver
from snmpwire import ber
from snmpwire.usm import UsmUser, encode_notification, localized_keys

OURS = bytes.fromhex("80001f8804") + b"centaure"
E1 = bytes.fromhex("8000000001020304")
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"


# --------------------------------------------------------------------------
# Our engine's boots


def test_boots_grow_at_each_start_in_a_private_file(tmp_path):
    path = boots_path(str(tmp_path / "var"), OURS)
    assert os.path.basename(path) == f"traps-engine-{OURS.hex()}.boots"
    assert [next_engine_boots(path) for _ in range(3)] == [1, 2, 3]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path).read() == "3\n"
    assert os.listdir(tmp_path / "var") == [os.path.basename(path)]  # no temporary left


@pytest.mark.parametrize("content,word", [
    (b"three\n", "whole number"), (b"-4\n", "from 0 to"), (b"\xff\xfe", "whole number"),
    (b"2147483646\n", r"set another \[traps\] engine_id"),
])
def test_boots_file_errors_name_the_file(tmp_path, content, word):
    path = tmp_path / "traps-engine-x.boots"
    path.write_bytes(content)
    with pytest.raises(BootsError, match=word) as e:
        next_engine_boots(str(path))
    assert str(path) in str(e.value)
    assert path.read_bytes() == content  # left as it was


def test_boots_file_unreadable_or_folder_unusable(tmp_path):
    (tmp_path / "dir.boots").mkdir()
    with pytest.raises(BootsError, match="cannot read it"):
        next_engine_boots(str(tmp_path / "dir.boots"))
    (tmp_path / "plain").write_text("")
    with pytest.raises(BootsError, match="cannot (read|write) it"):
        next_engine_boots(boots_path(str(tmp_path / "plain" / "var"), OURS))


# --------------------------------------------------------------------------
# The setting


def _traps(value: str | None):
    text = "[traps]\n" + ("" if value is None else f"v3_time_window = {value}\n")
    return settings_from_string(text, source="test.ini").section("traps")


def test_time_window_setting():
    assert _traps(None).v3_time_window == 150
    assert _traps("10m").v3_time_window == 600
    assert _traps("off").v3_time_window is None
    for bad in ("0", "-1", "-150", "2d", "none"):
        with pytest.raises(SettingsError, match="v3_time_window") as e:
            _traps(bad)
        assert "or off" in str(e.value)


# --------------------------------------------------------------------------
# The journal


def test_journaled_v3_trap_read_again_after_a_publisher_failure_is_published(tmp_path):
    """The journal reads a trap again when the publisher refused it: for an SNMPv3
    trap that must not count as a replay, nor fall out of the time window."""
    clock = Clock()
    journal = Journal(str(tmp_path / "j"), 1024 * 1024)
    journal.open()
    counters = Counters("traps")
    pump = JournalPump(clock, journal, counters, retry_delay=1.0)
    u = UsmUser("u1", "SHA", "auth-pass-1", "AES", "priv-pass-1", E1)
    wall = [1_000_000.0]
    v3 = V3Receiver(UserTable([u]), OURS, clock=lambda: wall[0])
    outcomes = iter([False, True])
    published = []

    def sink(trap):
        if next(outcomes, True):
            published.append(trap)
            return defer.succeed(None)
        return defer.fail(Failure(RuntimeError("the broker is away")))

    def v3_handler(data, source):
        result = v3.handle(data, source)
        return result.response, result.trap

    r = TrapReceiver(clock, sink, counters, pump=pump, v3_handler=v3_handler)
    pump.handle = r.process_record
    pump.start()
    msg = encode_notification(localized_keys(u, E1), engine_id=E1, user="u1", trap_oid=LINK_DOWN,
                              varbinds=[("1.3.6.1.2.1.2.2.1.1.3", ber.INTEGER, 3)], boots=2, time=500)
    r.datagramReceived(msg, ("192.0.2.9", 50000))
    clock.advance(0)
    clock.advance(0)
    assert published == [] and counters.get("journal_retries") == 1
    wall[0] += 600  # the broker comes back long after the window
    clock.advance(1.0)
    clock.advance(0)
    assert [t.trap_oid for t in published] == [LINK_DOWN]
    assert v3.counters["accepted"] == 1 and v3.counters["replayed"] == 0
    assert v3.counters["not_in_time_window"] == 0
    r.datagramReceived(msg, ("192.0.2.9", 50000))  # a real copy is still one
    clock.advance(0)
    clock.advance(0)
    assert len(published) == 1 and v3.counters["not_in_time_window"] == 1
    pump.stop()


# --------------------------------------------------------------------------
# A reload of the users


def test_a_reload_keeps_boots_clocks_and_replay_memory():
    u = UsmUser("u1", "SHA", "auth-pass-1", "AES", "priv-pass-1", E1)
    wall = [1_000_000.0]
    old = V3Receiver(UserTable([u]), OURS, clock=lambda: wall[0])
    old.start(7)
    k = localized_keys(u, E1)
    first = encode_notification(k, engine_id=E1, user="u1", trap_oid=LINK_DOWN, boots=2, time=5000,
                                msg_id=1)
    assert old.handle(first, ("h", 1)).error is None
    wall[0] += 60
    new = V3Receiver(UserTable([u]), OURS, clock=lambda: wall[0])  # as load_config builds it
    new.adopt(old)
    assert (new.boots, new.engine_time()) == (7, 60)
    assert new.handle(first, ("h", 1)).error == "replayed"
    stale = encode_notification(k, engine_id=E1, user="u1", trap_oid=LINK_DOWN, boots=2, time=4000,
                                msg_id=2)
    assert new.handle(stale, ("h", 1)).error == "not_in_time_window"
