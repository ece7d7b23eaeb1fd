"""Optional MIB names for the trap receiver, from MIB files compiled by pysmi.

``load_mib_names(sources, cache_dir)`` compiles the MIB modules found in the
folders ``sources`` with pysmi (``MibCompiler``, a ``FileReader`` per folder,
the ``JsonCodeGen`` writing ``MODULE.json`` into ``cache_dir``; a module whose
JSON is newer than its source is not compiled again) and returns an immutable
:class:`MibNames`: OID -> (module, name) for object types (scalars, tables,
rows, columns) and notification types, plus the objects each notification
lists. Numeric OIDs work without any of this: names are a convenience.

Module names are read from each file's ``NAME DEFINITIONS ::= BEGIN`` line;
pysmi then looks a module up by name (``NAME``, ``NAME.txt``, ``NAME.mib``,
``NAME.my``, upper/lower case), so files should be named after their module.
Imported modules are looked up in the same folders.

Base modules
    pysmi ships no MIB sources and Debian ships no IETF ones. pysmi never
    generates code for its base modules (SNMPv2-SMI, SNMPv2-TC, SNMPv2-CONF,
    RFC1155-SMI ...: its ``baseMibs``), but it still parses them to resolve
    imported OIDs such as ``enterprises``. When the folders do not provide
    them, small stand-ins written for Centaure are used (:data:`BASE_MODULES`:
    the OID roots and the base types, no macros), enough for the usual
    enterprise MIB. Real sources in a folder take precedence.

Errors
    A file that cannot be parsed or compiled, a module that imports a module
    found in no folder, a missing folder: each is collected in
    :attr:`MibNames.errors` (naming the file and pysmi's reason), logged, and
    the other modules still load. pysmi itself is imported only here, when
    MIBs are configured; without it :class:`MibError` names the package.
"""

from __future__ import annotations

import json
import logging
import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["BASE_MODULES", "MibError", "MibNames", "load_mib_names"]

log = logging.getLogger(__name__)


class MibError(ValueError):
    """MIB names were asked for but cannot be built at all (pysmi missing)."""


_HEADER = re.compile(rb"^[ \t]*([A-Za-z][A-Za-z0-9-]*)\s+DEFINITIONS\s*(?:[A-Z ]*TAGS\s*)?::=\s*BEGIN",
                     re.MULTILINE)
_MAX_FILE = 10_000_000  # pysmi's own limit
_HEAD_BYTES = 256 * 1024  # where the first DEFINITIONS line is looked for

