"""Settings of the alerter: ``[alerter]`` (rules, routes, delivery) and ``[smtp]``.

Imported by every connector through :func:`connector.settings.discover_sections`:
keep it light (no SQLAlchemy, no Jinja2 here).
"""

from __future__ import annotations

import dataclasses

from connector.settings import (
    TABLE_PREFIX,
    Bool, Choice, Duration, FilePath, Int, OptionalUrl, Secret, SecretText, Str, StrList,
    register_section, setting, sql_identifier,
)

__all__ = ["AlerterSettings", "SmtpSettings"]

@register_section("alerter")
@dataclasses.dataclass(frozen=True)
class AlerterSettings:
    """``[alerter]``: where rules and routes come from, state, delivery."""

    rules_source: str = setting(Choice("yaml", "sql"), "yaml",
                                "Where threshold rules come from: yaml (rules file) or sql.")
    rules: str = setting(FilePath(), "rules.yaml",
                         "Rules file (rules_source = yaml), relative to this file's folder.")
    rules_url: Secret = setting(SecretText(OptionalUrl("sqlite:///rules.sqlite3")), "",
                                "SQLAlchemy URL of the rules table (rules_source = sql).")
    rules_table: str = setting(sql_identifier(), "alert_rules",
                               "Table of rules (rules_source = sql), legacy ALERTEURS-style rows.")
    routes: str = setting(FilePath(), "alert-routes.yaml",
                          "Notification routes, receivers, grouping and templates (YAML).")
    backfill: bool = setting(Bool(), "true",
                             "At start-up, replay the samples stored since the saved state "
                             "(publishing what changed while down; windows of new hosts "
                             "rebuilt silently).")
    table_prefix: str = setting(TABLE_PREFIX, "alert_",
                                "Prefix of the alerter's tables in [database].")
    link_template: str = setting(Str(), "",
                                 "Link to an alarm in notifications, e.g. "
                                 "https://noc.example.com/alarms/{ref}; empty: none.")
    device_fields: tuple[str, ...] = setting(
        StrList(sql_identifier()), "",
        "Inventory columns that notifications show besides name, address, device_type, model, "
        "id and tags (templates' alarms[].inventory, the default webhook body, a command's "
        "input); empty: none. Columns may hold per-device secrets: list only what may leave.")
    retry_initial: float = setting(Duration(0.1, 3600), "10s",
                                   "First wait before retrying a failed notification.")
    retry_max: float = setting(Duration(1, 86400), "10m",
                               "Longest wait between retries of a failed notification.")
    max_attempts: int = setting(Int(1, 1000), "20",
                                "Attempts before a notification is recorded as failed for good.")
    webhook_timeout: float = setting(Duration(0.1, 300), "10s", "Timeout of a webhook POST.")
    max_concurrent_sends: int = setting(Int(1, 1000), "64",
                                        "Notifications being sent at once (all channels).")
    keep_notified: float = setting(
        Duration(3600, 365 * 86400), "7d",
        "How long sent and failed notifications stay in the outbox table, and the record of "
        "the last notice told per alarm once the alarm is in no group any more.")
    keep_ended_silences: float = setting(
        Duration(86400, 3650 * 86400), "30d",
        "How long a silence stays in the silences table after it ended (listed by "
        "'centaure silence list --all').")
    purge_interval: float = setting(
        Duration(1, 86400), "1h",
        "How often the alerter holding the notifier deletes, in small batches, what "
        "keep_notified and keep_ended_silences let go.")


@register_section("smtp")
@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    """``[smtp]``: the mail relay the alerter sends through."""

    host: str = setting(Str(r"\S+", "a host name or address"), "127.0.0.1", "SMTP relay host.")
    port: int = setting(Int(1, 65535), "25", "SMTP relay port (587 for submission).")
    starttls: str = setting(Choice("auto", "always", "never"), "auto",
                            "STARTTLS: auto (when offered), always (refuse without), never.")
    username: str = setting(Str(), "", "SMTP user name; empty: no authentication.")
    allow_plain_auth: bool = setting(
        Bool(), "false",
        "Send the user name and password over a connection without TLS (a warning at "
        "start); false: credentials only over a verified TLS connection.")
    password: Secret = setting(SecretText(Str()), "", "SMTP password (secret).")
    sender: str = setting(Str(r"[^\s@]+@[^\s@]+", "an email address"), "centaure@localhost",
                          "From address of notifications.")
    timeout: float = setting(Duration(1, 600), "30s", "Timeout of one SMTP session.")
    connections: int = setting(Int(1, 100), "4",
                               "SMTP sessions at once, each sending several mails in turn.")
