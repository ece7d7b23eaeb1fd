"""Threshold rules: loading, every condition, selector and window form, errors."""

from __future__ import annotations

import math
import textwrap

import pytest
import sqlalchemy as sa

from connector_alerter.rules import (
    Group, Leaf, Rule, RulesError, Selector, Window, build_rules, describe, load_rules_file,
    load_rules_sql, parse_duration, parse_nagios_range, parse_seed_conditions,
)
from centaure.shipped import example_path


LEGACY_EXAMPLE = """[
    {
        "metrique":"phase_1_courant ; phase_2_courant ; phase_3_courant",
        "type_condition":"seuil",
        "valeur_max":"100",
        "valeur_min":"",
        "valeur_egale":"",
        "valeur_differente":"2147483647",
        "nombre_valeurs_seuil":1,
        "logic_operator":"ET"
    }
]"""


def one(record: dict) -> Rule:
    (rule,) = build_rules([("rule 1", record)], "test")
    return rule


def problems(*records: dict) -> list[str]:
    with pytest.raises(RulesError) as info:
        build_rules([(f"rule {i + 1}", r) for i, r in enumerate(records)], "rules.yaml")
    assert str(info.value).startswith("rules.yaml: ")
    return info.value.problems


# --- conditions ------------------------------------------------------------

@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "==", "!="])
def test_comparisons(op):
    rule = one({"name": "r", "when": {"metric": "cpu", "op": op, "value": "90"}})
    assert rule.when == Leaf("cpu", op, 90.0, path="when")


def test_text_equality_and_match():
    rule = one({"name": "r", "when": {"any": [
        {"metric": "ifOperStatus", "op": "!=", "value": "up"},
        {"metric": "sysDescr", "match": "^Cisco"},
        {"metric": "sysDescr", "not_match": "IOS"}]}})
    a, b, c = rule.when.items
    assert (a.kind, a.value) == ("!=", "up")
    assert (b.kind, b.value, c.kind) == ("match", "^Cisco", "not_match")


@pytest.mark.parametrize("text, expected", [
    ("10", (0.0, 10.0, False)),
    ("10:", (10.0, math.inf, False)),
    ("~:10", (-math.inf, 10.0, False)),
    ("10:20", (10.0, 20.0, False)),
    ("@10:20", (10.0, 20.0, True)),
    ("@~:0", (-math.inf, 0.0, True)),
])
def test_nagios_ranges(text, expected):
    assert parse_nagios_range(text) == expected


def test_range_inside_outside_rate_absent():
    rule = one({"name": "r", "when": {"all": [
        {"metric": "temp", "range": "@10:20"},
        {"metric": "temp2", "range": "5:45"},
        {"metric": "v", "inside": [1, 2]},
        {"metric": "w", "outside": [1, 2]},
        {"metric": "ifInErrors", "index": "*", "rate": True, "op": ">", "value": 10},
        {"metric": "*", "absent": "10m"}]}})
    kinds = [(leaf.kind, leaf.low, leaf.high) for leaf in rule.when.items[:4]]
    assert kinds == [("inside", 10, 20), ("outside", 5, 45), ("inside", 1, 2), ("outside", 1, 2)]
    assert rule.when.items[4].rate and rule.when.items[4].index == "*"
    assert rule.when.items[5].absent == 600


def test_nested_groups_and_windows():
    rule = one({"name": "r", "when": {"all": [
        {"any": [{"metric": "a", "op": ">", "value": 1, "consecutive": 3},
                 {"metric": "b", "op": "<", "value": 1, "n_of_m": [2, 5]}]},
        {"metric": "c", "op": ">", "value": 0, "hysteresis": 2}]},
        "for": "5m", "recovery": {"metric": "a", "op": "<", "value": 0}})
    inner = rule.when.items[0]
    assert isinstance(inner, Group) and inner.op == "any"
    assert inner.items[0].window == Window(3, 3) and inner.items[0].window.consecutive
    assert inner.items[1].window == Window(2, 5)
    assert inner.items[1].path == "when.all[0].any[1]"
    assert rule.when.items[1].hysteresis == 2
    assert rule.for_ == 300 and rule.recovery.kind == "<"
    assert "for 300s" in describe(rule)


def test_durations():
    assert parse_duration("90") == 90 and parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400 and parse_duration(30) == 30
    with pytest.raises(ValueError):
        parse_duration("soon")


# --- selectors, validity, schedules ---------------------------------------

