"""``[inventory]``: where the devices come from and how their columns map to a Device."""

from __future__ import annotations

import dataclasses

from connector.settings import (
    Choice,
    Duration,
    FilePath,
    InvalidValue,
    OptionalUrl,
    Secret,
    SecretText,
    StrList,
    register_section,
    setting,
    sql_identifier,
)

__all__ = ["InventorySettings"]


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
        SecretText(OptionalUrl()), "",
        "SQLAlchemy URL of the inventory database (source = sql); empty otherwise.",
    )
    table: str = setting(sql_identifier(), "machines", "Inventory table (source = sql).")
    name_column: str = setting(sql_identifier(), "name", "Column of the device name.")
    address_column: str = setting(sql_identifier(), "address", "Column of the IP address or host name.")
    type_column: str = setting(sql_identifier(), "device_type", "Column of the device type (profiles, credentials).")
    model_column: str = setting(sql_identifier(), "model", "Column of the model (credentials <type><MODEL>).")
    id_column: str = setting(sql_identifier(), "id", "Column of the device's stable id.")
    port_column: str = setting(
        sql_identifier(optional=True), "port",
        "Column of the SNMP port; a device without it (or with it empty) is polled on port 161; "
        "empty: every device on port 161.",
    )
    parent_column: str = setting(sql_identifier(), "parent", "Column naming the device this one depends on.")
    fields: tuple[str, ...] = setting(
        StrList(sql_identifier()), "",
        "Extra columns kept in the device's fields besides the mapped ones; empty: every column.",
    )
    reload_interval: float = setting(
        Duration(0, 7 * 86400), "5m", "Re-read the inventory this often; 0: only on SIGHUP."
    )

    def __post_init__(self) -> None:
        if self.source == "sql" and not self.url.reveal():
            raise InvalidValue("expected a SQLAlchemy URL when source = sql", "nothing given", key="url")
