"""Typed, validated settings read from one INI file shared by all connectors.

Each ``[section]`` of ``settings.ini`` is a frozen dataclass registered with
:func:`register_section`; each of its fields is declared with :func:`setting`,
which names the value parser (and so the allowed values), the default written
as it would appear in the file, and a one-line doc. :func:`load_settings`
reads the file and returns a :class:`Settings` object holding one instance of
every registered section.

Anything wrong in the file (unknown section or key, duplicate key, bad value,
missing ``env:`` variable...) raises :class:`SettingsError`, whose message is
a single line naming the file, section, key, value and what is allowed::

    settings.ini: [bus] heartbeat = 'abc': expected a whole number of seconds from 0 to 3600 (e.g. 10, 10s, 1m)

Secret-capable keys take ``env:NAME`` or ``file:/path`` instead of a literal;
their values are :class:`Secret` objects whose ``repr``/``str`` are masked.
A secret file that its group or others may read is reported by
:func:`loose_secret_files` (the daemons log it as a warning at start).

Other packages add their sections in a ``settings`` module of their own
(``connector_snmp/settings.py`` and so on); :func:`discover_sections` imports
them so that every connector accepts the whole shared file.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import hmac
import logging as _logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "Bool",
    "BufferSettings",
    "BusSettings",
    "Choice",
    "ConnectorSettings",
    "DatabaseSettings",
    "Duration",
    "FilePath",
    "Float",
    "Int",
    "InvalidValue",
    "LogLevel",
    "LoggingSettings",
    "ParseContext",
    "Parser",
    "Secret",
    "SecretText",
    "SettingSpec",
    "Settings",
    "SettingsError",
    "Size",
    "Str",
    "StrList",
    "Url",
    "OptionalUrl",
    "SQL_IDENTIFIER",
    "sql_identifier",
    "TABLE_PREFIX",
    "KeyValueMap",
    "discover_sections",
    "load_settings",
    "loose_secret_files",
    "mask_url",
    "secret_file_problem",
    "secret_holder_problem",
    "register_section",
    "registered_sections",
    "setting",
    "settings_from_string",
    "settings_dir",
    "settings_of",
]

T = TypeVar("T")

# The key under which setting() stores its SettingSpec in a field's metadata.
_META_KEY = "centaure.setting"

# Largest secret file read: a secret is a password or a few URLs; this keeps a
# mistake such as ``file:/dev/zero`` from hanging start-up.
_MAX_SECRET_FILE = 64 * 1024


# --------------------------------------------------------------------------
# Errors


class InvalidValue(ValueError):
    """Raised by a parser (or a section's ``__post_init__``) for a bad value.

    ``allowed`` says what is accepted ("expected ..."), ``detail`` what is
    wrong with this particular value when that helps, ``key`` names the key
    when a cross-field check in ``__post_init__`` raises it.
    """

    def __init__(self, allowed: str, detail: str | None = None, *, key: str | None = None) -> None:
        super().__init__(f"{detail}; {allowed}" if detail else allowed)
        self.allowed = allowed
        self.detail = detail
        self.key = key


class SettingsError(Exception):
    """A settings file that cannot be used; ``str()`` is one line for the operator.

    Attributes: ``file``, ``section``, ``key``, ``value`` (as shown: secrets
    masked), ``allowed`` (what is accepted), ``detail`` (what is wrong, if
    more specific) and ``line`` (when known).
    """

    def __init__(
        self,
        file: str,
        section: str | None = None,
        key: str | None = None,
        value: str | None = None,
        allowed: str = "",
        detail: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = file
        self.section = section
        self.key = key
        self.value = value
        self.allowed = allowed
        self.detail = detail
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file
        if self.section is not None:
            where += f": [{self.section}]"
            if self.key is not None:
                where += f" {self.key}"
                if self.value is not None:
                    where += f" = {self.value!r}"
        elif self.line is not None:
            where += f": line {self.line}"
        problem = "; ".join(p for p in (self.detail, self.allowed) if p)
        # One line, whatever an OS error message or a value may contain.
        return f"{where}: {problem}".replace("\r", " ").replace("\n", " ")


# --------------------------------------------------------------------------
# Secrets


class Secret:
    """A secret string: ``reveal()`` gives it, ``repr``/``str`` never do.

    ``shown`` is the masked form used in logs and errors (``***``, or a URL
    with its password replaced by ``***``); ``source`` says where the value
    came from (``literal``, ``env:NAME`` or ``file:/path``), which is not
    secret and helps an operator.
    """

    __slots__ = ("_value", "_shown", "_source")

    def __init__(self, value: str, *, shown: str = "***", source: str = "literal") -> None:
        # Set through object: __setattr__ below refuses any change.
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_shown", shown)
        object.__setattr__(self, "_source", source)

    def reveal(self) -> str:
        """Return the secret itself: only to hand it to the library that needs it."""
        return self._value

    @property
    def source(self) -> str:
        """Where the value came from: ``literal``, ``env:NAME`` or ``file:/path``."""
        return self._source

    def __repr__(self) -> str:
        return f"Secret({self._shown!r})"

    def __str__(self) -> str:
        return self._shown

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant time, out of habit: secrets are compared with secrets.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_secret, (self._value, self._shown, self._source))


def _rebuild_secret(value: str, shown: str, source: str) -> Secret:
    return Secret(value, shown=shown, source=source)


def mask_url(url: str) -> str:
    """Return ``url`` with its password (``user:***@host``) masked.

    Errs on the side of masking too much: everything between the first
    ``:`` of the user info and the last ``@`` goes (a password may hold an
    unencoded ``@`` or ``#``), and a malformed ``user:password`` with no
    ``@`` (where the port should be) is masked to the end.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        return f"{head}://{userinfo}@{hostpart}"
    authority = re.match(r"[^/?#]*", rest).group(0)  # type: ignore[union-attr]
    host, colon, port = authority.rpartition(":")
    if colon and port and not port.isdigit() and not authority.endswith("]"):
        return f"{head}://{host}:***"
    return url


# --------------------------------------------------------------------------
# Parsers


@dataclasses.dataclass(frozen=True)
class ParseContext:
    """What parsing needs besides the text: the environment for ``env:`` secrets."""

    environ: Mapping[str, str] = dataclasses.field(default_factory=lambda: os.environ)


class Parser:
    """Turns the text of one INI value into a typed value, or raises InvalidValue.

    Subclasses set ``allowed`` (the "expected ..." phrase of error messages)
    and implement :meth:`parse`. Secret-capable parsers also override
    :meth:`shown`, the form of the raw text that may appear in an error.
    """

    allowed: str = "expected a value"

    def parse(self, raw: str, ctx: ParseContext) -> Any:
        """Return the typed value of ``raw`` (already stripped)."""
        raise NotImplementedError

    def shown(self, raw: str) -> str:
        """Return ``raw`` as it may be shown in errors and logs."""
        return raw

    def mask(self, value: str) -> str:
        """Return the masked form of a secret value this parser accepted."""
        return "***"

    def invalid(self, detail: str | None = None) -> InvalidValue:
        """An InvalidValue carrying this parser's ``allowed``."""
        return InvalidValue(self.allowed, detail)


class Str(Parser):
    """Free text, optionally checked against a regular expression.

    ``empty`` gives the value of an empty setting (e.g. the host name);
    without it an empty value is allowed only if the pattern accepts it.
    """

    def __init__(
        self,
        pattern: str | None = None,
        describe: str = "text",
        empty: Callable[[], str] | None = None,
    ) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.empty = empty
        self.allowed = f"expected {describe}"

    def parse(self, raw: str, ctx: ParseContext) -> str:
        if raw == "" and self.empty is not None:
            return self.empty()
        if self.pattern is not None and not self.pattern.fullmatch(raw):
            raise self.invalid()
        return raw


_INT_RE = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*")


def _bounds_text(lo: str | None, hi: str | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" of at least {lo}"
    if hi is not None:
        return f" of at most {hi}"
    return ""


class Int(Parser):
    """A whole number within ``[min, max]`` (``1_000_000`` is accepted)."""

    def __init__(self, min: int | None = None, max: int | None = None) -> None:
        self.min, self.max = min, max
        self.allowed = "expected a whole number" + _bounds_text(
            None if min is None else str(min), None if max is None else str(max)
        )

    def parse(self, raw: str, ctx: ParseContext) -> int:
        if not _INT_RE.fullmatch(raw):
            raise self.invalid()
        value = int(raw)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self.invalid()
        return value


class Float(Parser):
    """A decimal number within ``[min, max]``."""

    _RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

    def __init__(self, min: float | None = None, max: float | None = None) -> None:
        self.min, self.max = min, max
        self.allowed = "expected a number" + _bounds_text(
            None if min is None else f"{min:g}", None if max is None else f"{max:g}"
        )

    def parse(self, raw: str, ctx: ParseContext) -> float:
        # A regex rather than float() alone: float() also takes nan, inf, "1_0".
        if not self._RE.fullmatch(raw):
            raise self.invalid()
        value = float(raw)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self.invalid()
        return value


class Bool(Parser):
    """true/false, yes/no, on/off, 1/0 (any case)."""

    _WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    allowed = "expected true/false, yes/no, on/off or 1/0"

    def parse(self, raw: str, ctx: ParseContext) -> bool:
        try:
            return self._WORDS[raw.lower()]
        except KeyError:
            raise self.invalid() from None


class Choice(Parser):
    """One word out of a fixed list, matched in any case, returned as spelled here."""

    def __init__(self, *choices: str) -> None:
        if not choices:
            raise ValueError("Choice needs at least one choice")
        self.choices = choices
        self._by_lower = {c.lower(): c for c in choices}
        self.allowed = "expected one of: " + ", ".join(choices)

    def parse(self, raw: str, ctx: ParseContext) -> str:
        try:
            return self._by_lower[raw.lower()]
        except KeyError:
            raise self.invalid() from None


class LogLevel(Choice):
    """A logging level name: debug, info, warning or error."""

    def __init__(self) -> None:
        super().__init__("debug", "info", "warning", "error")


_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?", re.I)
_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}


def format_duration(seconds: float) -> str:
    """Write ``seconds`` with the largest unit that divides it: 3600 -> ``1h``."""
    value = Decimal(str(seconds))
    for unit in ("d", "h", "m", "s", "ms"):
        n = value / _DURATION_UNITS[unit]
        if n == n.to_integral_value() and n != 0:
            return f"{int(n)}{unit}"
    return f"{seconds:g}s"


class Duration(Parser):
    """A duration as float seconds: ``10``, ``500ms``, ``10s``, ``5m``, ``2h``, ``1d``.

    ``whole=True`` requires a whole number of seconds (for protocol fields
    such as the AMQP heartbeat, which is negotiated in seconds).
    """

    def __init__(self, min: float = 0.0, max: float | None = None, whole: bool = False) -> None:
        self.min, self.max, self.whole = min, max, whole
        if whole:
            bounds = _bounds_text(f"{min:g}", None if max is None else f"{max:g}")
            self.allowed = f"expected a whole number of seconds{bounds} (e.g. 10, 10s, 1m)"
        else:
            bounds = _bounds_text(format_duration(min) if min else "0s", None if max is None else format_duration(max))
            self.allowed = f"expected a duration{bounds} (e.g. 10, 500ms, 10s, 5m, 2h, 1d; a bare number is seconds)"

    def parse(self, raw: str, ctx: ParseContext) -> float:
        m = _DURATION_RE.fullmatch(raw)
        if not m:
            raise self.invalid()
        seconds = Decimal(m[1]) * _DURATION_UNITS[(m[2] or "s").lower()]
        if self.whole and seconds != seconds.to_integral_value():
            raise self.invalid()
        value = float(seconds)
        if value < self.min or (self.max is not None and value > self.max):
            raise self.invalid()
        return value


_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|[KMGT]|B)?", re.I)
_SIZE_UNITS = {
    "b": 1,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,  # noqa: E241 - bare K/M/G/T: binary, as operators mean
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
}


def format_size(n: int) -> str:
    """Write a byte count with the largest binary unit that divides it: ``64KiB``."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


class Size(Parser):
    """A size as int bytes: ``1000``, ``64KiB``, ``10MiB``, ``1GiB`` (binary) or ``1GB`` (decimal)."""

    def __init__(self, min: int = 0, max: int | None = None) -> None:
        self.min, self.max = min, max
        bounds = _bounds_text(format_size(min) if min else None, None if max is None else format_size(max))
        self.allowed = f"expected a size{bounds} (e.g. 1000, 64KiB, 10MiB, 1GiB, 1GB)"

    def parse(self, raw: str, ctx: ParseContext) -> int:
        m = _SIZE_RE.fullmatch(raw)
        if not m:
            raise self.invalid()
        # Fractions (1.5GiB) are rounded down to a whole byte.
        value = int(Decimal(m[1]) * _SIZE_UNITS[(m[2] or "b").lower()])
        if value < self.min or (self.max is not None and value > self.max):
            raise self.invalid()
        return value


class FilePath(Parser):
    """A file system path (``~`` expanded); ``optional=True`` makes empty mean None.

    Existence is not checked here: a path may matter only to some connectors
    (the AMQP spec is unused with the embedded bus), so each user checks it.
    ``placeholders`` lists the ``{name}`` fields the path may contain.
    """

    def __init__(self, optional: bool = False, placeholders: tuple[str, ...] = ()) -> None:
        self.optional = optional
        self.placeholders = placeholders
        allowed = "expected a file path"
        if placeholders:
            allowed += " (placeholders: " + ", ".join("{%s}" % p for p in placeholders) + ")"
        if optional:
            allowed += ", or nothing for none"
        self.allowed = allowed

    def parse(self, raw: str, ctx: ParseContext) -> str | None:
        if raw == "":
            if self.optional:
                return None
            raise self.invalid()
        if "\0" in raw:
            raise self.invalid()
        rest = raw
        for name in self.placeholders:
            rest = rest.replace("{%s}" % name, "")
        if "{" in rest or "}" in rest:
            raise self.invalid("unknown placeholder")
        return os.path.expanduser(raw)


_SQLALCHEMY_SCHEME = re.compile(r"[a-z][a-z0-9]*(?:\+[a-z0-9_]+)?")


class Url(Parser):
    """A URL whose scheme is in ``schemes`` (or any SQLAlchemy-style ``dialect+driver``).

    ``words`` are bare words accepted instead of a URL (``embedded``);
    ``need_host`` requires a host. Passwords are masked wherever shown.
    """

    def __init__(
        self,
        schemes: tuple[str, ...] | None = None,
        *,
        words: tuple[str, ...] = (),
        need_host: bool = False,
        allowed: str | None = None,
    ) -> None:
        self.schemes = schemes
        self.words = words
        self.need_host = need_host
        if allowed is None:
            if schemes:
                allowed = "expected a " + " or ".join(f"{s}://" for s in schemes) + " URL"
            else:
                allowed = "expected a URL such as dialect+driver://user:password@host/name"
            if words:
                allowed += " or " + " or ".join(f"the word {w}" for w in words)
        self.allowed = allowed

    def parse(self, raw: str, ctx: ParseContext) -> str:
        if raw in self.words:
            return raw
        scheme, sep, _ = raw.partition("://")
        if not sep:
            raise self.invalid("is not a URL")
        if self.schemes is not None:
            if scheme.lower() not in self.schemes:
                raise self.invalid(f"has scheme {scheme}")
        elif not _SQLALCHEMY_SCHEME.fullmatch(scheme):
            raise self.invalid(f"has scheme {scheme}")
        if any(c.isspace() for c in raw):
            raise self.invalid("contains a space")
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise self.invalid("has an invalid host or port") from None
        if self.need_host and not parts.hostname:
            raise self.invalid("has no host")
        return raw

    def mask(self, value: str) -> str:
        return mask_url(value)

    def shown(self, raw: str) -> str:
        return mask_url(raw)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE_ALLOWED = "expected env:NAME of a set environment variable, file:/path of a readable file, or the value itself"


def _is_reference(text: str) -> bool:
    return text.startswith(("env:", "file:"))


def _resolve_reference(ref: str, ctx: ParseContext) -> str:
    """Return the text an ``env:NAME``/``file:/path`` reference points to.

    Errors name the reference, never the content.
    """
    kind, _, target = ref.partition(":")
    if kind == "env":
        if not _ENV_NAME.fullmatch(target):
            raise InvalidValue(_REFERENCE_ALLOWED, f"{target!r} is not an environment variable name")
        try:
            return ctx.environ[target]
        except KeyError:
            raise InvalidValue(_REFERENCE_ALLOWED, f"environment variable {target} is not set") from None
    if not target:
        raise InvalidValue(_REFERENCE_ALLOWED, "file: names no file")
    path = os.path.expanduser(target)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SECRET_FILE + 1)
    except OSError as e:
        raise InvalidValue(_REFERENCE_ALLOWED, f"file {target} cannot be read ({e.strerror or e})") from None
    if len(data) > _MAX_SECRET_FILE:
        raise InvalidValue(_REFERENCE_ALLOWED, f"file {target} is larger than {format_size(_MAX_SECRET_FILE)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidValue(_REFERENCE_ALLOWED, f"file {target} is not UTF-8 text") from None
    # Secret files usually end with a newline that is not part of the secret.
    return text.rstrip("\r\n")


def secret_file_problem(reference: str) -> str | None:
    """What is wrong with the permissions of the ``file:/path`` ``reference``, or None.

    A secret file should be readable by its owner only (mode 0600 or 0400):
    one that its group or others may read is named with its mode. Never
    reads the file. None for an ``env:`` reference, a literal or a file that
    cannot be examined (reading it has already failed loudly).
    """
    if not reference.startswith("file:"):
        return None
    target = reference[len("file:"):]
    try:
        mode = os.stat(os.path.expanduser(target)).st_mode
    except OSError:
        return None
    if not mode & 0o044:
        return None
    who = " and ".join(w for w, bit in (("its group", 0o040), ("others", 0o004)) if mode & bit)
    return (f"the secret file {target} can be read by {who} (mode {mode & 0o7777:04o}); "
            f"make it readable by the daemon's user only (chmod 600)")


def secret_holder_problem(path: str, holds: str) -> str | None:
    """What is wrong with the permissions of ``path``, a file with secrets written in it, or None.

    ``holds`` says which (``"SNMP community"``...). Others must not read such
    a file; its group may only when that group is the daemon's own (the
    documented ``0640 root:centaure``), since another group's members are
    other users. Never reads the file; None for a file that cannot be examined.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    readers = [w for w, bit in (("its group", 0o040), ("others", 0o004)) if st.st_mode & bit]
    if st.st_gid == os.getegid() and readers[:1] == ["its group"]:
        readers.pop(0)
    if not readers:
        return None
    return (f"the file {path} holds {holds} written in it and can be read by "
            f"{' and '.join(readers)} (mode {st.st_mode & 0o7777:04o}); make it readable by "
            "the daemon only (chmod 600, or 640 with the daemon's group) or give those "
            "values as file: or env: references")


