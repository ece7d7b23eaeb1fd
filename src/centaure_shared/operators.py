"""Operators: named processors applied to polled values before they are published.

A profile attaches operators to a metric (see ``connector_snmp.model``)::

    - {name: ifHCInOctets, oid: 1.3.6.1.2.1.31.1.1.1.6, kind: counter,
       operators: [{counter_rate: {bits: 64}}, {scale: {factor: 8}}]}

Every name is resolved ONCE, at start-up, through a :class:`Registry`: the
registered *factory* is called with the written arguments and returns an
:data:`Operator`, i.e. a plain callable ``(value, ctx) -> value | SKIP``.  A
bad name or a bad argument is an :class:`OperatorError` at start-up, never a
surprise at poll time, and nothing is ever looked up by free text while
polling.  :func:`compile_pipeline` chains a metric's operators into a
:class:`Pipeline` whose ``apply`` is a single plain function.

Values are what the BER codec yields: ``int``, ``float``, ``bytes``, ``str``
or ``None`` (NoSuchObject, NoSuchInstance, EndOfMibView, Null).  ``None``
passes through every operator untouched.  :data:`SKIP` means "do not publish
this sample" and stops the chain.

State.  Operators that remember something between polls (``counter_rate``,
``skip_unchanged``) keep it in ``ctx.state``, a dict owned by the caller for
one (device, metric, index).  :class:`StateStore` holds those dicts grouped by
device, so that one host's state can be exported, dropped, and imported on
another node.  Within ``ctx.state`` a stateful operator uses the key found in
its ``state_key`` attribute; :func:`compile_pipeline` sets it to
``"<position>:<name>"`` so that two stateful operators of one pipeline never
share an entry.  A user operator that keeps state should do the same: expose a
``state_key`` attribute and read it at call time.

Runtime failures.  An operator that cannot handle a value (a string given to
``scale``, unparsable text given to ``to_float``...) raises ``TypeError`` or
``ValueError``; :meth:`Pipeline.apply` re-raises it as :class:`PipelineError`
naming the device, metric, index and operator, for the caller to log and drop.

User operators come from the settings as ``name = package.module:callable``
(:func:`load_user_operators`); the callable is a factory, exactly like the
built-ins: ``callable(**args) -> Operator``.  :func:`stateless` turns a plain
``(value, ctx)`` function into such a factory.
"""

from __future__ import annotations

import codecs
import importlib
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from centaure_shared.metric import MetricSpec, OperatorCall

__all__ = [
    "SKIP", "Operator", "Factory", "OperatorContext", "OperatorError", "PipelineError",
    "Registry", "Pipeline", "StateStore", "compile_pipeline", "default_registry",
    "load_user_operators", "stateless",
]


# --------------------------------------------------------------------------- basics

class _Skip:
    """Type of :data:`SKIP`; a single instance exists."""

    __slots__ = ()
    _instance: _Skip | None = None

    def __new__(cls) -> _Skip:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SKIP"

    def __reduce__(self) -> str:
        return "SKIP"


SKIP = _Skip()
"""Returned by an operator (and by a pipeline) to mean: do not publish this sample."""


@dataclass(slots=True)
class OperatorContext:
    """What an operator knows about the sample besides its value.

    One context describes one (device, metric, index).  The caller may build a
    new one per value or keep one and update its fields; ``state`` must be the
    dict of that (device, metric, index), e.g. from :meth:`StateStore.get`.
    """

    now: float                      # poll time, seconds (any monotonic-enough clock)
    device: str
    metric: str
    index: str                      # OID suffix of a table row; "" or "0" for scalars
    state: dict = field(default_factory=dict)
    uptime: float | None = None     # the device's sysUpTime for this poll, seconds
    tag: str = ""                   # BER tag name of the raw value ("Counter32"...)


Operator = Callable[[Any, OperatorContext], Any]
"""``(value, ctx) -> value | SKIP``; must return ``None`` unchanged."""

Factory = Callable[..., Operator]
"""``factory(**args) -> Operator``, called once per use of the operator in a profile."""


class OperatorError(Exception):
    """A configuration error: unknown operator, bad argument, bad user operator."""


