"""Tests of centaure_shared.inventory: YAML and CSV sources, mapping, validation, look-ups."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from connector.settings import SettingsError, load_settings, settings_from_string
from centaure_shared.inventory import (
    Inventory,
    InventoryError,
    load_inventory,
    normalize_device_type,
)
from centaure_shared.settings import InventorySettings
from centaure.shipped import EXAMPLES_DIR, example_path



def section(**kw: object) -> InventorySettings:
    return dataclasses.replace(InventorySettings(), **kw)


def write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return name


def load_yaml(tmp_path: Path, text: str, **kw: object) -> Inventory:
    path = write(tmp_path, "inv.yaml", text)
    return load_inventory(section(path=path, **kw), tmp_path)


def problems(tmp_path: Path, text: str, name: str = "inv.yaml", **kw: object) -> list[str]:
    path = write(tmp_path, name, text)
    with pytest.raises(InventoryError) as info:
        load_inventory(section(path=path, **kw), tmp_path)
    assert all(line.startswith(f"{path}: ") for line in str(info.value).splitlines())
    return info.value.problems


# --------------------------------------------------------------------------
# Reading


def test_yaml_list_with_fields_as_text(tmp_path: Path) -> None:
    inv = load_yaml(tmp_path, """
- name: sw1
  address: 10.0.0.1
  device_type: switch
  model: C2960
  id: 17
  rack: 4
  managed: true
  serial: null
- {name: rt1, address: "2001:DB8::0001", device_type: router}
""")
    assert len(inv) == 2 and "sw1" in inv
    sw = inv["sw1"]
    assert (sw.name, sw.address, sw.device_type, sw.model, sw.id, sw.port, sw.parent) == (
        "sw1", "10.0.0.1", "switch", "C2960", "17", 161, None)
    assert sw.fields == {"name": "sw1", "address": "10.0.0.1", "device_type": "switch", "model": "C2960",
                         "id": "17", "rack": "4", "managed": "true", "serial": ""}
    # IPv6 literals are kept in canonical form.
    assert inv["rt1"].address == "2001:db8::1"
    assert inv.get("nope") is None
    with pytest.raises(KeyError, match="no device 'nope'"):
        inv["nope"]


def test_yaml_devices_mapping_and_empty(tmp_path: Path) -> None:
    inv = load_yaml(tmp_path, "devices:\n  - {name: a, address: 10.0.0.1, device_type: ups}\n")
    assert list(inv.devices) == ["a"]
    assert len(load_yaml(tmp_path, "devices: []\n")) == 0
    assert len(load_yaml(tmp_path, "# nothing yet\n")) == 0


def test_yaml_shape_errors(tmp_path: Path) -> None:
    assert "single key 'devices'" in problems(tmp_path, "hosts: []\n")[0]
    assert "expected a list of devices" in problems(tmp_path, "just text\n")[0]
    assert problems(tmp_path, "- a\n- {name: b, address: 10.0.0.2}\n") == [
        "item 1: expected a mapping of column: value, got str"]


def test_yaml_syntax_and_duplicate_keys(tmp_path: Path) -> None:
    p = problems(tmp_path, "- {name: a, address: 10.0.0.1, name: b}\n")
    assert "line 1" in p[0] and "'name' is given twice" in p[0]
    p = problems(tmp_path, "- {name: a, address: [\n")
    assert "not valid YAML" in p[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"^nope\.yaml: cannot read the file"):
        load_inventory(section(path="nope.yaml"), tmp_path)


def test_csv_semicolons_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.csv", "\ufeffname;address;device_type;model;parent;site\n"
                                      "134401-AE-HUA-1;10.90.0.2;Huawei;SMU02C;;Lyon\n"
                                      "\n"
                                      "130320-AE-ELT-1;10.90.0.30;Eltek;SmartPack2;134401-AE-HUA-1;Lyon\n")
    inv = load_inventory(section(source="csv", path=path), tmp_path)
    hua = inv["134401-AE-HUA-1"]
    assert (hua.device_type, hua.model, hua.fields["site"], hua.fields["device_type"]) == (
        "huawei", "SMU02C", "Lyon", "Huawei")
    assert [d.name for d in inv.children("134401-AE-HUA-1")] == ["130320-AE-ELT-1"]


def test_csv_errors_name_rows(tmp_path: Path) -> None:
    text = ("name,address,device_type\n"
            "a,10.0.0.1,switch\n"
            "b,,switch\n"
            "a,10.0.0.3,switch\n"
            "c,10.0.0.4,switch,extra\n")
    p = problems(tmp_path, text, name="inv.csv", source="csv")
    assert p == [
        "row 5: 4 values for 3 columns",
    ]
    p = problems(tmp_path, text.rsplit("c,", 1)[0], name="inv.csv", source="csv")
    assert p == [
        "row 3 (b): address: missing address",
        "row 4 (a): name: duplicate device name 'a' (first in row 2)",
    ]
    p = problems(tmp_path, "name,name,address\n", name="inv.csv", source="csv")
    assert p == ["row 1 (header): column(s) given twice: name"]


# --------------------------------------------------------------------------
# Mapping


def test_legacy_style_column_mapping(tmp_path: Path) -> None:
    inv = load_yaml(tmp_path, """
