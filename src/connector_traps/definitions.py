"""Trap definitions: what a trap OID means, from a YAML file or an SQL table.

``load_definitions(settings.traps, base_dir)`` reads the source named by the
``[traps]`` section and returns an immutable :class:`Definitions`;
``Definitions.classify(trap, host)`` gives the trap's
:class:`~connector_traps.model.Classification`. Loading is blocking (file or
database I/O): a Twisted caller runs it in a thread, and a reload builds a
new :class:`Definitions` that the service swaps in (a bad source raises
:class:`DefinitionsError` and the running definitions stay).

A definition
    ``oid``
        The trap OID (snmpTrapOID.0; for SNMPv1 traps the RFC 3584 form
        ``enterprise.0.specific``, or the standard ``1.3.6.1.6.3.1.1.5.N``
        for generic traps), or a prefix written ``1.3.6.1.4.1.2011.*``
        that matches every trap OID *below* it (not the prefix itself).
        An exact definition wins; else the longest matching prefix.
    ``name``
        The event name (required).
    ``severity``
        One of ``critical major minor warning info unknown`` (required).
    ``action``
        ``raise``, ``clear`` or ``none`` (default ``none``).
    ``alarm``
        The alarm raised or cleared. Default: ``name`` for raise/clear,
        nothing for ``none``. A clearing trap names the alarm of the raising
        one (``linkUp`` clears ``linkDown``).
    ``key``
        Varbind OIDs whose values identify the alarm (with host and alarm:
        the correlator's reduction key). An item equal to a varbind's OID
        gives that varbind's value; otherwise an item that is a prefix of a
        varbind's OID gives the varbind's *instance* (the OID suffix, e.g.
        ``3`` for ``ifIndex.3``). Write the full OID (with ``.0``) to key on
        the value of an instanced varbind. The parts are joined with ``|``
        (a ``|`` or ``\\`` inside a value is escaped with ``\\``); a missing
        varbind gives an empty part. May be empty: one alarm per host.
    ``message``
        A template. ``{$N}`` is the N-th varbind's value (1-based, not
        counting sysUpTime.0 and snmpTrapOID.0), ``{oid:1.3.6...}`` the
        value of that varbind (exact OID, else the first one below it),
        ``{host}``, ``{trap_oid}`` and ``{name}``; ``{{`` and ``}}`` are
        literal braces. Nothing else is interpreted (no ``str.format``):
        values are pasted as text, braces and all, with control characters
        replaced by spaces. A missing varbind shows as ``?``. Default:
        ``{name}``.
    ``varbinds``
        Optional mapping varbind OID (exact, or the column OID of an
        instanced varbind) -> name, so events can name their varbinds
        (:meth:`Definitions.varbind_names`).
    ``operators``
        Optional mapping varbind OID (as for ``varbinds``) -> list of
        operator calls from the poller's registry
        (:func:`centaure_shared.operators.default_registry`), written as in
        profiles: ``[hex_to_text]`` or ``[{enum: {map: {1: up}}}]``. They
        are built once at load; operators that keep state between values
        (``counter_rate``, ``skip_unchanged``) are refused. The processed
        values are used by ``message`` and ``key``; an operator that fails
        or answers SKIP leaves the raw value (or ``?``) instead.

YAML
    A list of mappings with the keys above (an empty file: no definitions).

SQL (``definitions_source = sql``)
    One row per definition in ``definitions_table``, read with SQLAlchemy
    Core (the table is reflected, never named in SQL text). Fixed column
    names, matched case-insensitively: ``oid``, ``name``, ``severity``
    (required), ``action``, ``alarm``, ``key_varbinds`` (OIDs separated by
    commas or blanks: ``key`` is reserved in MySQL), ``message``,
    ``varbinds`` and ``operators`` (YAML or JSON text of the mappings
    above), all optional. NULL means not given. Other columns are ignored.

Errors
    Every problem is collected and raised at once as one
    :class:`DefinitionsError`, one line per problem naming the source, the
    definition (``item 3 (line 12)`` or ``row 3``, plus its oid) and the field.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from connector.problems import ProblemsError
from connector.messages import SEVERITIES
from connector.settings import SQL_IDENTIFIER, mask_url
from centaure_shared.metric import MetricSpec, OperatorCall
from centaure_shared.operators import (
    SKIP,
    OperatorContext,
    OperatorError,
    Pipeline,
    PipelineError,
    Registry,
    compile_pipeline,
    default_registry,
)
from connector_traps.model import Classification, Trap

__all__ = [
    "Definition",
    "Definitions",
    "DefinitionsError",
    "Template",
    "build_definitions",
    "load_definitions",
    "value_text",
]

_OID = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_PREFIX = re.compile(r"([0-9]+(?:\.[0-9]+)+)\.\*")
_OPERATOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ACTIONS = ("raise", "clear", "none")
_FIELDS = ("oid", "name", "severity", "action", "alarm", "key", "message", "varbinds", "operators")
_SQL_COLUMNS = ("oid", "name", "severity", "action", "alarm", "key_varbinds", "message", "varbinds", "operators")
#: Longest text of one value pasted into a message, and of a whole message.
MAX_VALUE_TEXT = 1024
MAX_MESSAGE = 4096
MISSING = "?"


class DefinitionsError(ProblemsError):
    """Definitions that cannot be used; ``problems`` lists every problem found."""


# --------------------------------------------------------------------------
# Values as text


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PRINTABLE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def value_text(value: object) -> str:
    """A varbind value as text for messages and keys.

    bytes: UTF-8 text (trailing NULs dropped) when it is text, else
    ``0x`` and hex digits; None: ``""``; others: ``str()``.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value).rstrip(b"\x00")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + raw.hex()
        # Text may hold tabs and line ends; other control bytes mean binary.
        return "0x" + raw.hex() if _PRINTABLE_CONTROL.search(text) else text
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clean(text: str) -> str:
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= MAX_VALUE_TEXT else text[: MAX_VALUE_TEXT - 3] + "..."


