"""The device inventory: from a YAML file, a CSV file or an SQL table.

``load_inventory(settings.inventory, base_dir)`` reads the source named by
the ``[inventory]`` section and returns an :class:`Inventory` of
:class:`Device`. Loading is blocking (file or database
I/O): a Twisted caller runs it in a thread (``deferToThread``).

Records
    A record is one device: a YAML mapping, a CSV row (first row: the
    column names) or a table row. The ``*_column`` settings say which
    columns give the name, address, type, model, id, port and parent;
    ``name`` and ``address`` are required, the others optional. Optional
    columns ``interval`` (a duration: ``30``, ``30s``, ``5m``) and ``tags``
    (a YAML list or a comma-separated text) are read when present. Every
    column (or only the mapped ones plus ``fields`` when that setting is
    not empty) is kept, as text, in ``Device.fields``, for the credentials'
    ``__field__`` substitution and for operators. SQL NULL and YAML null
    become an empty string.

Device types
    Legacy inventories give constructor labels as types (``Huawei`` ->
    ``huawei``, ``Vertiv / Emerson`` -> ``vertiv``): the device type is the
    first word of the type column, in lower case; the column as written stays in
    ``fields``. Profiles and credentials match on that normalized type.

Validation
    Everything wrong is collected and raised as one :class:`InventoryError`
    whose lines name the source, the record (``row 3`` / ``devices[2]`` /
    the device name) and the field: duplicate names, missing or bad
    address, bad port, unknown parent, cycles in parent links (named
    ``a -> b -> a``). A bad record refuses the whole load: a caller that
    reloads keeps its previous inventory.

SQL
    SQLAlchemy Core only: the table is reflected (``Table(...,
    autoload_with=engine)``) and read with ``select()``; table and column
    names are checked identifiers, never pasted into SQL text. Column names
    are matched exactly, or case-insensitively when that is unambiguous
    (``NAME`` for ``name``).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import decimal
import ipaddress
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any


from connector.problems import ProblemsError
from connector.settings import SQL_IDENTIFIER, Duration, InvalidValue, ParseContext, mask_url, settings_dir
from centaure_shared.settings import InventorySettings
from centaure_shared.yamlfile import YamlError, load_yaml_file

__all__ = [
    "Device",
    "Inventory",
    "InventoryError",
    "build_inventory",
    "load_inventory",
    "normalize_device_type",
]

# Device names become message host names and routing keys: no blanks, <= 240.
_NAME_RE = re.compile(r"\S{1,240}")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?)*\.?"
)
_TYPE_WORD = re.compile(r"[^\s/,;|]+")
_INTERVAL = Duration(1, 86400)


@dataclasses.dataclass(frozen=True)
class Device:
    """One inventory device; ``fields`` holds every column of its record."""

    name: str
    address: str
    device_type: str
    model: str = ""
    id: str = ""
    port: int = 161
    parent: str | None = None
    interval: float | None = None     # overrides the profile's
    tags: tuple[str, ...] = ()
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False, compare=False)


class InventoryError(ProblemsError):
    """An inventory that cannot be used; ``problems`` lists every problem found."""


# --------------------------------------------------------------------------
# The inventory


@dataclasses.dataclass(frozen=True, eq=False)
class Inventory:
    """Devices by name, with look-ups by address and by parent.

    ``source`` names where the devices were read (a path, or a URL with its
    password masked).
    """

    devices: Mapping[str, Device]
    source: str = ""
    _by_address: Mapping[str, tuple[Device, ...]] = dataclasses.field(init=False, repr=False)
    _children: Mapping[str, tuple[Device, ...]] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_address: dict[str, list[Device]] = {}
        children: dict[str, list[Device]] = {}
        for device in self.devices.values():
            by_address.setdefault(_address_key(device.address), []).append(device)
            if device.parent is not None:
                children.setdefault(device.parent, []).append(device)
        object.__setattr__(self, "_by_address", {k: tuple(v) for k, v in by_address.items()})
        object.__setattr__(self, "_children", {k: tuple(v) for k, v in children.items()})

    def get(self, name: str) -> Device | None:
        """The device called ``name``, or None."""
        return self.devices.get(name)

    def __getitem__(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no device {name!r} in the inventory ({self.source})") from None

    def by_address(self, address: str) -> tuple[Device, ...]:
        """Every device at ``address`` (IP literals compared in canonical form).

        Several devices may share an address (agents on different ports, a
        proxy): the trap receiver decides among them. Empty when unknown.
        """
        return self._by_address.get(_address_key(address), ())

    def children(self, name: str) -> tuple[Device, ...]:
        """The devices whose ``parent`` is ``name`` (direct children only)."""
        return self._children.get(name, ())

    def ancestors(self, name: str) -> tuple[Device, ...]:
        """The parent of ``name``, its parent, and so on (nearest first)."""
        out: list[Device] = []
        device = self.devices.get(name)
        while device is not None and device.parent is not None:
            device = self.devices.get(device.parent)
            if device is None:
                break
            out.append(device)
        return tuple(out)

    def __contains__(self, name: object) -> bool:
        return name in self.devices

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices.values())

    def __len__(self) -> int:
        return len(self.devices)


def _address_key(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip().strip("[]").split("%")[0]))
    except ValueError:
        return address.strip().lower().rstrip(".")


def normalize_device_type(raw: str) -> str:
    """The first word of ``raw``, lower case: ``Vertiv / Emerson`` -> ``vertiv``."""
    m = _TYPE_WORD.search(raw)
    return m.group(0).lower() if m else ""


# --------------------------------------------------------------------------
# Loading


def load_inventory(section: InventorySettings, base_dir: str | os.PathLike[str] = ".") -> Inventory:
    """Read the devices named by the ``[inventory]`` section.

    ``base_dir`` is the folder relative paths are taken from (the settings
    file's). Raises InventoryError (every problem, each naming its record
    and field).
    """
    _check_identifiers(section)
    if section.source == "sql":
        url = section.url.reveal()
        shown = f"{mask_url(url)} table {section.table}"
        records = _read_sql(section, url, shown)
        return build_inventory(records, section, shown)
    path = os.path.join(os.fspath(base_dir), section.path)
    if section.source == "csv":
        records = _read_csv(path, section.path)
    else:
        records = _read_yaml(path, section.path)
    return build_inventory(records, section, section.path)


def load_optional_inventory(settings) -> Inventory | None:
    """The inventory of ``settings``, or None when its YAML/CSV file does not exist.

    For connectors that only enrich with it (the writer's device ids, the
    correlator's topology): a node without an inventory runs without them;
    a file that exists but is wrong still raises.
    """
    section = settings.section("inventory")
    base = settings_dir(settings)
    if section.source != "sql" and not os.path.exists(os.path.join(base, section.path)):
        return None
    return load_inventory(section, base)


def _check_identifiers(section: InventorySettings) -> None:
    # The settings parser already refuses them; a section built in code
    # (tests, tools) must not slip an arbitrary string through either.
    problems = []
    for key in ("table", "name_column", "address_column", "type_column", "model_column",
                "id_column", "parent_column"):
        value = getattr(section, key)
        if not isinstance(value, str) or not SQL_IDENTIFIER.fullmatch(value):
            problems.append(f"[inventory] {key} = {value!r}: expected an SQL identifier "
                            "(a letter or '_' then up to 63 letters, digits or '_')")
    if section.port_column and not SQL_IDENTIFIER.fullmatch(section.port_column):
        problems.append(f"[inventory] port_column = {section.port_column!r}: expected an SQL identifier or nothing")
    for value in section.fields:
        if not SQL_IDENTIFIER.fullmatch(value):
            problems.append(f"[inventory] fields item {value!r}: expected an SQL identifier")
    if problems:
        raise InventoryError("settings", problems)


# A record read from a source: (where, {column: value}).
Record = tuple[str, Mapping[str, Any]]


def _read_yaml(path: str, shown: str) -> list[Record]:
    try:
        doc = load_yaml_file(path, shown)
    except YamlError as e:
        raise InventoryError(shown, [str(e).removeprefix(f"{shown}: ")]) from None
    prefix = ""
    if isinstance(doc, dict):
        if set(doc) != {"devices"}:
            raise InventoryError(shown, ["expected a list of devices, or a mapping with the single key "
                                         f"'devices' holding that list (found keys: {', '.join(map(str, doc))})"])
        doc = doc["devices"]
        prefix = "devices"
    if doc is None:
        doc = []
    if not isinstance(doc, list):
        raise InventoryError(shown, ["expected a list of devices (mappings of column: value)"])
    records: list[Record] = []
    problems = []
    for i, item in enumerate(doc):
        where = f"{prefix}[{i}]" if prefix else f"item {i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping of column: value, got {type(item).__name__}")
            continue
        bad = [k for k in item if not isinstance(k, str)]
        if bad:
            problems.append(f"{where}: column names must be text, got {bad[0]!r}")
            continue
        records.append((where, item))
    if problems:
        raise InventoryError(shown, problems)
    return records


def _read_csv(path: str, shown: str) -> list[Record]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except OSError as e:
        raise InventoryError(shown, [f"cannot read the file ({e.strerror or e})"]) from None
    except UnicodeDecodeError:
        raise InventoryError(shown, ["the file is not UTF-8 text"]) from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InventoryError(shown, ["expected a header row naming the columns on the first line"])
    header = lines[0]
    # The most frequent of the usual separators in the header (French CSV: ';').
    delimiter = max(",;\t|", key=header.count)
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    rows = list(reader)
    columns = [c.strip() for c in rows[0]]
    problems = []
    if any(not c for c in columns):
        problems.append("row 1 (header): a column has no name")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        problems.append(f"row 1 (header): column(s) given twice: {', '.join(dupes)}")
    if problems:
        raise InventoryError(shown, problems)
    records: list[Record] = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) > len(columns):
            problems.append(f"row {n}: {len(row)} values for {len(columns)} columns")
            continue
        values = {c: (row[i].strip() if i < len(row) else "") for i, c in enumerate(columns)}
        records.append((f"row {n}", values))
    if problems:
        raise InventoryError(shown, problems)
    return records


def _read_sql(section: InventorySettings, url: str, shown: str) -> list[Record]:
    # Imported here: only the poller with an SQL inventory pays for it.
    import sqlalchemy as sa
    from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    except (SQLAlchemyError, ValueError, ImportError) as e:
        raise InventoryError(shown, [f"cannot use the database URL ({type(e).__name__}: "
                                     f"{_clean(str(e), url)})"]) from None
    try:
        try:
            table = sa.Table(section.table, sa.MetaData(), autoload_with=engine)
        except NoSuchTableError:
            raise InventoryError(shown, [f"no table {section.table!r} in the database"]) from None
        available = [c.name for c in table.columns]
        wanted = _wanted_columns(section, available)
        problems = []
        for key, col in wanted["required"].items():
            if col is None:
                problems.append(f"[inventory] {key} = {getattr(section, key)!r}: no such column "
                                f"(columns: {', '.join(available)})")
        for name in section.fields:
            if _match_column(name, available) is None:
                problems.append(f"[inventory] fields: no column {name!r} (columns: {', '.join(available)})")
        if problems:
            raise InventoryError(shown, problems)
        if section.fields:
            keep = [c for c in available if c in wanted["kept"]]
        else:
            keep = available
        query = sa.select(*(table.c[c] for c in keep))
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    except InventoryError:
        raise
    except SQLAlchemyError as e:
        raise InventoryError(shown, [f"database error ({type(e).__name__}: {_clean(str(e), url)})"]) from None
    finally:
        engine.dispose()
    return [(f"row {i}", dict(zip(keep, row, strict=True))) for i, row in enumerate(rows, start=1)]


def _clean(text: str, url: str) -> str:
    # Driver messages may quote the URL; one line, no password.
    text = text.split("\n(Background on this error")[0]
    return " ".join(text.replace(url, mask_url(url)).split())


def _match_column(name: str, available: Iterable[str]) -> str | None:
    """``name`` as spelled in ``available``: exact, else the one case-insensitive match."""
    available = list(available)
    if name in available:
        return name
    folded = [c for c in available if c.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


_REQUIRED_KEYS = ("name_column", "address_column")
_OPTIONAL_KEYS = ("type_column", "model_column", "id_column", "port_column", "parent_column")
_EXTRA_COLUMNS = ("interval", "tags")


def _wanted_columns(section: InventorySettings, available: list[str]) -> dict[str, dict[str, str | None]]:
    required = {k: _match_column(getattr(section, k), available) for k in _REQUIRED_KEYS}
    optional = {k: _match_column(getattr(section, k), available) for k in _OPTIONAL_KEYS
                if getattr(section, k)}
    kept = {c for c in (*required.values(), *optional.values()) if c}
    kept |= {c for c in (_match_column(x, available) for x in (*_EXTRA_COLUMNS, *section.fields)) if c}
    return {"required": required, "optional": optional, "kept": dict.fromkeys(kept)}


def _text(value: Any) -> str:
    """A record value as the text kept in ``Device.fields``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value).strip()


