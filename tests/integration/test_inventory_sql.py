"""The SQL inventory against SQLite and the real MariaDB (database ``test``).

A legacy ``machines`` table (upper-case columns, constructor names as
legacy databases write them) is created with SQLAlchemy under a unique
name, read through settings.ini text, and dropped afterwards.
"""

from __future__ import annotations


import pytest
import sqlalchemy as sa

from connector.settings import Secret, SettingsError, settings_from_string
from centaure_shared.inventory import InventoryError, load_inventory
from centaure_shared.settings import InventorySettings

pytestmark = pytest.mark.integration


ROWS = [
    {"ID": 134401, "NAME": "134401-AE-HUA-1", "AE_IP": "10.90.0.2", "AE_CONSTRUCTEUR": "Huawei",
     "AE_TYPE": "SMU02C", "AE_PORT": None, "AMONT": None, "AE_SUP": 1, "SITE": "Lyon Part-Dieu"},
    {"ID": 130320, "NAME": "130320-AE-ELT-1", "AE_IP": "10.90.0.30", "AE_CONSTRUCTEUR": "Eltek",
     "AE_TYPE": "SmartPack2", "AE_PORT": 1161, "AMONT": "134401-AE-HUA-1", "AE_SUP": 1, "SITE": None},
    {"ID": 131207, "NAME": "131207-AE-VRT-1", "AE_IP": "10.90.0.40", "AE_CONSTRUCTEUR": "Vertiv / Emerson",
     "AE_TYPE": "ACU+", "AE_PORT": 161, "AMONT": "134401-AE-HUA-1", "AE_SUP": 0, "SITE": "Été"},
]


def create_machines(engine: sa.Engine, name: str, rows: list[dict] = ROWS) -> sa.Table:
    table = sa.Table(
        name, sa.MetaData(),
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("NAME", sa.String(64), nullable=False),
        sa.Column("AE_IP", sa.String(64)),
        sa.Column("AE_CONSTRUCTEUR", sa.String(64)),
        sa.Column("AE_TYPE", sa.String(64)),
        sa.Column("AE_PORT", sa.Integer),
        sa.Column("AMONT", sa.String(64)),
        sa.Column("AE_SUP", sa.SmallInteger),
        sa.Column("SITE", sa.Unicode(64)),
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    return table


def settings_for(url: str, table: str, extra: str = "") -> InventorySettings:
    text = f"""[inventory]
source = sql
url = {url}
table = {table}
name_column = NAME
address_column = AE_IP
type_column = AE_CONSTRUCTEUR
model_column = AE_TYPE
id_column = ID
port_column = AE_PORT
parent_column = AMONT
{extra}"""
    return settings_from_string(text, source="settings.ini", environ={}).inventory


@pytest.fixture
def database(sql_database):
    """The shared SQLite/MariaDB fixture of tests/conftest.py."""
    return sql_database


def test_legacy_machines_table_is_loaded(database: tuple[str, sa.Engine, str]) -> None:
    url, engine, name = database
    create_machines(engine, name)
    inv = load_inventory(settings_for(url, name), "/nonexistent")
    assert sorted(inv.devices) == ["130320-AE-ELT-1", "131207-AE-VRT-1", "134401-AE-HUA-1"]
    hua, elt, vrt = inv["134401-AE-HUA-1"], inv["130320-AE-ELT-1"], inv["131207-AE-VRT-1"]
    assert (hua.address, hua.device_type, hua.model, hua.id, hua.port, hua.parent) == (
        "10.90.0.2", "huawei", "SMU02C", "134401", 161, None)
    assert (elt.device_type, elt.port, elt.parent) == ("eltek", 1161, "134401-AE-HUA-1")
    assert (vrt.device_type, vrt.model) == ("vertiv", "ACU+")
    # Every column, as text; NULL as ''.
    assert hua.fields == {"ID": "134401", "NAME": "134401-AE-HUA-1", "AE_IP": "10.90.0.2",
                          "AE_CONSTRUCTEUR": "Huawei", "AE_TYPE": "SMU02C", "AE_PORT": "", "AMONT": "",
                          "AE_SUP": "1", "SITE": "Lyon Part-Dieu"}
    assert vrt.fields["AE_CONSTRUCTEUR"] == "Vertiv / Emerson" and vrt.fields["SITE"] == "Été"
    assert vrt.fields["AE_SUP"] == "0"
    assert [d.name for d in inv.children("134401-AE-HUA-1")] == ["130320-AE-ELT-1", "131207-AE-VRT-1"]
    assert inv.source.endswith(f"table {name}")


def test_fields_setting_selects_columns(database: tuple[str, sa.Engine, str]) -> None:
    url, engine, name = database
    create_machines(engine, name)
    inv = load_inventory(settings_for(url, name, "fields = SITE\n"), ".")
    assert set(inv["134401-AE-HUA-1"].fields) == {"ID", "NAME", "AE_IP", "AE_CONSTRUCTEUR", "AE_TYPE",
                                                  "AE_PORT", "AMONT", "SITE"}


def test_lower_case_settings_match_upper_case_columns(database: tuple[str, sa.Engine, str]) -> None:
    url, engine, name = database
    create_machines(engine, name)
    section = settings_for(url, name).__class__(
        source="sql", url=Secret(url), table=name, name_column="name", address_column="ae_ip",
        type_column="ae_constructeur", model_column="ae_type", id_column="id", parent_column="amont")
    inv = load_inventory(section, ".")
    assert inv["130320-AE-ELT-1"].parent == "134401-AE-HUA-1"


def test_bad_rows_are_reported(database: tuple[str, sa.Engine, str]) -> None:
    url, engine, name = database
    rows = [dict(ROWS[0]), dict(ROWS[1], AE_IP=None), dict(ROWS[2], AMONT="999999-AE-XXX-1")]
    create_machines(engine, name, rows)
    with pytest.raises(InventoryError) as info:
        load_inventory(settings_for(url, name), ".")
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        "AE_IP: missing address",
        "AMONT = '999999-AE-XXX-1': unknown parent device",
    ]
    assert info.value.problems[0].startswith("row ")