def test_selectors():
    rule = one({"name": "r", "hosts": ["paris-*", "lyon-1"], "device_types": ["vertiv"],
                "models": ["NetSure*"], "tags": ["power", "core"],
                "when": {"metric": "v", "op": "<", "value": 48}})
    sel = rule.selector
    assert sel.matches("paris-3", "vertiv", "NetSure 701", ("core", "power", "x"))
    assert not sel.matches("nice-1", "vertiv", "NetSure 701", ("core", "power"))
    assert not sel.matches("lyon-1", "huawei", "NetSure 701", ("core", "power"))
    assert not sel.matches("lyon-1", "vertiv", "Other", ("core", "power"))
    assert not sel.matches("lyon-1", "vertiv", "NetSure", ("core",))
    assert Selector().matches("anything")


def test_legacy_selector_is_machines_or_construct():
    rule = one({"name": "r", "hosts": "ups-1, ups-2", "constructs": ["Socomec SA"], "seed": LEGACY_EXAMPLE})
    assert rule.selector.matches("ups-1", "apc")
    assert rule.selector.matches("other", "socomec")
    assert not rule.selector.matches("other", "apc")


def test_valid_until_and_schedule():
    rule = one({"name": "r", "valid_until": "2030-01-01T00:00:00Z",
                "schedule": {"timezone": "Europe/Paris",
                             "windows": [{"days": ["mon", "tue"], "hours": "08:00-18:00"},
                                         {"days": ["sat"], "hours": "22:00-02:00"}]},
                "when": {"metric": "v", "op": ">", "value": 1}})
    assert rule.valid_until == 1893456000.0
    # Monday 2026-11-23 09:00 Paris = 08:00 UTC.
    monday = 1795392000.0                                         # 2026-11-23 00:00 UTC
    monday_9 = monday + 8 * 3600
    assert rule.schedule.active(monday_9)
    assert not rule.schedule.active(monday_9 + 10 * 3600)          # 19:00
    assert not rule.active(1893456000.0)                          # expired
    sunday_1am_paris = monday - 24 * 3600                         # Sunday 01:00 Paris
    assert rule.schedule.active(sunday_1am_paris)                 # Saturday's window wraps
    assert not rule.schedule.active(sunday_1am_paris + 3600)      # Sunday 02:00: over


# --- legacy JSON conditions (key seed) ------------------------------------

def test_legacy_example_rule():
    found: list[str] = []
    cond = parse_seed_conditions(LEGACY_EXAMPLE, found, "r")
    assert found == []
    # ET between metrics: every phase above 100, and not the 2147483647 sentinel.
    assert isinstance(cond, Group) and cond.op == "all" and len(cond.items) == 3
    first = cond.items[0]
    assert first == Group("all", (
        Leaf("phase_1_courant", ">", 100.0, path="seed[0].metrique[0].max"),
        Leaf("phase_1_courant", "!=", 2147483647.0, path="seed[0].metrique[0].differente")))


def test_legacy_types_windows_and_operators():
    cond = parse_seed_conditions([
        {"metrique": "a", "type_condition": "min", "valeur_min": "3", "valeur_max": "9",
         "nombre_valeurs_seuil": "2", "logic_operator": "OU"},
        {"metrique": "b", "type_condition": "égale", "valeur_egale": "1"}], [], "r")
    assert cond == Group("any", (
        Leaf("a", "<", 3.0, window=Window(2, 2), path="seed[0].metrique[0].min"),
        Leaf("b", "==", 1.0, path="seed[1].metrique[0].egale")))


def test_legacy_errors_name_rule_and_field():
    found = problems({"name": "phase", "seed": '[{"metrique": "", "valeur_max": "abc", '
                                               '"logic_operator": "XOR"}]'},
                     {"name": "bad json", "seed": "[{"})
    text = "\n".join(found)
    assert "rule 1 (phase): seed[0].metrique: missing" in text
    assert "rule 1 (phase): seed[0].valeur_max: expected a number" in text
    assert "rule 1 (phase): seed[0].logic_operator: expected ET or OU" in text
    assert "rule 2 (bad json): seed: not valid JSON" in text


# --- errors -----------------------------------------------------------------