def build_inventory(records: Iterable[Record], section: InventorySettings, source: str) -> Inventory:
    """Turn records (where, {column: value}) into a validated Inventory."""
    devices: dict[str, Device] = {}
    first_seen: dict[str, str] = {}
    where_of: dict[str, str] = {}
    problems: list[str] = []
    for where, record in records:
        device, label, row_problems = _device_of(where, record, section, first_seen)
        if device is None:
            problems.extend(row_problems)
            continue
        devices[device.name] = device
        where_of[device.name] = label
    problems.extend(_check_parents(devices, where_of, section.parent_column))
    if problems:
        raise InventoryError(source, problems)
    return Inventory(devices, source)


def _device_of(where: str, record: Mapping[str, Any], section: InventorySettings,
               first_seen: dict[str, str]) -> tuple[Device | None, str, list[str]]:
    """(the Device, its label, []) for a good record, or (None, label, its problems).

    ``first_seen`` (name -> where) is updated, to find names given twice.
    """
    columns = list(record)
    col = {k: _match_column(getattr(section, k), columns) if getattr(section, k) else None
           for k in (*_REQUIRED_KEYS, *_OPTIONAL_KEYS)}
    extra = {x: _match_column(x, columns) for x in _EXTRA_COLUMNS}

    def value(key: str) -> str:
        c = col[key]
        return _text(record[c]) if c is not None else ""

    problems: list[str] = []
    name = value("name_column")
    label = f"{where}" + (f" ({name})" if name else "")
    if not name:
        problems.append(f"{where}: {section.name_column}: missing device name")
    elif not _NAME_RE.fullmatch(name):
        problems.append(f"{label}: {section.name_column} = {name!r}: expected a name of "
                        "1 to 240 characters without spaces")
    address = _address_of(value("address_column"), label, section, problems)
    port = _port_of(value("port_column") if section.port_column else "", label, section, problems)
    interval = None
    if extra["interval"] is not None:
        interval = _interval_of(_text(record[extra["interval"]]), label, problems)
    tags: tuple[str, ...] = ()
    if extra["tags"] is not None:
        tags = tuple(t.strip() for t in _text(record[extra["tags"]]).split(",") if t.strip())
    parent = value("parent_column") or None
    if parent is not None and parent == name:
        problems.append(f"{label}: {section.parent_column} = {parent!r}: a device cannot be its own "
                        f"parent (cycle {name} -> {name})")
    if name and name in first_seen:
        problems.append(f"{label}: {section.name_column}: duplicate device name {name!r} "
                        f"(first in {first_seen[name]})")
    if name and name not in first_seen:
        first_seen[name] = where
    if problems:
        return None, label, problems
    device = Device(
        name=name,
        address=address,
        device_type=normalize_device_type(value("type_column")),
        model=value("model_column"),
        id=value("id_column"),
        port=port,
        parent=parent,
        interval=interval,
        tags=tags,
        fields=_fields_of(record, columns, [*col.values(), *extra.values()], section),
    )
    return device, label, []


