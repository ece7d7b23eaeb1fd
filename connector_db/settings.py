"""Settings of the SQL writer: the ``[db]`` section.

The database itself is ``[database] url`` (core, shared with other tools);
``[db]`` says how ``centaure-db`` writes to it. Imported by every connector
through :func:`connector.settings.discover_sections`: keep it light (no
SQLAlchemy here).
"""

from __future__ import annotations

import dataclasses

from connector.settings import Choice, Duration, Int, Str, StrList, register_section, setting

__all__ = ["DbSettings"]

_PREFIX = Str(r"(?:[a-z][a-z0-9_]{0,30})?",
              "a table prefix: a lower-case letter then up to 30 lower-case letters, "
              "digits or '_', or nothing")


@register_section("db")
@dataclasses.dataclass(frozen=True)
class DbSettings:
    """``[db]``: how the SQL writer batches, migrates and lays out its tables."""

    layout: str = setting(
        Choice("normalized", "per_device"), "normalized",
        "Table layout of samples: normalized (devices, metrics, samples) or per_device "
        "(a table per metric per device, as seed-000 databases).")
    table_prefix: str = setting(_PREFIX, "", "Prefix of every table name the writer owns.")
    migrate: str = setting(
        Choice("auto", "check"), "auto",
        "auto: create or upgrade the schema at start-up; check: refuse to start unless "
        "'centaure db upgrade' was run.")
    batch_size: int = setting(Int(1, 1_000_000), "5000", "Rows per transaction, at most.")
    batch_interval: float = setting(
        Duration(0.001, 60), "200ms", "Longest wait for a batch to fill before it is written.")
    retry_initial: float = setting(
        Duration(0.01, 600), "1s", "First wait before retrying a batch while the database is down.")
    retry_max: float = setting(
        Duration(0.01, 3600), "30s", "Longest wait between retries while the database is down.")
    table_template: str = setting(
        Str(r".*\{metric\}.*|.*\{device\}.*", "a template using {metric} and/or {device}"),
        "{metric}_{device}",
        "per_device: table name template; {metric} is the metric name, {device} the "
        "inventory id of the device (its name when it has no id).")
    table_struct: tuple = setting(
        StrList(min_items=1), "datetime:ts:int, metric_index:index:varchar(63), value:value:varchar(63)",
        "per_device: the columns, each name:source:type.")
