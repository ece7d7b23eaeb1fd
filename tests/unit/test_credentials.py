"""Tests of connector_snmp.credentials: entries, precedence, __field__ substitution, secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from connector.settings import load_settings
from connector_snmp.credentials import (
    Credentials,
    CredentialsError,
    load_credentials,
    resolve_target,
    resolve_targets,
)
from centaure_shared.inventory import load_inventory
from connector_snmp.model import SnmpTarget
from centaure_shared.inventory import Device
from connector_snmp.settings import SnmpSettings
from centaure.shipped import EXAMPLES_DIR, example_path

AUTH = "auth-secret-123"
PRIV = "priv-secret-456"


def creds(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Credentials:
    path = tmp_path / "credentials.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_credentials(path, environ=environ or {}, shown="credentials.yaml")


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CredentialsError) as info:
        creds(tmp_path, text)
    return str(info.value)


def resolve_error(device: Device, c: Credentials) -> str:
    with pytest.raises(CredentialsError) as info:
        resolve_target(device, c)
    return str(info.value)


def dev(device_type: str = "huawei", model: str = "SMU02C", port: int = 161, **fields: str) -> Device:
    return Device(name="134401-AE-HUA-1", address="10.90.0.2", device_type=device_type, model=model,
                  id="134401", port=port, fields={"name": "134401-AE-HUA-1", **fields})


LEGACY = """
default:
  version: v2c
  community: public
  timeout: 3
huawei:
  community: hua-ro
  retries: 3
huaweiSMU02C:
  version: 3
  user: __username__
  auth_protocol: sha
  auth_key: env:AUTH_KEY
  priv_protocol: AES
  priv_key: file:{priv}
  context: ctx-__id__
eltek:
  port: 1161