- {NAME: 134401-AE-HUA-1, AE_IP: 10.90.0.2, AE_CONSTRUCTEUR: Huawei, AE_TYPE: SMU02C, ID: 134401,
   AE_PORT: 1161, username: "1344011"}
- {NAME: 131207-AE-VRT-1, AE_IP: 10.90.0.40, AE_CONSTRUCTEUR: Vertiv / Emerson, AE_TYPE: ACU+, ID: 131207,
   AE_PORT: "", AMONT: 134401-AE-HUA-1}
""", name_column="NAME", address_column="AE_IP", type_column="AE_CONSTRUCTEUR", model_column="AE_TYPE",
                    id_column="ID", port_column="AE_PORT", parent_column="AMONT")
    hua, vrt = inv["134401-AE-HUA-1"], inv["131207-AE-VRT-1"]
    assert (hua.device_type, hua.model, hua.id, hua.port, hua.fields["username"]) == (
        "huawei", "SMU02C", "134401", 1161, "1344011")
    assert (vrt.device_type, vrt.port, vrt.parent) == ("vertiv", 161, "134401-AE-HUA-1")
    assert vrt.fields["AE_CONSTRUCTEUR"] == "Vertiv / Emerson"


def test_columns_match_case_insensitively(tmp_path: Path) -> None:
    inv = load_yaml(tmp_path, "- {NAME: a, Address: 10.0.0.1, DEVICE_TYPE: Switch}\n")
    assert (inv["a"].address, inv["a"].device_type) == ("10.0.0.1", "switch")


def test_fields_setting_keeps_mapped_and_listed_columns(tmp_path: Path) -> None:
    inv = load_yaml(tmp_path, "- {name: a, address: 10.0.0.1, device_type: ups, site: x, secret_note: y}\n",
                    fields=("site",))
    assert inv["a"].fields == {"name": "a", "address": "10.0.0.1", "device_type": "ups", "site": "x"}


def test_port_column_defaults_to_port(tmp_path: Path) -> None:
    # No port_column setting: a 'port' column is used, its absence (or an
    # empty value) means 161.
    with_port = load_yaml(tmp_path, "- {name: a, address: 10.0.0.1, port: 1161}\n"
                                    "- {name: b, address: 10.0.0.2, port: ''}\n")
    assert (with_port["a"].port, with_port["b"].port) == (1161, 161)
    assert load_yaml(tmp_path, "- {name: a, address: 10.0.0.1}\n")["a"].port == 161
    csv_path = write(tmp_path, "inv.csv", "name,address,port\na,10.0.0.1,2161\n")
    assert load_inventory(section(source="csv", path=csv_path), tmp_path)["a"].port == 2161
    csv_path = write(tmp_path, "plain.csv", "name,address\na,10.0.0.1\n")
    assert load_inventory(section(source="csv", path=csv_path), tmp_path)["a"].port == 161


def test_port_column_default_from_settings_file(tmp_path: Path) -> None:
    write(tmp_path, "inv.yaml", "- {name: a, address: 10.0.0.1, port: 1161}\n")
    (tmp_path / "settings.ini").write_text("[inventory]\npath = inv.yaml\n", encoding="utf-8")
    s = load_settings(str(tmp_path / "settings.ini"))
    assert s.inventory.port_column == "port"
    assert load_inventory(s.inventory, tmp_path)["a"].port == 1161


def test_port_column_empty_means_161(tmp_path: Path) -> None:
    text = "- {name: a, address: 10.0.0.1, port: 1161}\n"
    assert load_yaml(tmp_path, text, port_column="")["a"].port == 161


def test_interval_and_tags(tmp_path: Path) -> None:
    inv = load_yaml(tmp_path, "- {name: a, address: 10.0.0.1, interval: 5m, tags: [x, y]}\n"
                              "- {name: b, address: 10.0.0.2, interval: 30, tags: 'p, q'}\n")
    assert (inv["a"].interval, inv["a"].tags) == (300.0, ("x", "y"))
    assert (inv["b"].interval, inv["b"].tags) == (30.0, ("p", "q"))
    p = problems(tmp_path, "- {name: a, address: 10.0.0.1, interval: soon}\n")
    assert p[0].startswith("item 1 (a): interval = 'soon': expected a duration")


@pytest.mark.parametrize("raw, expected", [
    ("Huawei", "huawei"), ("Vertiv / Emerson", "vertiv"), ("  Eltek Valere", "eltek"),
    ("switch", "switch"), ("", ""),
])
def test_normalize_device_type(raw: str, expected: str) -> None:
    assert normalize_device_type(raw) == expected


# --------------------------------------------------------------------------
# Validation


def test_record_errors_are_all_reported(tmp_path: Path) -> None:
    p = problems(tmp_path, """
