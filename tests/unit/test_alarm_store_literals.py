"""The store's SQL literals for MariaDB/MySQL are PyMySQL's, value for value."""

from __future__ import annotations

import pymysql
import pytest
from pymysql import converters
from hypothesis import given, strategies as st

from connector_alarms.store import _MultiRowInsert, mysql_literal


def pymysql_literal(value, no_backslash: bool = False) -> str:
    """What PyMySQL's executemany writes for ``value`` (Connection.escape)."""
    conn = pymysql.connections.Connection.__new__(pymysql.connections.Connection)
    conn.server_status = 512 if no_backslash else 0
    conn.encoders = converters.encoders
    conn.encoding = "utf8mb4"
    return conn.escape(value)


SAMPLES = ["", "plain", "it's", 'say "hi"', "back\\slash", "nul\0byte", "line\nfeed\r\n",
           "ctrl-z\032", "é ünïcode ✓ 😀", "%s %(x)s %%", "".join(map(chr, range(128))),
           0, 1, -1, 2**63 - 1, 2**64 - 1, True, False, None, 0.0, -0.0, 0.1, 1e300,
           1700000000.123456, 5e-324, 123456789012345678.0, b"\x00\xff'\\bytes"]


@pytest.mark.parametrize("no_backslash", [False, True])
@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_literal_is_pymysqls(value, no_backslash):
    assert mysql_literal(value, no_backslash, lambda v: pymysql_literal(v, no_backslash)) \
        == pymysql_literal(value, no_backslash)


@given(st.one_of(st.text(), st.integers(min_value=-2**63, max_value=2**64 - 1), st.booleans(),
                 st.none(), st.floats(allow_nan=False, allow_infinity=False)),
       st.booleans())
def test_any_value_is_written_as_pymysql_writes_it(value, no_backslash):
    assert mysql_literal(value, no_backslash) == pymysql_literal(value, no_backslash)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_inf_and_nan_are_refused(value):
    with pytest.raises(ValueError):
        mysql_literal(value)


def test_statement_shapes():
    ins = _MultiRowInsert(None, "INSERT INTO t_a (ref, host) VALUES (%(ref)s, %(host)s) "
                                "ON DUPLICATE KEY UPDATE host = VALUES(host)")
    assert ins.names == ["ref", "host"]
    assert ins.prefix.rstrip().endswith("VALUES")
    assert ins.postfix.strip() == "ON DUPLICATE KEY UPDATE host = VALUES(host)"
    # Anything else takes SQLAlchemy's executemany.
    assert _MultiRowInsert(None, "SELECT no_such_column").names is None
    assert _MultiRowInsert(None, "INSERT INTO t (a) VALUES (%(a)s, now())").names is None
