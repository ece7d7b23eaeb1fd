"""Operators: registry, built-ins, pipelines, state store, user operators."""

from __future__ import annotations

import json
import pickle
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centaure_shared.metric import MetricSpec, OperatorCall
from centaure_shared.operators import (
    SKIP,
    OperatorContext,
    OperatorError,
    Pipeline,
    PipelineError,
    Registry,
    StateStore,
    compile_pipeline,
    default_registry,
    load_user_operators,
    stateless,
)

BUILTINS = ["clamp", "counter_rate", "enum", "hex_to_text", "mac", "map_text",
            "octets_to_text", "offset", "regex", "round", "scale", "skip_unchanged",
            "to_float", "to_int"]


def build(name: str, **args):
    return default_registry().build(OperatorCall(name, args))


def ctx(now: float = 0.0, state: dict | None = None, uptime: float | None = None,
        tag: str = "") -> OperatorContext:
    return OperatorContext(now, "dev1", "m", "1", {} if state is None else state, uptime, tag)


def pipeline(*calls: tuple[str, dict] | str, name: str = "m") -> Pipeline:
    ops = tuple(OperatorCall(c) if isinstance(c, str) else OperatorCall(c[0], c[1])
                for c in calls)
    return compile_pipeline(default_registry(), MetricSpec(name, "1.3.6.1", operators=ops))


def error_of(call: OperatorCall, registry: Registry | None = None) -> str:
    with pytest.raises(OperatorError) as info:
        (registry or default_registry()).build(call)
    return str(info.value)


# --------------------------------------------------------------------------- registry

def test_default_registry_names():
    assert default_registry().names() == BUILTINS


def test_default_registry_is_independent_each_time():
    a = default_registry()
    a.register("mine", stateless(lambda v, c: v))
    assert "mine" in a and "mine" not in default_registry()


def test_unknown_operator_lists_known_ones():
    assert error_of(OperatorCall("sacle", {"factor": 8})) == (
        "unknown operator 'sacle'; known operators: " + ", ".join(BUILTINS))


def test_missing_argument():
    assert error_of(OperatorCall("scale")) == (
        "operator 'scale': missing argument 'factor'; allowed arguments: factor")


def test_unexpected_argument_lists_allowed():
    assert error_of(OperatorCall("counter_rate", {"bit": 32})) == (
        "operator 'counter_rate': unexpected argument 'bit'; allowed arguments: "
        "bits=None, per=1.0, max_rate=None")
    assert error_of(OperatorCall("mac", {"sep": "-"})) == (
        "operator 'mac': unexpected argument 'sep'; allowed arguments: "
        "none (this operator takes no arguments)")


def test_bad_argument_values():
    assert error_of(OperatorCall("scale", {"factor": "8"})) == (
        "operator 'scale': argument 'factor' must be a finite number, got '8'")
    assert error_of(OperatorCall("scale", {"factor": True})) == (
        "operator 'scale': argument 'factor' must be a finite number, got True")
    assert error_of(OperatorCall("counter_rate", {"bits": 16})) == (
        "operator 'counter_rate': argument 'bits' must be 32 or 64, got 16")
    assert error_of(OperatorCall("regex", {"pattern": "(a"})).startswith(
        "operator 'regex': argument 'pattern': bad regular expression '(a': ")
    assert error_of(OperatorCall("regex", {"pattern": "a"})) == (
        "operator 'regex': argument 'group': 1 is out of range, the pattern 'a' has 0 group(s)")
    assert error_of(OperatorCall("regex", {"pattern": "(?P<x>a)", "group": "y"})) == (
        "operator 'regex': argument 'group': no group named 'y' in '(?P<x>a)'")
    assert error_of(OperatorCall("hex_to_text", {"encoding": "klingon"})) == (
        "operator 'hex_to_text': argument 'encoding': unknown encoding 'klingon'")
    assert error_of(OperatorCall("clamp", {"min": 5, "max": 1})) == (
        "operator 'clamp': argument 'min' (5) is greater than 'max' (1)")
    assert error_of(OperatorCall("clamp")) == "operator 'clamp': give 'min', 'max' or both"
    assert error_of(OperatorCall("enum", {"map": {}})) == (
        "operator 'enum': argument 'map' must be a non-empty mapping of code to label, got {}")
    assert error_of(OperatorCall("map_text", {"lower": True, "upper": True})) == (
        "operator 'map_text': 'lower' and 'upper' cannot both be true")
    assert error_of(OperatorCall("skip_unchanged", {"max_age": 0})) == (
        "operator 'skip_unchanged': argument 'max_age' must be positive, got 0")
    assert error_of(OperatorCall("scale", [8])) == (  # type: ignore[arg-type]
        "operator 'scale': arguments must be a mapping of name to value, got [8]; "
        "allowed arguments: factor")