class PipelineError(Exception):
    """An operator failed on one value at poll time; ``__cause__`` is the original error."""

    def __init__(self, ctx: OperatorContext, operator: str, value: object,
                 error: BaseException) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"operator {operator!r} failed on {ctx.device} {ctx.metric}"
                         f"[{ctx.index}] value {shown}: {type(error).__name__}: {error}")
        self.device = ctx.device
        self.metric = ctx.metric
        self.index = ctx.index
        self.operator = operator
        self.value = value


def stateless(function: Operator) -> Factory:
    """Make a factory without arguments from a plain ``(value, ctx)`` function.

    For user modules: ``my_op = stateless(lambda value, ctx: ...)`` and then
    ``my_op = mypackage.mymodule:my_op`` in the settings.
    """
    def factory() -> Operator:
        return function
    factory.__name__ = getattr(function, "__name__", "stateless")
    factory.__doc__ = function.__doc__
    return factory


# --------------------------------------------------------------------------- registry

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    required: tuple[str, ...]
    optional: tuple[tuple[str, object], ...]
    any_keyword: bool               # the factory takes **kwargs

    def allowed(self) -> str:
        """The argument list for error messages, e.g. ``factor`` or ``bits=None, per=1.0``."""
        if not self.required and not self.optional and not self.any_keyword:
            return "none (this operator takes no arguments)"
        parts = list(self.required) + [f"{k}={v!r}" for k, v in self.optional]
        if self.any_keyword:
            parts.append("any other")
        return ", ".join(parts)


def _describe(factory: Factory) -> tuple[tuple[str, ...], tuple[tuple[str, object], ...], bool]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):     # some C callables have no signature
        return (), (), True
    required, optional, any_keyword = [], [], False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            any_keyword = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            if p.default is p.empty:
                required.append(p.name)
            else:
                optional.append((p.name, p.default))
        elif p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
            raise OperatorError(f"factory {factory!r} has a required positional-only "
                                f"parameter {p.name!r}; operators are built with keyword "
                                "arguments only")
    return tuple(required), tuple(optional), any_keyword


