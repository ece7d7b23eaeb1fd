"""Trap definitions from an SQL table (the legacy TRAPS table), in SQLite and the real MariaDB.

A table with the fixed column names (upper case, as legacy databases
write them) is created with SQLAlchemy under a unique name, read through
settings.ini text, and dropped afterwards.
"""

from __future__ import annotations


import pytest
import sqlalchemy as sa

from connector.settings import SettingsError, mask_url, settings_from_string
from connector_traps.definitions import DefinitionsError, load_definitions
from connector_traps.model import Classification, Trap

pytestmark = pytest.mark.integration


ROWS = [
    {"ID": 1, "OID": "1.3.6.1.6.3.1.1.5.3", "NAME": "linkDown", "SEVERITY": "major", "ACTION": "raise",
     "ALARM": None, "KEY_VARBINDS": "1.3.6.1.2.1.2.2.1.1",
     "MESSAGE": "Interface {oid:1.3.6.1.2.1.2.2.1.2} down",
     "VARBINDS": '{"1.3.6.1.2.1.2.2.1.1": "ifIndex", "1.3.6.1.2.1.2.2.1.2": "ifDescr"}',
     "OPERATORS": None, "COMMENT": "ignored column"},
    {"ID": 2, "OID": "1.3.6.1.6.3.1.1.5.4", "NAME": "linkUp", "SEVERITY": "info", "ACTION": "clear",
     "ALARM": "linkDown", "KEY_VARBINDS": "1.3.6.1.2.1.2.2.1.1", "MESSAGE": "Interface {$2} up",
     "VARBINDS": None, "OPERATORS": None, "COMMENT": None},
    {"ID": 3, "OID": "1.3.6.1.4.1.2011.6.164.2.1.0.1", "NAME": "hwPowerAlarmRaised", "SEVERITY": "critical",
     "ACTION": "raise", "ALARM": "hwPowerAlarm", "KEY_VARBINDS": "1.3.6.1.4.1.2011.6.164.1.20.1.1",
     "MESSAGE": "Alarme {$2} : {$3} ({host})",
     "VARBINDS": "{1.3.6.1.4.1.2011.6.164.1.20.1.4: hwAlarmDescription}",
     "OPERATORS": "1.3.6.1.4.1.2011.6.164.1.20.1.4: [octets_to_text, hex_to_text]",
     "COMMENT": "Alimentation"},
    {"ID": 4, "OID": "1.3.6.1.4.1.2011.*", "NAME": "huaweiTrap", "SEVERITY": "warning", "ACTION": None,
     "ALARM": None, "KEY_VARBINDS": None, "MESSAGE": None, "VARBINDS": None, "OPERATORS": None, "COMMENT": None},
]


def create_traps(engine: sa.Engine, name: str, rows: list[dict] = ROWS) -> None:
    table = sa.Table(
        name, sa.MetaData(),
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("OID", sa.String(128), nullable=False),
        sa.Column("NAME", sa.String(64)),
        sa.Column("SEVERITY", sa.String(16)),
        sa.Column("ACTION", sa.String(8)),
        sa.Column("ALARM", sa.String(64)),
        sa.Column("KEY_VARBINDS", sa.String(512)),
        sa.Column("MESSAGE", sa.Unicode(512)),
        sa.Column("VARBINDS", sa.Text),
        sa.Column("OPERATORS", sa.Text),
        sa.Column("COMMENT", sa.Unicode(64)),
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)


def section_for(url: str, table: str):
    text = f"[traps]\ndefinitions_source = sql\ndefinitions_url = {url}\ndefinitions_table = {table}\n"
    return settings_from_string(text, source="settings.ini", environ={}).section("traps")


def trap(oid: str, *varbinds: tuple[str, str, object]) -> Trap:
    return Trap(source=("192.0.2.1", 1162), version="v2c", pdu="trap", trap_oid=oid, uptime=None,
                agent_address="192.0.2.1", varbinds=tuple(varbinds), received=1_700_000_000.0)


@pytest.fixture
def database(sql_database):
    """The shared SQLite/MariaDB fixture of tests/conftest.py."""
    return sql_database


