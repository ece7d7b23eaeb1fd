"""Profiles: what to poll on which device types, one YAML file per profile.

``load_profiles(folder)`` reads every ``*.yaml``/``*.yml`` file of the
folder (hidden files skipped) in the format documented in
:mod:`connector_snmp.model` and returns a :class:`ProfileSet`. Errors name
the file, the path inside the document (``tables[0].columns[3].oid``), the
value and what is allowed.

Rules checked here:

- top-level keys: ``name`` (unique in the folder), ``device_types`` (a
  non-empty list), ``interval`` (optional duration), ``scalars``,
  ``tables``, ``alarm_tables``; nothing else;
- OIDs are numeric and dotted (``1.3.6.1.2.1.1.3.0``; a leading dot is
  dropped); quote short ones in YAML (``oid: "1.3"``);
- metric names are unique in a profile (scalars and table columns
  together); table and alarm table names too;
- ``kind`` is gauge, counter or text (default gauge);
- operators are a list of names or one-key mappings ``{name: {arg:
  value}}``, parsed into :class:`OperatorCall` — whether the names exist is
  the operator registry's business, not this module's;
- an alarm table's name column is written ``name_column`` (the table's own
  name is ``name``; YAML cannot hold ``name`` twice in one mapping), and its
  ``severity_map`` values are message severities (critical, major, minor,
  warning, info, unknown).

A profile applies to a device whose (normalized) device type is listed in
``device_types``, or whose ``<device_type><MODEL>`` is (e.g. ``huaweiSMU02C``),
compared without regard to case.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from connector.messages import SEVERITIES
from connector.settings import Duration, InvalidValue, ParseContext
from centaure_shared.inventory import Device
from centaure_shared.metric import MetricSpec, OperatorCall
from centaure_shared.yamlfile import YamlError, load_yaml_file
from connector_snmp.model import AlarmTableSpec, Profile, TableSpec

__all__ = ["SHIPPED", "SHIPPED_PROFILES_DIR", "ProfileError", "ProfileSet", "load_profile_file",
           "load_profile_folders", "load_profiles", "parse_profile", "normalize_oid"]

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
_NAME_TEXT = "a name of letters, digits, '_', '.', ':' or '-' (at most 128)"
_OPERATOR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OID_RE = re.compile(r"\.?([0-2](?:\.(?:0|[1-9][0-9]*))+)")
_OID_TEXT = "expected a numeric dotted OID such as 1.3.6.1.2.1.1.3.0 (no MIB names)"
_KINDS = ("gauge", "counter", "text")
_INTERVAL = Duration(1, 86400)
_TOP_KEYS = ("name", "device_types", "interval", "scalars", "tables", "alarm_tables")
_METRIC_KEYS = ("name", "oid", "kind", "unit", "operators")
_TABLE_KEYS = ("name", "columns")
_ALARM_KEYS = ("name", "key", "name_column", "severity", "severity_map", "message", "since")


class ProfileError(ValueError):
    """An unusable profile: the message names the file, the path in it and what is allowed."""


def normalize_oid(raw: str) -> str | None:
    """``raw`` as a dotted numeric OID without a leading dot, or None if it is not one."""
    m = _OID_RE.fullmatch(raw.strip())
    if not m:
        return None
    arcs = m.group(1).split(".")
    if int(arcs[0]) < 2 and int(arcs[1]) >= 40:
        return None
    if any(int(a) >= 2**32 for a in arcs[1:]):
        return None
    return m.group(1)


@dataclasses.dataclass(frozen=True)
class ProfileSet:
    """Profiles by name, and the profiles that apply to a device."""

    profiles: Mapping[str, Profile] = dataclasses.field(default_factory=dict)
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    _index: Mapping[str, tuple[Profile, ...]] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[Profile]] = {}
        for name in sorted(self.profiles):
            profile = self.profiles[name]
            for t in dict.fromkeys(t.casefold() for t in profile.device_types):
                index.setdefault(t, []).append(profile)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})

    def for_device(self, device: Device) -> list[Profile]:
        """The profiles for ``device`` (its type, or its type followed by its model), by name."""
        found = list(self._index.get(device.device_type.casefold(), ()))
        if device.model:
            for p in self._index.get((device.device_type + device.model).casefold(), ()):
                if p not in found:
                    found.append(p)
        return sorted(found, key=lambda p: p.name)

    def get(self, name: str) -> Profile | None:
        """The profile called ``name``, or None."""
        return self.profiles.get(name)

    def __iter__(self) -> Iterator[Profile]:
        return iter(self.profiles.values())

    def __len__(self) -> int:
        return len(self.profiles)

    def __contains__(self, name: object) -> bool:
        return name in self.profiles


#: The profiles shipped with Centaure (MIB-2, IF-MIB, HOST-RESOURCES, UPS-MIB, power shelves).
SHIPPED_PROFILES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "profiles")
#: The word that names :data:`SHIPPED_PROFILES_DIR` in ``[snmp] profiles``.
SHIPPED = "shipped"


def load_profile_folders(folders: Sequence[str], root: str) -> ProfileSet:
    """Read the profiles of several folders; a later folder's profile replaces an earlier one of the same name.

    A folder is relative to ``root`` (the settings file's folder); the word
    ``shipped`` stands for the profiles shipped with Centaure, so that
    ``shipped, profiles`` adds the user's own profiles to them (and may
    replace one of them by giving a profile of the same name).
    """
    profiles: dict[str, Profile] = {}
    sources: dict[str, str] = {}
    for folder in folders:
        path = SHIPPED_PROFILES_DIR if folder == SHIPPED else os.path.join(root, folder)
        one = load_profiles(path)
        profiles.update(one.profiles)
        sources.update(one.sources)
    return ProfileSet(profiles, sources)


def load_profiles(folder: str | os.PathLike[str]) -> ProfileSet:
    """Read every profile file of ``folder``; raise ProfileError on the first bad one."""
    folder = os.fspath(folder)
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise ProfileError(f"{folder}: cannot read the profiles folder ({e.strerror or e})") from None
    profiles: dict[str, Profile] = {}
    sources: dict[str, str] = {}
    for fname in names:
        if fname.startswith(".") or not fname.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(folder, fname)
        if not os.path.isfile(path):
            continue
        profile = load_profile_file(path)
        if profile.name in profiles:
            raise ProfileError(f"{path}: name: profile {profile.name!r} is already defined in {sources[profile.name]}; "
                               "expected a unique profile name")
        profiles[profile.name] = profile
        sources[profile.name] = path
    return ProfileSet(profiles, sources)


def load_profile_file(path: str | os.PathLike[str]) -> Profile:
    """Read one profile file."""
    path = os.fspath(path)
    try:
        doc = load_yaml_file(path)
    except YamlError as e:
        message = str(e)
        if "key 'name' is given twice" in message:
            message += " (an alarm table's name column is written name_column)"
        raise ProfileError(message) from None
    return parse_profile(doc, path)


# --------------------------------------------------------------------------
# Parsing one document


class _Doc:
    """Error helper: knows the file being read."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, problem: str, value: Any = dataclasses.MISSING) -> ProfileError:
        where = f"{self.source}: {path}" if path else self.source
        if value is not dataclasses.MISSING:
            where += f" = {value!r}"
        return ProfileError(f"{where}: {problem}")

    def mapping(self, value: Any, path: str, allowed_keys: tuple[str, ...], required: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping with keys {', '.join(allowed_keys)}")
        for k in value:
            if k not in allowed_keys:
                raise self.error(_join(path, str(k)), f"unknown key; expected one of: {', '.join(allowed_keys)}")
        for k in required:
            if value.get(k) is None:
                raise self.error(_join(path, k), "missing; it is required")
        return value

    def listing(self, value: Any, path: str, what: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(path, f"expected a list of {what}")
        return value

    def name(self, value: Any, path: str) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
            raise self.error(path, f"expected {_NAME_TEXT}", value)
        return value

    def oid(self, value: Any, path: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            hint = "; quote it in YAML" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            raise self.error(path, _OID_TEXT + hint + (", or null" if optional else ""), value)
        oid = normalize_oid(value)
        if oid is None:
            raise self.error(path, _OID_TEXT + (", or null" if optional else ""), value)
        return oid


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_profile(doc: Any, source: str = "<profile>") -> Profile:
    """Turn one parsed YAML document into a Profile; ``source`` names it in errors."""
    d = _Doc(source)
    if doc is None:
        raise d.error("", "empty file; expected a profile (name, device_types, scalars, tables, alarm_tables)")
    top = d.mapping(doc, "", _TOP_KEYS, ("name", "device_types"))
    name = d.name(top["name"], "name")
    device_types = _device_types(d, top["device_types"])
    interval = _interval(d, top.get("interval"))
    metric_paths: dict[str, str] = {}  # metric name -> where it was first given
    scalars = tuple(_metric(d, v, f"scalars[{i}]", metric_paths)
                    for i, v in enumerate(d.listing(top.get("scalars"), "scalars", "metrics")))
    tables = _tables(d, top.get("tables"), metric_paths)
    alarm_tables = _alarm_tables(d, top.get("alarm_tables"))
    if not scalars and not tables and not alarm_tables:
        raise d.error("", "a profile must poll something: expected scalars, tables or alarm_tables")
    return Profile(
        name=name,
        device_types=device_types,
        scalars=scalars,
        tables=tables,
        alarm_tables=alarm_tables,
        interval=interval,
    )


def _device_types(d: _Doc, types: Any) -> tuple[str, ...]:
    """``device_types``: one word, or a non-empty list of them."""
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, list) or not types:
        raise d.error("device_types", "expected a non-empty list of device types", types)
    for i, t in enumerate(types):
        if not isinstance(t, str) or not re.fullmatch(r"[^\s/,;|]{1,128}", t):
            raise d.error(f"device_types[{i}]", "expected a device type (one word)", t)
    return tuple(types)


def _interval(d: _Doc, value: Any) -> float | None:
    """The profile's own poll interval in seconds, or None (the ``[snmp]`` one applies)."""
    if value is None:
        return None
    try:
        return _INTERVAL.parse(str(value).strip(), ParseContext({}))
    except InvalidValue as e:
        raise d.error("interval", e.allowed, value) from None


def _metric(d: _Doc, value: Any, path: str, metric_paths: dict[str, str]) -> MetricSpec:
    """A scalar or a table column; its name must be new in the profile (``metric_paths``)."""
    m = d.mapping(value, path, _METRIC_KEYS, ("name", "oid"))
    mname = d.name(m["name"], f"{path}.name")
    if mname in metric_paths:
        raise d.error(f"{path}.name", f"metric name already used at {metric_paths[mname]}; "
                      "expected unique metric names in a profile", mname)
    metric_paths[mname] = path
    oid = d.oid(m["oid"], f"{path}.oid")
    kind = m.get("kind", "gauge")
    if kind is None:
        kind = "gauge"
    if kind not in _KINDS:
        raise d.error(f"{path}.kind", f"expected one of: {', '.join(_KINDS)}", kind)
    unit = m.get("unit")
    if unit is not None:
        if isinstance(unit, (int, float)) and not isinstance(unit, bool):
            unit = str(unit)
        if not isinstance(unit, str):
            raise d.error(f"{path}.unit", "expected a unit (text) or null", unit)
    ops = _operators(d, m.get("operators"), f"{path}.operators")
    return MetricSpec(name=mname, oid=oid, kind=kind, unit=unit, operators=ops)  # type: ignore[arg-type]


def _tables(d: _Doc, value: Any, metric_paths: dict[str, str]) -> tuple[TableSpec, ...]:
    """``tables``: each a unique name and at least one column."""
    tables = []
    table_names: dict[str, str] = {}
    for i, v in enumerate(d.listing(value, "tables", "tables")):
        path = f"tables[{i}]"
        t = d.mapping(v, path, _TABLE_KEYS, ("name", "columns"))
        tname = d.name(t["name"], f"{path}.name")
        if tname in table_names:
            raise d.error(f"{path}.name", f"table name already used at {table_names[tname]}", tname)
        table_names[tname] = path
        cols = d.listing(t["columns"], f"{path}.columns", "columns")
        if not cols:
            raise d.error(f"{path}.columns", "expected at least one column")
        columns = tuple(_metric(d, c, f"{path}.columns[{j}]", metric_paths) for j, c in enumerate(cols))
        tables.append(TableSpec(name=tname, columns=columns))
    return tuple(tables)


def _alarm_tables(d: _Doc, value: Any) -> tuple[AlarmTableSpec, ...]:
    """``alarm_tables``: each a unique name, column OIDs and an optional severity map."""
    alarm_tables = []
    alarm_names: dict[str, str] = {}
    for i, v in enumerate(d.listing(value, "alarm_tables", "alarm tables")):
        path = f"alarm_tables[{i}]"
        a = d.mapping(v, path, _ALARM_KEYS, ("name",))
        aname = d.name(a["name"], f"{path}.name")
        if aname in alarm_names:
            raise d.error(f"{path}.name", f"alarm table name already used at {alarm_names[aname]}", aname)
        alarm_names[aname] = path
        oids = {k: d.oid(a.get(k), f"{path}.{k}", optional=True)
                for k in ("key", "name_column", "severity", "message", "since")}
        if not any(oids[k] for k in ("key", "name_column", "severity", "message")):
            raise d.error(path, "expected at least one column OID among key, name_column, severity, message")
        smap = _severity_map(d, a.get("severity_map") or {}, path)
        if smap and oids["severity"] is None:
            raise d.error(f"{path}.severity_map", "a severity_map needs a severity column OID")
        alarm_tables.append(AlarmTableSpec(
            name=aname, key=oids["key"], name_column=oids["name_column"], severity=oids["severity"],
            severity_map=smap, message=oids["message"], since=oids["since"],
        ))
    return tuple(alarm_tables)


def _severity_map(d: _Doc, smap_raw: Any, path: str) -> dict[str, str]:
    """An alarm table's ``severity_map``: device value (as text) -> Centaure severity."""
    if not isinstance(smap_raw, dict):
        raise d.error(f"{path}.severity_map", "expected a mapping of device value to severity", smap_raw)
    smap: dict[str, str] = {}
    for k, sev in smap_raw.items():
        if isinstance(k, bool) or not isinstance(k, (str, int)):
            raise d.error(f"{path}.severity_map", "expected device values (text or whole numbers) as keys", k)
        if sev not in SEVERITIES:
            raise d.error(f"{path}.severity_map.{k}", f"expected one of: {', '.join(SEVERITIES)}", sev)
        smap[str(k)] = sev
    return smap


def _operators(d: _Doc, value: Any, path: str) -> tuple[OperatorCall, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, dict)):
        value = [value]  # a single operator, written without the list
    if not isinstance(value, list):
        raise d.error(path, "expected a list of operator names or one-key mappings {name: {arg: value}}", value)
    calls = []
    for i, op in enumerate(value):
        p = f"{path}[{i}]"
        if isinstance(op, str):
            name, args = op, {}
        elif isinstance(op, dict) and len(op) == 1:
            name, args = next(iter(op.items()))
            if args is None:
                args = {}
            if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
                raise d.error(f"{p}.{name}", "expected the operator's arguments as a mapping {arg: value}", args)
        else:
            raise d.error(p, "expected an operator name or a one-key mapping {name: {arg: value}}", op)
        if not isinstance(name, str) or not _OPERATOR_RE.fullmatch(name):
            raise d.error(p, "expected an operator name (letters, digits and '_', not starting with a digit)", name)
        calls.append(OperatorCall(name=name, args=dict(args)))
    return tuple(calls)