def test_every_problem_named_by_rule_and_field():
    found = problems(
        {"name": "a", "when": {"metric": "x", "op": "=>", "value": 1}},
        {"name": "b", "when": {"metric": "x", "op": ">", "value": "high"}},
        {"name": "c", "when": {"metric": "x", "range": "20:10"}},
        {"name": "d", "when": {"metric": "x", "op": ">", "value": 1, "n_of_m": [5, 3]}},
        {"name": "e", "when": {"metric": "x", "match": "("}},
        {"name": "f", "when": {"all": [{"metric": "x", "op": ">", "value": 1},
                                       {"metric": "y"}]}},
        {"name": "g", "when": {"metric": "x", "op": ">", "value": 1}, "severity": "huge",
         "for": "later", "schedule": {"windows": [{"days": ["funday"]}]}},
        {"name": "a", "when": {"metric": "x", "op": ">", "value": 1}},
        {"when": {"metric": "x", "op": ">", "value": 1}},
        {"name": "h", "when": {"metric": "x", "absent": "5m"}, "for": "1m"},
        {"name": "i", "when": {"metric": "x", "op": ">", "value": 1}, "valid_until": "tomorrow"},
    )
    text = "\n".join(found)
    for expected in [
        "rule 1 (a): when: op: expected one of",
        "rule 2 (b): when: value: expected a number",
        "rule 3 (c): when: range: range '20:10': start 20 is above end 10",
        "rule 4 (d): when: n_of_m: expected [N, M]",
        "rule 5 (e): when: match: not a valid regular expression",
        "rule 6 (f): when.all[1]: expected exactly one test",
        "rule 7 (g): severity: expected one of",
        "rule 7 (g): for: expected a duration",
        "rule 7 (g): schedule: windows[0].days: 'fun' is not a day",
        "rule 8 (a): name: already used by rule 1",
        "rule 9: name: missing",
        "rule 10 (h): when: absent already is a duration",
        "rule 11 (i): valid_until: expected a date",
    ]:
        assert expected in text, (expected, text)


def test_when_or_seed_required():
    assert any("give exactly one of when" in p for p in problems({"name": "x"}))


# --- files and SQL ----------------------------------------------------------

def test_shipped_rules_yaml_loads():
    rules = load_rules_file(example_path("rules.yaml"))
    names = [r.name for r in rules]
    assert names == ["battery-voltage-low", "interface-errors-rate", "cpu-high", "device-silent",
                     "temperature-out-of-range", "phase haute"]
    for rule in rules:
        assert describe(rule).startswith(rule.name)


def test_yaml_file_errors_name_the_line(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent("""\
        - name: ok
          when: {metric: a, op: ">", value: 1}
        - name: broken
          when: {metric: a, op: ">"}
        """))
    with pytest.raises(RulesError) as info:
        load_rules_file(str(path), "rules.yaml")
    assert "rules.yaml: rule 2 (line 3) (broken): when: value: missing" in str(info.value)
    path.write_text("- name: [\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules_file(str(path))
    path.write_text("")
    assert load_rules_file(str(path)) == ()


def test_legacy_style_sql_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'rules.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE ALERTEURS (id INTEGER PRIMARY KEY, nom TEXT, constructeur TEXT, "
            "ae_specifiques TEXT, conditions TEXT, emails TEXT, semaines INT, jours INT, "
            "heures INT, active INT)")
        conn.execute(sa.text(
            "INSERT INTO ALERTEURS (nom, constructeur, ae_specifiques, conditions, emails, "
            "semaines, jours, heures, active) VALUES (:n, :c, :m, :j, :e, 0, 1, 6, :a)"),
            [dict(n="phase haute", c="Socomec", m="ups-1;ups-2", j=LEGACY_EXAMPLE,
                  e="a@x.org, b@x.org", a=1),
             dict(n="off", c="", m="", j="not json", e="", a=0)])
    engine.dispose()
    (rule,) = load_rules_sql(url, "ALERTEURS")
    assert rule.name == "phase haute"
    assert rule.selector.hosts == ("ups-1", "ups-2") and rule.selector.device_types == ("socomec",)
    assert rule.emails == ("a@x.org", "b@x.org")
    assert rule.lookback == 86400 + 6 * 3600
    assert len(rule.leaves()) == 6
    with pytest.raises(RulesError, match="no such table"):
        load_rules_sql(url, "missing")


def test_load_rules_from_settings_section(tmp_path):
    from types import SimpleNamespace

    from connector_alerter.rules import load_rules
    (tmp_path / "mine.yaml").write_text("- {name: a, when: {metric: x, op: '>', value: 1}}\n")
    section = SimpleNamespace(rules_source="yaml", rules="mine.yaml")
    assert [r.name for r in load_rules(section, tmp_path)] == ["a"]
    empty = SimpleNamespace(rules_source="sql", rules_url=SimpleNamespace(reveal=lambda: ""),
                            rules_table="alert_rules")
    with pytest.raises(RulesError, match="rules_url: empty"):
        load_rules(empty, tmp_path)
