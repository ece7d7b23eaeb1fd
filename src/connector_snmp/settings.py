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
    Duration,
    Int,
    FilePath,
    InvalidValue,
    ParseContext,
    Parser,
    Size,
    StrList,
    register_section,
    setting,
)

__all__ = [
    "OperatorEntry",
    "SnmpSettings",
]

class OperatorEntry(str):
    """One user operator of ``[snmp] operators``, as the text ``name = package.module:callable``.

    A ``str`` (normalized spacing), so it can be handed as is to
    :func:`centaure_shared.operators.load_user_operators`; ``name``,
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