class Registry:
    """Operator names -> factories.  Fill it at start-up, then only :meth:`build`."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str, factory: Factory | None = None):
        """Register ``factory`` under ``name``; without ``factory``, a decorator.

        Raises :class:`OperatorError` when the name is not an identifier, is
        already taken, or the factory is not callable.
        """
        if factory is None:
            def decorator(f: Factory) -> Factory:
                self.register(name, f)
                return f
            return decorator
        if not isinstance(name, str) or not _NAME.match(name):
            raise OperatorError(f"operator name {name!r} is not an identifier")
        if name in self._entries:
            raise OperatorError(f"operator name {name!r} is already taken")
        if not callable(factory):
            raise OperatorError(f"operator {name!r}: factory {factory!r} is not callable")
        self._entries[name] = _Entry(factory, *_describe(factory))
        return factory

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def copy(self) -> Registry:
        """An independent registry with the same operators."""
        r = Registry()
        r._entries = dict(self._entries)
        return r

    def build(self, call: OperatorCall) -> Operator:
        """Check ``call`` against its factory and return the built operator."""
        entry = self._entries.get(call.name)
        if entry is None:
            raise OperatorError(f"unknown operator {call.name!r}; known operators: "
                                f"{', '.join(self.names())}")
        args = call.args if call.args is not None else {}
        if not isinstance(args, Mapping):
            raise OperatorError(f"operator {call.name!r}: arguments must be a mapping of "
                                f"name to value, got {args!r}; allowed arguments: "
                                f"{entry.allowed()}")
        known = set(entry.required) | {k for k, _ in entry.optional}
        for key in args:
            if not isinstance(key, str) or (key not in known and not entry.any_keyword):
                raise OperatorError(f"operator {call.name!r}: unexpected argument {key!r}; "
                                    f"allowed arguments: {entry.allowed()}")
        for key in entry.required:
            if key not in args:
                raise OperatorError(f"operator {call.name!r}: missing argument {key!r}; "
                                    f"allowed arguments: {entry.allowed()}")
        try:
            op = entry.factory(**args)
        except OperatorError as exc:
            raise OperatorError(f"operator {call.name!r}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise OperatorError(f"operator {call.name!r}: {exc}") from exc
        if not callable(op):
            raise OperatorError(f"operator {call.name!r}: its factory returned {op!r}, "
                                "not a callable (value, ctx)")
        return op


_SPEC = re.compile(r"\s*([A-Za-z_]\w*)\s*=\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)"
                   r"\s*:\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\Z", re.ASCII)


def load_user_operators(registry: Registry, specs: Iterable[str]) -> list[str]:
    """Import and register user operators written ``name = package.module:callable``.

    ``callable`` (a dotted path inside the module is allowed) is a factory:
    ``callable(**args) -> Operator``.  Every spec is checked before anything
    is registered; on any problem nothing is registered and one
    :class:`OperatorError` lists every problem, one per line.  Returns the
    registered names.
    """
    problems: list[str] = []
    found: list[tuple[str, Factory]] = []
    seen: set[str] = set()
    for spec in specs:
        m = _SPEC.match(spec) if isinstance(spec, str) else None
        if m is None:
            problems.append(f"user operator {spec!r}: expected 'name = package.module:callable'")
            continue
        name, module_name, attr_path = m.groups()
        if name in registry or name in seen:
            problems.append(f"user operator {name!r}: the name is already taken")
            continue
        seen.add(name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module_name == exc.name
                                         or module_name.startswith(exc.name + ".")):
                problems.append(f"user operator {name!r}: module {module_name!r} not found")
            else:
                problems.append(f"user operator {name!r}: importing module {module_name!r} "
                                f"failed: ModuleNotFoundError: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - any import-time error is a settings error
            problems.append(f"user operator {name!r}: importing module {module_name!r} "
                            f"failed: {type(exc).__name__}: {exc}")
            continue
        obj: object = module
        missing = False
        for part in attr_path.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                missing = True
                break
        if missing:
            problems.append(f"user operator {name!r}: module {module_name!r} has no "
                            f"attribute {attr_path!r}")
            continue
        if not callable(obj):
            problems.append(f"user operator {name!r}: {module_name}:{attr_path} is not "
                            f"callable (it is a {type(obj).__name__})")
            continue
        try:
            _describe(obj)  # type: ignore[arg-type]
        except OperatorError as exc:
            problems.append(f"user operator {name!r}: {exc}")
            continue
        found.append((name, obj))  # type: ignore[arg-type]
    if problems:
        raise OperatorError("\n".join(problems))
    for name, factory in found:
        registry.register(name, factory)
    return [name for name, _ in found]


# --------------------------------------------------------------------------- pipeline

def _passthrough(value: Any, ctx: OperatorContext) -> Any:
    return value


class Pipeline:
    """A metric's operators, in order.  Call ``pipeline.apply(value, ctx)``.

    ``apply`` is a plain function chosen at compile time: with no operators
    it returns the value unchanged; otherwise it stops at ``None`` or
    :data:`SKIP` and wraps operator failures in :class:`PipelineError`.
    ``needs_state`` tells whether any operator keeps state (callers may then
    skip the :class:`StateStore` lookup and pass any dict).
    """

    __slots__ = ("metric", "names", "operators", "needs_state", "apply")

    def __init__(self, metric: str, names: tuple[str, ...], operators: tuple[Operator, ...],
                 needs_state: bool) -> None:
        self.metric = metric
        self.names = names
        self.operators = operators
        self.needs_state = needs_state
        self.apply: Callable[[Any, OperatorContext], Any] = _make_apply(names, operators)

    def __len__(self) -> int:
        return len(self.operators)

    def __repr__(self) -> str:
        return f"Pipeline({self.metric}: {' | '.join(self.names) or 'identity'})"


def _make_apply(names: tuple[str, ...], ops: tuple[Operator, ...]) -> Callable:
    if not ops:
        return _passthrough
    if len(ops) == 1:
        op, name = ops[0], names[0]

        def apply_one(value: Any, ctx: OperatorContext) -> Any:
            if value is None:
                return None
            try:
                return op(value, ctx)
            except Exception as exc:
                raise PipelineError(ctx, name, value, exc) from exc
        return apply_one

    def apply_many(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        original = value
        op = None
        try:
            for op in ops:
                value = op(value, ctx)
                if value is SKIP or value is None:
                    return value
            return value
        except Exception as exc:
            raise PipelineError(ctx, names[ops.index(op)], original, exc) from exc
    return apply_many


def compile_pipeline(registry: Registry, spec: MetricSpec) -> Pipeline:
    """Build every operator of ``spec`` (in order) into a :class:`Pipeline`.

    Raises :class:`OperatorError` prefixed with the metric name.
    """
    ops: list[Operator] = []
    names: list[str] = []
    needs_state = False
    for position, call in enumerate(spec.operators):
        try:
            op = registry.build(call)
        except OperatorError as exc:
            raise OperatorError(f"metric {spec.name!r}: {exc}") from None
        if hasattr(op, "state_key"):
            needs_state = True
            try:
                op.state_key = f"{position}:{call.name}"  # type: ignore[attr-defined]
            except AttributeError:
                pass
        ops.append(op)
        names.append(call.name)
    return Pipeline(spec.name, tuple(names), tuple(ops), needs_state)


# --------------------------------------------------------------------------- state

class StateStore:
    """Per-(device, metric, index) state dicts, grouped by device.

    Layout: ``{device: {(metric, index): state_dict}}``, so that all state of
    one host can be dropped (:meth:`forget_device`) or moved to another node
    (:meth:`export_device` / :meth:`import_device`) at once.
    """

    __slots__ = ("_devices",)

    def __init__(self) -> None:
        self._devices: dict[str, dict[tuple[str, str], dict]] = {}

    def get(self, device: str, metric: str, index: str) -> dict:
        """The state dict of one key, created empty on first use."""
        per_device = self._devices.get(device)
        if per_device is None:
            per_device = self._devices[device] = {}
        state = per_device.get((metric, index))
        if state is None:
            state = per_device[(metric, index)] = {}
        return state

    def device(self, device: str) -> dict[tuple[str, str], dict]:
        """The live ``{(metric, index): state}`` dict of one device (created if absent).

        For a poll loop: look the device up once, then its keys directly.
        """
        per_device = self._devices.get(device)
        if per_device is None:
            per_device = self._devices[device] = {}
        return per_device

    def context(self, device: str, metric: str, index: str, now: float,
                uptime: float | None = None, tag: str = "") -> OperatorContext:
        """A context bound to the state of (device, metric, index)."""
        return OperatorContext(now, device, metric, index, self.get(device, metric, index),
                               uptime, tag)

    def discard(self, device: str, metric: str, index: str) -> None:
        """Drop the state of one key (e.g. a table row that disappeared)."""
        per_device = self._devices.get(device)
        if per_device is not None:
            per_device.pop((metric, index), None)

    def forget_device(self, device: str) -> bool:
        """Drop every state of ``device``; True if there was any."""
        return self._devices.pop(device, None) is not None

    def devices(self) -> list[str]:
        """Devices that have state, sorted."""
        return sorted(self._devices)

    def __contains__(self, device: object) -> bool:
        return device in self._devices

    def __len__(self) -> int:
        """Number of (device, metric, index) keys."""
        return sum(len(d) for d in self._devices.values())

    def export_device(self, device: str) -> dict[str, dict[str, dict]]:
        """A copy of one device's state as ``{metric: {index: {key: value}}}``.

        Only plain dicts, strings and the values the operators stored
        (numbers, tuples, and whatever the polled values were).
        """
        out: dict[str, dict[str, dict]] = {}
        for (metric, index), state in self._devices.get(device, {}).items():
            if state:
                out.setdefault(metric, {})[index] = dict(state)
        return out

    def import_device(self, device: str, data: Mapping[str, Mapping[str, Mapping]],
                      replace: bool = True) -> None:
        """Load state exported by :meth:`export_device` (possibly on another node).

        With ``replace`` (default) the device's current state is dropped first;
        otherwise imported keys overwrite existing ones and others are kept.
        """
        per_device: dict[tuple[str, str], dict] = {} if replace else dict(
            self._devices.get(device, {}))
        for metric, rows in data.items():
            for index, state in rows.items():
                per_device[(str(metric), str(index))] = dict(state)
        self._devices[device] = per_device


# --------------------------------------------------------------------------- built-ins
#
# Each built-in is a factory: it validates its arguments (raising ValueError /
# TypeError / OperatorError, which Registry.build reports with the operator
# name) and returns a closure.  Every closure returns None unchanged.

_BUILTINS: list[tuple[str, Factory]] = []


def _builtin(name: str) -> Callable[[Factory], Factory]:
    def decorator(factory: Factory) -> Factory:
        _BUILTINS.append((name, factory))
        return factory
    return decorator


def default_registry() -> Registry:
    """A new registry holding every built-in operator."""
    r = Registry()
    for name, factory in _BUILTINS:
        r.register(name, factory)
    return r


def _number(arg: str, value: object, *, allow_none: bool = False) -> float | int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise OperatorError(f"argument {arg!r} must be a finite number, got {value!r}")
    return value


def _bool(arg: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise OperatorError(f"argument {arg!r} must be true or false, got {value!r}")
    return value


_NUMERIC = frozenset((int, float, bool))
"""Exact types taken as numbers; ``type(v) in _NUMERIC`` is cheaper than isinstance."""


def _not_numeric(name: str, value: object) -> TypeError:
    return TypeError(f"{name} needs a number, got {type(value).__name__}")


def _as_text(value: object) -> str:
    """bytes -> str (UTF-8, undecodable bytes replaced); str unchanged; else str()."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return str(value)


