"""Tests of connector.settings: parsing, validation, secrets, registry and the example file."""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import socket
from pathlib import Path

import pytest

from centaure.shipped import example_path
from connector import settings as S
from connector.settings import (
    Bool,
    Choice,
    Duration,
    FilePath,
    Float,
    Int,
    InvalidValue,
    LogLevel,
    ParseContext,
    Secret,
    SecretText,
    Settings,
    SettingsError,
    Size,
    Str,
    StrList,
    Url,
    load_settings,
    register_section,
    setting,
    settings_from_string,
    settings_of,
)

EXAMPLE = Path(example_path("settings.ini"))
SPEC = None
URLS_ALLOWED = "expected amqp:// or amqps:// URLs separated by commas or newlines, or the word embedded"


def load(text: str, environ: dict[str, str] | None = None) -> Settings:
    """Settings from INI text, named settings.ini in errors."""
    return settings_from_string(text, source="settings.ini", environ=environ or {})


def error(text: str, environ: dict[str, str] | None = None) -> str:
    """The one-line error that INI text gives."""
    with pytest.raises(SettingsError) as info:
        load(text, environ)
    message = str(info.value)
    assert "\n" not in message
    return message


def value_of(section: str, key: str, raw: str) -> object:
    """The parsed value of one key."""
    obj = load(f"[{section}]\n{key} = {raw}\n").section(section)
    spec = next(s for s in settings_of(type(obj)) if s.key == key)
    return getattr(obj, spec.name)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register sections without leaking them into other tests."""
    monkeypatch.setattr(S, "_REGISTRY", dict(S._REGISTRY))
    monkeypatch.setattr(S, "_SPECS", dict(S._SPECS))


@pytest.fixture
def kinds(scratch_registry: None) -> type:
    """A [kinds] section with one key per parser not used by a core section."""

    @register_section("kinds")
    @dataclasses.dataclass(frozen=True)
    class Kinds:
        ratio: float = setting(Float(0, 1), "0.5", "A ratio.")
        size: int = setting(Size(), "0", "Any size.")
        names: tuple[str, ...] = setting(StrList(), "", "Some names.")
        ports: tuple[int, ...] = setting(StrList(Int(1, 65535)), "", "Some ports.")
        password: Secret = setting(SecretText(), "", "A password.")

    return Kinds


# --------------------------------------------------------------------------
# Defaults and the example file

EXPECTED = {
    "bus": {
        "url": (Secret("embedded"),),
        "heartbeat": 10.0,
        "connect_timeout": 10.0,
        "prefetch": 500,
        "exchange_prefix": "centaure",
        "spec": SPEC,
        "tls_ca": None,
        "tls_cert": None,
        "tls_key": None,
        "tls_verify": True,
        "confirm_timeout": 5.0,
        "max_in_flight": 2000,
        "queue_type": "classic",
        "retry_limit": 5,
        "retry_delay": 1.0,
        "backoff_initial": 0.5,
        "backoff_max": 30.0,
        "partitions": 0,
        "token_refresh": 300.0,
        "balance_interval": 10.0,
    },
    "buffer": {
        "path": "var/buffer-{connector}.sqlite3",
        "max_messages": 1_000_000,
        "max_size": 1024**3,
        "policy": "drop_oldest",
        "synchronous": "NORMAL",
        "batch_size": 500,
    },
    "connector": {
        "node": socket.gethostname(),
        "status_interval": 10.0,
        "http_host": "127.0.0.1",
        "http_port": 8470,
        "http_ports": {},
        "lost_after": 3,
    },
    "database": {"url": Secret("sqlite:///centaure.sqlite3")},
    "logging": {"level": "info", "format": "text"},
}


def test_defaults() -> None:
    s = load_settings(None)
    assert s.source is None
    core = {name: s.as_dict()[name] for name in EXPECTED}
    assert core == EXPECTED
    assert s.bus.embedded
    assert s.bus.urls[0].reveal() == "embedded"
    assert s.database.url.reveal() == "sqlite:///centaure.sqlite3"
    assert s.logging.level_number == 20
    assert s.buffer.path_for("centaure-snmp") == "var/buffer-centaure-snmp.sqlite3"
    assert s.section("bus") is s.bus
    assert S.BusSettings() == s.bus  # a section built in code has the same defaults


def test_example_loads_and_equals_expected() -> None:
    s = load_settings(str(EXAMPLE))
    assert s.source == str(EXAMPLE)
    assert {name: s.as_dict()[name] for name in EXPECTED} == EXPECTED
    # The example documents the defaults (of the core sections at least).
    defaults = load_settings(None)
    assert all(s.section(name) == defaults.section(name) for name in EXPECTED)


def example_keys() -> dict[str, set[str]]:
    cp = configparser.ConfigParser(interpolation=None, strict=True, default_section="\0")
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(EXAMPLE, encoding="utf-8")
    return {name: set(cp[name]) for name in cp.sections()}


def test_example_has_every_key_of_every_section_and_nothing_else() -> None:
    S.discover_sections(again=True)
    declared = {name: {s.key for s in settings_of(cls)} for name, cls in S.registered_sections().items()}
    assert example_keys() == declared


def test_example_comments_every_key() -> None:
    previous = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if re.match(r"[a-z_]+\s*=", line):
            assert previous.startswith("#"), f"no comment line above {line!r}"
        if line.strip():
            previous = line


def test_every_setting_has_a_doc_and_a_valid_default() -> None:
    S.discover_sections()
    for name, cls in S.registered_sections().items():
        for spec in settings_of(cls):
            assert spec.doc.strip(), f"[{name}] {spec.key} has no doc"
            spec.parser.parse(spec.default, ParseContext({}))


def test_empty_sections_give_defaults() -> None:
    assert load("[bus]\n[logging]\n") == load_settings(None)


# --------------------------------------------------------------------------
# Parsers: good values

GOOD = [
    # int
    ("bus", "prefetch", "1", 1),
    ("bus", "prefetch", "65535", 65535),
    ("bus", "prefetch", " 42 ", 42),
    ("buffer", "max_messages", "1_000", 1000),
    ("bus", "retry_limit", "0", 0),
    ("connector", "http_port", "0", 0),
    ("connector", "http_ports", "db=8473, correlator = 8474", {"db": 8473, "correlator": 8474}),
    ("correlator", "expire_after", "info=1h,critical=0", {"info": 3600.0, "critical": 0.0}),
    ("correlator", "purge_interval", "15m", 900.0),
    ("alerter", "keep_ended_silences", "90d", 90 * 86400.0),
    ("alerter", "keep_notified", "1h", 3600.0),
    # bool
    ("bus", "tls_verify", "false", False),
    ("bus", "tls_verify", "YES", True),
    ("bus", "tls_verify", "off", False),
    ("bus", "tls_verify", "On", True),
    ("bus", "tls_verify", "1", True),
    ("bus", "tls_verify", "0", False),
    # choice, log level
    ("bus", "queue_type", "quorum", "quorum"),
    ("bus", "queue_type", "Quorum", "quorum"),
    ("buffer", "policy", "refuse_newest", "refuse_newest"),
    ("buffer", "synchronous", "full", "FULL"),
    ("logging", "level", "DEBUG", "debug"),
    ("logging", "level", "warning", "warning"),
    ("logging", "format", "json", "json"),
    # durations
    ("bus", "heartbeat", "0", 0.0),
    ("bus", "heartbeat", "30", 30.0),
    ("bus", "heartbeat", "1m", 60.0),
    ("bus", "heartbeat", "3600s", 3600.0),
    ("bus", "heartbeat", "1h", 3600.0),
    ("bus", "connect_timeout", "500ms", 0.5),
    ("bus", "connect_timeout", "1.5s", 1.5),
    ("bus", "connect_timeout", "5m", 300.0),
    ("bus", "connect_timeout", "2 s", 2.0),
    ("bus", "retry_delay", "1d", 86400.0),
    ("bus", "retry_delay", "2h", 7200.0),
    ("bus", "retry_delay", "0", 0.0),
    # sizes
    ("buffer", "max_size", "64KiB", 65536),
    ("buffer", "max_size", "65536", 65536),
    ("buffer", "max_size", "10MiB", 10 * 1024**2),
    ("buffer", "max_size", "1GB", 10**9),
    ("buffer", "max_size", "1.5GiB", 3 * 2**29),
    ("buffer", "max_size", "2 mb", 2_000_000),
    # paths
    ("bus", "tls_ca", "", None),
    ("bus", "tls_ca", "/etc/ssl/ca.pem", "/etc/ssl/ca.pem"),
    ("bus", "tls_ca", "~/ca.pem", os.path.expanduser("~/ca.pem")),
    ("buffer", "path", "/var/lib/centaure/{connector}.db", "/var/lib/centaure/{connector}.db"),
    # strings
    ("bus", "exchange_prefix", "acme.centaure-2_x", "acme.centaure-2_x"),
    ("connector", "node", "poller-1.example.net", "poller-1.example.net"),
    ("connector", "node", "", socket.gethostname()),
    ("connector", "http_host", "::", "::"),
    # URLs
    ("bus", "url", "amqp://h", (Secret("amqp://h"),)),
    ("bus", "url", "amqp://u:p@h1:5672/%2F, amqps://u:p@h2/v",
     (Secret("amqp://u:p@h1:5672/%2F"), Secret("amqps://u:p@h2/v"))),
    ("bus", "url", "\n  amqp://h1\n  amqp://h2,\n", (Secret("amqp://h1"), Secret("amqp://h2"))),
    ("database", "url", "mysql+pymysql://u:p@db/centaure", Secret("mysql+pymysql://u:p@db/centaure")),
    ("database", "url", "postgresql:///centaure", Secret("postgresql:///centaure")),
]


@pytest.mark.parametrize(("section", "key", "raw", "expected"), GOOD)
def test_good_values(section: str, key: str, raw: str, expected: object) -> None:
    assert value_of(section, key, raw) == expected


def test_newline_separated_urls_in_file() -> None:
    s = load("[bus]\nurl =\n    amqp://h1\n    # a comment inside the list\n    amqp://h2\n")
    assert [u.reveal() for u in s.bus.urls] == ["amqp://h1", "amqp://h2"]
    assert not s.bus.embedded


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("ratio", "0", 0.0),
        ("ratio", "1", 1.0),
        ("ratio", ".25", 0.25),
        ("ratio", "5e-1", 0.5),
        ("size", "1000", 1000),
        ("size", "64KiB", 65536),
        ("size", "1G", 1024**3),
        ("size", "1TB", 10**12),
        ("names", "a, b\n  c,", ("a", "b", "c")),
        ("names", "", ()),
        ("ports", "80,443", (80, 443)),
        ("password", "p@ss;word#1 %2F", Secret("p@ss;word#1 %2F")),
    ],
)
def test_good_values_of_other_kinds(kinds: type, key: str, raw: str, expected: object) -> None:
    assert value_of("kinds", key, raw) == expected


# --------------------------------------------------------------------------
# Parsers: bad values give one exact line


def line(section: str, key: str, shown: str, problem: str) -> str:
    return f"settings.ini: [{section}] {key} = {shown!r}: {problem}"


INT_PREFETCH = "expected a whole number from 1 to 65535"
HEARTBEAT = "expected a whole number of seconds from 0 to 3600 (e.g. 10, 10s, 1m)"
TIMEOUT = "expected a duration from 100ms to 1h (e.g. 10, 500ms, 10s, 5m, 2h, 1d; a bare number is seconds)"
RETRY_DELAY = "expected a duration from 0s to 1d (e.g. 10, 500ms, 10s, 5m, 2h, 1d; a bare number is seconds)"
MAX_SIZE = "expected a size of at least 64KiB (e.g. 1000, 64KiB, 10MiB, 1GiB, 1GB)"
BOOL = "expected true/false, yes/no, on/off or 1/0"
DB_URL = ("expected a SQLAlchemy URL such as sqlite:///centaure.sqlite3 "
          "or mysql+pymysql://user:password@host/centaure")

BAD = [
    ("bus", "heartbeat", "abc", HEARTBEAT),
    ("bus", "heartbeat", "1.5", HEARTBEAT),
    ("bus", "heartbeat", "500ms", HEARTBEAT),
    ("bus", "heartbeat", "2h", HEARTBEAT),
    ("bus", "heartbeat", "-1", HEARTBEAT),
    ("bus", "heartbeat", "", HEARTBEAT),
    ("bus", "connect_timeout", "0", TIMEOUT),
    ("bus", "connect_timeout", "10x", TIMEOUT),
    ("bus", "connect_timeout", "2h", TIMEOUT),
    ("bus", "connect_timeout", "s", TIMEOUT),
    ("bus", "retry_delay", "2d", RETRY_DELAY),
    ("bus", "prefetch", "0", INT_PREFETCH),
    ("bus", "prefetch", "65536", INT_PREFETCH),
    ("bus", "prefetch", "1.5", INT_PREFETCH),
    ("bus", "prefetch", "abc", INT_PREFETCH),
    ("bus", "prefetch", "\u0663", INT_PREFETCH),  # an Arabic-Indic digit: int() would take it
    ("bus", "prefetch", "1e3", INT_PREFETCH),
    ("buffer", "max_messages", "0", "expected a whole number of at least 1"),
    ("bus", "retry_limit", "1001", "expected a whole number from 0 to 1000"),
    ("bus", "tls_verify", "maybe", BOOL),
    ("bus", "tls_verify", "", BOOL),
    ("bus", "queue_type", "stream", "expected one of: classic, quorum"),
    ("buffer", "policy", "drop", "expected one of: drop_oldest, refuse_newest"),
    ("buffer", "synchronous", "OFF", "expected one of: NORMAL, FULL"),
    ("logging", "level", "verbose", "expected one of: debug, info, warning, error"),
    ("logging", "format", "xml", "expected one of: text, json"),
    ("buffer", "max_size", "1000", MAX_SIZE),
    ("buffer", "max_size", "1XB", MAX_SIZE),
    ("buffer", "max_size", "-1GiB", MAX_SIZE),
    ("buffer", "max_size", "GiB", MAX_SIZE),
    ("buffer", "path", "var/{name}.db",
     "unknown placeholder; expected a file path (placeholders: {connector})"),
    ("bus", "exchange_prefix", "bad prefix", "expected 1 to 100 letters, digits, '_', '.' or '-'"),
    ("bus", "exchange_prefix", "x" * 101, "expected 1 to 100 letters, digits, '_', '.' or '-'"),
    ("connector", "node", "a b", "expected a node name of 1 to 255 characters without spaces or '@'"),
    ("connector", "node", "snmp@a", "expected a node name of 1 to 255 characters without spaces or '@'"),
    ("connector", "http_port", "70000", "expected a whole number from 0 to 65535"),
    ("connector", "http_ports", "db=70000", "'db=70000' has a bad value '70000'; expected "
     "name=value items separated by commas, any name, value a whole number from 0 to 65535"),
    ("connector", "http_ports", "db:8473", "'db:8473' is not name=value; expected name=value "
     "items separated by commas, any name, value a whole number from 0 to 65535"),
    ("correlator", "expire_after", "fatal=1h", "'fatal=1h' has an unknown name 'fatal'; expected "
     "name=value items separated by commas, name one of info, warning, minor, major, critical, "
     "value a duration of at least 0s (e.g. 10, 500ms, 10s, 5m, 2h, 1d; a bare number is "
     "seconds)"),
    ("correlator", "purge_interval", "2d",
     "expected a duration from 1s to 1d (e.g. 10, 500ms, 10s, 5m, 2h, 1d; a bare number is seconds)"),
    ("alerter", "keep_ended_silences", "12h",
     "expected a duration from 1d to 3650d (e.g. 10, 500ms, 10s, 5m, 2h, 1d; a bare number is "
     "seconds)"),
    ("connector", "status_interval", "500ms",
     "expected a duration from 1s to 1h (e.g. 10, 500ms, 10s, 5m, 2h, 1d; a bare number is seconds)"),
    ("database", "url", "centaure.sqlite3", f"is not a URL; {DB_URL}"),
    ("database", "url", "SQLite:///x", f"has scheme SQLite; {DB_URL}"),
]


@pytest.mark.parametrize(("section", "key", "raw", "problem"), BAD)
def test_bad_values(section: str, key: str, raw: str, problem: str) -> None:
    assert error(f"[{section}]\n{key} = {raw}\n") == line(section, key, raw, problem)


def test_brief_example_line() -> None:
    assert error("[bus]\nheartbeat = abc\n").startswith(
        "settings.ini: [bus] heartbeat = 'abc': expected a whole number of seconds from 0 to 3600"
    )


@pytest.mark.parametrize(
    ("key", "raw", "problem"),
    [
        ("ratio", "1.5", "expected a number from 0 to 1"),
        ("ratio", "nan", "expected a number from 0 to 1"),
        ("ratio", "inf", "expected a number from 0 to 1"),
        ("size", "12 parsecs", "expected a size (e.g. 1000, 64KiB, 10MiB, 1GiB, 1GB)"),
        ("ports", "80, http",
         "'http' is not valid; expected a list separated by commas or newlines, "
         "each item expected a whole number from 1 to 65535"),
    ],
)
def test_bad_values_of_other_kinds(kinds: type, key: str, raw: str, problem: str) -> None:
    assert error(f"[kinds]\n{key} = {raw}\n") == line("kinds", key, raw, problem)


@pytest.mark.parametrize(
    ("raw", "shown", "problem"),
    [
        ("amqp://u:pw@h1/, ftp://u:pw@h2/", "amqp://u:***@h1/, ftp://u:***@h2/", "'ftp://u:***@h2/' has scheme ftp"),
        ("amqp://h1, amqp://", "amqp://h1, amqp://", "'amqp://' has no host"),
        ("amqp://h1:99999/", "amqp://h1:99999/", "'amqp://h1:99999/' has an invalid host or port"),
        ("rabbit1", "rabbit1", "'rabbit1' is not a URL"),
        ("embeded", "embeded", "'embeded' is not a URL"),
        ("", "", "nothing given"),
        (",", ",", "nothing given"),
        ("embedded, amqp://h", "embedded, amqp://h", "embedded cannot be combined with broker URLs"),
    ],
)
def test_bad_url_in_list_is_named_without_password(raw: str, shown: str, problem: str) -> None:
    message = error(f"[bus]\nurl = {raw}\n")
    assert message == line("bus", "url", shown, f"{problem}; {URLS_ALLOWED}")
    assert "pw" not in message


def test_malformed_url_does_not_show_a_password_in_the_port() -> None:
    message = error("[bus]\nurl = amqp://guest:hunter2/\n")
    assert "hunter2" not in message
    assert message == line("bus", "url", "amqp://guest:***",
                           f"'amqp://guest:***' has an invalid host or port; {URLS_ALLOWED}")


def test_database_url_error_masks_password() -> None:
    message = error("[database]\nurl = mysql pymysql://u:hunter2@db/x\n")
    assert "hunter2" not in message
    assert message.startswith("settings.ini: [database] url = 'mysql pymysql://u:***@db/x': ")


def test_cross_field_check_names_the_key() -> None:
    assert error("[bus]\nbackoff_initial = 1m\nbackoff_max = 10s\n") == line(
        "bus", "backoff_max", "10s", "expected at least backoff_initial (1m)"
    )
    assert error("[bus]\nbackoff_initial = 1m\n") == line(
        "bus", "backoff_max", "30s", "expected at least backoff_initial (1m)"
    )
    assert error("[bus]\ntls_key = /k.pem\n") == line(
        "bus", "tls_key", "/k.pem", "expected tls_cert to be set too, or tls_key empty"
    )


# --------------------------------------------------------------------------
# File structure errors


def test_unknown_section() -> None:
    S.discover_sections()
    assert error("[buss]\nurl = embedded\n") == (
        "settings.ini: [buss]: unknown section (did you mean bus?); "
        "expected one of: " + ", ".join(sorted(S.registered_sections()))
    )


def test_default_section_is_not_special() -> None:
    assert error("[DEFAULT]\nlevel = info\n").startswith("settings.ini: [DEFAULT]: unknown section")


def test_unknown_key_does_not_show_its_value() -> None:
    message = error("[logging]\nlevle = hunter2\n")
    assert message == (
        "settings.ini: [logging] levle: unknown key (did you mean level?); expected one of: format, level"
    )


def test_keys_are_case_sensitive() -> None:
    assert error("[logging]\nLevel = info\n").startswith(
        "settings.ini: [logging] Level: unknown key (did you mean level?)"
    )


def test_duplicate_key() -> None:
    assert error("[bus]\nprefetch = 10\nprefetch = 20\n") == (
        "settings.ini: [bus] prefetch: duplicate key (line 3); each key may appear once per section"
    )


def test_duplicate_section() -> None:
    assert error("[bus]\n[logging]\n[bus]\n") == (
        "settings.ini: [bus]: duplicate section (line 3); each section may appear once"
    )


def test_key_outside_section_does_not_show_the_line() -> None:
    assert error("password = hunter2\n") == (
        "settings.ini: line 1: key outside any section; expected a [section] header before the first key"
    )


def test_unparsable_line_does_not_show_the_line() -> None:
    assert error("[bus]\nprefetch = 1\nhunter2\n") == (
        "settings.ini: line 3: cannot parse this line; expected 'key = value', a [section] header or a # comment"
    )


def test_no_interpolation_and_no_inline_comments() -> None:
    s = load("[database]\nurl = mysql://u:p%2Fa;b@db/x#y\n")
    assert s.database.url.reveal() == "mysql://u:p%2Fa;b@db/x#y"
    assert error("[bus]\nprefetch = 10 # ten\n") == line("bus", "prefetch", "10 # ten", INT_PREFETCH)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ini"
    with pytest.raises(SettingsError) as info:
        load_settings(str(missing))
    assert str(info.value) == f"{missing}: cannot read the settings file (No such file or directory)"
    assert info.value.file == str(missing)


def test_errors_name_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "site.ini"
    path.write_text("[bus]\nprefetch = 0\n", encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    err = info.value
    assert str(err) == f"{path}: [bus] prefetch = '0': {INT_PREFETCH}"
    assert (err.file, err.section, err.key, err.value, err.allowed) == (
        str(path), "bus", "prefetch", "0", INT_PREFETCH
    )


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.ini"
    path.write_bytes("[connector]\nnode = n\xe9ud\n".encode("latin-1"))
    with pytest.raises(SettingsError, match=r"latin1\.ini: the settings file is not UTF-8 text$"):
        load_settings(str(path))


# --------------------------------------------------------------------------
# Secrets


def test_env_secret_is_resolved_and_masked() -> None:
    s = load("[database]\nurl = env:DB_URL\n", {"DB_URL": "mysql+pymysql://centaure:hunter2@db/centaure"})
    url = s.database.url
    assert url.reveal() == "mysql+pymysql://centaure:hunter2@db/centaure"
    assert url.source == "env:DB_URL"
    for text in (repr(url), str(url), f"{url}", repr(s.database), repr(s.as_dict())):
        assert "hunter2" not in text
    assert repr(url) == "Secret('mysql+pymysql://centaure:***@db/centaure')"


def test_file_secret_is_resolved_without_final_newline(tmp_path: Path) -> None:
    secret = tmp_path / "bus-urls"
    secret.write_text("amqp://c:hunter2@r1/%2F\namqp://c:hunter2@r2/%2F\n", encoding="utf-8")
    s = load(f"[bus]\nurl = file:{secret}\n")
    assert [u.reveal() for u in s.bus.urls] == ["amqp://c:hunter2@r1/%2F", "amqp://c:hunter2@r2/%2F"]
    assert all(u.source == f"file:{secret}" for u in s.bus.urls)
    assert "hunter2" not in repr(s.bus)


def test_plain_secret_is_fully_masked(kinds: type, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(" s3cret \n", encoding="utf-8")
    s = load(f"[kinds]\npassword = file:{secret}\n")
    assert s.section("kinds").password.reveal() == " s3cret "
    assert repr(s.section("kinds").password) == "Secret('***')"
    assert "s3cret" not in repr(s.section("kinds"))


def test_list_items_may_be_references() -> None:
    s = load("[bus]\nurl = env:R1, amqp://r3, env:R2\n", {"R1": "amqp://r1", "R2": "amqp://r2a,amqp://r2b"})
    assert [u.reveal() for u in s.bus.urls] == ["amqp://r1", "amqp://r3", "amqp://r2a", "amqp://r2b"]


def test_missing_env_var_names_the_variable_not_a_secret() -> None:
    message = error("[bus]\nurl = amqp://u:hunter2@r1, env:CENTAURE_R2\n")
    assert message == line(
        "bus", "url", "amqp://u:***@r1, env:CENTAURE_R2",
        "environment variable CENTAURE_R2 is not set; expected env:NAME of a set environment variable, "
        "file:/path of a readable file, or the value itself",
    )
    assert "hunter2" not in message


def test_unreadable_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    assert error(f"[database]\nurl = file:{missing}\n") == line(
        "database", "url", f"file:{missing}",
        f"file {missing} cannot be read (No such file or directory); expected env:NAME of a set "
        "environment variable, file:/path of a readable file, or the value itself",
    )


def test_bad_env_name() -> None:
    assert "'1X' is not an environment variable name" in error("[database]\nurl = env:1X\n")


def test_bad_url_from_env_names_reference_and_masks_password() -> None:
    message = error("[bus]\nurl = env:BUS\n", {"BUS": "amqp://r1, http://u:hunter2@r2/"})
    assert message == line(
        "bus", "url", "env:BUS", f"'http://u:***@r2/' (from env:BUS) has scheme http; {URLS_ALLOWED}"
    )
    message = error("[database]\nurl = env:DB\n", {"DB": "db.example.net"})
    assert message == line("database", "url", "env:DB", f"env:DB gives 'db.example.net' which is not a URL; {DB_URL}")


def test_secret_behaviour() -> None:
    a = Secret("x", shown="masked")
    assert a == Secret("x") and a != Secret("y") and hash(a) == hash(Secret("x"))
    assert str(a) == "masked" and a.source == "literal"
    with pytest.raises(AttributeError):
        a._value = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@h:5672/%2F", "amqp://guest:***@h:5672/%2F"),
        ("amqp://guest@h/", "amqp://guest@h/"),
        ("amqp://h", "amqp://h"),
        ("amqp://u:p@ss@h/", "amqp://u:***@h/"),
        ("amqp://[::1]:5672/", "amqp://[::1]:5672/"),
        ("amqp://[::1]/", "amqp://[::1]/"),
        ("amqp://guest:pa#ss/", "amqp://guest:***"),
        ("mysql://u:pa#ss@db/x", "mysql://u:***@db/x"),
        ("sqlite:///x@y.db", "sqlite:///x@y.db"),
        ("embedded", "embedded"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert S.mask_url(url) == masked


# --------------------------------------------------------------------------
# Registry and Settings object


def test_registered_section_is_reachable(scratch_registry: None) -> None:
    @register_section("probe")
    @dataclasses.dataclass(frozen=True)
    class SnmpSettings:
        """Test section."""

        timeout: float = setting(Duration(0.1, 60), "2s", "Request timeout.")
        community: Secret = setting(SecretText(), "public", "Community.")

    s = load("[probe]\ntimeout = 500ms\n")
    assert s.section("probe") == SnmpSettings(timeout=0.5)
    assert s.probe.community.reveal() == "public"
    assert load_settings(None).section("probe") == SnmpSettings()
    register_section("probe", SnmpSettings)  # the same class again: harmless
    assert [spec.key for spec in settings_of(SnmpSettings)] == ["timeout", "community"]


def test_function_form_and_key_override(scratch_registry: None) -> None:
    @dataclasses.dataclass(frozen=True)
    class Smtp:
        hosts: tuple[str, ...] = setting(StrList(min_items=1), "localhost", "Relays.", key="host")

    assert register_section("relay", Smtp) is Smtp
    assert load("[relay]\nhost = a, b\n").section("relay").hosts == ("a", "b")
    assert error("[relay]\nhosts = a\n").startswith("settings.ini: [relay] hosts: unknown key (did you mean host?)")


def test_registration_errors(scratch_registry: None) -> None:
    @dataclasses.dataclass
    class NotFrozen:
        x: int = setting(Int(), "1", "X.")

    @dataclasses.dataclass(frozen=True)
    class PlainField:
        x: int = 1

    @dataclasses.dataclass(frozen=True)
    class BadDefault:
        x: int = setting(Int(1, 5), "9", "X.")

    with pytest.raises(TypeError, match="frozen dataclass"):
        register_section("a", NotFrozen)
    with pytest.raises(TypeError, match="setting()"):
        register_section("a", PlainField)
    with pytest.raises(ValueError, match="invalid default"):
        register_section("a", BadDefault)
    with pytest.raises(ValueError, match="already registered"):
        register_section("bus", S.LoggingSettings)
    with pytest.raises(ValueError, match="invalid settings section name"):
        register_section("Bad-Name", S.LoggingSettings)
    with pytest.raises(ValueError, match="invalid settings section name"):
        register_section("source", S.LoggingSettings)


def test_settings_object_is_read_only() -> None:
    s = load_settings(None)
    with pytest.raises(AttributeError):
        s.bus = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.bus.prefetch = 1  # type: ignore[misc]
    with pytest.raises(KeyError, match=r"no settings section \[nope\]"):
        s.section("nope")
    with pytest.raises(AttributeError):
        s.nope  # noqa: B018


def test_parsers_used_directly() -> None:
    ctx = ParseContext({})
    assert Bool().parse("no", ctx) is False
    assert Choice("a", "B").parse("b", ctx) == "B"
    assert LogLevel().parse("Error", ctx) == "error"
    assert FilePath(optional=True).parse("", ctx) is None
    assert Str(r"\d+", "digits").allowed == "expected digits"
    assert Url(("amqp",)).allowed == "expected a amqp:// URL"
    with pytest.raises(InvalidValue) as info:
        Duration(1, 10).parse("11s", ctx)
    assert info.value.allowed.startswith("expected a duration from 1s to 10s")


def test_settings_dir_is_the_folder_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "etc" / "settings.ini"
    path.parent.mkdir()
    path.write_text("")
    assert S.settings_dir(load_settings(str(path))) == str(path.parent)
    monkeypatch.chdir(tmp_path)
    assert S.settings_dir(load_settings(None)) == str(tmp_path)
