"""The web console's pure pieces: users file, sessions, the alarm board, filters, redirects."""

from __future__ import annotations

import os
import re
import stat

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from connector import messages
from connector.interfaces import IMessageHandler
from connector_console.board import AlarmBoard, ConsoleHandler
from connector_console.commands import CommandSender
from connector_console.interfaces import IAuthenticator, ISessionStore
from connector_console.sessions import SessionStore
from connector_console.statuses import StatusBoard
from connector_console.users import User, UserFile, UsersError, remove_user, write_user
from connector_console.web import _local, filter_rows

TS = 1_790_000_000.0


def alarm(ref: int, severity: str = "major", state: str = "raised", ts: float = TS,
          last_seen: float = TS, acked_by: str | None = None, host: str = "r1",
          name: str = "linkDown") -> messages.Alarm:
    return messages.Alarm(source="correlator@n1", ts=ts, host=host, ref=ref, name=name,
                          severity=severity, state=state, message=f"{name} on {host}",
                          first_seen=TS, last_seen=last_seen, count=1, origin="trap",
                          acked_by=acked_by)


def test_implementations_provide_their_interfaces(tmp_path):
    verifyObject(IAuthenticator, UserFile(str(tmp_path / "users.yaml")))
    verifyObject(ISessionStore, SessionStore(60, Clock().seconds))
    verifyObject(IMessageHandler, ConsoleHandler(AlarmBoard(), StatusBoard(10, 3)))


def test_users_file_holds_hashes_readable_by_its_owner_only(tmp_path):
    path = str(tmp_path / "users.yaml")
    assert write_user(path, "alice", "operator", "s3cret pass") is True
    assert write_user(path, "bob", "viewer", "other") is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = open(path).read()
    assert "s3cret" not in text and "$argon2id$" in text
    users = UserFile(path)
    assert users.authenticate("alice", "s3cret pass") == User("alice", "operator")
    assert users.authenticate("alice", "wrong") is None
    assert users.authenticate("nobody", "s3cret pass") is None
    assert users.authenticate("bob", "other").operator is False
    assert (users.role("alice"), users.role("bob"), users.role("nobody")) == \
        ("operator", "viewer", None)
    # A role change keeps the password; a password change replaces it.
    assert write_user(path, "bob", "operator", None) is False
    assert UserFile(path).authenticate("bob", "other") == User("bob", "operator")
    # A running console sees the file's changes at the next login.
    assert remove_user(path, "bob") and not remove_user(path, "bob")
    assert users.authenticate("bob", "other") is None
    write_user(path, "carol", "viewer", "pw")
    assert users.authenticate("carol", "pw") == User("carol", "viewer")


@pytest.mark.parametrize("text, expected", [
    ("users: [alice]\n", "expected a mapping 'users:'"),
    ("users:\n  alice: {role: admin, password: $argon2id$x}\n", "role 'admin' is not one of"),
    ("users:\n  alice: {role: viewer, password: plain}\n", "must be an argon2 hash"),
    ("users:\n  'a b': {role: viewer, password: $argon2id$x}\n", "user 'a b': a name is"),
    ("users:\n  alice: {role: viewer}\n", "expected exactly 'role' and 'password'"),
])
def test_a_bad_users_file_is_refused_naming_the_entry(tmp_path, text, expected):
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(UsersError, match=expected) as info:
        UserFile(str(path))
    assert str(path) in str(info.value)


def test_sessions_expire_and_carry_their_own_csrf_token():
    clock = Clock()
    store = SessionStore(3600, clock.seconds)
    a = store.open(User("alice", "operator"))
    b = store.open(User("bob", "viewer"))
    assert a.token != b.token and a.csrf != b.csrf and len(a.token) >= 40
    assert store.get(a.token.encode()) is a
    assert a.csrf_ok(a.csrf) and not a.csrf_ok(b.csrf) and not a.csrf_ok(None)
    assert not a.csrf_ok("")
    store.close(b.token)
    assert store.get(b.token) is None
    clock.advance(3599)
    assert store.get(a.token) is a
    clock.advance(1)
    assert store.get(a.token) is None
    assert store.get("made-up") is None and store.get(None) is None


