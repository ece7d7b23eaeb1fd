"""Our SNMPv3 engine's boots (snmpEngineBoots), kept on disk across restarts.

RFC 3414 2.2.2: an authoritative engine's boots grow each time it starts, so
that a message authenticated for an earlier run (an inform captured by an
eavesdropper) is out of the time window in the next one.  The engine ID of
the trap receiver is fixed (set, or derived from the node name), so the
count is kept in a small file, one per engine ID, next to the connector's
other state (the [buffer] file's folder): ``traps-engine-<engine ID in
hex>.boots``, holding the decimal count, mode 0600, replaced atomically.
"""

from __future__ import annotations

import os

from snmpwire.usm import INT31_MAX

__all__ = ["BootsError", "boots_path", "next_engine_boots"]


class BootsError(Exception):
    """The boots file cannot be read, is not a count, or cannot be written."""


def boots_path(folder: str, engine_id: bytes) -> str:
    """The boots file of *engine_id* in *folder*."""
    return os.path.join(folder, f"traps-engine-{engine_id.hex()}.boots")


def next_engine_boots(path: str) -> int:
    """Read the boots of the last start at *path* (none: 0), store one more
    and return it.  Raises :class:`BootsError` naming the file."""
    try:
        with open(path, "rb") as f:
            text = f.read(64)
    except FileNotFoundError:
        last = 0
    except OSError as e:
        raise BootsError(f"{path}: cannot read it ({e.strerror or e})") from None
    else:
        try:
            last = int(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise BootsError(f"{path}: expected a count of starts (a whole number), "
                             f"found {text[:20]!r}") from None
        if not 0 <= last <= INT31_MAX:
            raise BootsError(f"{path}: expected a count of starts from 0 to {INT31_MAX}, "
                             f"found {last}")
    if last >= INT31_MAX - 1:
        # RFC 3414 2.2.2: at 2^31-1 the engine is unusable until its engine ID changes.
        raise BootsError(f"{path}: the engine has started {last} times, the most SNMPv3 allows; "
                         "set another [traps] engine_id")
    boots = last + 1
    _write(path, boots)
    return boots


def _write(path: str, boots: int) -> None:
    folder = os.path.dirname(path) or "."
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, f"{boots}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        # The rename itself must survive a power cut, or the next start repeats these boots.
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise BootsError(f"{path}: cannot write it ({e.strerror or e})") from None