@_builtin("scale")
def scale(factor: float) -> Operator:
    """Multiply a number by ``factor`` (e.g. 8 for octets -> bits)."""
    factor = _number("factor", factor)
    numeric = _NUMERIC

    def op(value: Any, ctx: OperatorContext) -> Any:
        if type(value) in numeric or isinstance(value, (int, float)):
            return value * factor
        if value is None:
            return None
        raise _not_numeric("scale", value)
    return op


@_builtin("offset")
def offset(value: float) -> Operator:
    """Add ``value`` to a number (e.g. -273.15 for kelvin -> celsius)."""
    delta = _number("value", value)
    numeric = _NUMERIC

    def op(value: Any, ctx: OperatorContext) -> Any:
        if type(value) in numeric or isinstance(value, (int, float)):
            return value + delta
        if value is None:
            return None
        raise _not_numeric("offset", value)
    return op


_HEX_SEPARATORS = re.compile(r"[\s:\-]")


@_builtin("hex_to_text")
def hex_to_text(encoding: str = "utf-8") -> Operator:
    """Decode an octet string as text in ``encoding``.

    ``bytes`` (what the BER codec yields for an OctetString) are decoded
    directly.  A ``str`` is taken as hex, as other tools print octet strings:
    ``"0x4142"``, ``"41 42"``, ``"41:42"`` or ``"4142"`` all give ``"AB"``; a
    string that is not valid hex is returned unchanged.  Undecodable bytes
    are replaced with U+FFFD and trailing NULs are stripped.
    """
    if not isinstance(encoding, str):
        raise OperatorError(f"argument 'encoding' must be a codec name, got {encoding!r}")
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError:
        raise OperatorError(f"argument 'encoding': unknown encoding {encoding!r}") from None

    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            digits = value.strip()
            if digits[:2] in ("0x", "0X"):
                digits = digits[2:]
            try:
                value = bytes.fromhex(_HEX_SEPARATORS.sub("", digits))
            except ValueError:
                return value
        if isinstance(value, (bytes, bytearray)):
            return bytes(value).decode(encoding, "replace").rstrip("\x00")
        raise TypeError(f"hex_to_text needs bytes or a hex string, got {type(value).__name__}")
    return op