def _secrets(value: Any) -> Iterator[Secret]:
    """Every Secret in a setting's value (a Secret, or a list or mapping holding some)."""
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, (tuple, list, frozenset, set)):
        for item in value:
            yield from _secrets(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secrets(item)


class OptionalUrl(Url):
    """A SQLAlchemy URL, or nothing (empty text): an optional second database."""

    def __init__(self, example: str = "sqlite:///inventory.sqlite3") -> None:
        super().__init__(
            words=("",),
            allowed="expected nothing, or a SQLAlchemy URL such as "
                    f"mysql+pymysql://user:password@host/name or {example}",
        )


#: A table or column name: ASCII, a letter or '_' first, then letters, digits or
#: '_', 64 characters at most (MySQL's limit; PostgreSQL's 63 is checked where it applies).
SQL_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SQL_IDENTIFIER_TEXT = "an SQL identifier: a letter or '_' then up to 63 letters, digits or '_'"


def sql_identifier(optional: bool = False) -> Str:
    """The parser of a setting naming a table or column (:data:`SQL_IDENTIFIER`)."""
    pattern = SQL_IDENTIFIER.pattern
    describe = _SQL_IDENTIFIER_TEXT
    if optional:
        pattern = f"(?:{pattern})?"
        describe += ", or nothing"
    return Str(pattern, describe)


#: A table prefix setting (the SQL writer's, the correlator's, the alerter's): lower case, a
#: letter first, 31 characters at most, so that the longest table name stays short.
TABLE_PREFIX = Str(r"(?:[a-z][a-z0-9_]{0,30})?",
                   "a table prefix: a lower-case letter then up to 30 lower-case letters, "
                   "digits or '_', or nothing")


class SecretText(Parser):
    """A secret, given literally or as ``env:NAME`` / ``file:/path``; returns a Secret.

    ``inner`` validates the revealed text (default: any text).
    """

    def __init__(self, inner: Parser | None = None) -> None:
        self.inner = inner or Str()
        self.allowed = self.inner.allowed

    def parse(self, raw: str, ctx: ParseContext) -> Secret:
        source = "literal"
        text = raw
        if _is_reference(raw):
            source = raw
            text = _resolve_reference(raw, ctx)
            if not isinstance(self.inner, Str):
                # Only free text keeps its surrounding spaces (a password might).
                text = text.strip()
        try:
            value = self.inner.parse(text, ctx)
        except InvalidValue as e:
            if source == "literal":
                raise
            detail = f"{source} gives {self.inner.mask(text)!r}" + (f" which {e.detail}" if e.detail else "")
            raise InvalidValue(e.allowed, detail) from None
        return Secret(value, shown=self.inner.mask(value), source=source)

    def shown(self, raw: str) -> str:
        return raw if _is_reference(raw) else self.inner.mask(raw)


_LIST_SPLIT = re.compile(r"[,\n]")


class StrList(Parser):
    """A list of items separated by commas and/or newlines, as a tuple.

    Empty items (a trailing comma, a blank line) are ignored. ``item`` parses
    each one. With ``secret=True`` each item may be an ``env:``/``file:``
    reference (whose content may itself be a list) and every item becomes a
    Secret.
    """

    def __init__(
        self,
        item: Parser | None = None,
        *,
        secret: bool = False,
        min_items: int = 0,
        allowed: str | None = None,
    ) -> None:
        self.item = item or Str()
        self.secret = secret
        self.min_items = min_items
        if allowed is None:
            allowed = "expected a list separated by commas or newlines"
            if item is not None:
                allowed += f", each item {self.item.allowed}"
        self.allowed = allowed

    @staticmethod
    def split(raw: str) -> list[str]:
        """Split a list value on commas and newlines, dropping empty items."""
        return [part.strip() for part in _LIST_SPLIT.split(raw) if part.strip()]

    def parse(self, raw: str, ctx: ParseContext) -> tuple[Any, ...]:
        # (text, where it came from) for every item, references expanded.
        items: list[tuple[str, str]] = []
        for part in self.split(raw):
            if self.secret and _is_reference(part):
                content = _resolve_reference(part, ctx)
                items.extend((sub, part) for sub in self.split(content))
            else:
                items.append((part, "literal"))
        values = []
        for text, source in items:
            try:
                value = self.item.parse(text, ctx)
            except InvalidValue as e:
                shown = repr(self.item.mask(text) if self.secret else text)
                if source != "literal":
                    shown += f" (from {source})"
                raise self.invalid(f"{shown} {e.detail or 'is not valid'}") from None
            if self.secret:
                value = Secret(value, shown=self.item.mask(value), source=source)
            values.append(value)
        if len(values) < self.min_items:
            raise self.invalid("nothing given" if not values else f"only {len(values)} given")
        return tuple(values)

    def shown(self, raw: str) -> str:
        if not self.secret:
            return raw
        # Mask item by item, keeping the separators the operator typed.
        return "".join(self._shown_parts(raw))

    def _shown_parts(self, raw: str) -> Iterator[str]:
        for token in re.split(r"([,\n])", raw):
            if token in (",", "\n"):
                yield token
                continue
            text = token.strip()
            if not text or _is_reference(text):
                yield token
            else:
                yield token.replace(text, self.item.mask(text))


class _NamedValue(Parser):
    """``name=value``, the value parsed by another parser."""

    def __init__(self, value: Parser, names: tuple[str, ...] | None = None) -> None:
        self.value = value
        self.names = names

    def parse(self, raw: str, ctx: ParseContext) -> tuple[str, Any]:
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidValue(self.allowed, "is not name=value")
        if self.names and name not in self.names:
            raise InvalidValue(self.allowed, f"has an unknown name {name!r}")
        try:
            return name, self.value.parse(value.strip(), ctx)
        except InvalidValue:
            raise InvalidValue(self.allowed, f"has a bad value {value.strip()!r}") from None


class KeyValueMap(StrList):
    """``name=value`` items separated by commas or newlines, as a dict."""

    def __init__(self, value: Parser, names: tuple[str, ...] | None = None) -> None:
        names_text = f"name one of {', '.join(names)}" if names else "any name"
        super().__init__(_NamedValue(value, names), allowed=(
            f"expected name=value items separated by commas, {names_text}, value "
            f"{value.allowed.removeprefix('expected ')}"))

    def parse(self, raw: str, ctx: ParseContext) -> dict[str, Any]:  # type: ignore[override]
        return dict(super().parse(raw, ctx))


# --------------------------------------------------------------------------
# Declaring settings and sections


@dataclasses.dataclass(frozen=True)
class SettingSpec:
    """How one key is read: attribute ``name``, INI ``key``, parser, default text, doc."""

    name: str
    key: str
    parser: Parser
    default: str
    doc: str


def setting(parser: Parser, default: str, doc: str, *, key: str | None = None) -> Any:
    """Declare a section field: its parser, its default as written in the INI, a one-line doc.

    The default is parsed by the same parser each time a section is built,
    so it is valid by construction and may be computed (an empty ``node`` is
    the host name). ``key`` is the INI key when it differs from the field
    name (``urls`` is read from ``url``).
    """
    spec = _PendingSpec(parser=parser, default=default, doc=doc, key=key)
    return dataclasses.field(
        default_factory=lambda: parser.parse(default, ParseContext()),
        metadata={_META_KEY: spec},
    )


@dataclasses.dataclass(frozen=True)
class _PendingSpec:
    # What setting() knows before the field has a name.
    parser: Parser
    default: str
    doc: str
    key: str | None


_KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
_REGISTRY: dict[str, type] = {}
_SPECS: dict[type, tuple[SettingSpec, ...]] = {}


def settings_of(cls: type) -> tuple[SettingSpec, ...]:
    """Return the SettingSpec of every key of a registered section class, in order."""
    try:
        return _SPECS[cls]
    except KeyError:
        raise TypeError(f"{cls.__qualname__} is not a registered settings section") from None


def registered_sections() -> Mapping[str, type]:
    """Return the registered sections, name -> dataclass (a copy)."""
    return dict(_REGISTRY)


def register_section(name: str, cls: type[T] | None = None) -> Any:
    """Register ``cls`` (a frozen dataclass of setting() fields) as section ``[name]``.

    Usable as ``register_section("snmp", SnmpSettings)`` or as the decorator
    ``@register_section("snmp")``. Registering the same class twice is
    harmless; another class under a taken name is an error.
    """

    def register(cls: type[T]) -> type[T]:
        if not _KEY_RE.fullmatch(name) or name in _RESERVED_NAMES:
            raise ValueError(f"invalid settings section name {name!r}")
        previous = _REGISTRY.get(name)
        if previous is not None:
            if previous is cls:
                return cls
            raise ValueError(f"settings section [{name}] is already registered by {previous.__qualname__}")
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__qualname__} must be a frozen dataclass")
        specs = []
        for f in dataclasses.fields(cls):
            pending = f.metadata.get(_META_KEY)
            if pending is None:
                raise TypeError(f"{cls.__qualname__}.{f.name} must be declared with setting()")
            key = pending.key or f.name
            if not _KEY_RE.fullmatch(key):
                raise ValueError(f"{cls.__qualname__}.{f.name}: invalid key {key!r}")
            specs.append(SettingSpec(f.name, key, pending.parser, pending.default, pending.doc))
        if len({s.key for s in specs}) != len(specs):
            raise ValueError(f"{cls.__qualname__} declares a key twice")
        # Build the defaults now: a bad default is a bug to catch at import.
        try:
            cls()
        except InvalidValue as e:
            raise ValueError(f"{cls.__qualname__}: invalid default: {e}") from None
        _SPECS[cls] = tuple(specs)
        _REGISTRY[name] = cls
        return cls

    return register if cls is None else register(cls)