# --------------------------------------------------------------------------
# Message templates


class Template:
    """A message template, parsed once: literal text and placeholders.

    ``render(values, named, host, trap_oid, name)``: ``values`` are the
    varbind values in order (already processed, as text or None when
    missing), ``named`` a function OID -> text or None.
    """

    __slots__ = ("text", "parts")

    _FIELD = re.compile(r"\$([1-9][0-9]{0,3})|oid:([0-9]+(?:\.[0-9]+)+)|(host|trap_oid|name)")

    def __init__(self, text: str) -> None:
        self.text = text
        # Each part: ("lit", text) | ("pos", index) | ("oid", oid) | ("var", name)
        parts: list[tuple[str, Any]] = []
        literal: list[str] = []
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c == "{":
                if text.startswith("{{", i):
                    literal.append("{")
                    i += 2
                    continue
                end = text.find("}", i)
                if end < 0:
                    raise ValueError(f"unclosed '{{' at character {i + 1}")
                inner = text[i + 1:end]
                m = self._FIELD.fullmatch(inner)
                if m is None:
                    raise ValueError(
                        f"unknown placeholder {{{inner}}} at character {i + 1}; expected {{$N}} "
                        "(N-th varbind), {oid:1.3.6...}, {host}, {trap_oid} or {name} "
                        "({{ and }} for literal braces)")
                if literal:
                    parts.append(("lit", "".join(literal)))
                    literal = []
                if m[1]:
                    parts.append(("pos", int(m[1]) - 1))
                elif m[2]:
                    parts.append(("oid", m[2]))
                else:
                    parts.append(("var", m[3]))
                i = end + 1
            elif c == "}":
                if text.startswith("}}", i):
                    literal.append("}")
                    i += 2
                    continue
                raise ValueError(f"single '}}' at character {i + 1}; write }}}} for a literal brace")
            else:
                literal.append(c)
                i += 1
        if literal:
            parts.append(("lit", "".join(literal)))
        self.parts = tuple(parts)

    def oids(self) -> tuple[str, ...]:
        """The OIDs named by ``{oid:...}`` placeholders."""
        return tuple(arg for kind, arg in self.parts if kind == "oid")

    def render(self, values: list[str | None], named, host: str, trap_oid: str, name: str) -> str:
        out: list[str] = []
        fixed = {"host": host, "trap_oid": trap_oid, "name": name}
        for kind, arg in self.parts:
            if kind == "lit":
                out.append(arg)
                continue
            if kind == "pos":
                text = values[arg] if arg < len(values) else None
            elif kind == "oid":
                text = named(arg)
            else:
                text = fixed[arg]
            out.append(MISSING if text is None else _clean(text))
        message = "".join(out)
        return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


