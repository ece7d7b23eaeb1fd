"""Settings sections of the SNMP poller: ``[inventory]`` and ``[snmp]``.

Imported by every connector (through :func:`connector.settings.discover_sections`)
so that each accepts the whole shared ``settings.ini``: keep this module light
(no SQLAlchemy, no YAML, no pysnmp here).

Table and column names are plain SQL identifiers, checked here and again when
the inventory is loaded: the inventory never builds SQL from strings.
"""

from __future__ import annotations

import dataclasses
import re

from connector.settings import (
    Choice,
    Duration,
    Int,
    FilePath,
    InvalidValue,
    ParseContext,
    Parser,
    Secret,
    SecretText,
    Size,
    Str,
    StrList,
    Url,
    register_section,
    setting,
)

__all__ = [
    "IDENTIFIER",
    "InventorySettings",
    "OperatorEntry",
    "SnmpSettings",
]

#: A table or column name: a letter or '_', then letters, digits or '_' (64 at most).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_IDENT_TEXT = "an SQL identifier: a letter or '_' then up to 63 letters, digits or '_'"


def _identifier(optional: bool = False) -> Str:
    pattern = IDENTIFIER.pattern
    describe = _IDENT_TEXT
    if optional:
        pattern = f"(?:{pattern})?"
        describe += ", or nothing"
    return Str(pattern, describe)


class _OptionalUrl(Url):
    """A SQLAlchemy URL, or nothing (empty text)."""

    def __init__(self) -> None:
        super().__init__(
            words=("",),
            allowed="expected nothing, or a SQLAlchemy URL such as "
                    "mysql+pymysql://user:password@host/name or sqlite:///inventory.sqlite3",
        )


class OperatorEntry(str):
    """One user operator of ``[snmp] operators``, as the text ``name = package.module:callable``.

    A ``str`` (normalized spacing), so it can be handed as is to
    :func:`connector_snmp.operators.load_user_operators`; ``name``,
    ``module`` and ``attribute`` give its parts.
    """

    __slots__ = ()

    def __new__(cls, name: str, target: str) -> OperatorEntry:
        return super().__new__(cls, f"{name} = {target}")

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return (self.name, f"{self.module}:{self.attribute}")

    @property
    def name(self) -> str:
        """The operator name used in profiles."""
        return self.partition(" = ")[0]

    @property
    def module(self) -> str:
        """The dotted module path (before the colon)."""
        return self.partition(" = ")[2].partition(":")[0]

    @property
    def attribute(self) -> str:
        """The callable's (dotted) path in its module (after the colon)."""
        return self.partition(" = ")[2].partition(":")[2]


class _Operator(Parser):
    """``name = dotted.module.path:callable``; returns an :class:`OperatorEntry`."""

    _IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
    _RE = re.compile(rf"({_IDENT})\s*=\s*({_IDENT}(?:\.{_IDENT})*)\s*:\s*({_IDENT}(?:\.{_IDENT})*)")
    allowed = "expected name = package.module:callable (e.g. volts = mysite.operators:centivolts_to_volts)"

    def parse(self, raw: str, ctx: ParseContext) -> OperatorEntry:
        m = self._RE.fullmatch(raw)
        if not m:
            raise self.invalid()
        return OperatorEntry(m[1], f"{m[2]}:{m[3]}")


_OPERATORS = StrList(
    _Operator(),
    allowed="expected a list (commas or newlines) of name = package.module:callable",
)


@register_section("inventory")
@dataclasses.dataclass(frozen=True)
class InventorySettings:
    """``[inventory]``: where the devices come from and how their columns map to a Device."""

    source: str = setting(Choice("yaml", "csv", "sql"), "yaml", "Where devices are read: yaml, csv or sql.")
    path: str = setting(
        FilePath(), "inventory.yaml",
        "YAML or CSV inventory file; relative to the settings file's folder.",
    )
    url: Secret = setting(
        SecretText(_OptionalUrl()), "",
        "SQLAlchemy URL of the inventory database (source = sql); empty otherwise.",
    )
    table: str = setting(_identifier(), "machines", "Inventory table (source = sql).")
    name_column: str = setting(_identifier(), "name", "Column of the device name.")
    address_column: str = setting(_identifier(), "address", "Column of the IP address or host name.")
    type_column: str = setting(_identifier(), "device_type", "Column of the device type (profiles, credentials).")
    model_column: str = setting(_identifier(), "model", "Column of the model (credentials <type><MODEL>).")
    id_column: str = setting(_identifier(), "id", "Column of the device's stable id.")
    port_column: str = setting(
        _identifier(optional=True), "port",
        "Column of the SNMP port; a device without it (or with it empty) is polled on port 161; "
        "empty: every device on port 161.",
    )
    parent_column: str = setting(_identifier(), "parent", "Column naming the device this one depends on.")
    fields: tuple[str, ...] = setting(
        StrList(_identifier()), "",
        "Extra columns kept in the device's fields besides the mapped ones; empty: every column.",
    )
    reload_interval: float = setting(
        Duration(0, 7 * 86400), "5m", "Re-read the inventory this often; 0: only on SIGHUP."
    )

    def __post_init__(self) -> None:
        if self.source == "sql" and not self.url.reveal():
            raise InvalidValue("expected a SQLAlchemy URL when source = sql", "nothing given", key="url")


@register_section("snmp")
@dataclasses.dataclass(frozen=True)
class SnmpSettings:
    """``[snmp]``: profiles, credentials and the poller's pace and limits."""

    profiles: tuple[str, ...] = setting(
        StrList(FilePath(), min_items=1), "shipped",
        "Folders of profile YAML files, relative to the settings file; 'shipped' names the profiles "
        "shipped with Centaure. A later folder's profile replaces an earlier one of the same name.",
    )
    credentials: str = setting(
        FilePath(), "credentials.yaml", "Credentials YAML file; relative to the settings file."
    )
    interval: float = setting(Duration(1, 86400), "60s", "Default poll interval of a device.")
    timeout: float = setting(Duration(0.01, 600), "2s", "Wait for one SNMP response before a retry.")
    retries: int = setting(Int(0, 20), "1", "Tries after the first before a device is declared unreachable.")
    max_repetitions: int = setting(Int(1, 1000), "25", "GETBULK max-repetitions (rows asked per request).")
    max_concurrent_polls: int = setting(Int(1, 100_000), "200", "Device polls running at once.")
    max_in_flight_per_agent: int = setting(Int(1, 64), "4", "SNMP requests outstanding at once to one agent.")
    operators: tuple[OperatorEntry, ...] = setting(
        _OPERATORS, "", "User operators: name = package.module:callable, separated by commas or newlines."
    )
    recv_buffer: int = setting(Size(64 * 1024, 1024**3), "4MiB", "UDP receive buffer of the poller's socket.")

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for op in self.operators:
            if op.name in seen:
                raise InvalidValue("expected each operator name once", f"{op.name} is given twice", key="operators")
            seen.add(op.name)
