"""The backup buffer's files hold messages: created 0600, the WAL and SHM files too (issue 18)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from connector.buffer import BufferedMessage, SQLiteBuffer


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual default: files 0644
    yield
    os.umask(old)


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def side_files(path: str) -> list[str]:
    return [path + s for s in ("-wal", "-shm", "-journal") if os.path.exists(path + s)]


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_new_buffer_files_are_0600(tmp_path: Path, umask_022, synchronous):
    path = str(tmp_path / "new" / "buffer.db")
    buf = SQLiteBuffer(path, synchronous=synchronous)
    buf.open()
    try:
        buf.append([BufferedMessage("ex", "rk", b"body", "m1", "perf", 1.0)])
        assert mode(path) == 0o600
        wal = side_files(path)
        assert path + "-wal" in wal  # written, not checkpointed yet
        for f in wal:
            assert mode(f) == 0o600, f
        assert mode(str(tmp_path / "new")) == 0o700
    finally:
        buf.close()
    assert mode(path) == 0o600


def test_existing_world_readable_buffer_is_tightened(tmp_path: Path, umask_022):
    path = str(tmp_path / "buffer.db")
    buf = SQLiteBuffer(path)
    buf.open()
    buf.append([BufferedMessage("ex", "rk", b"body", "m1", "perf", 1.0)])
    buf.close()
    os.chmod(path, 0o644)  # as older versions left it
    Path(path + "-wal").write_bytes(b"")
    os.chmod(path + "-wal", 0o644)
    buf = SQLiteBuffer(path)
    buf.open()
    try:
        assert mode(path) == 0o600
        for f in side_files(path):
            assert mode(f) == 0o600, f
        assert buf.count() == 1
    finally:
        buf.close()