def test_register_decorator_and_duplicates():
    r = Registry()

    @r.register("double")
    def double():
        return lambda v, c: v * 2

    assert r.build(OperatorCall("double"))(4, ctx()) == 8
    with pytest.raises(OperatorError, match=r"^operator name 'double' is already taken$"):
        r.register("double", double)
    with pytest.raises(OperatorError, match=r"^operator name 'no-dash' is not an identifier$"):
        r.register("no-dash", double)
    with pytest.raises(OperatorError, match="is not callable"):
        r.register("x", 42)  # type: ignore[arg-type]


def test_factory_returning_non_callable():
    r = Registry()
    r.register("bad", lambda: 3)
    assert error_of(OperatorCall("bad"), r) == (
        "operator 'bad': its factory returned 3, not a callable (value, ctx)")


def test_factory_errors_name_the_operator():
    r = Registry()

    def picky(n):
        raise ValueError(f"n must be even, got {n}")

    r.register("picky", picky)
    assert error_of(OperatorCall("picky", {"n": 3}), r) == "operator 'picky': n must be even, got 3"


def test_factory_with_kwargs_accepts_anything():
    r = Registry()
    r.register("kw", lambda **kw: (lambda v, c: (v, kw)))
    assert r.build(OperatorCall("kw", {"a": 1}))(0, ctx()) == (0, {"a": 1})


def test_skip_is_a_singleton():
    assert repr(SKIP) == "SKIP"
    assert pickle.loads(pickle.dumps(SKIP)) is SKIP
    assert type(SKIP)() is SKIP


# --------------------------------------------------------------------------- simple built-ins

def test_scale():
    op = build("scale", factor=8)
    assert op(10, ctx()) == 80 and isinstance(op(10, ctx()), int)
    assert build("scale", factor=0.01)(250, ctx()) == 2.5
    assert op(None, ctx()) is None
    with pytest.raises(TypeError, match="scale needs a number, got str"):
        op("ab", ctx())          # never "ab" * 8
    with pytest.raises(TypeError):
        op(b"ab", ctx())


def test_offset():
    op = build("offset", value=-273.15)
    assert op(300, ctx()) == pytest.approx(26.85)
    assert build("offset", value=1)(1, ctx()) == 2
    assert op(None, ctx()) is None
    with pytest.raises(TypeError):
        op("1", ctx())


def test_hex_to_text():
    op = build("hex_to_text")
    assert op(b"AB", ctx()) == "AB"
    assert op("0x4142", ctx()) == "AB"
    assert op("41 42", ctx()) == "AB"
    assert op("41:42", ctx()) == "AB"
    assert op(" 0X4142 ", ctx()) == "AB"
    assert op("c3a9", ctx()) == "é"
    assert op("not hex", ctx()) == "not hex"           # already text: unchanged
    assert op("414", ctx()) == "414"                   # odd length: unchanged
    assert op(b"AB\x00\x00", ctx()) == "AB"
    assert op(b"\xff", ctx()) == "\ufffd"
    assert op(None, ctx()) is None
    assert build("hex_to_text", encoding="latin-1")("e9", ctx()) == "é"
    assert build("hex_to_text", encoding="utf-16-be")(b"\x00A", ctx()) == "A"
    with pytest.raises(TypeError):
        op(12, ctx())