# --------------------------------------------------------------------------
# Definitions


def _match_varbind(oid: str, table: tuple[tuple[str, Any], ...]) -> tuple[Any, str] | None:
    """``(item, suffix)`` for the entry of ``table`` naming ``oid`` exactly, else its longest prefix."""
    best = None
    for entry_oid, item in table:
        if oid == entry_oid:
            return item, ""
        if oid.startswith(entry_oid) and oid[len(entry_oid)] == "." and (
                best is None or len(entry_oid) > best[2]):
            best = (item, oid[len(entry_oid) + 1:], len(entry_oid))
    return None if best is None else (best[0], best[1])


@dataclass(frozen=True, eq=False)
class Definition:
    """One trap definition, checked and compiled."""

    oid: str                                   # the OID, or the prefix without ".*"
    prefix: bool
    name: str
    severity: str
    action: str
    alarm: str | None
    key: tuple[str, ...]
    message: Template
    varbinds: Mapping[str, str]                # OID -> name
    operators: Mapping[str, Pipeline]          # OID -> compiled operators
    where: str = ""                            # source and item, for logs

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names", tuple(self.varbinds.items()))
        object.__setattr__(self, "_pipes", tuple(self.operators.items()))

    @property
    def pattern(self) -> str:
        """The OID as written: ``1.3.6.1.6.3.1.1.5.3`` or ``1.3.6.1.4.1.2011.*``."""
        return f"{self.oid}.*" if self.prefix else self.oid

    def varbind_name(self, oid: str) -> str | None:
        """The name given to varbind ``oid`` (exact OID or column OID), or None."""
        hit = _match_varbind(oid, self._names)  # type: ignore[attr-defined]
        return None if hit is None else hit[0]

    def values(self, trap: Trap, host: str) -> list[object]:
        """The trap's varbind values in order, with this definition's operators applied.

        A value an operator failed on, or SKIPped, stays raw.
        """
        out: list[object] = []
        pipes = self._pipes  # type: ignore[attr-defined]
        for oid, tag, value in trap.varbinds:
            if pipes:
                hit = _match_varbind(oid, pipes)
                if hit is not None:
                    pipe, suffix = hit
                    ctx = OperatorContext(
                        now=trap.received, device=host, metric=pipe.metric, index=suffix, state={},
                        uptime=None if trap.uptime is None else trap.uptime / 100.0, tag=tag)
                    try:
                        processed = pipe.apply(value, ctx)
                    except PipelineError:
                        processed = value
                    if processed is not SKIP:
                        value = processed
            out.append(value)
        return out

    def classify(self, trap: Trap, host: str) -> Classification:
        """The classification of ``trap`` (which this definition matches) from ``host``."""
        raw = self.values(trap, host)
        texts: list[str | None] = [value_text(v) for v in raw]
        oids = [vb[0] for vb in trap.varbinds]

        def named(oid: str) -> str | None:
            prefix = oid + "."
            found = None
            for i, vb_oid in enumerate(oids):
                if vb_oid == oid:
                    return texts[i]
                if found is None and vb_oid.startswith(prefix):
                    found = texts[i]
            return found

        key = ""
        if self.key:
            parts = []
            for item in self.key:
                part = ""
                prefix = item + "."
                for i, vb_oid in enumerate(oids):
                    if vb_oid == item:
                        part = texts[i] or ""
                        break
                else:
                    for vb_oid in oids:
                        if vb_oid.startswith(prefix):
                            part = vb_oid[len(prefix):]
                            break
                parts.append(part.replace("\\", "\\\\").replace("|", "\\|"))
            key = "|".join(parts)
        message = self.message.render(texts, named, host, trap.trap_oid, self.name)
        return Classification(name=self.name, severity=self.severity, action=self.action,  # type: ignore[arg-type]
                              alarm=self.alarm, key=key, message=message, known=True)