- {name: a, address: 10.0.0.1}
- {name: a, address: 10.0.0.2}
- {name: b}
- {name: c, address: 10.0.0.300}
- {name: d, address: "bad host!"}
- {name: e, address: 10.0.0.5, port: 70000}
- {name: f, address: 10.0.0.6, port: x}
- {name: g h, address: 10.0.0.7}
- {address: 10.0.0.8}
- {name: i, address: 10.0.0.9, parent: nobody}
""", port_column="port")
    assert p == [
        "item 2 (a): name: duplicate device name 'a' (first in item 1)",
        "item 3 (b): address: missing address",
        "item 4 (c): address = '10.0.0.300': expected an IPv4 or IPv6 address or a host name",
        "item 5 (d): address = 'bad host!': expected an IPv4 or IPv6 address or a host name",
        "item 6 (e): port = '70000': expected a port number from 1 to 65535",
        "item 7 (f): port = 'x': expected a port number from 1 to 65535",
        "item 8 (g h): name = 'g h': expected a name of 1 to 240 characters without spaces",
        "item 9: name: missing device name",
        "item 10 (i): parent = 'nobody': unknown parent device",
    ]


def test_cycles_are_named(tmp_path: Path) -> None:
    p = problems(tmp_path, """
- {name: c, address: 10.0.0.3, parent: a}
- {name: a, address: 10.0.0.1, parent: b}
- {name: b, address: 10.0.0.2, parent: c}
- {name: x, address: 10.0.0.4, parent: a}
- {name: s, address: 10.0.0.5, parent: s}
""")
    assert p == [
        "item 5 (s): parent = 's': a device cannot be its own parent (cycle s -> s)",
        "item 2 (a): parent: cycle in parent links: a -> b -> c -> a",
    ]


def test_identifiers_checked_when_section_is_built_in_code(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.yaml", "[]\n")
    with pytest.raises(InventoryError, match=r"\[inventory\] name_column = 'na me': expected an SQL identifier"):
        load_inventory(section(path=path, name_column="na me"), tmp_path)


# --------------------------------------------------------------------------
# Look-ups


def test_by_address_children_ancestors(tmp_path: Path) -> None:
    inv = load_yaml(tmp_path, """
- {name: core, address: "2001:db8::1"}
- {name: agg, address: 10.0.0.2, parent: core}
- {name: acc1, address: 10.0.0.3, parent: agg}
- {name: acc2, address: 10.0.0.3, parent: agg, port: 1161}
- {name: named, address: Host.Example.NET}
""", port_column="port")
    assert [d.name for d in inv.by_address("2001:0db8:0:0::1")] == ["core"]
    assert [d.name for d in inv.by_address("10.0.0.3")] == ["acc1", "acc2"]
    assert [d.name for d in inv.by_address("host.example.net")] == ["named"]
    assert inv.by_address("10.9.9.9") == ()
    assert [d.name for d in inv.children("agg")] == ["acc1", "acc2"]
    assert inv.children("acc1") == ()
    assert [d.name for d in inv.ancestors("acc2")] == ["agg", "core"]
    assert sorted(d.name for d in inv) == ["acc1", "acc2", "agg", "core", "named"]


# --------------------------------------------------------------------------
# Settings and the shipped example


def test_settings_refuse_bad_identifiers() -> None:
    for raw in ("machines; drop table x", "ma'chines", "two words", "schema.table", "1abc"):
        with pytest.raises(SettingsError, match=r"\[inventory\] table = .*expected an SQL identifier"):
            settings_from_string(f"[inventory]\ntable = {raw}\n", environ={})
    with pytest.raises(SettingsError, match=r"\[inventory\] url = '': nothing given"):
        settings_from_string("[inventory]\nsource = sql\n", environ={})
    s = settings_from_string("[inventory]\nsource = csv\nfields = site, rack\nreload_interval = 0\n", environ={})
    assert (s.inventory.source, s.inventory.fields, s.inventory.reload_interval) == ("csv", ("site", "rack"), 0)


def test_shipped_example_loads() -> None:
    s = load_settings(example_path("settings.ini"), environ={})
    inv = load_inventory(s.inventory, EXAMPLES_DIR)
    types = {d.device_type for d in inv}
    assert {"switch", "router", "server", "ups", "huawei", "eltek", "vertiv"} <= types
    assert all(d.address == "127.0.0.1" and d.port > 1024 for d in inv)
    assert any(d.parent for d in inv)
    assert inv["134401-AE-HUA-1"].fields["snmp_user"] == "1344011"