def test_octets_to_text():
    op = build("octets_to_text")
    assert op(b"GigabitEthernet0/1", ctx()) == "GigabitEthernet0/1"
    assert op(b"eth0\x00\x00\x00", ctx()) == "eth0"
    assert op(b"a\xffb", ctx()) == "a\ufffdb"
    assert op(b"", ctx()) == ""
    assert op("x\x00", ctx()) == "x"
    assert op(7, ctx()) == "7"
    assert op(None, ctx()) is None


def test_mac():
    op = build("mac")
    assert op(bytes.fromhex("AABBCCDDEEFF"), ctx()) == "aa:bb:cc:dd:ee:ff"
    assert op(b"\x00\x1b\x21\x00\x00\x01", ctx()) == "00:1b:21:00:00:01"
    assert op(b"", ctx()) == ""
    assert op(bytes(8), ctx()) == "00:00:00:00:00:00:00:00"
    assert op("aa:bb", ctx()) == "aa:bb"
    assert op(None, ctx()) is None
    with pytest.raises(TypeError):
        op(5, ctx())


def test_enum():
    op = build("enum", map={1: "up", 2: "down", "7": "lowerLayerDown"})
    assert op(1, ctx()) == "up"
    assert op("2", ctx()) == "down"
    assert op(7, ctx()) == "lowerLayerDown"
    assert op(b"1", ctx()) == "up"
    assert op(5, ctx()) == 5                            # unmapped, no default: original
    assert op(None, ctx()) is None
    op = build("enum", map={"on": 1, "off": 0}, default=-1)
    assert op("on", ctx()) == 1
    assert op("??", ctx()) == -1
    assert op(3.5, ctx()) == -1


def test_regex():
    op = build("regex", pattern=r"(\d+(?:\.\d+)?) ?C")
    assert op("Temp: 35.5 C", ctx()) == "35.5"
    assert op(b"Temp: 40C", ctx()) == "40"
    assert op("no temperature", ctx()) is SKIP
    assert op(None, ctx()) is None
    assert build("regex", pattern="v[0-9]+", group=0)("fw v12 ok", ctx()) == "v12"
    assert build("regex", pattern=r"(?P<ver>\d+)", group="ver")(1234, ctx()) == "1234"
    assert build("regex", pattern=r"(a)|(b)", group=2)("a", ctx()) is SKIP  # group unused


def test_round_and_conversions():
    assert build("round", digits=2)(3.14159, ctx()) == 3.14
    assert build("round")(2.6, ctx()) == 3.0
    assert build("round", digits=1)(None, ctx()) is None
    f, i = build("to_float"), build("to_int")
    assert f(3, ctx()) == 3.0 and isinstance(f(3, ctx()), float)
    assert f(b" 35.5\x00", ctx()) == 35.5
    assert f("1e3", ctx()) == 1000.0
    assert i("42", ctx()) == 42 and i(b"-7", ctx()) == -7
    assert i(3.9, ctx()) == 3 and i("3.9", ctx()) == 3
    assert i(str(2**70), ctx()) == 2**70                # no float rounding
    assert f(None, ctx()) is None and i(None, ctx()) is None
    with pytest.raises(ValueError):
        f("N/A", ctx())
    with pytest.raises(TypeError):
        i([1], ctx())


def test_clamp():
    op = build("clamp", min=0, max=100)
    assert [op(v, ctx()) for v in (-5, 0, 50, 100, 101.5)] == [0, 0, 50, 100, 100]
    assert build("clamp", min=0)(-1, ctx()) == 0
    assert build("clamp", max=10)(11, ctx()) == 10
    assert op(None, ctx()) is None


def test_map_text():
    assert build("map_text", lower=True)("GigE", ctx()) == "gige"
    assert build("map_text", upper=True, strip=True)(b" ok\x00", ctx()) == "OK"
    assert build("map_text", strip=True)("  a b \n", ctx()) == "a b"
    assert build("map_text", lower=True)(None, ctx()) is None


