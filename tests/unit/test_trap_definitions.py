"""Trap definitions: matching, templates, keys, operators, the shipped traps.yaml, errors."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from centaure.shipped import EXAMPLES_DIR, example_path
from connector.messages import SEVERITIES
from connector.settings import SettingsError, load_settings, settings_from_string
from centaure_shared.operators import default_registry, stateless
from connector_traps.definitions import (
    Definitions,
    DefinitionsError,
    Template,
    build_definitions,
    load_definitions,
    value_text,
)
from connector_traps.model import Classification, Trap


IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"


def trap(oid: str, *varbinds: tuple[str, str, object], source: str = "192.0.2.7") -> Trap:
    return Trap(source=(source, 40000), version="v2c", pdu="trap", trap_oid=oid, uptime=12345,
                agent_address=source, varbinds=tuple(varbinds), received=1_700_000_000.0)


def section(path: str = "traps.yaml"):
    return settings_from_string(f"[traps]\ndefinitions = {path}\n", source="settings.ini",
                                environ={}).section("traps")


def load_text(tmp_path: Path, text: str, name: str = "traps.yaml", registry=None) -> Definitions:
    (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return load_definitions(section(name), tmp_path, registry)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(DefinitionsError) as info:
        load_text(tmp_path, text)
    lines = str(info.value).splitlines()
    assert lines == [f"traps.yaml: {p}" for p in info.value.problems]
    return lines


def records(*items: dict) -> list[tuple[str, dict]]:
    return [(f"item {i}", item) for i, item in enumerate(items, start=1)]


# --------------------------------------------------------------------------
# Matching


PRECEDENCE = """\
- {oid: 1.3.6.1.4.1.9.9.1, name: exact, severity: major}
- {oid: 1.3.6.1.4.1.9.*, name: cisco, severity: warning}
- {oid: 1.3.6.1.4.1.9.9.*, name: ciscoMgmt, severity: minor}
"""


@pytest.mark.parametrize("oid, name", [
    ("1.3.6.1.4.1.9.9.1", "exact"),            # exact beats both prefixes
    ("1.3.6.1.4.1.9.9.2", "ciscoMgmt"),        # longest prefix
    ("1.3.6.1.4.1.9.9.1.0.5", "ciscoMgmt"),    # below the exact OID: only prefixes apply
    ("1.3.6.1.4.1.9.9", "cisco"),              # a prefix does not match itself...
    ("1.3.6.1.4.1.9.5.1", "cisco"),
    ("1.3.6.1.4.1.9", None),                   # ...so nothing matches the bare prefix
    ("1.3.6.1.4.1.99.1", None),                # arcs, not characters
    ("1.3.6.1.4.1.90", None),
])
def test_exact_then_longest_prefix(tmp_path: Path, oid: str, name: str | None) -> None:
    defs = load_text(tmp_path, PRECEDENCE)
    c = defs.classify(trap(oid), "router1")
    if name is None:
        assert not c.known and c.name == oid
    else:
        assert c.known and c.name == name
    found = defs.lookup(oid)
    assert (found.name if found else None) == name


def test_order_in_file_does_not_matter(tmp_path: Path) -> None:
    reversed_text = "\n".join(reversed(PRECEDENCE.strip().splitlines())) + "\n"
    defs = load_text(tmp_path, reversed_text)
    assert defs.classify(trap("1.3.6.1.4.1.9.9.7"), "r").name == "ciscoMgmt"
    assert defs.classify(trap("1.3.6.1.4.1.9.9.1"), "r").name == "exact"
    assert len(defs) == 3 and "1.3.6.1.4.1.9.*" in defs and "1.3.6.1.4.1.9.9.1" in defs
    assert "1.3.6.1.4.1.9" not in defs


def test_unknown_trap() -> None:
    defs = build_definitions([], "empty")
    t = trap("1.3.6.1.4.1.8072.2.3.0.1", ("1.3.6.1.2.1.1.5.0", "OctetString", b"x"))
    assert defs.classify(t, "host1") == Classification(
        name="1.3.6.1.4.1.8072.2.3.0.1", severity="unknown", action="none", alarm=None, key="",
        message="unknown trap 1.3.6.1.4.1.8072.2.3.0.1 from host1 (1 varbinds)", known=False)
    assert defs.varbind_names(t) == (None,)


def test_defaults_of_a_minimal_definition() -> None:
    defs = build_definitions(records(
        {"oid": "1.3.6.1.4.1.1.0.1", "name": "minimal", "severity": "INFO"},
        {"oid": "1.3.6.1.4.1.1.0.2", "name": "raiser", "severity": "major", "action": "raise"},
        {"oid": ".1.3.6.1.4.1.1.0.3", "name": "clearer", "severity": "info", "action": "Clear",
         "alarm": "raiser"},
    ), "test")
    assert defs.classify(trap("1.3.6.1.4.1.1.0.1"), "h") == Classification(
        name="minimal", severity="info", action="none", alarm=None, key="", message="minimal")
    raised = defs.classify(trap("1.3.6.1.4.1.1.0.2"), "h")
    assert (raised.action, raised.alarm) == ("raise", "raiser")       # alarm defaults to the name
    cleared = defs.classify(trap("1.3.6.1.4.1.1.0.3"), "h")          # a leading dot is accepted
    assert (cleared.action, cleared.alarm) == ("clear", "raiser")


def test_definitions_are_immutable() -> None:
    defs = build_definitions(records({"oid": "1.3.6.1.4.1.1.0.1", "name": "a", "severity": "info"}), "t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        defs.exact = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        defs.exact["1.2.3"] = None  # type: ignore[index]
    d = defs.lookup("1.3.6.1.4.1.1.0.1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.severity = "critical"  # type: ignore[misc]
    with pytest.raises(TypeError):
        d.varbinds["1.2"] = "x"  # type: ignore[index]


# --------------------------------------------------------------------------
# Templates


def render(message: str, *varbinds: tuple[str, str, object], host: str = "sw1") -> str:
    defs = build_definitions(records({"oid": "1.3.6.1.4.1.1.0.9", "name": "demo", "severity": "info",
                                      "message": message}), "t")
    return defs.classify(trap("1.3.6.1.4.1.1.0.9", *varbinds), host).message


def test_template_placeholders() -> None:
    vbs = [(f"{IF_INDEX}.3", "Integer", 3), (f"{IF_DESCR}.3", "OctetString", b"ge-0/0/3"),
           ("1.3.6.1.2.1.1.5.0", "OctetString", b"core1")]
    assert render("{name} {host} {trap_oid}: {$1} {$2} {$3}", *vbs) == \
        "demo sw1 1.3.6.1.4.1.1.0.9: 3 ge-0/0/3 core1"
    # {oid:X}: the exact varbind, else the first one below X (an instanced column).
    assert render("{oid:1.3.6.1.2.1.1.5.0} {oid:1.3.6.1.2.1.2.2.1.2}", *vbs) == "core1 ge-0/0/3"
    assert render("{oid:1.3.6.1.2.1.1.5}", *vbs) == "core1"


def test_template_missing_varbinds_show_a_question_mark() -> None:
    vbs = [(f"{IF_INDEX}.3", "Integer", 3)]
    assert render("{$1} {$2} {$10} {oid:1.3.6.1.2.1.2.2.1.2}", *vbs) == "3 ? ? ?"
    assert render("no varbinds: {$1}") == "no varbinds: ?"
    # A Null / noSuchObject value is present but empty.
    assert render("[{$1}]", ("1.3.6.1.2.1.1.5.0", "Null", None)) == "[]"


def test_template_values_are_never_interpreted() -> None:
    evil = b"{host} {$1} {0.__class__} {{x}} %s"
    assert render("got {$1} on {host}", ("1.3.6.1.2.1.1.5.0", "OctetString", evil)) == \
        "got {host} {$1} {0.__class__} {{x}} %s on sw1"
    assert render("{{literal}} {$1}", ("1.2.3", "Integer", 5)) == "{literal} 5"
    # Control characters (forged log lines) become spaces; binary becomes hex.
    assert render("{$1}|{$2}", ("1.2.3", "OctetString", b"a\r\nb\tc"),
                  ("1.2.4", "OctetString", b"\x00\x1b\xff")) == "a  b c|0x001bff"
    # Huge values are cut.
    long = render("{$1}", ("1.2.3", "OctetString", b"x" * 5000))
    assert len(long) == 1024 and long.endswith("...")


@pytest.mark.parametrize("text, problem", [
    ("{foo}", "unknown placeholder {foo} at character 1"),
    ("a {oid:1.3.x} b", "unknown placeholder {oid:1.3.x} at character 3"),
    ("{$0}", "unknown placeholder {$0} at character 1"),
    ("{name.__class__}", "unknown placeholder {name.__class__} at character 1"),
    ("{0}", "unknown placeholder {0} at character 1"),
    ("open {host", "unclosed '{' at character 6"),
    ("a } b", "single '}' at character 3; write }} for a literal brace"),
])
def test_bad_templates(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        Template(text)
    assert str(info.value).startswith(problem)


def test_value_text() -> None:
    assert value_text(b"abc\x00\x00") == "abc"
    assert value_text(b"\xc3\xa9t\xc3\xa9") == "été"
    assert value_text(b"\x00\x11\x22") == "0x001122"
    assert value_text(b"\xff") == "0xff"
    assert value_text(None) == ""
    assert value_text(42) == "42"
    assert value_text("1.3.6.1") == "1.3.6.1"


# --------------------------------------------------------------------------
# Keys


def keyed(key: list[str], *varbinds: tuple[str, str, object]) -> str:
    defs = build_definitions(records({"oid": "1.3.6.1.4.1.1.0.9", "name": "k", "severity": "major",
                                      "action": "raise", "key": key}), "t")
    return defs.classify(trap("1.3.6.1.4.1.1.0.9", *varbinds), "h").key


def test_key_values_and_instances() -> None:
    vbs = [(f"{IF_INDEX}.12", "Integer", 12), (f"{IF_DESCR}.12", "OctetString", b"eth12"),
           ("1.3.6.1.4.1.1.1.0", "OctetString", b"site A")]
    assert keyed([f"{IF_INDEX}.12"], *vbs) == "12"                  # exact OID: the value
    assert keyed([IF_DESCR], *vbs) == "12"                          # column OID: the instance
    assert keyed(["1.3.6.1.4.1.1.1.0", IF_DESCR], *vbs) == "site A|12"
    assert keyed(["1.3.6.1.4.1.1.1"], *vbs) == "0"                  # instance of a scalar: its .0
    assert keyed([IF_INDEX, "1.3.6.1.9.9"], *vbs) == "12|"         # missing: empty part
    assert keyed([], *vbs) == ""
    # Two-part index.
    assert keyed(["1.3.6.1.2.1.4.22.1.2"], ("1.3.6.1.2.1.4.22.1.2.3.10.0.0.1", "OctetString", b"")) \
        == "3.10.0.0.1"


def test_key_separator_is_escaped() -> None:
    assert keyed(["1.2.3", "1.2.4"], ("1.2.3", "OctetString", b"a|b"), ("1.2.4", "OctetString", b"c")) == r"a\|b|c"
    assert keyed(["1.2.3", "1.2.4"], ("1.2.3", "OctetString", b"a"), ("1.2.4", "OctetString", b"b|c")) == r"a|b\|c"
    assert keyed(["1.2.3"], ("1.2.3", "OctetString", b"x\\")) == "x\\\\"


# --------------------------------------------------------------------------
# Operators


HEX_DEF = """\
- oid: 1.3.6.1.4.1.2011.9.0.1
  name: hexDemo
  severity: major
  action: raise
  key: [1.3.6.1.4.1.2011.9.1.1.0]             # .0: the value (the column alone: the instance)
  message: "{oid:1.3.6.1.4.1.2011.9.1.1}: {$2} / {$3} / {$4}"
  varbinds:
    1.3.6.1.4.1.2011.9.1.1: alarmText
    1.3.6.1.4.1.2011.9.1.2: level
  operators:
    1.3.6.1.4.1.2011.9.1.1: [octets_to_text, hex_to_text]
    1.3.6.1.4.1.2011.9.1.2: {enum: {map: {1: critical, 2: major}}}
    1.3.6.1.4.1.2011.9.1.3: [{scale: {factor: 0.1}}]
    1.3.6.1.4.1.2011.9.1.4: [{regex: {pattern: "id=(\\\\d+)"}}]