def test_board_is_worst_first_and_ignores_stale_messages():
    board = AlarmBoard()
    told = []
    board.subscribe(lambda kind, data: told.append((kind, data.get("ref"))))
    board.load([])
    board.apply(alarm(1, "minor", last_seen=TS + 5))
    board.apply(alarm(2, "critical"))
    board.apply(alarm(3, "minor", last_seen=TS + 9))
    board.apply(alarm(2**64 - 1, "major"))
    assert [r["ref"] for r in board.rows()] == ["2", str(2**64 - 1), "3", "1"]
    # An ack arrives, then an older copy of the alarm (a backlog from before the start).
    assert board.apply(alarm(1, "minor", "updated", ts=TS + 10, acked_by="alice"))
    assert not board.apply(alarm(1, "minor", "updated", ts=TS + 1))
    assert board.get("1")["acked_by"] == "alice"
    assert board.apply(alarm(2, "critical", "cleared", ts=TS + 20))
    assert board.get("2") is None and len(board) == 3
    # An update older than the clear does not bring the alarm back.
    assert not board.apply(alarm(2, "critical", "updated", ts=TS + 15))
    assert told == [("snapshot", None), ("upsert", "1"), ("upsert", "2"), ("upsert", "3"),
                    ("upsert", str(2**64 - 1)), ("upsert", "1"), ("remove", "2")]


def test_loading_after_live_messages_keeps_the_newer_state():
    board = AlarmBoard()
    board.apply(alarm(1, "major", "updated", ts=TS + 10, acked_by="alice"))
    row = dict(board.get("1"), acked_by=None, version=TS + 5)
    board.apply(alarm(9, "major", "cleared", ts=TS + 10))
    board.load([row, dict(row, ref="7", version=TS), dict(row, ref="9", version=TS + 2)])
    assert board.get("1")["acked_by"] == "alice" and board.get("7") is not None
    assert board.get("9") is None


def test_filters_by_severity_host_text_and_ack():
    board = AlarmBoard()
    board.apply(alarm(1, "warning", host="sw-edge", name="coldStart"))
    board.apply(alarm(2, "critical", host="r1", name="linkDown", acked_by="bob"))
    board.apply(alarm(3, "major", host="r2", name="upsOnBattery"))
    board.apply(alarm(4, "unknown", host="r3", name="mystery"))
    rows = board.rows()
    refs = lambda **f: [r["ref"] for r in filter_rows(rows, **f)]  # noqa: E731
    assert refs() == ["2", "3", "1", "4"]
    assert refs(severity="major") == ["2", "3"]
    assert refs(host="R") == ["2", "3", "4"]
    assert refs(text="battery") == ["3"]
    assert refs(acked="yes") == ["2"] and refs(acked="no") == ["3", "1", "4"]
    assert refs(severity="info") == ["2", "3", "1"]


def test_redirects_stay_on_the_console():
    assert _local("/alarm/12?done=ack") == "/alarm/12?done=ack"
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil", "alarm", "/x\r\nSet-Cookie: a"):
        assert _local(bad) == "/"


def test_commands_are_checked_before_they_are_sent():
    sent = []

    class Publisher:
        def publish(self, message, durable=False, message_id=None):
            sent.append((message, durable, message_id))

    sender = CommandSender(Publisher(), "console@n1", lambda: TS)
    assert sender.check("ack", None) is None
    assert "unknown action" in sender.check("delete", None)
    assert "needs some text" in sender.check("note", None)
    assert "longer than" in sender.check("note", "x" * 2001)
    sender.send(5, "r1", "ack", "alice", "on it")
    ((command, durable, message_id),) = sent
    assert (command.ref, command.host, command.user, command.note) == (5, "r1", "alice", "on it")
    assert durable and message_id.startswith("console:")


def status(connector: str, ts: float, state: str = "ok", node: str = "n1") -> messages.Status:
    return messages.Status(source=f"{connector}@{node}", ts=ts, connector=connector, node=node,
                           pid=42, version="0.1.0", state=state, uptime=ts - TS,
                           counters={"published": 3.0})


def test_connectors_table_marks_the_lost_and_the_stopped():
    statuses = StatusBoard(interval=10, lost_after=3)
    handler = ConsoleHandler(AlarmBoard(), statuses)
    handler.handle(status("traps", TS + 100), None)
    handler.handle(status("traps", TS + 90), None)  # older: ignored
    handler.handle(status("db", TS + 60), None)
    handler.handle(status("snmp", TS + 99, "stopping"), None)
    handler.handle(alarm(1), None)
    assert handler.board.get("1") is not None
    rows = {r["connector"]: r for r in statuses.rows(TS + 100)}
    assert (rows["traps"]["state"], rows["traps"]["age"]) == ("ok", 0)
    assert rows["db"]["state"] == "lost" and rows["snmp"]["state"] == "stopped"
    assert rows["traps"]["counters"]["published"] == 3.0


