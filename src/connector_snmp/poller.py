"""One poll of one device: requests from its profiles, values through operators.

A ``PollPlan`` is compiled once per profile set (OIDs to GET, columns to walk,
each metric's operator pipeline); a poll runs the plan against a target and
returns a ``perf`` message (every metric, one message per device poll) and,
when the device has alarm tables or its reachability changed, an
``alarm_snapshot``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger

from connector import messages
from centaure_shared import operators as ops
from connector_snmp.client import SnmpTimeout
from connector_snmp.model import AlarmTableSpec, Profile, SnmpTarget
from centaure_shared.inventory import Device
from centaure_shared.metric import MetricSpec

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
_MISSING = {"NoSuchObject", "NoSuchInstance", "EndOfMibView"}
UNREACHABLE_KEY = "unreachable"


@dataclass
class PollPlan:
    """What to ask a device for, compiled from its profiles."""

    scalars: list[tuple[MetricSpec, object]] = field(default_factory=list)
    columns: list[tuple[MetricSpec, object]] = field(default_factory=list)
    alarm_tables: list[AlarmTableSpec] = field(default_factory=list)
    scalar_oids: list[str] = field(default_factory=list)
    column_oids: list[str] = field(default_factory=list)

    def seal(self) -> "PollPlan":
        """Compute the OID lists once (a plan is shared by many devices)."""
        oids = [spec.oid for spec, _ in self.scalars]
        if SYS_UPTIME not in oids and any(
                _needs_uptime(spec) for spec, _ in self.scalars + self.columns):
            oids.append(SYS_UPTIME)
        self.scalar_oids = oids
        columns = [spec.oid for spec, _ in self.columns]
        for t in self.alarm_tables:
            columns.extend(o for o in (t.key, t.name_column, t.severity, t.message, t.since) if o)
        self.column_oids = list(dict.fromkeys(columns))
        return self


def _needs_uptime(spec: MetricSpec) -> bool:
    return any(call.name == "counter_rate" for call in spec.operators)


def _as_published(spec: MetricSpec) -> MetricSpec:
    """``spec`` with the kind of the values it publishes.

    A counter through ``counter_rate`` publishes rates: a gauge. Stored as a
    counter, the rollups and graphs would take the rate of a rate.
    """
    if spec.kind == "counter" and _needs_uptime(spec):
        return dataclasses.replace(spec, kind="gauge")
    return spec


def compile_plan(registry, profiles: list[Profile]) -> PollPlan:
    """The plan for a device with these profiles (operators built once here)."""
    plan = PollPlan()
    for profile in profiles:
        for spec in profile.scalars:
            plan.scalars.append((_as_published(spec), ops.compile_pipeline(registry, spec)))
        for table in profile.tables:
            for spec in table.columns:
                plan.columns.append((_as_published(spec), ops.compile_pipeline(registry, spec)))
        plan.alarm_tables.extend(profile.alarm_tables)
    return plan.seal()


@dataclass
class PollOutcome:
    """What one poll produced."""

    device: str
    reachable: bool
    perf: messages.Perf | None = None
    snapshot: messages.AlarmSnapshot | None = None
    varbinds: int = 0
    seconds: float = 0.0
    error: str | None = None
    rows: list[tuple[str, str, str, object, str | None, str]] = field(default_factory=list)


def to_json_value(tag: str, value):
    """A polled value as JSON can carry it (bytes become text or 0x-hex)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + bytes(value).hex()
        if text.isprintable() or text == "":
            return text
        return "0x" + bytes(value).hex()
    return value


