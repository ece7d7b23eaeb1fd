"""SQL helpers every connector that stores something stands on.

Engines that survive server restarts (:func:`make_engine`; a SQLite file it creates is 0600:
:func:`private_sqlite` for other engines), telling an outage
(retry later) from bad data (:func:`is_outage`), error lines without the
statement's data (:func:`error_summary`), column types exact on every dialect
(:class:`UInt64`, :func:`key_string`, :func:`long_text`, :func:`long_binary`),
table prefixes (:data:`PREFIX_RE`) and
the names Alembic needs per prefix (:func:`version_table`, :func:`table_prefix`).
"""

from __future__ import annotations

import re
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from connector.sqlfile import private_sqlite

__all__ = ["HOST_MAX", "PREFIX_RE", "VERSION_TABLE", "UInt64", "error_summary", "is_outage",
           "key_string", "long_binary", "long_text", "make_engine", "private_sqlite",
           "table_prefix", "version_table"]

#: Longest host name a table stores (characters; a message's host is at most 240).
HOST_MAX = 255

#: Table prefixes: lower case, a letter first; the longest table name stays short.
PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")

def make_engine(url: str) -> sa.Engine:
    """An engine for ``url`` that survives server restarts.

    ``pool_pre_ping`` replaces connections the server dropped (a restart)
    before they are used. SQLite gets WAL and a busy timeout so readers
    (``centaure query``, the demo's view) never block the writer for long.
    A SQLite file it creates is 0600 (messages and state), whatever the umask.
    """
    engine = private_sqlite(sa.create_engine(url, pool_pre_ping=True, pool_recycle=3600))
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
    return engine


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached (retry later)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError,
                        sa.exc.TimeoutError, sa.exc.DisconnectionError, ConnectionError)):
        return True
    return False


def error_summary(exc: BaseException) -> str:
    """An error's first line, without SQLAlchemy's statement and parameters (no data leaks)."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        exc = exc.orig
    return (str(exc).splitlines() or [type(exc).__name__])[0][:500]


_U64 = 2**64


class UInt64(sa.types.TypeDecorator):
    """An unsigned 64-bit integer, exact on every supported dialect."""

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.BIGINT(unsigned=True))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.NUMERIC(20, 0))
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = int(value)
        if not 0 <= value < _U64:
            raise ValueError(f"not an unsigned 64-bit integer: {value}")
        if dialect.name == "sqlite" and value >= 2**63:
            return value - _U64
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, Decimal):
            return int(value)
        value = int(value)
        return value + _U64 if value < 0 else value


def key_string(length: int) -> sa.String:
    """A string that is part of a key: compared byte for byte on MariaDB too.

    MariaDB's default collations are case-insensitive and pad spaces, so
    "R1" and "r1 " would collide under a unique key; SQLite and PostgreSQL
    compare exactly already.
    """
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb")


def long_text() -> sa.Text:
    """Text without a practical limit: MEDIUMTEXT on MySQL/MariaDB (TEXT is 64 KiB there)."""
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def long_binary() -> sa.LargeBinary:
    """Bytes without a practical limit: MEDIUMBLOB on MySQL/MariaDB (BLOB is 64 KiB there)."""
    return sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


#: Name of Alembic's version table, after the prefix.
VERSION_TABLE = "alembic_version"


def version_table(prefix: str) -> str:
    """The version table of the layout ``prefix``."""
    return f"{prefix}{VERSION_TABLE}"


def table_prefix() -> str:
    """The table prefix of the migration being run (validated)."""
    from alembic import context

    prefix = context.config.attributes.get("table_prefix", "")
    if prefix and not PREFIX_RE.match(prefix):
        raise ValueError(f"invalid table prefix {prefix!r}: must match {PREFIX_RE.pattern}")
    return prefix