def test_definitions_from_a_table(database: tuple[str, sa.Engine, str]) -> None:
    url, engine, name = database
    create_traps(engine, name)
    defs = load_definitions(section_for(url, name), "/nonexistent")
    assert len(defs) == 4 and defs.source.endswith(f"table {name}")
    down = defs.classify(trap("1.3.6.1.6.3.1.1.5.3", ("1.3.6.1.2.1.2.2.1.1.7", "Integer", 7),
                              ("1.3.6.1.2.1.2.2.1.2.7", "OctetString", b"ge-0/0/7")), "sw1")
    assert down == Classification(name="linkDown", severity="major", action="raise", alarm="linkDown",
                                  key="7", message="Interface ge-0/0/7 down")
    up = defs.classify(trap("1.3.6.1.6.3.1.1.5.4", ("1.3.6.1.2.1.2.2.1.1.7", "Integer", 7),
                            ("1.3.6.1.2.1.2.2.1.2.7", "OctetString", b"ge-0/0/7")), "sw1")
    assert (up.action, up.alarm, up.key, up.message) == ("clear", "linkDown", "7", "Interface ge-0/0/7 up")
    hw = trap("1.3.6.1.4.1.2011.6.164.2.1.0.1",
              ("1.3.6.1.4.1.2011.6.164.1.20.1.1.5", "Integer", 5),
              ("1.3.6.1.4.1.2011.6.164.1.20.1.2.5", "OctetString", b"AcFailure"),
              ("1.3.6.1.4.1.2011.6.164.1.20.1.4.5", "OctetString", "436f757075726520736563746575722e".encode()))
    c = defs.classify(hw, "smu1")
    assert (c.severity, c.alarm, c.key, c.message) == ("critical", "hwPowerAlarm", "5",
                                                       "Alarme AcFailure : Coupure secteur. (smu1)")
    assert defs.varbind_names(hw) == (None, None, "hwAlarmDescription")
    other = defs.classify(trap("1.3.6.1.4.1.2011.2.15"), "smu1")
    assert (other.name, other.action, other.message) == ("huaweiTrap", "none", "huaweiTrap")
    assert not defs.classify(trap("1.3.6.1.4.1.9.9.41.2.0.1"), "sw1").known


def test_bad_rows_are_reported(database: tuple[str, sa.Engine, str]) -> None:
    url, engine, name = database
    rows = [dict(ROWS[0], SEVERITY="grave"), dict(ROWS[1], OID="1.3.6.x"),
            dict(ROWS[2], OPERATORS="{1.3.6.1.4.1.2011.6.164.1.20.1.4: [nosuch"),
            dict(ROWS[3], MESSAGE="{0.__class__}")]
    create_traps(engine, name, rows)
    with pytest.raises(DefinitionsError) as info:
        load_definitions(section_for(url, name), ".")
    problems = info.value.problems
    assert problems[0].startswith("row 3: operators: not valid YAML or JSON (")
    assert problems[1:] == []       # a row whose text columns do not parse stops the load first
    # With that text fixed, every field problem of every row is reported.
    fixed = [dict(r) for r in rows]
    fixed[2]["OPERATORS"] = None
    table = sa.Table(name, sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(table.delete())
        conn.execute(table.insert(), fixed)
    with pytest.raises(DefinitionsError) as info:
        load_definitions(section_for(url, name), ".")
    shown = f"{mask_url(url)} table {name}"
    assert str(info.value).splitlines() == [f"{shown}: {p}" for p in [
        "row 1 (oid 1.3.6.1.6.3.1.1.5.3): severity = 'grave': expected one of: critical, major, minor, "
        "warning, info, unknown",
        "row 2 (oid 1.3.6.x): oid = '1.3.6.x': expected a trap OID such as 1.3.6.1.6.3.1.1.5.3 or a prefix "
        "such as 1.3.6.1.4.1.2011.*",
        "row 4 (oid 1.3.6.1.4.1.2011.*): message = '{0.__class__}': unknown placeholder {0.__class__} at "
        "character 1; expected {$N} (N-th varbind), {oid:1.3.6...}, {host}, {trap_oid} or {name} "
        "({{ and }} for literal braces)",
    ]]


def test_missing_table_and_columns(database: tuple[str, sa.Engine, str]) -> None:
    url, engine, name = database
    with pytest.raises(DefinitionsError) as info:
        load_definitions(section_for(url, name), ".")
    assert info.value.problems == [f"no table {name!r} in the database"]
    sa.Table(name, sa.MetaData(), sa.Column("oid", sa.String(64)), sa.Column("label", sa.String(64))).create(engine)
    with pytest.raises(DefinitionsError) as info:
        load_definitions(section_for(url, name), ".")
    assert [p.split(" (")[0] for p in info.value.problems] == ["no column 'name'", "no column 'severity'"]


def test_sql_source_needs_a_url_and_an_identifier() -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_string("[traps]\ndefinitions_source = sql\n", source="settings.ini", environ={})
    assert str(info.value) == ("settings.ini: [traps] definitions_url = '': nothing given; "
                               "expected a SQLAlchemy URL when definitions_source = sql")
    with pytest.raises(SettingsError) as info:
        settings_from_string("[traps]\ndefinitions_table = traps; DROP TABLE x\n", source="settings.ini",
                             environ={})
    assert "definitions_table" in str(info.value) and "SQL identifier" in str(info.value)