# --------------------------------------------------------------------------- skip_unchanged

def test_skip_unchanged_without_max_age():
    op = build("skip_unchanged")
    state: dict = {}
    out = [op(v, ctx(t, state)) for t, v in enumerate([1, 1, 2, 2, 2, 1, 1])]
    assert out == [1, SKIP, 2, SKIP, SKIP, 1, SKIP]
    assert op(None, ctx(9, state)) is None


def test_skip_unchanged_publishes_at_least_every_max_age():
    op = build("skip_unchanged", max_age=30)
    state: dict = {}
    times = [0, 10, 20, 29.9, 30, 40, 59, 60, 65]
    out = [op("same", ctx(t, state)) for t in times]
    assert out == ["same", SKIP, SKIP, SKIP, "same", SKIP, SKIP, "same", SKIP]
    assert op("other", ctx(66, state)) == "other"       # a change is published at once
    assert op("other", ctx(67, state)) is SKIP


def test_skip_unchanged_state_is_per_key():
    op = build("skip_unchanged")
    a, b = {}, {}
    assert op(5, ctx(0, a)) == 5
    assert op(5, ctx(0, b)) == 5
    assert op(5, ctx(1, a)) is SKIP


# --------------------------------------------------------------------------- counter_rate

def rate_series(op, samples, tag="Counter32"):
    """samples: (time, value) or (time, value, uptime)."""
    state: dict = {}
    out = []
    for s in samples:
        t, v = s[0], s[1]
        up = s[2] if len(s) > 2 else None
        out.append(op(v, ctx(t, state, up, tag)))
    return out


def test_counter_rate_first_sample_skipped_then_rate():
    op = build("counter_rate")
    assert rate_series(op, [(0, 1000), (10, 2000), (20, 2500)]) == [SKIP, 100.0, 50.0]


def test_counter32_wrap_by_tag():
    op = build("counter_rate")
    assert rate_series(op, [(0, 2**32 - 100), (10, 50)]) == [SKIP, 15.0]


def test_counter32_wrap_by_bits_argument():
    op = build("counter_rate", bits=32)
    assert rate_series(op, [(0, 2**32 - 100), (10, 50)], tag="Gauge32") == [SKIP, 15.0]


def test_counter64_wrap():
    op = build("counter_rate")
    assert rate_series(op, [(0, 2**64 - 100), (10, 50)], tag="Counter64") == [SKIP, 15.0]
    op = build("counter_rate", bits=64)
    assert rate_series(op, [(0, 2**64 - 100), (10, 50)], tag="") == [SKIP, 15.0]


def test_counter64_cleared_is_a_reset_not_a_wrap():
    # "clear counters": going from 10**12 to 5 would be a 1.8e19 "wrap"
    op = build("counter_rate")
    assert rate_series(op, [(0, 10**12), (10, 5), (20, 105)], tag="Counter64") == [
        SKIP, SKIP, 10.0]


def test_decrease_with_unknown_width_is_a_reset():
    op = build("counter_rate")
    assert rate_series(op, [(0, 500), (10, 100), (20, 300)], tag="Integer") == [
        SKIP, SKIP, 20.0]


def test_reboot_is_a_reset_not_a_wrap():
    op = build("counter_rate")
    samples = [(0, 4_000_000_000, 1000.0), (60, 4_000_600_000, 1060.0),
               (120, 30_000, 15.0),             # rebooted: uptime went back
               (180, 90_000, 75.0)]
    out = rate_series(op, samples)
    assert out == [SKIP, 10_000.0, SKIP, 1000.0]
    assert all(r is SKIP or r < 20_000 for r in out)   # no spike


def test_reboot_detected_even_when_counter_went_up():
    op = build("counter_rate")
    out = rate_series(op, [(0, 100, 5000.0), (60, 900, 30.0), (120, 1500, 90.0)])
    assert out == [SKIP, SKIP, 10.0]


