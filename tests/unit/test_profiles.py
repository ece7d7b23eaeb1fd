"""Tests of connector_snmp.profiles: the YAML format, its validation and the shipped profiles."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from connector_snmp.model import AlarmTableSpec, Profile
from centaure_shared.inventory import Device
from centaure_shared.metric import MetricSpec, OperatorCall
from connector_snmp.profiles import ProfileError, load_profiles, normalize_oid, parse_profile
from connector_snmp.profiles import SHIPPED_PROFILES_DIR

SHIPPED = Path(SHIPPED_PROFILES_DIR)


def parse(text: str) -> Profile:
    return parse_profile(yaml.safe_load(textwrap.dedent(text)), "p.yaml")


def error(text: str) -> str:
    with pytest.raises(ProfileError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith("p.yaml: ") and "\n" not in message
    return message.removeprefix("p.yaml: ")


def device(device_type: str, model: str = "") -> Device:
    return Device(name="d", address="127.0.0.1", device_type=device_type, model=model)


MINIMAL = """
name: p
device_types: [switch]
scalars:
  - {name: up, oid: 1.3.6.1.2.1.1.3.0}
"""


# --------------------------------------------------------------------------
# The format


def test_full_format() -> None:
    p = parse("""
        name: if-mib
        device_types: [switch, router]
        interval: 30s
        scalars:
          - {name: sysUpTime, oid: 1.3.6.1.2.1.1.3.0, kind: gauge, unit: cs}
          - {name: sysDescr, oid: .1.3.6.1.2.1.1.1.0, kind: text, operators: hex_to_text}
        tables:
          - name: ifTable
            columns:
              - {name: ifHCInOctets, oid: 1.3.6.1.2.1.31.1.1.1.6, kind: counter, unit: octets,
                 operators: [{counter_rate: {bits: 64}}, to_float, {round: null}]}
        alarm_tables:
          - name: hwAlarmTable
            key: 1.3.6.1.4.1.2011.5.1
            name_column: 1.3.6.1.4.1.2011.5.2
            severity: 1.3.6.1.4.1.2011.5.3
            severity_map: {1: critical, "2": major, 3: minor, 4: warning}
            message: 1.3.6.1.4.1.2011.5.4
            since: null
    """)
    assert p.name == "if-mib" and p.device_types == ("switch", "router") and p.interval == 30.0
    assert p.scalars == (
        MetricSpec("sysUpTime", "1.3.6.1.2.1.1.3.0", "gauge", "cs"),
        MetricSpec("sysDescr", "1.3.6.1.2.1.1.1.0", "text", None, (OperatorCall("hex_to_text"),)),
    )
    (table,) = p.tables
    (col,) = table.columns
    assert table.name == "ifTable" and col.kind == "counter"
    assert col.operators == (OperatorCall("counter_rate", {"bits": 64}), OperatorCall("to_float"),
                             OperatorCall("round"))
    assert col.operators[0].args == {"bits": 64}
    assert p.alarm_tables == (AlarmTableSpec(
        name="hwAlarmTable", key="1.3.6.1.4.1.2011.5.1", name_column="1.3.6.1.4.1.2011.5.2",
        severity="1.3.6.1.4.1.2011.5.3",
        severity_map={"1": "critical", "2": "major", "3": "minor", "4": "warning"},
        message="1.3.6.1.4.1.2011.5.4", since=None),)
    assert p.alarm_tables[0].severity_map["1"] == "critical"


def test_defaults() -> None:
    p = parse(MINIMAL)
    assert p.scalars[0] == MetricSpec("up", "1.3.6.1.2.1.1.3.0", "gauge", None, ())
    assert (p.tables, p.alarm_tables, p.interval) == ((), (), None)


@pytest.mark.parametrize("raw, expected", [
    ("1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.3.0"),
    (".1.3.6.1", "1.3.6.1"),
    ("1.3", "1.3"),
    ("2.999.1", "2.999.1"),
    ("1.40", None),
    ("3.1", None),
    ("1", None),
    ("1.03.6", None),
    ("1.3.6.1.4294967296", None),
    ("SNMPv2-MIB::sysUpTime.0", None),
    ("sysUpTime.0", None),
    ("1.3.6.", None),
    ("1..3", None),
])
def test_normalize_oid(raw: str, expected: str | None) -> None:
    assert normalize_oid(raw) == expected


# --------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("text, expected", [
    ("name: p\n", "device_types: missing; it is required"),
    ("[1, 2]\n", "expected a mapping with keys name, device_types, interval, scalars, tables, alarm_tables"),
    (MINIMAL + "description: x\n", "description: unknown key; expected one of: name, device_types, interval,"),
    (MINIMAL.replace("[switch]", "[]"), "device_types = []: expected a non-empty list of device types"),
    (MINIMAL.replace("[switch]", "[power supply]"),
     "device_types[0] = 'power supply': expected a device type (one word)"),
    (MINIMAL.replace("name: p", "name: my profile"), "name = 'my profile': expected a name of letters"),
    (MINIMAL + "interval: soon\n", "interval = 'soon': expected a duration"),
    (MINIMAL.replace("1.3.6.1.2.1.1.3.0", "sysUpTime.0"),
     "scalars[0].oid = 'sysUpTime.0': expected a numeric dotted OID such as 1.3.6.1.2.1.1.3.0 (no MIB names)"),
    (MINIMAL.replace("1.3.6.1.2.1.1.3.0", "1.3"), "scalars[0].oid = 1.3: expected a numeric dotted OID"),
    (MINIMAL.replace("}", ", kind: float}"), "scalars[0].kind = 'float': expected one of: gauge, counter, text"),
    (MINIMAL.replace("}", ", units: s}"), "scalars[0].units: unknown key; expected one of: name, oid, kind,"),
    (MINIMAL.replace(", oid: 1.3.6.1.2.1.1.3.0", ""), "scalars[0].oid: missing; it is required"),
    (MINIMAL + "  - {name: up, oid: 1.3.6.1.2.1.1.5.0}\n",
     "scalars[1].name = 'up': metric name already used at scalars[0]; expected unique metric names"),
    (MINIMAL + "tables:\n  - {name: t, columns: [{name: up, oid: 1.3.6.1.2.1.2.2.1.1}]}\n",
     "tables[0].columns[0].name = 'up': metric name already used at scalars[0]"),
    (MINIMAL + "tables:\n  - {name: t, columns: []}\n", "tables[0].columns: expected at least one column"),
    (MINIMAL + "tables:\n  - {name: t, columns: [{name: a, oid: 1.3.6.1.1}]}\n"
               "  - {name: t, columns: [{name: b, oid: 1.3.6.1.2}]}\n",
     "tables[1].name = 't': table name already used at tables[0]"),
    (MINIMAL + "tables: {name: t}\n", "tables: expected a list of tables"),
    (MINIMAL.replace("}", ", operators: [{a: 1, b: 2}]}"),
     "scalars[0].operators[0] = {'a': 1, 'b': 2}: expected an operator name or a one-key mapping"),
    (MINIMAL.replace("}", ", operators: [{scale: 10}]}"),
     "scalars[0].operators[0].scale = 10: expected the operator's arguments as a mapping"),
    (MINIMAL.replace("}", ", operators: [2x]}"),
     "scalars[0].operators[0] = '2x': expected an operator name"),
    (MINIMAL.replace("}", ", operators: 7}"), "scalars[0].operators = 7: expected a list of operator names"),
    ("name: p\ndevice_types: [x]\n", "a profile must poll something"),
    (MINIMAL + "alarm_tables:\n  - {name: a}\n",
     "alarm_tables[0]: expected at least one column OID among key, name_column, severity, message"),
    (MINIMAL + "alarm_tables:\n  - {name: a, severity: 1.3.6.1.5, severity_map: {1: fatal}}\n",
     "alarm_tables[0].severity_map.1 = 'fatal': expected one of: critical, major, minor, warning, info, unknown"),
    (MINIMAL + "alarm_tables:\n  - {name: a, message: 1.3.6.1.5, severity_map: {1: major}}\n",
     "alarm_tables[0].severity_map: a severity_map needs a severity column OID"),
    (MINIMAL + "alarm_tables:\n  - {name: a, key: hwAlarmKey}\n",
     "alarm_tables[0].key = 'hwAlarmKey': expected a numeric dotted OID such as 1.3.6.1.2.1.1.3.0 (no MIB names), "
     "or null"),
])
def test_errors(text: str, expected: str) -> None:
    assert error(text).startswith(expected)


def test_empty_document() -> None:
    with pytest.raises(ProfileError, match="p.yaml: empty file; expected a profile"):
        parse_profile(None, "p.yaml")


# --------------------------------------------------------------------------
# Folders


def test_folder_loading_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL.replace("name: p", "name: a"))
    (tmp_path / "b.yml").write_text(MINIMAL.replace("name: p", "name: b").replace("[switch]", "[switch, huaweiSMU02C]"))
    (tmp_path / ".hidden.yaml").write_text("not: [a profile")
    (tmp_path / "notes.txt").write_text("ignored")
    ps = load_profiles(tmp_path)
    assert sorted(p.name for p in ps) == ["a", "b"] and len(ps) == 2 and "a" in ps
    assert ps.sources["b"].endswith("b.yml")
    assert [p.name for p in ps.for_device(device("Switch"))] == ["a", "b"]
    assert [p.name for p in ps.for_device(device("huawei", "SMU02C"))] == ["b"]
    assert ps.for_device(device("huawei", "SMU11B")) == []

    (tmp_path / "c.yaml").write_text(MINIMAL.replace("name: p", "name: a"))
    with pytest.raises(ProfileError, match=r"c\.yaml: name: profile 'a' is already defined in .*a\.yaml"):
        load_profiles(tmp_path)

    (tmp_path / "c.yaml").write_text("name: c\nname: d\n")
    with pytest.raises(ProfileError, match=r"c\.yaml: line 2, column 1: .*'name' is given twice .*name_column"):
        load_profiles(tmp_path)

    with pytest.raises(ProfileError, match="cannot read the profiles folder"):
        load_profiles(tmp_path / "missing")


def test_model_docstring_example_with_name_column() -> None:
    # The format documented in connector_snmp/model.py, with the alarm
    # table's name column spelled name_column (YAML forbids 'name' twice).
    p = parse("""
        name: if-mib
        device_types: [switch, router]
        interval: 60s
        scalars:
          - {name: sysUpTime, oid: 1.3.6.1.2.1.1.3.0, kind: gauge, unit: cs}
        tables:
          - name: ifTable
            columns:
              - {name: ifHCInOctets, oid: 1.3.6.1.2.1.31.1.1.1.6, kind: counter, unit: octets,
                 operators: [{counter_rate: {bits: 64}}]}
        alarm_tables:
          - name: hwAlarmTable
            key: 1.3.6.1.4.1.2011.1.1
            name_column: 1.3.6.1.4.1.2011.1.2
            severity: 1.3.6.1.4.1.2011.1.3
            severity_map: {"1": critical, "2": major, "3": minor, "4": warning}
            message: 1.3.6.1.4.1.2011.1.4
            since: null
    """)
    assert p.alarm_tables[0].name == "hwAlarmTable"


# --------------------------------------------------------------------------
# Shipped profiles


def test_every_shipped_profile_loads() -> None:
    ps = load_profiles(SHIPPED)
    files = sorted(f.name for f in SHIPPED.iterdir() if f.suffix in (".yaml", ".yml"))
    assert len(ps) == len(files)
    assert set(ps.profiles) == {"mib2-system", "if-mib", "host-resources", "ups-mib",
                                "huawei-smu", "eltek-smartpack", "vertiv-netsure"}


@pytest.mark.parametrize("device_type, model, expected", [
    ("switch", "", ["if-mib", "mib2-system"]),
    ("router", "", ["if-mib", "mib2-system"]),
    ("server", "", ["host-resources", "if-mib", "mib2-system"]),
    ("ups", "", ["mib2-system", "ups-mib"]),
    ("power", "", ["mib2-system"]),
    ("huawei", "SMU02C", ["huawei-smu", "mib2-system"]),
    ("eltek", "", ["eltek-smartpack", "mib2-system"]),
    ("vertiv", "", ["mib2-system", "vertiv-netsure"]),
])
def test_shipped_profiles_by_device_type(device_type: str, model: str, expected: list[str]) -> None:
    ps = load_profiles(SHIPPED)
    assert [p.name for p in ps.for_device(device(device_type, model))] == expected


def metric_names(p: Profile) -> set[str]:
    return {m.name for m in p.scalars} | {c.name for t in p.tables for c in t.columns}


def test_shipped_profile_contents() -> None:
    ps = load_profiles(SHIPPED)
    assert metric_names(ps.profiles["mib2-system"]) == {"sysDescr", "sysObjectID", "sysUpTime", "sysName",
                                                        "sysLocation"}
    assert {"ifDescr", "ifType", "ifMtu", "ifSpeed", "ifAdminStatus", "ifOperStatus", "ifInOctets",
            "ifOutOctets", "ifInErrors", "ifOutErrors", "ifHCInOctets", "ifHCOutOctets", "ifHighSpeed",
            "ifAlias"} <= metric_names(ps.profiles["if-mib"])
    assert {"hrSystemUptime", "hrStorageDescr", "hrStorageSize", "hrStorageUsed", "hrStorageAllocationUnits",
            "hrProcessorLoad"} <= metric_names(ps.profiles["host-resources"])
    ups = ps.profiles["ups-mib"]
    assert {"upsBatteryStatus", "upsSecondsOnBattery", "upsEstimatedMinutesRemaining",
            "upsEstimatedChargeRemaining", "upsBatteryVoltage", "upsInputVoltage", "upsInputFrequency",
            "upsOutputSource", "upsOutputVoltage", "upsOutputCurrent", "upsOutputPower", "upsOutputPercentLoad",
            "upsAlarmsPresent"} <= metric_names(ups)
    assert all(m.oid.startswith("1.3.6.1.2.1.33.") for m in ups.scalars)
    assert [a.name for a in ups.alarm_tables] == ["upsAlarmTable"]
    for name, enterprise in (("huawei-smu", "1.3.6.1.4.1.2011.6.164."), ("eltek-smartpack", "1.3.6.1.4.1.12148.10."),
                             ("vertiv-netsure", "1.3.6.1.4.1.6302.2.1.")):
        p = ps.profiles[name]
        oids = [m.oid for m in p.scalars] + [c.oid for t in p.tables for c in t.columns]
        assert oids and all(o.startswith(enterprise) for o in oids), name
        assert p.alarm_tables and p.alarm_tables[0].severity_map


def test_shipped_operators_exist_in_the_registry() -> None:
    operators = pytest.importorskip("centaure_shared.operators")
    registry = operators.default_registry()
    for p in load_profiles(SHIPPED):
        for m in list(p.scalars) + [c for t in p.tables for c in t.columns]:
            for call in m.operators:
                registry.build(call)
