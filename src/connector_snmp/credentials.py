"""SNMP credentials per device type and model, with per-device substitution.

The credentials file is YAML, keyed as the legacy configuration is: ``default``,
a device type (``huawei``), or a type followed by a model (``huaweiSMU02C``)::

    default:                      # every device
      version: v2c
      community: public
    huawei:                       # devices of type huawei
      version: v3
      user: __snmp_user__         # from the device's record (its snmp_user column)
      auth_protocol: SHA
      auth_key: env:HUAWEI_AUTH_KEY
      priv_protocol: AES
      priv_key: file:/etc/centaure/huawei-priv.key
    huaweiSMU02C:                 # type huawei, model SMU02C
      port: 1161

Keys are ``default``, ``<device_type>`` and ``<device_type><MODEL>``
(compared without regard to case). For one device, the three entries that
apply are merged setting by setting, the most specific winning:
``huaweiSMU02C`` over ``huawei`` over ``default``; what none of them gives
comes from ``[snmp]`` (timeout, retries, max_repetitions) or the protocol
defaults (v2c, community ``public``, port 161).

Settings of an entry: ``version`` (v1, v2c, v3; also 1, 2, 2c, 3),
``community``, ``port``, ``timeout`` (seconds or ``2s``/``500ms``),
``retries``, ``max_repetitions``, and for v3 ``user``, ``auth_protocol``
(none, MD5, SHA, SHA224, SHA256, SHA384, SHA512), ``auth_key``,
``priv_protocol`` (none, DES, AES, AES192, AES256), ``priv_key``,
``context``.

Any text may hold ``__field__`` tokens, replaced by the device's
``fields[field]`` (``__name__``, ``__address__``, ``__device_type__``,
``__model__`` and ``__id__`` fall back to the Device's own attributes); an
unknown field is an error naming the device and the field. After
substitution, a value ``env:NAME`` or ``file:/path`` is replaced by that
environment variable or file's content, as in settings.ini (so
``file:/etc/centaure/keys/__name__.key`` gives each device its own key
file). Loading checks the form of references; they are read when a
device's target is resolved, so an entry that no device uses needs no
variable or file, and an error names the device it stops.

Port: a port given by the inventory (anything but 161) wins over the
credentials' ``port``, which replaces the standard 161.

Secrets (community, auth and priv keys) are :class:`connector.settings.Secret`
objects until the SnmpTarget is built, and never appear in a repr, a log or
an error message. :func:`loose_credential_files` names the files that hold
them and that someone other than the daemon may read (the poller logs it as
a warning): this file when a community or key is written in it, and every
``file:`` key file (per device when its name holds tokens).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from connector.settings import (
    Duration,
    InvalidValue,
    ParseContext,
    Secret,
    SecretText,
    Str,
    secret_file_problem,
    secret_holder_problem,
)
from centaure_shared.yamlfile import YamlError, load_yaml_file
from centaure_shared.inventory import Device
from connector_snmp.model import SnmpTarget, V3Security

__all__ = [
    "CredentialEntry",
    "Credentials",
    "CredentialsError",
    "load_credentials",
    "loose_credential_files",
    "resolve_target",
    "resolve_targets",
]

_TOKEN = re.compile(r"__([A-Za-z0-9][A-Za-z0-9_]*?)__")
_SECRET_KEYS = frozenset({"community", "auth_key", "priv_key"})
_TEXT_KEYS = ("community", "user", "auth_key", "priv_key", "context")
_ALL_KEYS = (
    "version", "community", "port", "timeout", "retries", "max_repetitions",
    "user", "auth_protocol", "auth_key", "priv_protocol", "priv_key", "context",
)
_VERSIONS = {"v1": "v1", "1": "v1", "v2c": "v2c", "v2": "v2c", "2c": "v2c", "2": "v2c", "v3": "v3", "3": "v3"}
_AUTH = {p.lower(): p for p in ("none", "MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")}
_AUTH["sha1"] = "SHA"
_PRIV = {p.lower(): p for p in ("none", "DES", "AES", "AES192", "AES256")}
_PRIV["aes128"] = "AES"
_TIMEOUT = Duration(0.01, 600)
_ATTRIBUTES = ("name", "address", "device_type", "model", "id")
# USM derives keys from passwords of at least 8 characters (RFC 3414 11.2).
_MIN_KEY = 8


class CredentialsError(ValueError):
    """Unusable credentials; the message names the file, the entry, the key and the device."""


@dataclasses.dataclass(frozen=True)
class CredentialEntry:
    """One entry of the credentials file; None means "not given here"."""

    key: str
    version: str | None = None
    community: Secret | None = None
    port: int | str | None = None          # str: holds a __field__ token
    timeout: float | None = None
    retries: int | None = None
    max_repetitions: int | None = None
    user: Secret | None = None
    auth_protocol: str | None = None
    auth_key: Secret | None = None
    priv_protocol: str | None = None
    priv_key: Secret | None = None
    context: Secret | None = None

    def given(self) -> dict[str, Any]:
        """The settings this entry gives, key -> value."""
        return {k: getattr(self, k) for k in _ALL_KEYS if getattr(self, k) is not None}


@dataclasses.dataclass(frozen=True)
class Credentials:
    """The entries of a credentials file, by case-folded key."""

    entries: Mapping[str, CredentialEntry] = dataclasses.field(default_factory=dict)
    source: str = "<defaults>"
    environ: Mapping[str, str] | None = dataclasses.field(default=None, repr=False, compare=False)
    #: The file read (None: no file), for the check of its permissions.
    path: str | None = dataclasses.field(default=None, compare=False)

    def chain(self, device: Device) -> tuple[CredentialEntry, ...]:
        """The entries that apply to ``device``, least specific first."""
        out = []
        for key in ("default", device.device_type, device.device_type + device.model if device.model else ""):
            if not key:
                continue
            entry = self.entries.get(key.casefold())
            if entry is not None and entry not in out:
                out.append(entry)
        return tuple(out)

    def merged(self, device: Device) -> dict[str, tuple[str, Any]]:
        """Setting -> (entry key that gave it, value), most specific entry winning."""
        merged: dict[str, tuple[str, Any]] = {}
        for entry in self.chain(device):
            for k, v in entry.given().items():
                merged[k] = (entry.key, v)
        return merged


def load_credentials(path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None,
                     shown: str | None = None) -> Credentials:
    """Read and check the credentials file at ``path`` (None: no file, protocol defaults only).

    ``environ`` replaces ``os.environ`` for ``env:`` references (kept for
    the per-device resolution). Raises CredentialsError.
    """
    if path is None:
        return Credentials({}, "<defaults>", environ)
    name = os.fspath(path)
    shown = shown or name
    try:
        doc = load_yaml_file(name, shown)
    except YamlError as e:
        raise CredentialsError(str(e)) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise CredentialsError(f"{shown}: expected a mapping of entries (default, <device_type>, "
                               "<device_type><MODEL>) to their settings")
    ctx = ParseContext(os.environ if environ is None else environ)
    entries: dict[str, CredentialEntry] = {}
    for key, body in doc.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", key):
            raise CredentialsError(f"{shown}: entry {key!r}: expected default, a device type, or a device type "
                                   "followed by a model (letters, digits, '_', '.', ':' or '-')")
        folded = key.casefold()
        if folded in entries:
            raise CredentialsError(f"{shown}: entries {entries[folded].key!r} and {key!r} differ only by case")
        entries[folded] = _parse_entry(key, body, shown, ctx)
    return Credentials(entries, shown, environ, name)


def _parse_entry(key: str, body: Any, shown: str, ctx: ParseContext) -> CredentialEntry:
    where = f"{shown}: [{key}]"
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise CredentialsError(f"{where}: expected a mapping of settings ({', '.join(_ALL_KEYS)})")
    values: dict[str, Any] = {}
    for k, raw in body.items():
        if k not in _ALL_KEYS:
            close = difflib.get_close_matches(str(k), _ALL_KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise CredentialsError(f"{where} {k}: unknown setting{hint}; expected one of: {', '.join(_ALL_KEYS)}")
        if raw is None:
            continue
        values[k] = _parse_value(k, raw, f"{where} {k}", ctx, final=False)
    return CredentialEntry(key=key, **values)


_DEFERRED = "deferred"


def _is_reference(text: str) -> bool:
    return text.startswith(("env:", "file:"))


def _parse_value(k: str, raw: Any, where: str, ctx: ParseContext, *, final: bool) -> Any:
    """Check one setting.

    Text holding ``__field__`` tokens or an ``env:``/``file:`` reference is
    kept (as a Secret, so that it never shows) until ``final``: per device,
    after substitution, when references are resolved.
    """
    secret = k in _SECRET_KEYS
    if isinstance(raw, bool) or isinstance(raw, (list, dict)):
        raise CredentialsError(f"{where} = {'***' if secret else repr(raw)}: expected a single value")
    source = "literal"
    if isinstance(raw, str):
        if not final and (_TOKEN.search(raw) or _is_reference(raw.strip())):
            ref = raw.strip()
            if _is_reference(ref) and not _TOKEN.search(ref):
                kind, _, target = ref.partition(":")
                if kind == "env" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target):
                    raise CredentialsError(f"{where} = {ref!r}: {target!r} is not an environment variable name")
                if kind == "file" and not target:
                    raise CredentialsError(f"{where} = {ref!r}: file: names no file")
            return Secret(raw, source=_DEFERRED)
        if final and _is_reference(raw.strip()):
            source = raw.strip()
            try:
                raw = SecretText(Str()).parse(source, ctx).reveal()
            except InvalidValue as e:
                raise CredentialsError(f"{where} = {source!r}: {e.detail or e}") from None
    shown = f"{source} (***)" if secret and source != "literal" else ("***" if secret else repr(raw))
    if k in _TEXT_KEYS:
        return Secret(str(raw), source=source)
    if k == "version":
        v = _VERSIONS.get(str(raw).strip().lower())
        if v is None:
            raise CredentialsError(f"{where} = {shown}: expected v1, v2c or v3")
        return v
    if k == "auth_protocol" or k == "priv_protocol":
        table = _AUTH if k == "auth_protocol" else _PRIV
        p = table.get(str(raw).strip().lower())
        if p is None:
            choices = sorted(set(table.values()), key=list(table.values()).index)
            raise CredentialsError(f"{where} = {shown}: expected one of: {', '.join(choices)}")
        return p
    if k == "timeout":
        try:
            return _TIMEOUT.parse(str(raw).strip(), ctx)
        except InvalidValue as e:
            raise CredentialsError(f"{where} = {shown}: {e.allowed}") from None
    bounds = {"port": (1, 65535), "retries": (0, 20), "max_repetitions": (1, 1000)}[k]
    try:
        n = int(str(raw).strip())
    except ValueError:
        n = None
    if n is None or not bounds[0] <= n <= bounds[1] or isinstance(raw, float):
        raise CredentialsError(f"{where} = {shown}: expected a whole number from {bounds[0]} to {bounds[1]}")
    return n


def loose_credential_files(credentials: Credentials, devices: Iterable[Device] = ()) -> list[str]:
    """One line per file of ``credentials`` that someone other than the daemon may read.

    The credentials file itself when a community or key is written in it
    (:func:`connector.settings.secret_holder_problem`: others, or a group
    other than the daemon's), then each ``file:`` reference of a community
    or key that its group or others may read
    (:func:`connector.settings.secret_file_problem`), ``__field__`` tokens
    replaced for each of ``devices``. Each file is named once, with the
    entry and key that use it; never a secret.
    """
    lines: list[str] = []
    literal = sorted({k for entry in credentials.entries.values() for k in _SECRET_KEYS
                      if (v := getattr(entry, k)) is not None and v.source != _DEFERRED})
    if credentials.path is not None and literal:
        problem = secret_holder_problem(credentials.path, "SNMP " + ", ".join(literal))
        if problem is not None:
            lines.append(problem)
    references: dict[str, str] = {}
    for entry in credentials.entries.values():
        for k in sorted(_SECRET_KEYS):
            v = getattr(entry, k)
            if v is not None and v.source == _DEFERRED and not _TOKEN.search(v.reveal()):
                references.setdefault(v.reveal().strip(), f"[{entry.key}] {k}")
    for device in devices:
        for k, (entry_key, v) in credentials.merged(device).items():
            if k in _SECRET_KEYS and v.source == _DEFERRED and _TOKEN.search(v.reveal()):
                try:
                    ref = _substitute(v.reveal(), device, "").strip()
                except CredentialsError:
                    continue  # resolving the device's target reports it
                references.setdefault(ref, f"[{entry_key}] {k} (device {device.name})")
    for ref, where in references.items():
        problem = secret_file_problem(ref)
        if problem is not None:
            lines.append(f"{credentials.source}: {where}: {problem}")
    return lines


def _substitute(template: str, device: Device, where: str) -> str:
    def field(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in device.fields:
            return device.fields[name]
        folded = [k for k in device.fields if k.casefold() == name.casefold()]
        if len(folded) == 1:
            return device.fields[folded[0]]
        if name in _ATTRIBUTES:
            return str(getattr(device, name))
        known = ", ".join(sorted(device.fields)) or "none"
        raise CredentialsError(f"{where}: device {device.name} has no field {name!r} "
                               f"(for __{name}__; its fields: {known})")

    return _TOKEN.sub(field, template)


def resolve_target(device: Device, credentials: Credentials | None, defaults: Any = None) -> SnmpTarget:
    """The SnmpTarget of ``device``: its entries merged, tokens and secrets resolved.

    ``defaults`` is the ``[snmp]`` section (or anything with ``timeout``,
    ``retries`` and ``max_repetitions``); None: the SnmpTarget defaults.
    Raises CredentialsError naming the file, entry, setting and device.
    """
    credentials = credentials or Credentials()
    environ = credentials.environ
    ctx = ParseContext(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for k, (entry_key, v) in credentials.merged(device).items():
        where = f"{credentials.source}: [{entry_key}] {k} (device {device.name})"
        if isinstance(v, Secret) and v.source == _DEFERRED:
            text = _substitute(v.reveal(), device, where)
            v = _parse_value(k, text, where, ctx, final=True)
        values[k] = (where, v)

    def get(k: str, fallback: Any) -> Any:
        return values[k][1] if k in values else fallback

    def text(k: str) -> str:
        v = get(k, None)
        return v.reveal() if isinstance(v, Secret) else ("" if v is None else str(v))

    version = get("version", "v2c")
    port = device.port if device.port != 161 else get("port", 161)
    timeout = get("timeout", getattr(defaults, "timeout", 2.0))
    retries = get("retries", getattr(defaults, "retries", 1))
    max_rep = get("max_repetitions", getattr(defaults, "max_repetitions", 25))
    v3 = None
    community = b"public"
    if version == "v3":
        user = text("user")
        where = f"{credentials.source}: device {device.name} (entries {', '.join(e.key for e in credentials.chain(device)) or 'none'})"
        if not user:
            raise CredentialsError(f"{where}: version v3 needs a user")
        auth = get("auth_protocol", "none")
        priv = get("priv_protocol", "none")
        auth_key = text("auth_key")
        priv_key = text("priv_key")
        if priv != "none" and auth == "none":
            raise CredentialsError(f"{where}: priv_protocol {priv} needs an auth_protocol too (authPriv)")
        if auth != "none" and len(auth_key) < _MIN_KEY:
            raise CredentialsError(f"{where}: auth_protocol {auth} needs an auth_key of at least {_MIN_KEY} characters")
        if priv != "none" and len(priv_key) < _MIN_KEY:
            raise CredentialsError(f"{where}: priv_protocol {priv} needs a priv_key of at least {_MIN_KEY} characters")
        v3 = V3Security(
            user=user,
            auth_protocol=auth,
            auth_key=auth_key if auth != "none" else "",
            priv_protocol=priv,
            priv_key=priv_key if priv != "none" else "",
            context_name=text("context"),
        )
    else:
        c = get("community", None)
        if c is not None:
            community = c.reveal().encode("utf-8")
    return SnmpTarget(
        address=device.address,
        port=int(port),
        version=version,
        community=community,
        v3=v3,
        timeout=float(timeout),
        retries=int(retries),
        max_repetitions=int(max_rep),
    )


def resolve_targets(devices: Iterable[Device], credentials: Credentials | None,
                    defaults: Any = None) -> tuple[dict[str, SnmpTarget], dict[str, str]]:
    """Resolve many devices: ``({name: target}, {name: error})``; one bad device stops no other."""
    targets: dict[str, SnmpTarget] = {}
    errors: dict[str, str] = {}
    for device in devices:
        try:
            targets[device.name] = resolve_target(device, credentials, defaults)
        except CredentialsError as e:
            errors[device.name] = str(e)
    return targets, errors