@_builtin("octets_to_text")
def octets_to_text() -> Operator:
    """Octet string -> text: UTF-8, undecodable bytes replaced, trailing NULs stripped.

    A ``str`` only loses its trailing NULs; other types become ``str(value)``.
    """
    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        if isinstance(value, bytes):
            return value.rstrip(b"\x00").decode("utf-8", "replace")
        if isinstance(value, str):
            return value.rstrip("\x00")
        return str(value)
    return op


@_builtin("mac")
def mac() -> Operator:
    """Octet string -> ``"aa:bb:cc:dd:ee:ff"`` (lower case).

    Any length is formatted the same way (EUI-64, InfiniBand); an empty
    string (e.g. ifPhysAddress of a loopback) gives ``""``.  A ``str`` is
    returned unchanged.
    """
    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bytes):
            return value.hex(":")
        raise TypeError(f"mac needs bytes, got {type(value).__name__}")
    return op


@_builtin("enum")
def enum(map: Mapping, default: object = None) -> Operator:  # noqa: A002 - profile spelling
    """Map an int or text code to a label: ``{enum: {map: {1: up, 2: down}}}``.

    Keys may be written as numbers or as text (``1`` and ``"1"`` are the same
    key).  Bytes values are looked up as ASCII text.  Unmapped values give
    ``default`` if set, else the original value.
    """
    if not isinstance(map, Mapping) or not map:
        raise OperatorError(f"argument 'map' must be a non-empty mapping of code to label, "
                            f"got {map!r}")
    table: dict[object, object] = {}
    for key, label in map.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise OperatorError(f"argument 'map': key {key!r} must be an integer or a text")
        table[key] = label
        if isinstance(key, int):
            table[str(key)] = label
        elif re.fullmatch(r"[+-]?\d+", key.strip()):
            table[int(key)] = label
    keep = default is None

    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        try:
            return table[value]
        except (KeyError, TypeError):
            return value if keep else default
    return op