# Minimal base modules (our own text: OID roots and base types, no macros).
# pysmi parses them only to resolve imported symbols; it generates nothing
# for them.
_ROOTS = """\
org OBJECT IDENTIFIER ::= { iso 3 }
dod OBJECT IDENTIFIER ::= { org 6 }
internet OBJECT IDENTIFIER ::= { dod 1 }
directory OBJECT IDENTIFIER ::= { internet 1 }
mgmt OBJECT IDENTIFIER ::= { internet 2 }
mib-2 OBJECT IDENTIFIER ::= { mgmt 1 }
transmission OBJECT IDENTIFIER ::= { mib-2 10 }
experimental OBJECT IDENTIFIER ::= { internet 3 }
private OBJECT IDENTIFIER ::= { internet 4 }
enterprises OBJECT IDENTIFIER ::= { private 1 }
"""
BASE_MODULES: Mapping[str, str] = types.MappingProxyType({
    "SNMPv2-SMI": "SNMPv2-SMI DEFINITIONS ::= BEGIN\n" + _ROOTS + """\
security OBJECT IDENTIFIER ::= { internet 5 }
snmpV2 OBJECT IDENTIFIER ::= { internet 6 }
snmpDomains OBJECT IDENTIFIER ::= { snmpV2 1 }
snmpProxys OBJECT IDENTIFIER ::= { snmpV2 2 }
snmpModules OBJECT IDENTIFIER ::= { snmpV2 3 }
zeroDotZero OBJECT IDENTIFIER ::= { 0 0 }
Integer32 ::= INTEGER (-2147483648..2147483647)
IpAddress ::= [APPLICATION 0] IMPLICIT OCTET STRING (SIZE (4))
Counter32 ::= [APPLICATION 1] IMPLICIT INTEGER (0..4294967295)
Gauge32 ::= [APPLICATION 2] IMPLICIT INTEGER (0..4294967295)
Unsigned32 ::= [APPLICATION 2] IMPLICIT INTEGER (0..4294967295)
TimeTicks ::= [APPLICATION 3] IMPLICIT INTEGER (0..4294967295)
Opaque ::= [APPLICATION 4] IMPLICIT OCTET STRING
Counter64 ::= [APPLICATION 6] IMPLICIT INTEGER (0..18446744073709551615)
END
""",
    "SNMPv2-TC": """\
SNMPv2-TC DEFINITIONS ::= BEGIN
DisplayString ::= OCTET STRING (SIZE (0..255))
PhysAddress ::= OCTET STRING
MacAddress ::= OCTET STRING (SIZE (6))
TruthValue ::= INTEGER { true(1), false(2) }
TestAndIncr ::= INTEGER (0..2147483647)
AutonomousType ::= OBJECT IDENTIFIER
InstancePointer ::= OBJECT IDENTIFIER
VariablePointer ::= OBJECT IDENTIFIER
RowPointer ::= OBJECT IDENTIFIER
RowStatus ::= INTEGER { active(1), notInService(2), notReady(3), createAndGo(4), createAndWait(5), destroy(6) }
TimeStamp ::= TimeTicks
TimeInterval ::= INTEGER (0..2147483647)
DateAndTime ::= OCTET STRING (SIZE (8 | 11))
StorageType ::= INTEGER { other(1), volatile(2), nonVolatile(3), permanent(4), readOnly(5) }
TDomain ::= OBJECT IDENTIFIER
TAddress ::= OCTET STRING (SIZE (1..255))
END
""",
    "SNMPv2-CONF": "SNMPv2-CONF DEFINITIONS ::= BEGIN\nEND\n",
    "RFC1155-SMI": "RFC1155-SMI DEFINITIONS ::= BEGIN\n" + _ROOTS + "END\n",
    "RFC-1212": "RFC-1212 DEFINITIONS ::= BEGIN\nEND\n",
    "RFC-1215": "RFC-1215 DEFINITIONS ::= BEGIN\nEND\n",
})

# Nodes whose instances (OID + suffix) are named ``name.suffix``.
_INSTANCE_NODES = ("scalar", "column", None)


@dataclass(frozen=True)
class MibObject:
    """One named node of a compiled MIB."""

    module: str
    name: str
    kind: str  # "objecttype" or "notificationtype"
    nodetype: str | None = None  # scalar, table, row, column (object types)
    objects: tuple[str, ...] = ()  # OIDs of a notification's OBJECTS


@dataclass(frozen=True)
class MibNames:
    """OID -> (module, name) from compiled MIBs; immutable once built."""

    by_oid: Mapping[tuple[int, ...], MibObject] = field(default_factory=lambda: types.MappingProxyType({}))
    errors: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    def lookup(self, oid: str) -> tuple[MibObject, str] | None:
        """The node naming ``oid`` and the instance suffix ('' for an exact OID)."""
        try:
            parts = tuple(int(p) for p in oid.strip(".").split("."))
        except ValueError:
            return None
        found = self.by_oid.get(parts)
        if found is not None:
            return found, ""
        for end in range(len(parts) - 1, 0, -1):
            found = self.by_oid.get(parts[:end])
            if found is not None:
                if found.kind == "objecttype" and found.nodetype in _INSTANCE_NODES:
                    return found, ".".join(map(str, parts[end:]))
                return None
        return None

    def name(self, oid: str) -> str | None:
        """``ifDescr`` for an exact OID, ``ifDescr.3`` for an instance, else None."""
        found = self.lookup(oid)
        if found is None:
            return None
        node, suffix = found
        return f"{node.name}.{suffix}" if suffix else node.name

    def module_of(self, oid: str) -> str | None:
        """The module defining ``oid`` (or the object it is an instance of)."""
        found = self.lookup(oid)
        return found[0].module if found else None

    def notification_objects(self, oid: str) -> tuple[str, ...]:
        """OIDs of the OBJECTS of the notification ``oid`` (empty if unknown)."""
        found = self.by_oid.get(tuple(int(p) for p in oid.split("."))) if _is_oid(oid) else None
        return found.objects if found is not None else ()

    def __len__(self) -> int:
        return len(self.by_oid)