def test_sysuptime_wrap_is_not_a_reboot():
    wrap = 2**32 / 100                                  # sysUpTime wraps after ~497 days
    op = build("counter_rate")
    out = rate_series(op, [(0, 1000, wrap - 30), (60, 1600, 30.0)])
    assert out == [SKIP, 10.0]


def test_max_rate_turns_implausible_wrap_into_reset():
    op = build("counter_rate", max_rate=1000)
    # 32-bit "wrap" from 1e9 to 10: 3.29e9 in 10 s > 1000/s -> counters were cleared
    assert rate_series(op, [(0, 1_000_000_000), (10, 10), (20, 5010)]) == [SKIP, SKIP, 500.0]
    # a plausible wrap under max_rate is kept
    assert rate_series(op, [(0, 2**32 - 100), (10, 50)]) == [SKIP, 15.0]


def test_zero_or_negative_elapsed_is_skipped():
    op = build("counter_rate")
    assert rate_series(op, [(10, 100), (10, 200), (20, 300)]) == [SKIP, SKIP, 10.0]
    assert rate_series(op, [(10, 100), (5, 200), (15, 300)]) == [SKIP, SKIP, 10.0]


def test_counter_rate_per_and_none():
    op = build("counter_rate", per=60)
    assert rate_series(op, [(0, 0), (30, 10)]) == [SKIP, 20.0]
    state: dict = {}
    assert op(None, ctx(0, state)) is None and state == {}
    with pytest.raises(TypeError):
        op("12", ctx(0, state))


# --------------------------------------------------------------------------- pipelines

def test_empty_pipeline_is_identity():
    p = pipeline()
    assert len(p) == 0 and not p.needs_state
    obj = object()
    assert p.apply(obj, ctx()) is obj
    assert p.apply(None, ctx()) is None
    assert repr(p) == "Pipeline(m: identity)"


def test_chain_counter_rate_then_scale_is_bits_per_second():
    p = pipeline(("counter_rate", {}), ("scale", {"factor": 8}))
    assert p.needs_state and p.names == ("counter_rate", "scale")
    state: dict = {}
    out = [p.apply(v, ctx(t, state, tag="Counter64")) for t, v in
           [(0, 1_000), (10, 126_000), (20, 126_000)]]
    assert out == [SKIP, 100_000.0, 0.0]               # 12_500 octets/s = 100 kbit/s


def test_chain_text_then_enum_then_skip_unchanged():
    p = pipeline("octets_to_text", ("map_text", {"lower": True}),
                 ("enum", {"map": {"up": 1, "down": 0}}), "skip_unchanged")
    state: dict = {}
    out = [p.apply(v, ctx(t, state)) for t, v in
           enumerate([b"UP\x00", b"up", b"Down", b"DOWN", b"up"])]
    assert out == [1, SKIP, 0, SKIP, 1]


def test_two_stateful_operators_do_not_share_state():
    # rate of a rate (acceleration), each counter_rate keeps its own entry
    p = pipeline("counter_rate", "counter_rate")
    state: dict = {}
    out = [p.apply(v, ctx(t, state, tag="Counter64")) for t, v in
           [(0, 0), (1, 10), (2, 30), (3, 60)]]
    assert out == [SKIP, SKIP, 10.0, 10.0]
    assert sorted(state) == ["0:counter_rate", "1:counter_rate"]


def test_pipeline_stops_at_skip_and_none():
    calls = []
    r = default_registry()
    r.register("spy", stateless(lambda v, c: calls.append(v) or v))
    r.register("nullify", stateless(lambda v, c: None))
    spec = MetricSpec("m", "1", operators=(OperatorCall("regex", {"pattern": "(x)"}),
                                           OperatorCall("spy")))
    p = compile_pipeline(r, spec)
    assert p.apply("abc", ctx()) is SKIP and calls == []
    spec = MetricSpec("m", "1", operators=(OperatorCall("nullify"), OperatorCall("spy")))
    assert compile_pipeline(r, spec).apply(1, ctx()) is None and calls == []


