"""Alarm identity (connector_alarms.keys): refs are stable, unambiguous and collision-free."""

from __future__ import annotations

import hashlib
import struct

import pytest

from connector_alarms.keys import REF_VERSION, alarm_ref, reduction_key

# Computed once from the documented function: a ref must never change (every
# stored alarm, every message id ``alarm:<ref>:<seq>`` depends on it).
KNOWN = [
    (("r1", "linkDown", "2"), 8448150169619208827),
    (("sw-paris-01", "unreachable", "unreachable"), 8469091364128458844),
    (("hé", "n", ""), 3216356313237227503),
]


@pytest.mark.parametrize("key, ref", KNOWN)
def test_refs_are_stable(key, ref):
    assert alarm_ref(*key) == ref


def _documented(host: str, name: str, identity: str) -> int:
    # keys.py's docstring, re-implemented: the first 8 bytes, big-endian, of
    # BLAKE2b over length-prefixed UTF-8 parts under the version tag.
    data = REF_VERSION + b"".join(
        struct.pack(">I", len(p.encode())) + p.encode() for p in (host, name, identity))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@pytest.mark.parametrize("key", [k for k, _ in KNOWN] + [("", "", ""), ("a" * 300, "b", "c")])
def test_ref_is_what_the_docstring_says(key):
    assert alarm_ref(*key) == _documented(*key)


def test_refs_fit_an_unsigned_64_bit_column():
    for key, _ in KNOWN:
        assert 0 <= alarm_ref(*key) < 2**64


def test_split_strings_are_unambiguous():
    splits = [("a", "bc", ""), ("ab", "c", ""), ("abc", "", ""), ("", "abc", ""),
              ("", "", "abc"), ("a", "b", "c"), ("a", "", "bc"), ("", "ab", "c")]
    assert len({alarm_ref(*k) for k in splits}) == len(splits)
    # Separators inside values do not help a collision either.
    assert alarm_ref("a,b", "c", "") != alarm_ref("a", "b,c", "")
    assert alarm_ref("a\x00", "b", "") != alarm_ref("a", "\x00b", "")


def test_reduction_key_is_the_hashed_tuple():
    assert reduction_key("h", "n", "i") == ("h", "n", "i")


def test_a_million_distinct_keys_give_a_million_distinct_refs():
    # ~1.4 s here. Keys shaped like real ones: a thousand hosts, a few names,
    # identities that differ in one digit.
    names = ("linkDown", "unreachable", "fanFailure", "errors")
    refs = {alarm_ref(f"host{i % 1000}", names[i % 4], str(i // 4))
            for i in range(1_000_000)}
    assert len(refs) == 1_000_000