# The entry-point group of the modules that register settings sections.
_ENTRY_POINT_GROUP = "centaure.settings"


_discovered = False


def discover_sections(*, again: bool = False) -> None:
    """Import every module that registers sections, so the whole shared file is understood.

    A connector that does not use ``[snmp]`` must still accept it in the
    shared file; so the sections of every installed package are registered.
    They are found through the entry-point group ``centaure.settings`` of the
    installed distributions (Centaure's own connectors and any other package),
    which works however Centaure was installed (wheel, editable, compat).
    Such modules must stay light: they are imported by every connector.
    The search runs once per process unless ``again`` is true.
    """
    global _discovered
    if _discovered and not again:
        return
    # Imported here: importlib.metadata costs ~0.1 s to import, once.
    import importlib.metadata

    for ep in importlib.metadata.entry_points(group=_ENTRY_POINT_GROUP):
        ep.load()
    _discovered = True


# --------------------------------------------------------------------------
# Loading


class Settings:
    """The settings of one run: one frozen section object per registered section.

    Sections are attributes (``settings.bus.urls``); :meth:`section` gives
    any registered one by name. ``source`` is the file read (None: defaults).
    """

    __slots__ = ("_sections", "_source")

    def __init__(self, sections: Mapping[str, Any], source: str | None = None) -> None:
        object.__setattr__(self, "_sections", dict(sections))
        object.__setattr__(self, "_source", source)

    @property
    def source(self) -> str | None:
        """The path of the file these settings were read from, or None for defaults."""
        return self._source

    def section(self, name: str) -> Any:
        """Return section ``[name]``; KeyError names the known sections."""
        try:
            return self._sections[name]
        except KeyError:
            known = ", ".join(sorted(self._sections))
            raise KeyError(f"no settings section [{name}] (known: {known})") from None

    def sections(self) -> Mapping[str, Any]:
        """Return all sections, name -> section object."""
        return dict(self._sections)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Return ``{section: {key: value}}`` by INI key; secrets stay Secret objects."""
        return {
            name: {spec.key: getattr(obj, spec.name) for spec in settings_of(type(obj))}
            for name, obj in self._sections.items()
        }

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._sections[name]
        except KeyError:
            raise AttributeError(f"no settings section [{name}]") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Settings are read-only")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return self._sections == other._sections

    def __repr__(self) -> str:
        return f"Settings(source={self._source!r}, sections={sorted(self._sections)})"

    # Typed shortcuts for the core sections.
    @property
    def bus(self) -> BusSettings:
        """The ``[bus]`` section."""
        return self._sections["bus"]

    @property
    def buffer(self) -> BufferSettings:
        """The ``[buffer]`` section."""
        return self._sections["buffer"]

    @property
    def connector(self) -> ConnectorSettings:
        """The ``[connector]`` section."""
        return self._sections["connector"]

    @property
    def database(self) -> DatabaseSettings:
        """The ``[database]`` section."""
        return self._sections["database"]

    @property
    def logging(self) -> LoggingSettings:
        """The ``[logging]`` section."""
        return self._sections["logging"]


def loose_secret_files(settings: Settings) -> list[str]:
    """One line per ``file:`` secret of ``settings`` that its group or others may read.

    Each line names the section, the key and the file with its mode, never
    the secret (:func:`secret_file_problem`); a file used by several keys is
    named once.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for name, section in settings.sections().items():
        for spec in settings_of(type(section)):
            for secret in _secrets(getattr(section, spec.name)):
                if secret.source in seen:
                    continue
                seen.add(secret.source)
                problem = secret_file_problem(secret.source)
                if problem is not None:
                    lines.append(f"[{name}] {spec.key}: {problem}")
    return lines