def _is_oid(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9]+(?:\.[0-9]+)*", text))


def _import_pysmi():
    try:
        from pysmi.codegen.jsondoc import JsonCodeGen
        from pysmi.compiler import MibCompiler
        from pysmi.parser.smi import parserFactory
        from pysmi.reader.callback import CallbackReader
        from pysmi.reader.localfile import FileReader
        from pysmi.searcher.anyfile import AnyFileSearcher
        from pysmi.searcher.stub import StubSearcher
        from pysmi.writer.localfile import FileWriter
    except ImportError as e:
        raise MibError(
            "[traps] mibs is set but MIB names need the Python package 'pysmi', which cannot "
            f"be imported ({e}); install pysmi (pip install pysmi) or leave mibs empty") from None
    return types.SimpleNamespace(
        JsonCodeGen=JsonCodeGen, MibCompiler=MibCompiler, parserFactory=parserFactory,
        CallbackReader=CallbackReader, FileReader=FileReader, AnyFileSearcher=AnyFileSearcher,
        StubSearcher=StubSearcher, FileWriter=FileWriter)


def _scan(folder: str, errors: list[str]) -> dict[str, str]:
    """Module name -> file for the MIB files of ``folder`` (not recursive)."""
    found: dict[str, str] = {}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        errors.append(f"MIB folder {folder}: {e.strerror or e}")
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            with open(entry.path, "rb") as f:
                head = f.read(_HEAD_BYTES)
        except OSError as e:
            errors.append(f"{entry.path}: cannot be read: {e.strerror or e}")
            continue
        m = _HEADER.search(head)
        if m is None:
            errors.append(f"{entry.path}: not a MIB module (no 'NAME DEFINITIONS ::= BEGIN')")
            continue
        module = m[1].decode("ascii")
        if module in found:
            errors.append(f"{entry.path}: module {module} is already defined by {found[module]}; ignored")
            continue
        found[module] = entry.path
    return found


