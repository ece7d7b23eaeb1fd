"""Routes file: matching, options, mute windows, validation errors naming route and field."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from connector_alerter.routes import RoutesError, load_routes, parse_duration, parse_routes
from centaure.shipped import example_path



def alarm(**kw):
    base = {"host": "core-r1", "name": "linkDown", "severity": "major", "origin": "trap",
            "state": "raised"}
    base.update(kw)
    return base


def test_shipped_example_loads_and_routes():
    routes = load_routes(example_path("alert-routes.yaml"))
    names = [r.name for r in routes.routes]
    assert names == ["core-urgent", "power", "default"]
    # core-urgent continues: a power shelf's major trap also reaches 'power'.
    got = routes.match(alarm(host="134401-AE-HUA-1"), {"device_type": "router"})
    assert [r.name for r in got] == ["core-urgent", "power"]
    assert [r.name for r in routes.match(alarm(severity="warning"), {"device_type": "ups"})] \
        == ["default"]
    assert routes.match(alarm(severity="info"), {}) == []
    core = routes.by_name()["core-urgent"]
    assert core.group_wait == 10 and core.repeat_interval == 4 * 3600 and core.send_resolved
    assert not core.notify_acked
    assert [r.channel for r in core.receivers] == ["email", "webhook"]


def test_match_globs_severity_floor_device_type_origin():
    routes = parse_routes({"routes": [
        {"name": "a", "match": {"severity": ["critical"], "host": "db-*"}, "email": "a@x.org"},
        {"name": "b", "match": {"device_type": "vertiv", "name": ["bat*", "mains"],
                                "origin": "threshold"}, "email": ["b@x.org"]},
        {"name": "c", "match": {"severity": ">=minor"}, "command": ["/bin/cat"]},
    ]})
    assert [r.name for r in routes.match(alarm(host="DB-1", severity="critical"))] == ["a"]
    inv = {"device_type": "Vertiv / Emerson"}
    assert [r.name for r in routes.match(alarm(name="battery", origin="threshold",
                                               severity="info"), inv)] == ["b"]
    assert routes.match(alarm(name="battery", origin="trap", severity="info"), inv) == []
    assert [r.name for r in routes.match(alarm(severity="minor"))] == ["c"]
    assert routes.by_name()["c"].receivers[0].argv == ("/bin/cat",)


def test_group_labels_use_alarm_then_inventory_fields():
    r = parse_routes({"routes": [{"name": "a", "group_by": ["device_type", "severity"],
                                  "email": "a@x.org"}]}).routes[0]
    assert r.group_labels(alarm(), {"device_type": "router"}) == {
        "device_type": "router", "severity": "major"}


def test_mute_windows_weekdays_hours_timezone_across_midnight():
    r = parse_routes({"routes": [{"name": "n", "email": "a@x.org", "mute": [
        {"weekdays": ["mon"], "hours": "22:00-06:00", "timezone": "Europe/Paris"}]}]}).routes[0]
    paris = ZoneInfo("Europe/Paris")

    def at(*args):
        return datetime(*args, tzinfo=paris).timestamp()

    # 2026-11-23 is a Monday.
    assert r.muted(at(2026, 11, 23, 23, 0))
    assert r.muted(at(2026, 11, 24, 5, 59))        # Tuesday early morning: Monday's night
    assert not r.muted(at(2026, 11, 24, 6, 0))
    assert not r.muted(at(2026, 11, 23, 21, 59))
    assert not r.muted(at(2026, 11, 24, 23, 0))    # Tuesday night is not muted


def test_webhook_secret_from_env_never_shown():
    routes = parse_routes({"routes": [{"name": "w", "webhook": [
        {"url": "https://h.example/x", "secret": "env:HOOK_KEY"}]}]},
        environ={"HOOK_KEY": "s3cr3t"})
    rec = routes.routes[0].receivers[0]
    assert rec.secret.reveal() == "s3cr3t" and "s3cr3t" not in repr(rec) + str(rec.secret)


@pytest.mark.parametrize("data, message", [
    ({"routes": [{"name": "r", "email": "not-an-address"}]}, "route 'r'.email"),
    ({"routes": [{"name": "r", "email": "a@x.org", "match": {"severity": "huge"}}]},
     "route 'r'.match.severity"),
    ({"routes": [{"name": "r", "email": "a@x.org", "match": {"colour": "red"}}]},
     "route 'r'.match: unknown key 'colour'"),
    ({"routes": [{"name": "r", "email": "a@x.org", "group_wait": "soon"}]},
     "route 'r'.group_wait"),
    ({"routes": [{"name": "r"}]}, "route 'r': no receiver"),
    ({"routes": [{"name": "r", "webhook": [{"url": "ftp://x"}]}]}, "route 'r'.webhook[0].url"),
    ({"routes": [{"name": "r", "webhook": [{"url": "http://x", "secret": "env:NOPE_UNSET"}]}]},
     "route 'r'.webhook[0].secret"),
    ({"routes": [{"name": "r", "email": "a@x.org", "mute": [{"hours": "25:00-26:00"}]}]},
     "route 'r'.mute[0].hours"),
    ({"routes": [{"name": "r", "email": "a@x.org", "mute": [{"timezone": "Mars/Base"}]}]},
     "route 'r'.mute[0].timezone"),
    ({"routes": [{"name": "r", "email": "a@x.org"}, {"name": "r", "email": "a@x.org"}]},
     "route 'r'.name: two routes"),
    ({"routes": [{"email": "a@x.org"}]}, "routes[0].name"),
    ({"defaults": {"send_resolved": "yes"}, "routes": []}, "defaults.send_resolved"),
])
def test_errors_name_route_and_field(data, message):
    with pytest.raises(RoutesError) as e:
        parse_routes(data, environ={})
    assert message in str(e.value)


def test_bad_template_is_refused_at_load(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("routes:\n  - name: t\n    email: a@x.org\n    templates:\n"
                 "      subject: '{{ alarms[0].host '\n")
    with pytest.raises(RoutesError, match=r"route 't'.templates.subject: template syntax"):
        load_routes(str(p))


def test_durations():
    assert parse_duration("30s") == 30 and parse_duration("5m") == 300
    assert parse_duration("1d") == 86400 and parse_duration(0) == 0
    with pytest.raises(ValueError):
        parse_duration("-1s")