def test_failed_logins_are_throttled_by_name_and_by_address():
    from connector_console.throttle import LoginThrottle

    clock = Clock()
    throttle = LoginThrottle(clock.seconds, per_name=3, per_client=5, window=600)
    for _ in range(3):
        assert throttle.wait("alice", "10.0.0.1") == 0
        throttle.failed("alice", "10.0.0.1")
        clock.advance(10)
    # The name is blocked from anywhere until its oldest failure leaves the window.
    assert throttle.wait("alice", "10.0.0.2") == pytest.approx(570)
    assert throttle.wait("bob", "10.0.0.1") == 0
    throttle.failed("bob", "10.0.0.1")
    throttle.failed("carol", "10.0.0.1")
    # Five failures from one address: every name is blocked from it.
    assert throttle.wait("dave", "10.0.0.1") > 0 and throttle.wait("dave", "10.0.0.9") == 0
    clock.advance(571)
    assert throttle.wait("alice", "10.0.0.2") == 0
    throttle.succeeded("bob")
    assert throttle.wait("bob", "10.0.0.3") == 0


@pytest.mark.parametrize("bus, services, warned", [
    ("embedded", "", False),
    ("amqp://centaure-console:pw@rabbit1:5672/%2F", "centaure-console", False),
    ("amqp://guest:guest@127.0.0.1:5672/%2F", "", True),
    ("amqp://guest:guest@127.0.0.1:5672/%2F", "centaure-console", True),
])
def test_the_console_says_when_its_commands_would_not_name_the_person(bus, services, warned):
    from connector.settings import settings_from_string
    from connector_console.service import untrusted_command_user

    settings = settings_from_string(f"[bus]\nurl = {bus}\n[correlator]\n"
                                    f"command_services = {services}\n", environ={})
    problem = untrusted_command_user(settings)
    assert (problem is not None) == warned
    if warned:
        assert "broker user 'guest', which is not in [correlator] command_services" in problem
        assert "pw" not in problem and "guest:guest" not in problem


@pytest.mark.parametrize("fields, expected", [
    ({"host": "", "name": " ", "duration": "2h", "comment": "works"},
     "Give a host or an alarm name to match"),
    ({"host": "r1", "duration": "", "comment": "works"}, "Give a duration"),
    ({"host": "r1", "duration": "soon", "comment": "works"},
     "Duration: 'soon': expected a number and a unit"),
    ({"host": "r1", "duration": "0m", "comment": "works"},
     "Duration: '0m': a silence needs a positive duration"),
    ({"host": "r1", "duration": "-5m", "comment": "works"}, "Duration: '-5m'"),
    ({"host": "r1", "duration": "100d", "comment": "works"}, "Duration '100d': at most 90 days"),
    ({"host": "r1", "duration": "2h", "comment": "  "}, "Give a comment"),
    ({"host": "r1\nr2", "duration": "2h", "comment": "works"},
     "Host 'r1\\nr2': control characters"),
    ({"name": "x" * 256, "duration": "2h", "comment": "works"},
     "Alarm name: at most 255 characters"),
])
def test_the_silence_form_names_what_is_wrong(fields, expected):
    from connector_console.silences import check_form

    with pytest.raises(ValueError, match="^" + re.escape(expected)):
        check_form(fields)


def test_the_silence_form_keeps_matchers_duration_and_comment():
    from connector_console.silences import SilenceForm, check_form

    assert check_form({"host": " core-* ", "name": "", "duration": "90m",
                       "comment": " works "}) == SilenceForm("core-*", None, 5400.0, "works")
    assert check_form({"name": "linkDown", "duration": "1d", "comment": "c"}).duration == 86400


def test_silences_are_stored_with_their_author_and_expired(tmp_path):
    import sqlalchemy as sa

    from centaure_shared.storage.silences import make_table
    from connector_console.silences import SilenceStore, check_form

    engine = sa.create_engine(f"sqlite:///{tmp_path}/s.sqlite3")
    make_table("t_").metadata.create_all(engine)
    now = [TS]
    store = SilenceStore(engine, "t_", clock=lambda: now[0])
    s = store.add(check_form({"host": "r1", "name": "link*", "duration": "1h",
                              "comment": "maintenance"}), "alice")
    assert [(x.id, x.host, x.name, x.created_by, x.created, x.ends, x.comment)
            for x in store.active()] == [(s.id, "r1", "link*", "alice", TS, TS + 3600,
                                          "maintenance")]
    assert s.matches({"host": "R1", "name": "linkDown"}, now=TS)
    now[0] += 60
    assert store.expire(s.id) and not store.expire(s.id) and not store.expire(999)
    assert store.active() == []
    with pytest.raises(ValueError, match="invalid table prefix 'Bad-'"):
        SilenceStore(engine, "Bad-")
    engine.dispose()


