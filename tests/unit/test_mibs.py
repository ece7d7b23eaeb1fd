"""MIB names for the trap receiver: pysmi compilation, cache, names, errors, service use."""

from __future__ import annotations

import builtins
import shutil

import pytest

from connector_traps import mibs
from connector_traps.mibs import MibError, load_mib_names
from connector_traps.model import Trap
from tests.unit.trap_service_support import make_service
from centaure.shipped import example_path

pytest.importorskip("pysmi")

EXAMPLE = example_path("mibs/CENTAURE-EXAMPLE-MIB.txt")
BASE = "1.3.6.1.4.1.99999"
NOTIFICATION = f"{BASE}.2.1"
SENSOR_NAME = f"{BASE}.1.3.1.2"
SENSOR_VALUE = f"{BASE}.1.3.1.3"
SENSOR_STATUS = f"{BASE}.1.3.1.4"


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "mibs"
    path.mkdir()
    shutil.copy(EXAMPLE, path)
    return path


def test_example_compiles_and_names_exact_and_instance_oids(folder, tmp_path):
    cache = tmp_path / "cache"
    names = load_mib_names([str(folder)], str(cache))
    assert names.errors == ()
    assert names.modules == ("CENTAURE-EXAMPLE-MIB",)
    assert (cache / "CENTAURE-EXAMPLE-MIB.json").is_file()
    # exact OIDs: scalars, table, row, columns, notification
    assert names.name(f"{BASE}.1.1") == "cxSiteName"
    assert names.name(f"{BASE}.1.3") == "cxSensorTable"
    assert names.name(f"{BASE}.1.3.1") == "cxSensorEntry"
    assert names.name(f"{BASE}.1.3.1.1") == "cxSensorIndex"
    assert names.name(NOTIFICATION) == "cxSensorThresholdCrossed"
    assert names.module_of(NOTIFICATION) == "CENTAURE-EXAMPLE-MIB"
    assert names.notification_objects(NOTIFICATION) == (SENSOR_NAME, SENSOR_VALUE, SENSOR_STATUS)
    # instances: longest known prefix, the rest as a suffix
    assert names.name(f"{BASE}.1.1.0") == "cxSiteName.0"
    assert names.name(f"{SENSOR_VALUE}.3") == "cxSensorValue.3"
    assert names.name(f"{SENSOR_NAME}.12.5") == "cxSensorName.12.5"
    # not named: object identifiers, unknown columns, other subtrees, nonsense
    assert names.name(f"{BASE}.1") is None
    assert names.name(f"{BASE}.1.3.1.9.1") is None
    assert names.name("1.3.6.1.2.1.2.2.1.2.3") is None
    assert names.name("not.an.oid") is None


def test_second_load_reuses_the_cache(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_mib_names([str(folder)], str(cache))
    compiled = cache / "CENTAURE-EXAMPLE-MIB.json"
    stamp = compiled.stat().st_mtime_ns
    from pysmi.codegen.jsondoc import JsonCodeGen

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(JsonCodeGen, "gen_code", no_compile)
    second = load_mib_names([str(folder)], str(cache))
    assert second.errors == ()
    assert compiled.stat().st_mtime_ns == stamp
    assert dict(second.by_oid) == dict(first.by_oid)


def test_broken_file_is_reported_and_the_good_one_still_loads(folder, tmp_path, caplog):
    broken = folder / "BROKEN-MIB.txt"
    broken.write_text("BROKEN-MIB DEFINITIONS ::= BEGIN\nthisIs OBJECT-TYPE not asn.1 at all\nEND\n")
    (folder / "README").write_text("not a MIB\n")
    caplog.set_level("WARNING", logger="connector_traps.mibs")
    names = load_mib_names([str(folder)], str(tmp_path / "cache"))
    assert names.name(NOTIFICATION) == "cxSensorThresholdCrossed"
    assert names.modules == ("CENTAURE-EXAMPLE-MIB",)
    broken_errors = [e for e in names.errors if str(broken) in e]
    assert len(broken_errors) == 1 and "BROKEN-MIB" in broken_errors[0]
    assert any(str(folder / "README") in e and "not a MIB module" in e for e in names.errors)
    assert str(broken) in caplog.text


def test_missing_import_names_the_module_that_needs_it(folder, tmp_path):
    needy = folder / "NEEDY-MIB.txt"
    needy.write_text(
        "NEEDY-MIB DEFINITIONS ::= BEGIN\n"
        "IMPORTS OBJECT-TYPE, Integer32 FROM SNMPv2-SMI\n"
        "        ifIndex, interfaces FROM IF-MIB;\n"
        "needyThing OBJECT-TYPE\n    SYNTAX Integer32\n    MAX-ACCESS read-only\n"
        "    STATUS current\n    DESCRIPTION \"Hangs below IF-MIB.\"\n    ::= { interfaces 99 }\n"
        "END\n")
    names = load_mib_names([str(folder)], str(tmp_path / "cache"))
    assert names.name(NOTIFICATION) == "cxSensorThresholdCrossed"
    problems = [e for e in names.errors if str(needy) in e]
    assert problems and any("IF-MIB" in e for e in problems)
    assert "NEEDY-MIB" not in names.modules


def test_missing_folder_is_reported(tmp_path):
    names = load_mib_names([str(tmp_path / "nowhere")], str(tmp_path / "cache"))
    assert len(names) == 0 and "nowhere" in names.errors[0]


def test_no_sources_no_pysmi_needed(tmp_path, monkeypatch):
    monkeypatch.setattr(mibs, "_import_pysmi", lambda: pytest.fail("pysmi imported"))
    assert len(load_mib_names([], str(tmp_path / "cache"))) == 0


def test_missing_pysmi_is_named(folder, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pysmi" or name.startswith("pysmi."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MibError, match="pysmi") as info:
        load_mib_names([str(folder)], str(tmp_path / "cache"))
    assert "pip install pysmi" in str(info.value)


# --------------------------------------------------------------------------
# The trap service with [traps] mibs set (same approach as test_trap_service)


def make(tmp_path, **traps):
    return make_service(tmp_path, **{"rate_limit": "0", "dedup_window": "0", **traps})


def test_service_names_unknown_traps_and_varbinds_from_mibs(folder, tmp_path):
    # mibs and mib_cache relative to the settings file's folder (tmp_path)
    service, clock, events, config = make(tmp_path, mibs="mibs", mib_cache="var/mib-cache")
    assert config.mib_names is not None and config.mib_names.errors == ()
    assert (tmp_path / "var" / "mib-cache" / "CENTAURE-EXAMPLE-MIB.json").is_file()
    service.handle(Trap(
        source=("10.0.0.1", 40000), version="v2c", pdu="trap", trap_oid=NOTIFICATION, uptime=5,
        agent_address="10.0.0.1", received=0.0,
        varbinds=((f"{SENSOR_NAME}.7", "OctetString", b"boiler"),
                  (f"{SENSOR_VALUE}.7", "Integer", 951),
                  (f"{SENSOR_STATUS}.7", "Integer", 2),
                  ("1.3.6.1.4.1.424242.1.0", "Integer", 1))))
    for _ in range(5):
        clock.advance(0)
    [event] = events.seen
    assert event.name == "cxSensorThresholdCrossed"
    assert event.severity == "unknown" and event.trap_oid == NOTIFICATION
    assert [vb.name for vb in event.varbinds] == [
        "cxSensorName.7", "cxSensorValue.7", "cxSensorStatus.7", None]


def test_service_without_mibs_has_no_mib_names(tmp_path):
    _, _, _, config = make(tmp_path)
    assert config.mib_names is None