def test_pipeline_wraps_runtime_errors():
    p = pipeline(("to_float", {}), ("scale", {"factor": 2}), name="temp")
    c = OperatorContext(0.0, "sw1", "temp", "3", {})
    with pytest.raises(PipelineError) as info:
        p.apply(b"N/A", c)
    e = info.value
    assert (e.device, e.metric, e.index, e.operator, e.value) == ("sw1", "temp", "3",
                                                                 "to_float", b"N/A")
    assert str(e).startswith("operator 'to_float' failed on sw1 temp[3] value b'N/A': "
                             "ValueError: ")
    assert isinstance(e.__cause__, ValueError)
    single = pipeline(("scale", {"factor": 2}))
    with pytest.raises(PipelineError, match=r"^operator 'scale' failed on sw1 temp\[3\] "
                                            r"value 'x': TypeError: scale needs a number, "
                                            r"got str$"):
        single.apply("x", c)


def test_compile_errors_name_the_metric():
    with pytest.raises(OperatorError) as info:
        pipeline(("scale", {"factor": 8}), ("sclae", {"factor": 8}), name="ifInOctets")
    assert str(info.value).startswith("metric 'ifInOctets': unknown operator 'sclae'; known")


# --------------------------------------------------------------------------- state store

def test_state_store_get_and_forget():
    s = StateStore()
    a = s.get("r1", "ifInOctets", "1")
    assert a == {} and s.get("r1", "ifInOctets", "1") is a
    s.get("r1", "ifInOctets", "2")
    s.get("r2", "ifInOctets", "1")
    assert len(s) == 3 and s.devices() == ["r1", "r2"] and "r1" in s
    assert s.device("r1")[("ifInOctets", "1")] is a
    s.discard("r1", "ifInOctets", "2")
    assert len(s) == 2
    assert s.forget_device("r1") is True and s.forget_device("r1") is False
    assert s.devices() == ["r2"]
    assert s.get("r1", "ifInOctets", "1") is not a


def test_state_moves_between_nodes_as_plain_data():
    p = pipeline("counter_rate", ("scale", {"factor": 8}))
    node_a = StateStore()
    c = node_a.context("r1", "ifInOctets", "1", 0.0, uptime=100.0, tag="Counter32")
    assert p.apply(1000, c) is SKIP
    node_a.context("r2", "ifInOctets", "1", 0.0)     # an empty key is not exported
    exported = node_a.export_device("r1")
    assert exported == {"ifInOctets": {"1": {"0:counter_rate": (1000, 0.0, 100.0)}}}
    wire = json.loads(json.dumps(exported))            # tuples become lists on the wire
    assert node_a.export_device("r2") == {}
    node_a.forget_device("r1")

    node_b = StateStore()
    node_b.get("r1", "old", "9")
    node_b.import_device("r1", wire)
    assert node_b.export_device("r1").keys() == {"ifInOctets"}     # replaced
    c = node_b.context("r1", "ifInOctets", "1", 10.0, uptime=110.0, tag="Counter32")
    assert p.apply(2000, c) == 800.0                   # continues without a gap
    node_b.import_device("r1", {"other": {"2": {"k": 1}}}, replace=False)
    assert sorted(node_b.export_device("r1")) == ["ifInOctets", "other"]


def test_export_is_a_copy():
    s = StateStore()
    s.get("r1", "m", "1")["k"] = 1
    out = s.export_device("r1")
    out["m"]["1"]["k"] = 2
    assert s.get("r1", "m", "1")["k"] == 1


# --------------------------------------------------------------------------- user operators