def test_a_long_range_not_rolled_up_yet_is_drawn_from_the_raw_samples_and_says_so(tmp_path):
    import time

    import sqlalchemy as sa

    from centaure_shared.storage.schema import create_all, make_schema
    from connector.consumer import Delivery
    from connector_console.reader import StoreReader
    from connector_db.store import NormalizedStore

    engine = sa.create_engine(f"sqlite:///{tmp_path}/w.sqlite3")
    schema = make_schema("w_")
    create_all(engine, schema)
    store = NormalizedStore(engine, schema)
    now = round(time.time())
    stamps = [now - 3600 * i for i in range(48)]
    store.write([store.prepare(messages.Perf(
        source="snmp@n1", ts=ts, host="r1", address="10.0.0.1", device_type="router",
        metrics=[messages.Metric(name="cpu", value=i, kind="gauge", oid="1.3.6.1")]),
        Delivery(b"", "x", "perf.r1", message_id=f"p{i}")) for i, ts in enumerate(stamps)])
    reader = StoreReader(engine, "w_")
    # Two days would be 5-minute rollups: none are built, so the raw samples, said so.
    graph = reader.samples("r1", "cpu", "", now - 2 * 86400, now).as_json()
    assert graph == {"resolution": "raw", "label": "raw samples (no 5-minute averages there "
                     "yet)", "summary": "48 samples", "ts": sorted(stamps),
                     "values": [float(i) for i in reversed(range(48))]}
    graph = reader.samples("r1", "cpu", "", now - 3600, now).as_json()
    assert (graph["label"], graph["ts"], graph["values"]) == ("raw samples", stamps[1::-1],
                                                              [1.0, 0.0])
    engine.dispose()


def test_an_alarms_stored_history_is_oldest_first_and_its_notifications_newest_first(tmp_path):
    import sqlalchemy as sa

    from centaure_shared.storage.schema import create_all, make_schema
    from connector.consumer import Delivery
    from connector_console.reader import StoreReader
    from connector_db.store import NormalizedStore

    engine = sa.create_engine(f"sqlite:///{tmp_path}/w.sqlite3")
    create_all(engine, make_schema("w_"))
    store = NormalizedStore(engine, make_schema("w_"))
    sent = [alarm(7, ts=TS), alarm(7, severity="critical", ts=TS + 60, last_seen=TS + 60,
                                   acked_by="alice"), alarm(8, ts=TS + 30)]
    sent += [messages.Notification(source="alerter@n1", ts=TS + i, ref=7, channel="email",
                                   recipient="noc@example.com", state=state, attempts=i + 1,
                                   host="r1", rule="noc")
             for i, state in enumerate(("failed", "sent"))]
    store.write([store.prepare(m, Delivery(b"", "x", "k", message_id=f"m{i}"))
                 for i, m in enumerate(sent)])
    reader = StoreReader(engine, "w_")
    assert [(h["ts"], h["severity"], h["acked_by"]) for h in reader.history(7)] == [
        (TS, "major", None), (TS + 60, "critical", "alice")]
    assert [(n["ts"], n["state"], n["attempts"], n["rule"]) for n in reader.notifications(7)] \
        == [(TS + 1, "sent", 2, "noc"), (TS, "failed", 1, "noc")]
    assert reader.history(9) == [] and reader.notifications(8) == []
    engine.dispose()


def test_a_counters_long_range_is_its_rolled_up_rate_with_no_raw_tail(tmp_path):
    import time

    import sqlalchemy as sa

    from centaure_shared.storage.schema import create_all, make_schema
    from connector.consumer import Delivery
    from connector_console.reader import StoreReader
    from connector_db.rollups import build
    from connector_db.store import NormalizedStore

    engine = sa.create_engine(f"sqlite:///{tmp_path}/w.sqlite3")
    schema = make_schema("w_")
    create_all(engine, schema)
    store = NormalizedStore(engine, schema)
    now = round(time.time())
    # 1,000 octets a second for two days, a sample every 5 minutes.
    stamps = sorted(now - 300 * i for i in range(576))
    store.write([store.prepare(messages.Perf(
        source="snmp@n1", ts=ts, host="r1", address="10.0.0.1", device_type="router",
        metrics=[messages.Metric(name="ifInOctets", value=1000 * (ts - stamps[0]),
                                 kind="counter", oid="1.3.6.1")]),
        Delivery(b"", "x", "perf.r1", message_id=f"p{ts}")) for ts in stamps])
    build(engine, schema, now * 1000)
    graph = StoreReader(engine, "w_").samples("r1", "ifInOctets", "", now - 86400,
                                              now).as_json()
    assert graph["resolution"] == "5m" and graph["raw_from"] is None
    assert graph["label"] == "5-minute averages of its rate per second, min–max band"
    assert graph["summary"] == f"{len(graph['ts'])} 5-minute averages"
    assert 280 <= len(graph["ts"]) <= 288
    assert set(graph["values"]) == set(graph["min"]) == set(graph["max"]) == {1000.0}
    engine.dispose()