class DevicePoller:
    """Polls devices with one shared SNMP client and operator state store."""

    log = Logger()

    def __init__(self, client, source: str, state: "ops.StateStore") -> None:
        self.client = client
        self.source = source
        self.state = state
        self.unreachable: set[str] = set()
        #: Devices whose next answered poll sends a snapshot even if this poller
        #: saw them answer before (taken over: the previous owner may have seen otherwise).
        self.confirm: set[str] = set()

    async def poll(self, device: Device, target: SnmpTarget, plan: PollPlan,
                   with_rows: bool = False) -> PollOutcome:
        """Poll ``device`` once; never raises for an agent's fault."""
        started = time.time()
        outcome = PollOutcome(device.name, reachable=True)
        try:
            scalars = await self.client.get(target, plan.scalar_oids) if plan.scalar_oids else []
            walked = await self.client.walk(target, plan.column_oids) if plan.column_oids else {}
        except SnmpTimeout as e:
            outcome.reachable = False
            outcome.error = str(e)
        except defer.CancelledError:
            # The poller is stopping: this poll is abandoned, not failed.
            outcome.error = "cancelled"
            return outcome
        except Exception as e:  # a broken agent must not stop the poller
            # It answered, with something unusable: an error, not "unreachable".
            outcome.error = f"{e.__class__.__name__}: {e}"
            self.log.warn("poll of {device} failed: {error}", device=device.name, error=outcome.error)
        outcome.seconds = time.time() - started
        if not outcome.reachable:
            outcome.snapshot = self._reachability(device, False, outcome.error, plan)
            return outcome
        if outcome.error:
            return outcome
        values = {oid: (tag, value) for oid, tag, value in scalars}
        uptime = None
        up = values.get(SYS_UPTIME)
        if up and isinstance(up[1], int):
            uptime = up[1] / 100.0
        now = started
        metrics: list[messages.Metric] = []
        for spec, pipeline in plan.scalars:
            tag, raw = values.get(spec.oid, ("NoSuchObject", None))
            self._emit(device, spec, "", spec.oid, tag, raw, pipeline, now, uptime, metrics,
                       outcome, with_rows)
        for spec, pipeline in plan.columns:
            for index, tag, raw in walked.get(spec.oid, ()):
                self._emit(device, spec, index, f"{spec.oid}.{index}", tag, raw, pipeline, now,
                           uptime, metrics, outcome, with_rows)
        outcome.varbinds = len(scalars) + sum(len(v) for v in walked.values())
        if metrics:
            outcome.perf = messages.Perf(
                source=self.source, ts=now, host=device.name, address=device.address,
                device_type=device.device_type, metrics=metrics)
        if plan.alarm_tables:
            outcome.snapshot = messages.AlarmSnapshot(
                source=self.source, ts=now, host=device.name,
                alarms=[a for t in plan.alarm_tables for a in _alarm_rows(t, walked)])
            self.unreachable.discard(device.name)
            self.confirm.discard(device.name)
        else:
            outcome.snapshot = self._reachability(device, True, None, plan)
        return outcome

    def _emit(self, device, spec: MetricSpec, index: str, oid: str, tag: str, raw, pipeline, now,
              uptime, metrics, outcome, with_rows) -> None:
        value = None if tag in _MISSING else raw
        if value is not None and pipeline.operators:
            # Only stateful operators (rates, skip-unchanged) get a state entry:
            # a plain metric costs no dict per (device, metric, index).
            state = self.state.get(device.name, spec.name, index) if pipeline.needs_state else {}
            ctx = ops.OperatorContext(now=now, device=device.name, metric=spec.name, index=index,
                                      state=state, uptime=uptime, tag=tag)
            value = pipeline.apply(value, ctx)
            if value is ops.SKIP:
                if with_rows:
                    outcome.rows.append((spec.name, index, spec.kind, "(skipped)", spec.unit, oid))
                return
        value = to_json_value(tag, value)
        metrics.append(messages.Metric(name=spec.name, index=index, value=value, kind=spec.kind,
                                       unit=spec.unit, oid=oid))
        if with_rows:
            outcome.rows.append((spec.name, index, spec.kind,
                                 tag if tag in _MISSING else value, spec.unit, oid))

    def _reachability(self, device: Device, reachable: bool, error: str | None,
                      plan: PollPlan) -> messages.AlarmSnapshot | None:
        """An ``unreachable`` entry when a device stops answering; a snapshot without it when back."""
        was_unreachable = device.name in self.unreachable
        if reachable:
            if not was_unreachable and device.name not in self.confirm:
                return None
            self.confirm.discard(device.name)
            self.unreachable.discard(device.name)
            return messages.AlarmSnapshot(source=self.source, host=device.name, alarms=[])
        self.unreachable.add(device.name)
        return messages.AlarmSnapshot(source=self.source, host=device.name, alarms=[
            messages.SnapshotAlarm(key=UNREACHABLE_KEY, name="unreachable", severity="major",
                                   message=f"no SNMP answer from {device.address}:{device.port}"
                                           f" ({error})")])


def _alarm_rows(table: AlarmTableSpec, walked: dict) -> list[messages.SnapshotAlarm]:
    def column(oid):
        return {index: value for index, _tag, value in walked.get(oid, ())} if oid else {}

    keys, names, sev = column(table.key), column(table.name_column), column(table.severity)
    texts, since = column(table.message), column(table.since)
    indexes = sorted(set(keys) | set(names) | set(sev) | set(texts),
                     key=lambda i: tuple(int(p) for p in i.split(".") if p.isdigit()))
    rows = []
    for index in indexes:
        key = to_json_value("", keys.get(index, index)) if table.key else index
        severity = table.severity_map.get(str(to_json_value("", sev.get(index))), "unknown")
        if severity not in messages.SEVERITIES:
            severity = "unknown"
        ts = since.get(index)
        rows.append(messages.SnapshotAlarm(
            key=f"{table.name}:{key}",
            name=str(to_json_value("", names.get(index))) if table.name_column else table.name,
            severity=severity,
            message=str(to_json_value("", texts.get(index, ""))),
            since=float(ts) if isinstance(ts, (int, float)) and ts > 0 else None))
    return rows