def load_mib_names(sources: Iterable[str], cache_dir: str) -> MibNames:
    """Compile the MIB modules of the folders ``sources`` (cached in ``cache_dir``) and index them.

    Blocking (files, CPU): a Twisted caller runs it in a thread. Raises
    :class:`MibError` when pysmi is missing; every other problem is
    collected in the result's ``errors`` and logged.
    """
    sources = [os.path.abspath(s) for s in sources]
    if not sources:
        return MibNames()
    smi = _import_pysmi()
    errors: list[str] = []
    files: dict[str, str] = {}  # module -> file, first folder wins
    for folder in sources:
        for module, path in _scan(folder, errors).items():
            if module in files:
                errors.append(f"{path}: module {module} is already defined by {files[module]}; ignored")
            else:
                files[module] = path
    base = set(smi.JsonCodeGen.baseMibs) | set(getattr(smi.JsonCodeGen, "fakeMibs", ()))
    wanted = [m for m in files if m not in base]
    by_module: dict[str, dict] = {}
    if wanted:
        os.makedirs(cache_dir, exist_ok=True)
        compiler = smi.MibCompiler(smi.parserFactory()(), smi.JsonCodeGen(),
                                   smi.FileWriter(cache_dir).set_options(suffix=".json"))
        compiler.add_sources(*(smi.FileReader(folder, recursive=False) for folder in sources))
        compiler.add_sources(smi.CallbackReader(lambda name, _ctx: BASE_MODULES.get(name)))
        compiler.add_searchers(smi.AnyFileSearcher(cache_dir).set_options(exts=[".json"]),
                               smi.StubSearcher(*smi.JsonCodeGen.baseMibs))
        processed = compiler.compile(*wanted, ignoreErrors=True)
        for module, status in processed.items():
            where = files.get(module)
            if status in ("compiled", "untouched", "borrowed"):
                if module in base:
                    continue
                data = _read_json(cache_dir, module, errors)
                if data is not None:
                    by_module[module] = data
            elif status == "missing":
                if module in files:
                    errors.append(
                        f"{where}: pysmi did not find module {module} under this file name; "
                        f"name the file {module} or {module}.txt (.mib, .my)")
                elif module not in base:
                    users = _importers(files, module) or ["a MIB module"]
                    errors.append(f"{', '.join(users)}: imports module {module}, which is found in "
                                  f"none of the MIB folders ({', '.join(sources)})")
            elif status == "failed":
                reason = str(getattr(status, "error", "")).replace(f" at MIB {module}", "") or "failed"
                errors.append(f"{where or 'MIB module ' + module}: {module}: {reason}")
            else:
                errors.append(f"{where or 'MIB module ' + module}: {module}: {status}")
    names = _index(by_module, errors)
    for problem in errors:
        log.warning("MIB names: %s", problem)
    return MibNames(types.MappingProxyType(names), tuple(errors), tuple(sorted(by_module)))


def _importers(files: Mapping[str, str], module: str) -> list[str]:
    """The files among ``files`` that import from ``module``."""
    pattern = re.compile(rb"\bFROM\s+" + re.escape(module.encode()) + rb"(?![A-Za-z0-9-])")
    found = []
    for path in files.values():
        try:
            with open(path, "rb") as f:
                if pattern.search(f.read(_MAX_FILE)):
                    found.append(path)
        except OSError:
            pass
    return found


def _read_json(cache_dir: str, module: str, errors: list[str]) -> dict | None:
    path = os.path.join(cache_dir, module + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        errors.append(f"{path}: compiled MIB {module} cannot be read: {e}")
        return None
    if not isinstance(data, dict):
        errors.append(f"{path}: compiled MIB {module} is not a JSON object")
        return None
    return data


def _oid(text: object) -> tuple[int, ...] | None:
    if isinstance(text, str) and _is_oid(text):
        return tuple(int(p) for p in text.split("."))
    return None


def _index(by_module: Mapping[str, Mapping], errors: list[str]) -> dict[tuple[int, ...], MibObject]:
    symbols: dict[tuple[str, str], tuple[int, ...]] = {}
    for module, data in by_module.items():
        for key, sym in data.items():
            if isinstance(sym, dict):
                oid = _oid(sym.get("oid"))
                if oid is not None:
                    symbols[(module, sym.get("name", key))] = oid
    index: dict[tuple[int, ...], MibObject] = {}
    for module, data in sorted(by_module.items()):
        for key, sym in data.items():
            if not isinstance(sym, dict) or sym.get("class") not in ("objecttype", "notificationtype"):
                continue
            oid = _oid(sym.get("oid"))
            if oid is None:
                continue
            objects: list[str] = []
            for ref in sym.get("objects", ()) if sym["class"] == "notificationtype" else ():
                ref_oid = symbols.get((ref.get("module", module), ref.get("object")))
                if ref_oid is None:
                    errors.append(f"MIB module {module}: notification {sym.get('name', key)} lists "
                                  f"{ref.get('module')}::{ref.get('object')}, which is not loaded")
                    continue
                objects.append(".".join(map(str, ref_oid)))
            index.setdefault(oid, MibObject(module, sym.get("name", key), sym["class"],
                                            sym.get("nodetype"), tuple(objects)))
    return index
