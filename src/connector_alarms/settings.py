"""Settings of the alarm correlator: the ``[correlator]`` section.

Imported by every connector through :func:`connector.settings.discover_sections`:
keep it light (no SQLAlchemy here).
"""

from __future__ import annotations

import dataclasses

from connector.settings import (
    TABLE_PREFIX,
    Bool, Choice, Duration, Float, Int, KeyValueMap, Str, StrList, register_section, setting,
)

__all__ = ["CorrelatorSettings"]

_SEVERITIES = ("info", "warning", "minor", "major", "critical")
#: A RabbitMQ user name as the AMQP ``user-id`` property carries it (a short string).
_BROKER_USERS = StrList(Str(r"[^\s,]{1,255}", "a broker user name of 1 to 255 characters "
                                              "without spaces or commas"))


@register_section("correlator")
@dataclasses.dataclass(frozen=True)
class CorrelatorSettings:
    """``[correlator]``: alarm updates, expiry, flapping, topology masking, batching, who commands."""

    update_interval: float = setting(
        Duration(0, 86400), "60s",
        "A repeated alarm is published as 'updated' at most this often (a severity or "
        "message change is published at once).")
    expire_after: dict = setting(
        KeyValueMap(Duration(0), _SEVERITIES), "info=1h, warning=1d",
        "Active alarms with no news for this long are cleared as expired, per severity "
        "(0 or absent: never).")
    expire_names: dict = setting(
        KeyValueMap(Duration(0)), "", "Per alarm name, overrides expire_after (name=duration).")
    keep_cleared: float = setting(
        Duration(60, 365 * 86400), "1d",
        "How long cleared alarms stay in the correlator's state (late messages are ordered "
        "against them; 'centaure alarms --all' lists them). Their rows are deleted then "
        "too, and every purge_interval any older cleared row left in the table.")
    purge_interval: float = setting(
        Duration(1, 86400), "1h",
        "How often the correlator deletes, in small batches, the rows of cleared alarms "
        "older than keep_cleared that its memory no longer holds.")
    flap_high: float = setting(Float(1, 100), "50",
                               "Percent state change above which an alarm starts flapping.")
    flap_low: float = setting(Float(0, 100), "25",
                              "Percent state change below which a flapping alarm stops.")
    mask_severity: str = setting(
        Choice(*_SEVERITIES), "warning",
        "Severity of a child's alarms masked by an unreachable parent.")
    mask_all: bool = setting(
        Bool(), "false",
        "Mask every alarm of a child of an unreachable parent (false: only its "
        "'unreachable' alarm).")
    table_prefix: str = setting(TABLE_PREFIX, "corr_",
                                "Prefix of the correlator's tables in [database].")
    batch_size: int = setting(Int(1, 100_000), "2000", "Messages applied per transaction, at most.")
    batch_interval: float = setting(
        Duration(0.001, 10), "10ms", "Longest wait for a batch to fill before it is committed.")
    tick_interval: float = setting(
        Duration(0.1, 3600), "1s", "How often expiry and held updates are checked.")
    operators: tuple = setting(
        _BROKER_USERS, "guest, centaure",
        "Broker users whose alarm commands (ack, unack, clear, note) are applied, recorded "
        "under that user name (the AMQP user-id RabbitMQ checks); others are dead-lettered.")
    command_services: tuple = setting(
        _BROKER_USERS, "",
        "Broker users trusted to command alarms on behalf of the person the command names "
        "(e.g. a web console for its logged-in users): recorded under that person's name.")