@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    """A package ``centaure_user_ops`` with a module ``ops``, importable for one test."""
    pkg = tmp_path / "centaure_user_ops"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ops.py").write_text(textwrap.dedent("""
        from centaure_shared.operators import stateless

        def celsius(scale_by=1.0):
            def op(value, ctx):
                return None if value is None else (value - 32) * 5 / 9 * scale_by
            return op

        class Tools:
            @staticmethod
            def negate():
                return lambda value, ctx: None if value is None else -value

        upper = stateless(lambda value, ctx: value.upper())
        NOT_CALLABLE = 42
    """))
    (pkg / "broken.py").write_text("import centaure_no_such_dependency\n")
    (pkg / "raising.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "centaure_user_ops"
    for name in list(sys.modules):
        if name.startswith("centaure_user_ops"):
            del sys.modules[name]


def load_error(specs: list[str], registry: Registry | None = None) -> str:
    r = registry or default_registry()
    before = r.names()
    with pytest.raises(OperatorError) as info:
        load_user_operators(r, specs)
    assert r.names() == before                          # all or nothing
    return str(info.value)


def test_load_user_operators_good(user_pkg):
    r = default_registry()
    names = load_user_operators(r, [
        "fahrenheit_to_c = centaure_user_ops.ops:celsius",
        "  negate=centaure_user_ops.ops:Tools.negate  ",
        "shout = centaure_user_ops.ops:upper",
    ])
    assert names == ["fahrenheit_to_c", "negate", "shout"]
    spec = MetricSpec("t", "1", operators=(OperatorCall("fahrenheit_to_c", {"scale_by": 2}),
                                           OperatorCall("negate")))
    assert compile_pipeline(r, spec).apply(212, ctx()) == -200.0
    assert r.build(OperatorCall("shout"))("a", ctx()) == "A"
    assert error_of(OperatorCall("fahrenheit_to_c", {"factor": 2}), r) == (
        "operator 'fahrenheit_to_c': unexpected argument 'factor'; "
        "allowed arguments: scale_by=1.0")


def test_load_user_operator_module_missing(user_pkg):
    assert load_error(["x = centaure_user_ops.nope:f"]) == (
        "user operator 'x': module 'centaure_user_ops.nope' not found")
    assert load_error(["x = centaure_no_such_pkg.mod:f"]) == (
        "user operator 'x': module 'centaure_no_such_pkg.mod' not found")


def test_load_user_operator_module_fails_to_import(user_pkg):
    assert load_error(["x = centaure_user_ops.broken:f"]) == (
        "user operator 'x': importing module 'centaure_user_ops.broken' failed: "
        "ModuleNotFoundError: No module named 'centaure_no_such_dependency'")
    assert load_error(["x = centaure_user_ops.raising:f"]) == (
        "user operator 'x': importing module 'centaure_user_ops.raising' failed: "
        "RuntimeError: boom at import")


def test_load_user_operator_attribute_missing(user_pkg):
    assert load_error(["x = centaure_user_ops.ops:nothing"]) == (
        "user operator 'x': module 'centaure_user_ops.ops' has no attribute 'nothing'")
    assert load_error(["x = centaure_user_ops.ops:Tools.nothing"]) == (
        "user operator 'x': module 'centaure_user_ops.ops' has no attribute 'Tools.nothing'")


def test_load_user_operator_not_callable(user_pkg):
    assert load_error(["x = centaure_user_ops.ops:NOT_CALLABLE"]) == (
        "user operator 'x': centaure_user_ops.ops:NOT_CALLABLE is not callable (it is a int)")


def test_load_user_operator_duplicate_name(user_pkg):
    assert load_error(["scale = centaure_user_ops.ops:celsius"]) == (
        "user operator 'scale': the name is already taken")
    assert load_error(["c = centaure_user_ops.ops:celsius",
                       "c = centaure_user_ops.ops:upper"]) == (
        "user operator 'c': the name is already taken")


def test_load_user_operator_malformed_spec():
    assert load_error(["celsius centaure_user_ops.ops:celsius"]) == (
        "user operator 'celsius centaure_user_ops.ops:celsius': "
        "expected 'name = package.module:callable'")
    assert load_error(["c = os.path"]) == (
        "user operator 'c = os.path': expected 'name = package.module:callable'")
    assert load_error(["c = __import__('os'):system"]).endswith(
        "expected 'name = package.module:callable'")


def test_load_user_operators_reports_every_problem(user_pkg):
    assert load_error(["good = centaure_user_ops.ops:celsius",
                       "a = centaure_user_ops.ops:missing",
                       "b = centaure_user_ops.ops:NOT_CALLABLE"]) == (
        "user operator 'a': module 'centaure_user_ops.ops' has no attribute 'missing'\n"
        "user operator 'b': centaure_user_ops.ops:NOT_CALLABLE is not callable (it is a int)")


# --------------------------------------------------------------------------- properties

@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 2**32 - 1),
       steps=st.lists(st.tuples(st.integers(0, 2**32 - 1),
                                st.floats(0.001, 1e5, allow_nan=False)),
                      min_size=1, max_size=40),
       by_tag=st.booleans())
def test_counter32_rate_is_exact_through_any_wraps(start, steps, by_tag):
    op = build("counter_rate") if by_tag else build("counter_rate", bits=32)
    tag = "Counter32" if by_tag else "Gauge32"
    state: dict = {}
    t, raw, uptime = 1000.0, start, 50.0
    assert op(raw, ctx(t, state, uptime, tag)) is SKIP
    for delta, dt in steps:
        t_new = t + dt
        if t_new <= t:                                  # dt lost in float rounding
            continue
        uptime += dt
        raw = (raw + delta) % 2**32
        got = op(raw, ctx(t_new, state, uptime, tag))
        assert got == delta / (t_new - t)
        t = t_new


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 2**64 - 1),
       steps=st.lists(st.tuples(st.integers(0, 2**63 - 1), st.floats(0.001, 1e5)),
                      min_size=1, max_size=20))
def test_counter64_rate_is_exact_through_any_wraps(start, steps):
    op = build("counter_rate")
    state: dict = {}
    t, raw = 0.0, start
    op(raw, ctx(t, state, None, "Counter64"))
    for delta, dt in steps:
        t_new = t + dt
        if t_new <= t:
            continue
        raw = (raw + delta) % 2**64
        assert op(raw, ctx(t_new, state, None, "Counter64")) == delta / (t_new - t)
        t = t_new


ANY_CALLS = [
    ("scale", {"factor": 8}), ("offset", {"value": 1}), ("hex_to_text", {}),
    ("octets_to_text", {}), ("mac", {}), ("enum", {"map": {1: "up"}}),
    ("regex", {"pattern": "(.)"}), ("skip_unchanged", {"max_age": 5}),
    ("counter_rate", {}), ("round", {"digits": 1}), ("to_float", {}), ("to_int", {}),
    ("clamp", {"min": 0, "max": 1}), ("map_text", {"lower": True}),
]


def test_every_builtin_is_in_the_none_test():
    assert sorted(name for name, _ in ANY_CALLS) == BUILTINS


@settings(max_examples=200, deadline=None)
@given(chain=st.lists(st.sampled_from(ANY_CALLS), max_size=6),
       tag=st.sampled_from(["NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null"]),
       now=st.floats(allow_nan=False))
def test_pipelines_never_raise_on_none(chain, tag, now):
    p = pipeline(*chain)
    state: dict = {}
    assert p.apply(None, OperatorContext(now, "d", "m", "1", state, None, tag)) is None
    assert state == {}
    for name, args in chain:                            # and each operator alone
        assert build(name, **args)(None, ctx(now, state, tag=tag)) is None


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, 3), max_size=30),
       gaps=st.lists(st.floats(0.1, 20), min_size=30, max_size=30))
def test_skip_unchanged_publishes_exactly_changes_and_stale(values, gaps):
    op = build("skip_unchanged", max_age=10)
    state: dict = {}
    last = None
    t = 0.0
    for v, gap in zip(values, gaps):
        t += gap
        out = op(v, ctx(t, state))
        expect_publish = last is None or last[0] != v or t - last[1] >= 10
        assert (out == v) if expect_publish else (out is SKIP)
        if expect_publish:
            last = (v, t)