def test_missing_table_and_column(database: tuple[str, sa.Engine, str]) -> None:
    url, engine, name = database
    with pytest.raises(InventoryError, match=f"no table '{name}' in the database"):
        load_inventory(settings_for(url, name), ".")
    create_machines(engine, name)
    with pytest.raises(InventoryError, match=r"\[inventory\] address_column = 'IP': no such column \(columns: ID, NAME"):
        load_inventory(settings_for(url, name).__class__(
            source="sql", url=Secret(url), table=name, name_column="NAME", address_column="IP"), ".")


@pytest.mark.parametrize("bad", ["machines x", "machines'; DROP TABLE machines; --", 'ma"chines', "`machines`",
                                 "test.machines"])
def test_table_names_with_quotes_or_spaces_are_refused(database: tuple[str, sa.Engine, str], bad: str) -> None:
    url, engine, name = database
    create_machines(engine, name)
    with pytest.raises(SettingsError) as info:
        settings_for(url, bad)
    assert str(info.value).startswith("settings.ini: [inventory] table = ")
    assert "expected an SQL identifier" in str(info.value)
    # A section built in code is refused too, before any SQL is sent.
    section = InventorySettings(source="sql", url=Secret(url), table=bad)
    with pytest.raises(InventoryError, match=r"\[inventory\] table = .*expected an SQL identifier"):
        load_inventory(section, ".")
    # And the real table is still there.
    assert sa.inspect(engine).has_table(name)


def test_password_never_in_errors() -> None:
    url = "mysql+pymysql://centaure:s3cret-pw@127.0.0.1:1/inventory?connect_timeout=1"
    section = InventorySettings(source="sql", url=Secret(url), table="machines")
    with pytest.raises(InventoryError) as info:
        load_inventory(section, ".")
    assert "s3cret-pw" not in str(info.value) and "centaure:***@127.0.0.1:1" in str(info.value)