@dataclass(frozen=True, eq=False)
class Definitions:
    """Every definition of one source, by exact OID and by prefix. Immutable.

    ``source`` names where they were read (a path, or a URL with its
    password masked, and the table).
    """

    exact: Mapping[str, Definition]
    prefixes: Mapping[str, Definition]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "exact", types.MappingProxyType(dict(self.exact)))
        object.__setattr__(self, "prefixes", types.MappingProxyType(dict(self.prefixes)))

    def lookup(self, trap_oid: str) -> Definition | None:
        """The definition of ``trap_oid``: exact match, else the longest prefix, else None."""
        found = self.exact.get(trap_oid)
        if found is not None:
            return found
        if self.prefixes:
            oid = trap_oid
            while True:
                cut = oid.rfind(".")
                if cut <= 0:
                    return None
                oid = oid[:cut]
                found = self.prefixes.get(oid)
                if found is not None:
                    return found
        return None

    def classify(self, trap: Trap, host: str) -> Classification:
        """What the definitions say of ``trap`` sent by ``host``."""
        definition = self.lookup(trap.trap_oid)
        if definition is None:
            return Classification(
                name=trap.trap_oid, severity="unknown", action="none", alarm=None, key="",
                message=_clean(f"unknown trap {trap.trap_oid} from {host} "
                               f"({len(trap.varbinds)} varbinds)"),
                known=False)
        return definition.classify(trap, host)

    def varbind_names(self, trap: Trap) -> tuple[str | None, ...]:
        """The names of the trap's varbinds (``varbinds`` of its definition), None where unnamed."""
        definition = self.lookup(trap.trap_oid)
        if definition is None:
            return (None,) * len(trap.varbinds)
        return tuple(definition.varbind_name(vb[0]) for vb in trap.varbinds)

    def __iter__(self) -> Iterator[Definition]:
        yield from self.exact.values()
        yield from self.prefixes.values()

    def __len__(self) -> int:
        return len(self.exact) + len(self.prefixes)

    def __contains__(self, pattern: object) -> bool:
        if not isinstance(pattern, str):
            return False
        m = _PREFIX.fullmatch(pattern)
        return pattern in self.exact if m is None else m[1] in self.prefixes


# --------------------------------------------------------------------------
# Building from records


# A record: (where, {field: value}); ``where`` names it in errors.
Record = tuple[str, Mapping[str, Any]]