"""


@pytest.fixture
def legacy(tmp_path: Path) -> Credentials:
    priv = tmp_path / "priv.key"
    priv.write_text(PRIV + "\n")
    return creds(tmp_path, LEGACY.format(priv=priv), {"AUTH_KEY": AUTH})


# --------------------------------------------------------------------------
# Precedence


def test_most_specific_entry_wins_setting_by_setting(legacy: Credentials) -> None:
    t = resolve_target(dev(username="1344011"), legacy)
    assert (t.address, t.port, t.version, t.timeout, t.retries, t.max_repetitions) == (
        "10.90.0.2", 161, "v3", 3.0, 3, 25)
    assert t.v3 is not None
    assert (t.v3.user, t.v3.auth_protocol, t.v3.auth_key, t.v3.priv_protocol, t.v3.priv_key,
            t.v3.context_name, t.v3.level) == ("1344011", "SHA", AUTH, "AES", PRIV, "ctx-134401", "authPriv")
    # Another Huawei model: the huawei entry over default.
    t = resolve_target(dev(model="SMU11B"), legacy)
    assert (t.version, t.community, t.timeout, t.retries, t.v3) == ("v2c", b"hua-ro", 3.0, 3, None)
    # Another type: default only.
    t = resolve_target(dev("switch", ""), legacy)
    assert (t.version, t.community, t.retries) == ("v2c", b"public", 1)


def test_keys_compare_without_case(legacy: Credentials) -> None:
    assert [e.key for e in legacy.chain(dev("HUAWEI", "smu02c"))] == ["default", "huawei", "huaweiSMU02C"]


def test_defaults_from_snmp_section(legacy: Credentials) -> None:
    defaults = SnmpSettings(timeout=7.0, retries=4, max_repetitions=50)
    t = resolve_target(dev("switch", ""), legacy, defaults)
    assert (t.timeout, t.retries, t.max_repetitions) == (3.0, 4, 50)  # default entry's timeout wins
    t = resolve_target(dev("switch", ""), None, defaults)
    assert (t.version, t.community, t.timeout, t.retries, t.max_repetitions) == ("v2c", b"public", 7.0, 4, 50)
    assert resolve_target(dev(), load_credentials(None)) == SnmpTarget("10.90.0.2")


def test_port_precedence(legacy: Credentials) -> None:
    assert resolve_target(dev("eltek", ""), legacy).port == 1161
    assert resolve_target(dev("eltek", "", port=16106), legacy).port == 16106
    assert resolve_target(dev("switch", "", port=16101), legacy).port == 16101


# --------------------------------------------------------------------------
# Substitution and secrets


def test_unknown_field_names_device_and_field(legacy: Credentials) -> None:
    message = resolve_error(dev(), legacy)
    assert message == ("credentials.yaml: [huaweiSMU02C] user (device 134401-AE-HUA-1): device 134401-AE-HUA-1 "
                       "has no field 'username' (for __username__; its fields: name)")


def test_fields_fall_back_to_device_attributes(tmp_path: Path) -> None:
    c = creds(tmp_path, "default: {community: '__model__-__device_type__-__address__', port: '__snmp_port__'}\n")
    t = resolve_target(dev(snmp_port="1161"), c)
    assert (t.community, t.port) == (b"SMU02C-huawei-10.90.0.2", 1161)
    message = resolve_error(dev(snmp_port="x"), c)
    assert message == ("credentials.yaml: [default] port (device 134401-AE-HUA-1) = 'x': "
                       "expected a whole number from 1 to 65535")


def test_per_device_secret_file(tmp_path: Path) -> None:
    (tmp_path / "134401-AE-HUA-1.community").write_text("per-device\n")
    c = creds(tmp_path, f"default: {{community: 'file:{tmp_path}/__name__.community'}}\n")
    assert resolve_target(dev(), c).community == b"per-device"


def test_missing_env_names_device_and_variable_not_secret(tmp_path: Path) -> None:
    c = creds(tmp_path, "default: {version: v3, user: u, auth_protocol: SHA, auth_key: env:NOPE}\n")
    message = resolve_error(dev(), c)
    assert message == ("credentials.yaml: [default] auth_key (device 134401-AE-HUA-1) = 'env:NOPE': "
                       "environment variable NOPE is not set")


def test_secrets_never_shown(legacy: Credentials, tmp_path: Path) -> None:
    t = resolve_target(dev(username="1344011"), legacy)
    for text in (repr(t), str(t), repr(t.v3), repr(legacy), str(legacy)):
        assert AUTH not in text and PRIV not in text and "hua-ro" not in text and "public" not in text
    # A bad literal community is never echoed.
    message = load_error(tmp_path, "default: {community: [s3cret]}\n")
    assert "s3cret" not in message and message == "credentials.yaml: [default] community = ***: expected a single value"


def test_v3_checks(tmp_path: Path) -> None:
    env = {"K": "short"}
    c = creds(tmp_path, "default: {version: v3, user: u, auth_protocol: MD5, auth_key: env:K}\n", env)
    assert "auth_protocol MD5 needs an auth_key of at least 8 characters" in resolve_error(dev(), c)
    c = creds(tmp_path, "default: {version: v3, user: u, priv_protocol: AES, priv_key: 12345678}\n")
    assert "priv_protocol AES needs an auth_protocol too" in resolve_error(dev(), c)
    c = creds(tmp_path, "default: {version: v3}\n")
    assert resolve_error(dev(), c) == ("credentials.yaml: device 134401-AE-HUA-1 (entries default): "
                                       "version v3 needs a user")
    c = creds(tmp_path, "default: {version: v3, user: monitor, auth_key: ignored-without-protocol}\n")
    t = resolve_target(dev(), c)
    assert t.v3 is not None and (t.v3.level, t.v3.auth_key) == ("noAuthNoPriv", "")


def test_resolve_targets_collects_errors(legacy: Credentials) -> None:
    good = Device(name="sw", address="10.0.0.1", device_type="switch")
    targets, errors = resolve_targets([good, dev()], legacy)
    assert list(targets) == ["sw"] and list(errors) == ["134401-AE-HUA-1"]
    assert "has no field 'username'" in errors["134401-AE-HUA-1"]


# --------------------------------------------------------------------------
# Load-time validation


@pytest.mark.parametrize("text, expected", [
    ("[1, 2]\n", "credentials.yaml: expected a mapping of entries"),
    ("default: 3\n", "credentials.yaml: [default]: expected a mapping of settings"),
    ("default: {comunity: x}\n", "credentials.yaml: [default] comunity: unknown setting (did you mean community?)"),
    ("default: {version: v4}\n", "credentials.yaml: [default] version = 'v4': expected v1, v2c or v3"),
    ("default: {auth_protocol: SHA1024}\n",
     "credentials.yaml: [default] auth_protocol = 'SHA1024': expected one of: none, MD5, SHA, SHA224"),
    ("default: {priv_protocol: 3DES}\n",
     "credentials.yaml: [default] priv_protocol = '3DES': expected one of: none, DES, AES, AES192, AES256"),
    ("default: {port: 0}\n", "credentials.yaml: [default] port = 0: expected a whole number from 1 to 65535"),
    ("default: {retries: 1.5}\n", "credentials.yaml: [default] retries = 1.5: expected a whole number"),
    ("default: {timeout: later}\n", "credentials.yaml: [default] timeout = 'later': expected a duration"),
    ("default: {auth_key: 'env:9BAD'}\n",
     "credentials.yaml: [default] auth_key = 'env:9BAD': '9BAD' is not an environment variable name"),
    ("default: {auth_key: 'file:'}\n", "credentials.yaml: [default] auth_key = 'file:': file: names no file"),
    ("huawei: {}\nHUAWEI: {}\n", "credentials.yaml: entries 'huawei' and 'HUAWEI' differ only by case"),
    ("'bad key': {}\n", "credentials.yaml: entry 'bad key': expected default, a device type"),
    ("default: {port: 1}\ndefault: {port: 2}\n", "credentials.yaml: line 2, column 1: "),
])
def test_load_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text).startswith(expected)


def test_timeout_forms(tmp_path: Path) -> None:
    c = creds(tmp_path, "default: {timeout: 500ms}\nswitch: {timeout: 1.5}\n")
    assert resolve_target(dev(), c).timeout == 0.5
    assert resolve_target(dev("switch", ""), c).timeout == 1.5


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="nope.yaml: cannot read the file"):
        load_credentials(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------
# The shipped example


def test_shipped_example() -> None:
    s = load_settings(example_path("settings.ini"), environ={})
    inv = load_inventory(s.inventory, EXAMPLES_DIR)
    env = {"CENTAURE_HUAWEI_AUTH_KEY": AUTH, "CENTAURE_HUAWEI_PRIV_KEY": PRIV}
    c = load_credentials(Path(EXAMPLES_DIR) / s.snmp.credentials, environ=env)
    targets, errors = resolve_targets(inv, c, s.snmp)
    assert not errors and set(targets) == set(inv.devices)
    assert all(t.version == "v2c" and t.community == b"public" for t in targets.values())
    assert targets["130320-AE-ELT-1"].timeout == 5.0
    assert targets["switch01"].port == 16101
    # The v3 example applies to a Huawei SMU11B, its user from the record.
    smu11 = Device(name="134402-AE-HUA-1", address="10.90.0.3", device_type="huawei", model="SMU11B",
                   fields={"snmp_user": "1344021"})
    t = resolve_target(smu11, c, s.snmp)
    assert t.v3 is not None and (t.v3.user, t.v3.auth_key, t.v3.priv_key, t.v3.level) == (
        "1344021", AUTH, PRIV, "authPriv")
    # Without the variables, only that device fails, naming the variable.
    c = load_credentials(Path(EXAMPLES_DIR) / s.snmp.credentials, environ={})
    with pytest.raises(CredentialsError, match="CENTAURE_HUAWEI_AUTH_KEY is not set"):
        resolve_target(smu11, c, s.snmp)