def settings_dir(settings: Settings) -> str:
    """The folder relative paths in the settings are taken from.

    That is the folder of the settings file, so that a file and the files it
    names can move together; settings built from defaults (no file) use the
    current directory.
    """
    if settings.source:
        return os.path.dirname(os.path.abspath(settings.source))
    return os.getcwd()


# Section names that would hide Settings' own attributes.
_RESERVED_NAMES = frozenset({"source", "section", "sections", "as_dict"})


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word.lower(), choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_parser(text: str, source: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(
        interpolation=None,  # URLs contain %2F
        strict=True,  # duplicate sections/keys are errors
        # No [DEFAULT] magic: a [DEFAULT] section is just an unknown one.
        default_section="\0no default section",
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=None,  # '#' and ';' may be part of passwords and URLs
    )
    cp.optionxform = str  # type: ignore[assignment,method-assign] - keys are case-sensitive
    try:
        cp.read_string(text, source=source)
    except configparser.DuplicateOptionError as e:
        raise SettingsError(
            source, e.section, e.option, allowed="each key may appear once per section",
            detail=f"duplicate key (line {e.lineno})",
        ) from None
    except configparser.DuplicateSectionError as e:
        raise SettingsError(
            source, e.section, allowed="each section may appear once",
            detail=f"duplicate section (line {e.lineno})",
        ) from None
    except configparser.MissingSectionHeaderError as e:
        # The offending line is not echoed: it may hold a secret.
        raise SettingsError(
            source, line=e.lineno, allowed="expected a [section] header before the first key",
            detail="key outside any section",
        ) from None
    except configparser.ParsingError as e:
        lineno = e.errors[0][0] if e.errors else None
        raise SettingsError(
            source, line=lineno, allowed="expected 'key = value', a [section] header or a # comment",
            detail="cannot parse this line",
        ) from None
    return cp


def _build_section(
    name: str, cls: type, values: Mapping[str, str], source: str, ctx: ParseContext
) -> Any:
    specs = settings_of(cls)
    by_key = {s.key: s for s in specs}
    for key in values:
        if key not in by_key:
            keys = sorted(by_key)
            raise SettingsError(
                source, name, key, allowed="expected one of: " + ", ".join(keys),
                detail="unknown key" + _suggest(key, keys),
            )
    kwargs: dict[str, Any] = {}
    for spec in specs:
        if spec.key not in values:
            continue  # the dataclass default applies
        raw = values[spec.key].strip()
        try:
            kwargs[spec.name] = spec.parser.parse(raw, ctx)
        except InvalidValue as e:
            raise SettingsError(
                source, name, spec.key, spec.parser.shown(raw), allowed=e.allowed, detail=e.detail
            ) from None
    try:
        return cls(**kwargs)
    except InvalidValue as e:
        # A cross-field check in __post_init__; show the key it blames.
        spec = by_key.get(e.key or "")
        shown = None
        if spec is not None:
            shown = spec.parser.shown(values.get(spec.key, spec.default).strip())
        raise SettingsError(source, name, e.key, shown, allowed=e.allowed, detail=e.detail) from None


def settings_from_string(
    text: str,
    *,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    discover: bool = True,
) -> Settings:
    """Parse settings from INI ``text``; ``source`` names it in errors."""
    if discover:
        discover_sections()
    ctx = ParseContext(os.environ if environ is None else environ)
    cp = _read_parser(text, source)
    registry = registered_sections()
    for name in cp.sections():
        if name not in registry:
            names = sorted(registry)
            raise SettingsError(
                source, name, allowed="expected one of: " + ", ".join(names),
                detail="unknown section" + _suggest(name, names),
            )
    sections = {}
    for name, cls in registry.items():
        values = dict(cp.items(name, raw=True)) if cp.has_section(name) else {}
        sections[name] = _build_section(name, cls, values, source, ctx)
    return Settings(sections, source)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    discover: bool = True,
) -> Settings:
    """Read and validate the settings file at ``path`` (None: every default).

    Raises SettingsError (one line: file, section, key, value, what is
    allowed) for an unreadable file, unknown section or key, duplicate or
    bad value. ``environ`` replaces ``os.environ`` for ``env:`` secrets.
    """
    if path is None:
        defaults = settings_from_string("", source="<defaults>", environ=environ, discover=discover)
        return Settings(defaults.sections(), None)
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SettingsError(name, allowed="", detail=f"cannot read the settings file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise SettingsError(name, detail="the settings file is not UTF-8 text") from None
    return settings_from_string(text, source=name, environ=environ, discover=discover)


# --------------------------------------------------------------------------
# Core sections


_AMQP_URLS = StrList(
    Url(("amqp", "amqps"), words=("embedded",), need_host=True),
    secret=True,
    min_items=1,
    allowed="expected amqp:// or amqps:// URLs separated by commas or newlines, or the word embedded",
)


@register_section("bus")
@dataclasses.dataclass(frozen=True)
class BusSettings:
    """``[bus]``: how to reach the message bus (RabbitMQ, or the in-process bus)."""

    urls: tuple[Secret, ...] = setting(
        _AMQP_URLS, "embedded",
        "Broker URLs tried in turn for failover, or 'embedded' for the in-process bus.",
        key="url",
    )
    heartbeat: float = setting(
        Duration(0, 3600, whole=True), "10s", "AMQP heartbeat interval; 0 disables heartbeats."
    )
    connect_timeout: float = setting(
        Duration(0.1, 3600), "10s", "Time allowed to open a connection to one broker."
    )
    prefetch: int = setting(Int(1, 65535), "500", "Unacknowledged messages a consumer may hold.")
    exchange_prefix: str = setting(
        Str(r"[A-Za-z0-9_.-]{1,100}", "1 to 100 letters, digits, '_', '.' or '-'"),
        "centaure",
        "Prefix of exchange and queue names (centaure.perf, centaure.dead...).",
    )
    spec: str | None = setting(
        FilePath(optional=True), "",
        "AMQP 0-9-1 spec XML used by txAMQP; empty: RabbitMQ's extended spec shipped with Centaure.",
    )
    tls_ca: str | None = setting(FilePath(optional=True), "", "CA bundle for amqps://; empty: system CAs.")
    tls_cert: str | None = setting(FilePath(optional=True), "", "Client certificate for amqps://; empty: none.")
    tls_key: str | None = setting(FilePath(optional=True), "", "Client private key for amqps://; empty: none.")
    tls_verify: bool = setting(Bool(), "true", "Verify the broker's certificate and host name.")
    confirm_timeout: float = setting(
        Duration(0.1, 3600), "5s",
        "A message unconfirmed for longer means the broker is black-holed: buffer to disk.",
    )
    max_in_flight: int = setting(Int(1, 1_000_000), "2000", "Unconfirmed messages in flight per publisher.")
    queue_type: str = setting(Choice("classic", "quorum"), "classic", "Type of the queues declared.")
    retry_limit: int = setting(
        Int(0, 1000), "5", "Handler failures of one message before it is dead-lettered."
    )
    retry_delay: float = setting(Duration(0, 86400), "1s", "Wait before a failed message is retried.")
    backoff_initial: float = setting(
        Duration(0.01, 3600), "500ms", "First wait before reconnecting; doubles at each failure."
    )
    backoff_max: float = setting(Duration(0.01, 86400), "30s", "Longest wait between reconnections.")
    partitions: int = setting(
        Int(0, 4096), "0",
        "Partitions the hosts are shared over by several nodes (the same on every node); "
        "0: one node owns every host.",
    )
    token_refresh: float = setting(
        Duration(1, 1700), "5m",
        "How often a node hands an ownership token back to itself (below the broker's "
        "consumer_timeout, 30 min by default).",
    )
    balance_interval: float = setting(
        Duration(0.5, 3600), "10s",
        "How often a node compares the partitions it owns with its fair share.",
    )

    def __post_init__(self) -> None:
        if self.partitions and self.embedded:
            raise InvalidValue("expected 0 with url = embedded (partitions need RabbitMQ)",
                               key="partitions")
        if self.backoff_max < self.backoff_initial:
            raise InvalidValue(
                f"expected at least backoff_initial ({format_duration(self.backoff_initial)})",
                key="backoff_max",
            )
        if len(self.urls) > 1 and any(u.reveal() == "embedded" for u in self.urls):
            raise InvalidValue(_AMQP_URLS.allowed, "embedded cannot be combined with broker URLs", key="url")
        # A certificate file may hold its key too, but a key needs a certificate.
        if self.tls_key is not None and self.tls_cert is None:
            raise InvalidValue("expected tls_cert to be set too, or tls_key empty", key="tls_key")
        if self.queue_type == "quorum":
            # Quorum queues dead-letter a message by themselves past a delivery
            # limit; the consumer must give up (with its reason) well before.
            from connector.topology import DELIVERY_LIMIT, QUORUM_MAX_RETRY_LIMIT

            if self.retry_limit > QUORUM_MAX_RETRY_LIMIT:
                raise InvalidValue(
                    f"expected at most {QUORUM_MAX_RETRY_LIMIT} with queue_type = quorum (the "
                    f"queues dead-letter a message after {DELIVERY_LIMIT} deliveries)",
                    key="retry_limit")

    @property
    def embedded(self) -> bool:
        """True when the in-process bus is used instead of a broker."""
        return len(self.urls) == 1 and self.urls[0].reveal() == "embedded"


@register_section("buffer")
@dataclasses.dataclass(frozen=True)
class BufferSettings:
    """``[buffer]``: the SQLite file where publishers keep what the bus has not confirmed."""

    path: str = setting(
        FilePath(placeholders=("connector",)), "var/buffer-{connector}.sqlite3",
        "SQLite buffer file; {connector} is replaced by the connector name.",
    )
    max_messages: int = setting(Int(1), "1000000", "Most messages kept in the buffer.")
    max_size: int = setting(Size(64 * 1024), "1GiB", "Largest size of the buffer file.")
    policy: str = setting(
        Choice("drop_oldest", "refuse_newest"), "drop_oldest", "What to do when the buffer is full."
    )
    synchronous: str = setting(Choice("NORMAL", "FULL"), "NORMAL", "SQLite synchronous pragma (WAL mode).")
    batch_size: int = setting(Int(1, 100_000), "500", "Messages per buffer transaction.")

    def path_for(self, connector: str) -> str:
        """Return the buffer path of ``connector`` (``{connector}`` replaced)."""
        return self.path.replace("{connector}", connector)


@register_section("connector")
@dataclasses.dataclass(frozen=True)
class ConnectorSettings:
    """``[connector]``: identity, heartbeats and HTTP endpoint of the running connector."""

    node: str = setting(
        Str(r"[^\s@]{1,255}", "a node name of 1 to 255 characters without spaces or '@'",
            empty=socket.gethostname),
        "", "Node name in status messages and message sources; empty: this machine's host name.",
    )
    status_interval: float = setting(Duration(1, 3600), "10s", "Interval between status heartbeats.")
    http_host: str = setting(
        Str(r"\S+", "a host name or IP address"), "127.0.0.1", "Address of the /metrics and /health server."
    )
    http_port: int = setting(Int(0, 65535), "8470", "Port of the /metrics and /health server; 0: none.")
    http_ports: dict = setting(
        KeyValueMap(Int(0, 65535)), "",
        "Per process (all, snmp, traps, db, correlator, alerter): its own port instead of "
        "http_port, for several connector processes on one node.")
    lost_after: int = setting(
        Int(1, 1000), "3", "Heartbeats missed before 'centaure status' says a connector is lost."
    )


@register_section("database")
@dataclasses.dataclass(frozen=True)
class DatabaseSettings:
    """``[database]``: the SQL database (SQLAlchemy URL)."""

    url: Secret = setting(
        SecretText(Url(allowed="expected a SQLAlchemy URL such as sqlite:///centaure.sqlite3 "
                               "or mysql+pymysql://user:password@host/centaure")),
        "sqlite:///centaure.sqlite3",
        "SQLAlchemy database URL.",
    )


@register_section("logging")
@dataclasses.dataclass(frozen=True)
class LoggingSettings:
    """``[logging]``: how much and in which form connectors log."""

    level: str = setting(LogLevel(), "info", "Lowest level logged.")
    format: str = setting(Choice("text", "json"), "text", "Log line format.")

    @property
    def level_number(self) -> int:
        """The level as a ``logging`` module number (``info`` -> 20)."""
        return _logging.getLevelName(self.level.upper())