def _text_field(record: Mapping[str, Any], field: str, problems: list[str], label: str,
                required: bool = False) -> str | None:
    value = record.get(field)
    if value is None or value == "":
        if required:
            problems.append(f"{label}: {field}: missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        problems.append(f"{label}: {field}: expected a text, got {type(value).__name__}")
        return None
    return str(value).strip()


def _oid_list(value: Any, field: str, label: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = [x for x in re.split(r"[\s,]+", value) if x]
    elif isinstance(value, list):
        items = value
    else:
        problems.append(f"{label}: {field}: expected a list of varbind OIDs, got {type(value).__name__}")
        return ()
    out = []
    for i, item in enumerate(items):
        text = item.lstrip(".") if isinstance(item, str) else item
        if not isinstance(text, str) or not _OID.fullmatch(text):
            problems.append(f"{label}: {field}[{i}] = {item!r}: expected a varbind OID such as "
                            "1.3.6.1.2.1.2.2.1.1")
            continue
        if text in out:
            problems.append(f"{label}: {field}[{i}] = {item!r}: given twice")
            continue
        out.append(text)
    return tuple(out)


def _oid_map(value: Any, field: str, label: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{label}: {field}: expected a mapping of varbind OID to "
                        f"{'name' if field == 'varbinds' else 'operators'}, got {type(value).__name__}")
        return {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        text = key.lstrip(".") if isinstance(key, str) else None
        if text is None or not _OID.fullmatch(text):
            problems.append(f"{label}: {field}: key {key!r}: expected a varbind OID such as 1.3.6.1.2.1.2.2.1.2")
            continue
        if text in out:
            problems.append(f"{label}: {field}: OID {text} is given twice")
            continue
        out[text] = item
    return out


def _operator_calls(value: Any, where: str) -> tuple[OperatorCall, ...]:
    """Operator calls as written in profiles; raises ValueError naming the problem."""
    if value is None:
        return ()
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of operator names or one-key mappings "
                         "{name: {arg: value}}")
    calls = []
    for i, op in enumerate(value):
        if isinstance(op, str):
            name, args = op, {}
        elif isinstance(op, dict) and len(op) == 1:
            name, args = next(iter(op.items()))
            if args is None:
                args = {}
            if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
                raise ValueError(f"{where}[{i}]: expected the arguments of {name!r} as a mapping {{arg: value}}")
        else:
            raise ValueError(f"{where}[{i}]: expected an operator name or a one-key mapping "
                             "{name: {arg: value}}")
        if not isinstance(name, str) or not _OPERATOR_NAME.fullmatch(name):
            raise ValueError(f"{where}[{i}]: {name!r} is not an operator name")
        calls.append(OperatorCall(name=name, args=dict(args)))
    return tuple(calls)


def _definition(where: str, record: Mapping[str, Any], registry: Registry,
                problems: list[str], key_field: str = "key") -> Definition | None:
    before = len(problems)
    raw_oid = record.get("oid")
    label = where
    if isinstance(raw_oid, str) and raw_oid:
        label = f"{where[:-1]}, oid {raw_oid})" if where.endswith(")") else f"{where} (oid {raw_oid})"
    oid_text = _text_field(record, "oid", problems, label, required=True)
    oid, prefix = "", False
    if oid_text is not None:
        oid_text = oid_text.lstrip(".")
        m = _PREFIX.fullmatch(oid_text)
        if m is not None:
            oid, prefix = m[1], True
        elif _OID.fullmatch(oid_text):
            oid = oid_text
        else:
            problems.append(f"{label}: oid = {raw_oid!r}: expected a trap OID such as 1.3.6.1.6.3.1.1.5.3 "
                            "or a prefix such as 1.3.6.1.4.1.2011.*")
    name = _text_field(record, "name", problems, label, required=True)
    if name is not None and (len(name) > 255 or _CONTROL.search(name)):
        problems.append(f"{label}: name = {name!r}: expected at most 255 characters, no control characters")
    severity = _text_field(record, "severity", problems, label, required=True)
    if severity is not None and severity.lower() not in SEVERITIES:
        problems.append(f"{label}: severity = {severity!r}: expected one of: {', '.join(SEVERITIES)}")
    action = _text_field(record, "action", problems, label) or "none"
    if action.lower() not in _ACTIONS:
        problems.append(f"{label}: action = {action!r}: expected one of: {', '.join(_ACTIONS)}")
    action = action.lower()
    alarm = _text_field(record, "alarm", problems, label)
    if alarm is None and action != "none":
        alarm = name
    key = _oid_list(record.get(key_field), key_field, label, problems)
    message_text = record.get("message")
    template = None
    if message_text is None or message_text == "":
        template = Template("{name}")
    elif not isinstance(message_text, str):
        problems.append(f"{label}: message: expected a text, got {type(message_text).__name__}")
    else:
        try:
            template = Template(message_text)
        except ValueError as e:
            problems.append(f"{label}: message = {message_text!r}: {e}")
    names: dict[str, str] = {}
    for vb_oid, vb_name in _oid_map(record.get("varbinds"), "varbinds", label, problems).items():
        if not isinstance(vb_name, str) or not vb_name.strip() or _CONTROL.search(vb_name):
            problems.append(f"{label}: varbinds: {vb_oid}: expected a name, got {vb_name!r}")
            continue
        names[vb_oid] = vb_name.strip()
    pipes: dict[str, Pipeline] = {}
    for vb_oid, calls in _oid_map(record.get("operators"), "operators", label, problems).items():
        path = f"operators: {vb_oid}"
        try:
            spec = MetricSpec(name=names.get(vb_oid, vb_oid), oid=vb_oid,
                              operators=_operator_calls(calls, path))
            pipe = compile_pipeline(registry, spec)
        except ValueError as e:
            problems.append(f"{label}: {e}")
            continue
        except OperatorError as e:
            problems.append(f"{label}: {path}: {e}".replace("\n", "; "))
            continue
        if pipe.needs_state:
            problems.append(f"{label}: {path}: operator(s) {', '.join(pipe.names)}: an operator "
                            "that keeps state between values cannot be used on trap varbinds")
            continue
        pipes[vb_oid] = pipe
    extra = sorted(str(k) for k in record if k not in _FIELDS and k != key_field)
    if extra and key_field == "key":
        problems.append(f"{label}: unknown field(s) {', '.join(extra)}; expected: {', '.join(_FIELDS)}")
    if len(problems) > before or template is None:
        return None
    return Definition(
        oid=oid, prefix=prefix, name=name, severity=severity.lower(), action=action,  # type: ignore[arg-type,union-attr]
        alarm=alarm, key=key, message=template, varbinds=types.MappingProxyType(names),
        operators=types.MappingProxyType(pipes), where=label)


def build_definitions(records: Iterable[Record], source: str, registry: Registry | None = None,
                      key_field: str = "key") -> Definitions:
    """Check and compile records ``(where, {field: value})``; raise DefinitionsError."""
    registry = registry if registry is not None else default_registry()
    problems: list[str] = []
    exact: dict[str, Definition] = {}
    prefixes: dict[str, Definition] = {}
    for where, record in records:
        d = _definition(where, record, registry, problems, key_field)
        if d is None:
            continue
        table = prefixes if d.prefix else exact
        first = table.get(d.oid)
        if first is not None:
            problems.append(f"{d.where}: oid = {d.pattern}: already defined by {first.where}")
            continue
        table[d.oid] = d
    if problems:
        raise DefinitionsError(source, problems)
    return Definitions(exact, prefixes, source)


# --------------------------------------------------------------------------
# Loading


def load_definitions(section: Any, base_dir: str | os.PathLike[str] = ".",
                     registry: Registry | None = None) -> Definitions:
    """Read the definitions named by the ``[traps]`` section.

    ``base_dir`` is the folder relative paths are taken from (the settings
    file's). ``registry`` gives the operators (default: the built-ins; pass
    one with the ``[snmp] operators`` loaded to use user operators). Raises
    DefinitionsError (every problem, each naming its record and field).
    """
    if section.definitions_source == "sql":
        table = section.definitions_table
        if not isinstance(table, str) or not SQL_IDENTIFIER.fullmatch(table):
            raise DefinitionsError("settings", [f"[traps] definitions_table = {table!r}: expected an SQL "
                                                "identifier (a letter or '_' then up to 63 letters, digits or '_')"])
        url = section.definitions_url.reveal()
        shown = f"{mask_url(url)} table {table}"
        return build_definitions(_read_sql(url, table, shown), shown, registry, key_field="key_varbinds")
    path = os.path.join(os.fspath(base_dir), section.definitions)
    return build_definitions(_read_yaml(path, section.definitions), section.definitions, registry)


def _read_yaml(path: str, shown: str) -> list[Record]:
    import yaml

    from centaure_shared.yamlfile import YamlError, load_yaml_file

    try:
        doc = load_yaml_file(path, shown)
    except YamlError as e:
        raise DefinitionsError(shown, [str(e).removeprefix(f"{shown}: ")]) from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise DefinitionsError(shown, [f"expected a list of trap definitions (mappings with oid, name, "
                                       f"severity...), got {type(doc).__name__}"])
    # Line numbers of the items, for the errors (the file parsed fine once).
    lines: list[int] = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            node = yaml.compose(f.read(), Loader=yaml.SafeLoader)
        if isinstance(node, yaml.SequenceNode):
            lines = [item.start_mark.line + 1 for item in node.value]
    except (OSError, yaml.YAMLError):
        pass
    records: list[Record] = []
    problems = []
    for i, item in enumerate(doc):
        where = f"item {i + 1}" + (f" (line {lines[i]})" if i < len(lines) else "")
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping with oid, name, severity..., got {type(item).__name__}")
            continue
        bad = [k for k in item if not isinstance(k, str)]
        if bad:
            problems.append(f"{where}: field names must be text, got {bad[0]!r}")
            continue
        records.append((where, item))
    if problems:
        raise DefinitionsError(shown, problems)
    return records


def _read_sql(url: str, table_name: str, shown: str) -> list[Record]:
    # Imported here: only a receiver with SQL definitions pays for it.
    import sqlalchemy as sa
    from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

    from centaure_shared.yamlfile import YamlError

    def clean(text: str) -> str:
        text = text.split("\n(Background on this error")[0]
        return " ".join(text.replace(url, mask_url(url)).split())

    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    except (SQLAlchemyError, ValueError, ImportError) as e:
        raise DefinitionsError(shown, [f"cannot use the database URL ({type(e).__name__}: {clean(str(e))})"]) \
            from None
    try:
        try:
            table = sa.Table(table_name, sa.MetaData(), autoload_with=engine)
        except NoSuchTableError:
            raise DefinitionsError(shown, [f"no table {table_name!r} in the database"]) from None
        available = [c.name for c in table.columns]
        columns: dict[str, str] = {}
        problems = []
        for wanted in _SQL_COLUMNS:
            found = [c for c in available if c.casefold() == wanted]
            if len(found) > 1:
                problems.append(f"column {wanted!r} is ambiguous: {', '.join(found)}")
            elif found:
                columns[wanted] = found[0]
        for wanted in ("oid", "name", "severity"):
            if wanted not in columns:
                problems.append(f"no column {wanted!r} (columns: {', '.join(available)}); expected "
                                f"{', '.join(_SQL_COLUMNS[:3])} and optionally {', '.join(_SQL_COLUMNS[3:])}")
        if problems:
            raise DefinitionsError(shown, problems)
        fields = list(columns)
        query = sa.select(*(table.c[columns[f]] for f in fields))
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    except DefinitionsError:
        raise
    except SQLAlchemyError as e:
        raise DefinitionsError(shown, [f"database error ({type(e).__name__}: {clean(str(e))})"]) from None
    finally:
        engine.dispose()
    records: list[Record] = []
    problems = []
    for n, row in enumerate(rows, start=1):
        record: dict[str, Any] = {}
        where = f"row {n}"
        for field, value in zip(fields, row, strict=True):
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("utf-8", "replace")
            if field in ("varbinds", "operators") and isinstance(value, str) and value.strip():
                try:
                    value = _parse_yaml_text(value)
                except YamlError as e:
                    problems.append(f"{where}: {field}: {e}")
                    continue
            if isinstance(value, str):
                value = value.strip()
            record[field] = value
        records.append((where, record))
    if problems:
        raise DefinitionsError(shown, problems)
    return records


def _parse_yaml_text(text: str) -> Any:
    import yaml

    from centaure_shared.yamlfile import StrictLoader, YamlError

    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise YamlError(f"not valid YAML or JSON ({problem})") from None
    except yaml.YAMLError as e:
        raise YamlError(f"not valid YAML or JSON ({e})") from None