@_builtin("regex")
def regex(pattern: str, group: int | str = 1) -> Operator:
    """Extract ``group`` of the first match of ``pattern`` in the text; no match: SKIP.

    ``group`` is a number (0 = the whole match) or a group name.  Bytes are
    decoded as UTF-8 first, numbers converted with ``str``.
    """
    if not isinstance(pattern, str):
        raise OperatorError(f"argument 'pattern' must be a text, got {pattern!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise OperatorError(f"argument 'pattern': bad regular expression {pattern!r}: {exc}") \
            from None
    if isinstance(group, bool) or not isinstance(group, (int, str)):
        raise OperatorError(f"argument 'group' must be a number or a group name, got {group!r}")
    if isinstance(group, int) and not 0 <= group <= compiled.groups:
        raise OperatorError(f"argument 'group': {group} is out of range, the pattern "
                            f"{pattern!r} has {compiled.groups} group(s)")
    if isinstance(group, str) and group not in compiled.groupindex:
        raise OperatorError(f"argument 'group': no group named {group!r} in {pattern!r}")
    search = compiled.search

    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        m = search(value if isinstance(value, str) else _as_text(value))
        if m is None:
            return SKIP
        found = m.group(group)
        return SKIP if found is None else found
    return op


@_builtin("skip_unchanged")
def skip_unchanged(max_age: float | None = None) -> Operator:
    """SKIP a value equal to the last one published, but publish at least every ``max_age`` s.

    Keeps ``(last value, time published)`` in the state.
    """
    max_age = _number("max_age", max_age, allow_none=True)
    if max_age is not None and max_age <= 0:
        raise OperatorError(f"argument 'max_age' must be positive, got {max_age!r}")

    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        state = ctx.state
        key = op.state_key
        last = state.get(key)
        now = ctx.now
        if last is not None and last[0] == value and (
                max_age is None or now - last[1] < max_age):
            return SKIP
        state[key] = (value, now)
        return value
    op.state_key = "skip_unchanged"  # type: ignore[attr-defined]
    return op


_MOD64 = 1 << 64
_MOD = {32: 1 << 32, 64: _MOD64}
_TAG_BITS = {"Counter32": 32, "Counter64": 64}
_UPTIME_WRAP = (1 << 32) / 100.0    # sysUpTime is TimeTicks: wraps after ~497 days


@_builtin("counter_rate")
def counter_rate(bits: int | None = None, per: float = 1.0,
                 max_rate: float | None = None) -> Operator:
    """Counter -> rate: ``(value - previous) / elapsed seconds * per``.

    * The first sample of a key only primes the state: SKIP.
    * Elapsed time zero or negative: SKIP, and restart from this sample.
    * Device rebooted (``ctx.uptime`` below the uptime of the previous sample,
      and not merely sysUpTime wrapping after 497 days): a RESET, SKIP and
      restart from this sample - never a spike.
    * Value lower than the previous one: one wrap, if the counter width is
      known - ``bits`` (32 or 64) or else the tag (Counter32, Counter64).
      A 64-bit "wrap" of 2**63 or more is not believed (it would take decades
      at any line rate; it is a counter reset such as "clear counters"): RESET.
      Unknown width: RESET.
    * ``max_rate`` (in the output unit): a wrap giving a higher rate is a RESET.

    State: ``(value, time, uptime)`` of the last sample.
    """
    if bits is not None and (isinstance(bits, bool) or bits not in (32, 64)):
        raise OperatorError(f"argument 'bits' must be 32 or 64, got {bits!r}")
    per = _number("per", per)
    if per <= 0:
        raise OperatorError(f"argument 'per' must be positive, got {per!r}")
    max_rate = _number("max_rate", max_rate, allow_none=True)
    if max_rate is not None and max_rate <= 0:
        raise OperatorError(f"argument 'max_rate' must be positive, got {max_rate!r}")
    fixed_mod = _MOD[bits] if bits is not None else None
    unit = per != 1.0
    numeric = _NUMERIC

    def op(value: Any, ctx: OperatorContext) -> Any:
        if type(value) not in numeric and not isinstance(value, (int, float)):
            if value is None:
                return None
            raise _not_numeric("counter_rate", value)
        state = ctx.state
        key = op.state_key
        now = ctx.now
        uptime = ctx.uptime
        prev = state.get(key)
        state[key] = (value, now, uptime)
        if prev is None:
            return SKIP
        prev_value, prev_time, prev_uptime = prev
        elapsed = now - prev_time
        if elapsed <= 0:
            return SKIP
        if (uptime is not None and prev_uptime is not None and uptime < prev_uptime
                and prev_uptime + elapsed + 2.0 + 0.1 * elapsed < _UPTIME_WRAP):
            return SKIP                                    # rebooted: reset
        delta = value - prev_value
        if delta < 0:
            mod = fixed_mod if fixed_mod is not None else _MOD.get(_TAG_BITS.get(ctx.tag, 0))
            if mod is None:
                return SKIP                                # unknown width: reset
            delta += mod
            if delta < 0 or (mod == _MOD64 and delta >= 1 << 63):
                return SKIP                                # implausible: reset
            rate = delta * per / elapsed if unit else delta / elapsed
            if max_rate is not None and rate > max_rate:
                return SKIP                                # implausible wrap: reset
            return rate
        return delta * per / elapsed if unit else delta / elapsed
    op.state_key = "counter_rate"  # type: ignore[attr-defined]
    return op


@_builtin("round")
def round_(digits: int = 0) -> Operator:
    """Round a number to ``digits`` decimals (``round(2.675, 2)`` semantics: binary floats)."""
    if isinstance(digits, bool) or not isinstance(digits, int):
        raise OperatorError(f"argument 'digits' must be an integer, got {digits!r}")

    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        if isinstance(value, (int, float)):
            return round(value, digits)
        raise _not_numeric("round", value)
    return op


def _parse_number(value: object, name: str) -> int | float:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        text = value.strip().rstrip("\x00").strip()
        try:
            return int(text)
        except ValueError:
            return float(text)      # ValueError names the text
    raise TypeError(f"{name} cannot convert {type(value).__name__}")


@_builtin("to_float")
def to_float() -> Operator:
    """Number or numeric text (str or bytes, e.g. ``b" 35.5"``) -> float."""
    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        if isinstance(value, (int, float)):
            return float(value)
        return float(_parse_number(value, "to_float"))
    return op


@_builtin("to_int")
def to_int() -> Operator:
    """Number or numeric text -> int; floats are truncated toward zero."""
    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        if isinstance(value, (int, float)):
            return int(value)
        return int(_parse_number(value, "to_int"))
    return op


@_builtin("clamp")
def clamp(min: float | None = None, max: float | None = None) -> Operator:  # noqa: A002
    """Limit a number to ``[min, max]`` (either bound may be omitted, not both)."""
    low = _number("min", min, allow_none=True)
    high = _number("max", max, allow_none=True)
    if low is None and high is None:
        raise OperatorError("give 'min', 'max' or both")
    if low is not None and high is not None and low > high:
        raise OperatorError(f"argument 'min' ({low!r}) is greater than 'max' ({high!r})")

    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        if not isinstance(value, (int, float)):
            raise _not_numeric("clamp", value)
        if low is not None and value < low:
            return low
        if high is not None and value > high:
            return high
        return value
    return op


@_builtin("map_text")
def map_text(lower: bool = False, upper: bool = False, strip: bool = False) -> Operator:
    """Text transforms: ``strip`` (whitespace and NULs), then ``lower`` or ``upper``.

    Bytes are decoded as UTF-8 first (undecodable bytes replaced).
    """
    lower, upper, strip = _bool("lower", lower), _bool("upper", upper), _bool("strip", strip)
    if lower and upper:
        raise OperatorError("'lower' and 'upper' cannot both be true")
    if not (lower or upper or strip):
        raise OperatorError("nothing to do: set 'lower', 'upper' or 'strip' to true")

    def op(value: Any, ctx: OperatorContext) -> Any:
        if value is None:
            return None
        text = value if isinstance(value, str) else _as_text(value)
        if strip:
            text = text.strip(" \t\r\n\x00\x0b\x0c")
        if lower:
            return text.lower()
        if upper:
            return text.upper()
        return text
    return op