def _address_of(raw: str, label: str, section: InventorySettings, problems: list[str]) -> str:
    """The record's canonical address; '' (and a problem noted) when missing or invalid."""
    if not raw:
        problems.append(f"{label}: {section.address_column}: missing address")
        return ""
    address = _check_address(raw)
    if not address:
        problems.append(f"{label}: {section.address_column} = {raw!r}: "
                        "expected an IPv4 or IPv6 address or a host name")
    return address


def _port_of(raw: str, label: str, section: InventorySettings, problems: list[str]) -> int:
    """The record's SNMP port: 161 when it gives none; a problem noted when it is not a port."""
    if not raw:
        return 161
    try:
        port = int(raw)
        if 1 <= port <= 65535:
            return port
    except ValueError:
        pass
    problems.append(f"{label}: {section.port_column} = {raw!r}: "
                    "expected a port number from 1 to 65535")
    return 161


def _interval_of(raw: str, label: str, problems: list[str]) -> float | None:
    """The record's own poll interval, None when it gives none; a problem noted when invalid."""
    if not raw:
        return None
    try:
        return _INTERVAL.parse(raw, ParseContext({}))
    except InvalidValue as e:
        problems.append(f"{label}: interval = {raw!r}: {e.allowed}")
        return None


def _fields_of(record: Mapping[str, Any], columns: list[str], mapped: list[str | None],
               section: InventorySettings) -> dict[str, str]:
    """The columns kept in ``Device.fields``: all, or the mapped ones plus ``[inventory] fields``."""
    if not section.fields:
        return {c: _text(record[c]) for c in columns}
    keep = {c for c in mapped if c}
    keep |= {c for c in (_match_column(f, columns) for f in section.fields) if c}
    return {c: _text(record[c]) for c in columns if c in keep}


