"""SQLite files that hold messages or state: created 0600, whatever the umask.

SQLite creates a missing database file with mode 0644 less the umask, and
gives its ``-wal``, ``-shm`` and ``-journal`` files the database's mode. So an
engine made private (:func:`private_sqlite`) creates the database file itself,
empty and 0600, just before SQLite would: an empty file is an empty database,
and the side files follow. The process umask is left alone: it is the whole
process's, threads included.

A file that already exists keeps its mode: an operator may have opened it to a
group on purpose.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, unquote

import sqlalchemy as sa

__all__ = ["FILE_MODE", "create_private", "private_sqlite", "sqlite_file"]

#: Mode of the SQLite databases Centaure creates: they hold messages and state.
FILE_MODE = 0o600


def create_private(path: str) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; True if it was created.

    Errors other than "it exists" (a missing folder, no right to write there)
    are left to the caller's own open, which names them in its terms.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     FILE_MODE)
    except OSError:
        return False
    try:
        # A umask that takes the owner's rights away would leave a file SQLite cannot use.
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def sqlite_file(filename: str, uri: bool = False) -> str | None:
    """The file ``sqlite3.connect(filename, uri=uri)`` would create, or None.

    None for in-memory and temporary databases, and for URIs opened
    read-only (``mode=ro``): SQLite creates no file for them.
    """
    if uri and filename.startswith("file:"):
        rest = filename[len("file:"):].split("#", 1)[0]
        path, _, query = rest.partition("?")
        if path.startswith("//"):
            # file://localhost/abs or file:///abs: the authority is empty or localhost.
            slash = path.find("/", 2)
            path = path[slash:] if slash >= 0 else ""
        mode = parse_qs(query).get("mode", [""])[-1]
        if mode in ("ro", "memory"):
            return None
        filename = unquote(path)
    if filename in ("", ":memory:"):
        return None
    return filename


def private_sqlite(engine: sa.Engine) -> sa.Engine:
    """``engine``, whose SQLite database file is created 0600 (other dialects unchanged).

    The file is made before each new connection, so one removed while the
    process runs is made 0600 again too.
    """
    if engine.dialect.name != "sqlite":
        return engine

    @sa.event.listens_for(engine, "do_connect")
    def _create_private(_dialect: Any, _record: Any, cargs: list, cparams: dict) -> None:
        if cargs and isinstance(cargs[0], str):
            path = sqlite_file(cargs[0], bool(cparams.get("uri")))
            if path is not None:
                create_private(path)

    return engine