"""


def test_operators_are_applied_before_message_and_key(tmp_path: Path) -> None:
    defs = load_text(tmp_path, HEX_DEF)
    t = trap("1.3.6.1.4.1.2011.9.0.1",
             ("1.3.6.1.4.1.2011.9.1.1.0", "OctetString", b"4D61696E73206661696C"),
             ("1.3.6.1.4.1.2011.9.1.2.0", "Integer", 2),
             ("1.3.6.1.4.1.2011.9.1.3.0", "Integer", 485),
             ("1.3.6.1.4.1.2011.9.1.4.0", "OctetString", b"alarm id=77"))
    c = defs.classify(t, "smu1")
    assert c.message == "Mains fail: major / 48.5 / 77"
    assert c.key == "Mains fail"
    assert defs.varbind_names(t) == ("alarmText", "level", None, None)


def test_operator_failure_or_skip_keeps_the_raw_value(tmp_path: Path) -> None:
    defs = load_text(tmp_path, HEX_DEF)
    t = trap("1.3.6.1.4.1.2011.9.0.1",
             ("1.3.6.1.4.1.2011.9.1.1.0", "OctetString", b"not hex at all"),   # passes through
             ("1.3.6.1.4.1.2011.9.1.2.0", "Integer", 9),                        # unmapped: kept
             ("1.3.6.1.4.1.2011.9.1.3.0", "OctetString", b"abc"),               # scale fails
             ("1.3.6.1.4.1.2011.9.1.4.0", "OctetString", b"no id"))             # regex SKIPs
    assert defs.classify(t, "smu1").message == "not hex at all: 9 / abc / no id"


def test_user_operators_come_from_the_registry(tmp_path: Path) -> None:
    registry = default_registry()
    registry.register("shout", stateless(lambda value, ctx: value_text(value).upper()))
    text = """\
    - oid: 1.3.6.1.4.1.1.0.1
      name: a
      severity: info
      message: "{$1}"
      operators: {1.3.6.1.4.1.1.1: [shout]}
    """
    defs = load_text(tmp_path, text, registry=registry)
    assert defs.classify(trap("1.3.6.1.4.1.1.0.1", ("1.3.6.1.4.1.1.1.0", "OctetString", b"hi")), "h").message == "HI"
    with pytest.raises(DefinitionsError, match="unknown operator 'shout'"):
        load_text(tmp_path, text)


# --------------------------------------------------------------------------
# The shipped traps.yaml


@pytest.fixture(scope="module")
def shipped() -> Definitions:
    settings = load_settings(example_path("settings.ini"))
    return load_definitions(settings.section("traps"), EXAMPLES_DIR)


def test_every_shipped_definition_loads_and_classifies(shipped: Definitions) -> None:
    assert len(shipped) >= 12
    for d in shipped:
        assert d.severity in SEVERITIES
        # With no varbinds at all, and with varbinds of unexpected types.
        oid = d.oid + ".1" if d.prefix else d.oid
        bare = shipped.classify(trap(oid), "host1")
        assert bare.known and bare.name == d.name and bare.message
        odd = trap(oid, *((o, "OctetString", b"\xff\x00junk") for o in (*d.varbinds, *d.operators)))
        assert shipped.classify(odd, "host1").name == d.name
        if d.action != "none":
            assert d.alarm


def test_shipped_standard_traps(shipped: Definitions) -> None:
    names = {oid: shipped.lookup(oid).name for oid in (
        "1.3.6.1.6.3.1.1.5.1", "1.3.6.1.6.3.1.1.5.2", LINK_DOWN, LINK_UP, "1.3.6.1.6.3.1.1.5.5")}
    assert list(names.values()) == ["coldStart", "warmStart", "linkDown", "linkUp", "authenticationFailure"]
    vbs = [(f"{IF_INDEX}.3", "Integer", 3), (f"{IF_ADMIN}.3", "Integer", 1), (f"{IF_OPER}.3", "Integer", 2)]
    down = shipped.classify(trap(LINK_DOWN, *vbs), "sw1")
    up = shipped.classify(trap(LINK_UP, (f"{IF_INDEX}.3", "Integer", 3), (f"{IF_ADMIN}.3", "Integer", 1),
                               (f"{IF_OPER}.3", "Integer", 1)), "sw1")
    assert down == Classification(name="linkDown", severity="major", action="raise", alarm="linkDown",
                                  key="3", message="Interface 3 down (admin up, oper down)")
    assert (up.action, up.alarm, up.key, up.message) == ("clear", "linkDown", "3", "Interface 3 up (admin up, oper up)")
    assert shipped.varbind_names(trap(LINK_DOWN, *vbs)) == ("ifIndex", "ifAdminStatus", "ifOperStatus")


def test_shipped_ups_traps(shipped: Definitions) -> None:
    vbs = [("1.3.6.1.2.1.33.1.6.2.1.1.4", "Integer", 4),
           ("1.3.6.1.2.1.33.1.6.2.1.2.4", "ObjectIdentifier", "1.3.6.1.2.1.33.1.6.3.3")]
    added = shipped.classify(trap("1.3.6.1.2.1.33.2.3", *vbs), "ups1")
    removed = shipped.classify(trap("1.3.6.1.2.1.33.2.4", *vbs), "ups1")
    assert (added.action, added.alarm, added.key) == ("raise", "upsAlarm", "4")
    assert (removed.action, removed.alarm, removed.key) == ("clear", "upsAlarm", "4")
    assert added.message == "UPS alarm upsAlarmLowBattery (alarm 4)"
    on_battery = shipped.classify(trap("1.3.6.1.2.1.33.2.1", ("1.3.6.1.2.1.33.1.2.3.0", "Integer", 12),
                                       ("1.3.6.1.2.1.33.1.2.2.0", "Integer", 30)), "ups1")
    assert (on_battery.name, on_battery.severity, on_battery.message) == (
        "upsTrapOnBattery", "major", "UPS on battery for 30 s, 12 min remaining")
    test = shipped.classify(trap("1.3.6.1.2.1.33.2.2", ("1.3.6.1.2.1.33.1.7.3.0", "Integer", 1)), "ups1")
    assert test.name == "upsTrapTestCompleted" and "donePass" in test.message


def test_shipped_huawei_pair(shipped: Definitions) -> None:
    vbs = [("1.3.6.1.4.1.2011.6.164.1.20.1.1.42", "Integer", 42),
           ("1.3.6.1.4.1.2011.6.164.1.20.1.2.42", "OctetString", b"AcFailure"),
           ("1.3.6.1.4.1.2011.6.164.1.20.1.4.42", "OctetString", b"4D61696E73206661696C757265")]
    raised = shipped.classify(trap("1.3.6.1.4.1.2011.6.164.2.1.0.1", *vbs), "smu1")
    cleared = shipped.classify(trap("1.3.6.1.4.1.2011.6.164.2.1.0.2", *vbs), "smu1")
    assert raised == Classification(name="hwPowerAlarmRaised", severity="major", action="raise",
                                    alarm="hwPowerAlarm", key="42",
                                    message="Power alarm AcFailure: Mains failure")
    assert (cleared.action, cleared.alarm, cleared.key) == ("clear", "hwPowerAlarm", "42")
    # Any other Huawei trap falls to the prefix.
    other = shipped.classify(trap("1.3.6.1.4.1.2011.5.25.219.2.1.1"), "sw9")
    assert (other.name, other.known, other.action) == ("huaweiTrap", True, "none")


# --------------------------------------------------------------------------
# Bad files: every problem, one line each, naming file, item, line and field


def test_bad_definitions_give_exact_lines(tmp_path: Path) -> None:
    text = """\
    - oid: 1.3.6.1.6.3.1.1.5.3
      name: linkDown
      severity: huge
    - oid: 1.3.6.1.4.1.9.**
      name: bad
      severity: info
    - name: noOid
      severity: info
      action: maybe
    - oid: 1.3.6.1.4.1.1.0.1
      name: tmpl
      severity: info
      message: "Disk {disk} full"
      key: [1.3.6.1.2.x, 1.3.6.1.2.1]
    - oid: 1.3.6.1.4.1.1.0.2
      name: ops
      severity: info
      operators:
        1.3.6.1.4.1.1.1: [nosuch]
        1.3.6.1.4.1.1.2: [{scale: {factor: "x"}}]
        1.3.6.1.4.1.1.3: [counter_rate]
        ifDescr: [mac]
      varbinds: {1.3.6.1.4.1.1.4: 5}
      colour: red
    - oid: 1.3.6.1.6.3.1.1.5.3
      name: linkDownAgain
      severity: major
    - just a string
    """
    assert problems(tmp_path, text) == [
        "traps.yaml: item 7 (line 28): expected a mapping with oid, name, severity..., got str",
    ]
    # Without the string, every field problem is reported, in order.
    assert problems(tmp_path, text.replace("- just a string\n", "")) == [
        "traps.yaml: item 1 (line 1, oid 1.3.6.1.6.3.1.1.5.3): severity = 'huge': expected one of: "
        "critical, major, minor, warning, info, unknown",
        "traps.yaml: item 2 (line 4, oid 1.3.6.1.4.1.9.**): oid = '1.3.6.1.4.1.9.**': expected a trap OID "
        "such as 1.3.6.1.6.3.1.1.5.3 or a prefix such as 1.3.6.1.4.1.2011.*",
        "traps.yaml: item 3 (line 7): oid: missing",
        "traps.yaml: item 3 (line 7): action = 'maybe': expected one of: raise, clear, none",
        "traps.yaml: item 4 (line 10, oid 1.3.6.1.4.1.1.0.1): key[0] = '1.3.6.1.2.x': expected a varbind "
        "OID such as 1.3.6.1.2.1.2.2.1.1",
        "traps.yaml: item 4 (line 10, oid 1.3.6.1.4.1.1.0.1): message = 'Disk {disk} full': unknown "
        "placeholder {disk} at character 6; expected {$N} (N-th varbind), {oid:1.3.6...}, {host}, "
        "{trap_oid} or {name} ({{ and }} for literal braces)",
        "traps.yaml: item 5 (line 15, oid 1.3.6.1.4.1.1.0.2): varbinds: 1.3.6.1.4.1.1.4: expected a name, got 5",
        "traps.yaml: item 5 (line 15, oid 1.3.6.1.4.1.1.0.2): operators: key 'ifDescr': expected a varbind "
        "OID such as 1.3.6.1.2.1.2.2.1.2",
        "traps.yaml: item 5 (line 15, oid 1.3.6.1.4.1.1.0.2): operators: 1.3.6.1.4.1.1.1: metric "
        "'1.3.6.1.4.1.1.1': unknown operator 'nosuch'; known operators: " + ", ".join(default_registry().names()),
        "traps.yaml: item 5 (line 15, oid 1.3.6.1.4.1.1.0.2): operators: 1.3.6.1.4.1.1.2: metric "
        "'1.3.6.1.4.1.1.2': operator 'scale': argument 'factor' must be a finite number, got 'x'",
        "traps.yaml: item 5 (line 15, oid 1.3.6.1.4.1.1.0.2): operators: 1.3.6.1.4.1.1.3: operator(s) "
        "counter_rate: an operator that keeps state between values cannot be used on trap varbinds",
        "traps.yaml: item 5 (line 15, oid 1.3.6.1.4.1.1.0.2): unknown field(s) colour; expected: oid, name, "
        "severity, action, alarm, key, message, varbinds, operators",
    ]
    # (item 6 repeats item 1's OID, but item 1 is refused: no duplicate to report)


def test_duplicate_oids(tmp_path: Path) -> None:
    text = """\
    - {oid: 1.3.6.1.6.3.1.1.5.3, name: linkDown, severity: major}
    - {oid: 1.3.6.1.4.1.9.*, name: cisco, severity: info}
    - {oid: .1.3.6.1.6.3.1.1.5.3, name: again, severity: major}
    - {oid: 1.3.6.1.4.1.9.*, name: ciscoAgain, severity: info}
    - {oid: 1.3.6.1.4.1.9, name: notADuplicate, severity: info}
    """
    assert problems(tmp_path, text) == [
        "traps.yaml: item 3 (line 3, oid .1.3.6.1.6.3.1.1.5.3): oid = 1.3.6.1.6.3.1.1.5.3: already defined "
        "by item 1 (line 1, oid 1.3.6.1.6.3.1.1.5.3)",
        "traps.yaml: item 4 (line 4, oid 1.3.6.1.4.1.9.*): oid = 1.3.6.1.4.1.9.*: already defined "
        "by item 2 (line 2, oid 1.3.6.1.4.1.9.*)",
    ]


@pytest.mark.parametrize("text, line", [
    ("- {oid: 1.2.3.4, name: a, severity: info\n", "traps.yaml: line 2, column 1: while parsing a flow mapping "
     "did not find expected ',' or '}'; not valid YAML"),
    ("- oid: 1.2.3.4\n  oid: 1.2.3.5\n", "traps.yaml: line 2, column 3: key 'oid' is given twice in one "
     "mapping (first on line 1); not valid YAML"),
    ("oid: 1.2.3.4\n", "traps.yaml: expected a list of trap definitions (mappings with oid, name, "
     "severity...), got dict"),
    ("- {oid: 1.3.6.1.4.1.1.*, severity: info}\n", "traps.yaml: item 1 (line 1, oid 1.3.6.1.4.1.1.*): name: missing"),
])
def test_bad_files(tmp_path: Path, text: str, line: str) -> None:
    assert problems(tmp_path, text) == [line]


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionsError) as info:
        load_definitions(section("nope.yaml"), tmp_path)
    assert str(info.value) == "nope.yaml: cannot read the file (No such file or directory)"
    assert len(load_text(tmp_path, "# nothing yet\n")) == 0


# --------------------------------------------------------------------------
# The [traps] section (its keys in settings.ini are checked by test_settings)


def traps_settings(text: str):
    return settings_from_string(f"[traps]\n{text}\n", source="settings.ini", environ={}).section("traps")


def test_traps_section_defaults_and_values() -> None:
    d = traps_settings("")
    assert (d.listen, d.communities, d.recv_buffer, d.queue_size) == (
        ("0.0.0.0:162", "[::]:162"), ("public",), 64 * 1024**2, 100_000)
    assert (d.definitions_source, d.definitions, d.definitions_table, d.v3_users, d.engine_id) == (
        "yaml", "traps.yaml", "traps", "trap-users.yaml", "")
    assert (d.rate_limit, d.rate_burst, d.dedup_window, d.map_unknown) == (200.0, 1000, 10.0, True)
    s = traps_settings("listen = [::1]:1162, 127.0.0.1:0\ncommunities =\nengine_id = 0x80:00:1F:88:04\n"
                       "rate_limit = 0\ndedup_window = 0")
    assert s.listen == ("[::1]:1162", "127.0.0.1:0") and s.communities == ()
    assert s.engine_id == "80001f8804" and (s.rate_limit, s.dedup_window) == (0.0, 0.0)


@pytest.mark.parametrize("text, detail", [
    ("listen = [1.2.3.4]:162", "'[1.2.3.4]:162' has brackets around an IPv4 address"),
    ("listen = host:162", "'host:162' has 'host', which is not an IP address"),
    ("listen = 1.2.3.4:70000", "'1.2.3.4:70000' has port 70000, out of range"),
    ("listen = 1.2.3.4:162, 1.2.3.4:162", "an endpoint is given twice"),
    ("engine_id = 8000", "has 2 octets"),
    ("engine_id = 80001f880", "is not an even number of hex digits"),
])
def test_traps_section_bad_values(text: str, detail: str) -> None:
    with pytest.raises(SettingsError) as info:
        traps_settings(text)
    key, _, value = text.partition(" = ")
    assert str(info.value).startswith(f"settings.ini: [traps] {key} = {value!r}: {detail}; expected ")