def _check_address(raw: str) -> str:
    """The canonical address (IP literals normalized), or '' when invalid."""
    text = raw.strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", text):
        return ""  # looks like a broken IPv4 literal, not a host name
    return text if _HOSTNAME_RE.fullmatch(text) else ""


def _check_parents(devices: Mapping[str, Device], where_of: Mapping[str, str], column: str) -> list[str]:
    problems = []
    for name, device in devices.items():
        if device.parent is not None and device.parent not in devices and device.parent != name:
            problems.append(f"{where_of[name]}: {column} = {device.parent!r}: unknown parent device")
    # Cycles: follow parent links; each cycle reported once, by its smallest name.
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    reported: set[frozenset[str]] = set()
    for start in devices:
        path: list[str] = []
        node: str | None = start
        while node is not None and node in devices and state.get(node) is None:
            state[node] = 1
            path.append(node)
            parent = devices[node].parent
            node = parent if parent != node else None
        if node is not None and state.get(node) == 1:
            cycle = path[path.index(node):]
            key = frozenset(cycle)
            if key not in reported and len(cycle) > 1:
                reported.add(key)
                i = cycle.index(min(cycle))
                ordered = cycle[i:] + cycle[:i]
                problems.append(f"{where_of[ordered[0]]}: {column}: cycle in parent links: "
                                + " -> ".join([*ordered, ordered[0]]))
        for n in path:
            state[n] = 2
    return problems
