"""The console's users: a YAML file of names, roles and argon2 password hashes.

::

    users:
      alice: {role: operator, password: "$argon2id$v=19$m=65536,t=3,p=4$..."}
      bob: {role: viewer, password: "$argon2id$..."}

Only hashes are stored (argon2id, ``argon2-cffi``'s defaults); the file is
written 0600 by ``centaure console add-user``. ``viewer`` reads the pages,
``operator`` also acks, unacks, clears and annotates alarms.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile

import yaml
from argon2 import PasswordHasher
from twisted.logger import Logger
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zope.interface import implementer

from centaure_shared.yamlfile import YamlError, load_yaml_file

from .interfaces import IAuthenticator

__all__ = ["ROLES", "User", "UserFile", "UsersError", "hash_password", "write_user"]

ROLES = ("viewer", "operator")
#: Names as they appear in the correlator's records (acked_by) and the log.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASHER = PasswordHasher()
_log = Logger(namespace="connector_console.users")


class UsersError(ValueError):
    """The users file cannot be used; the message names the file and the entry."""


@dataclasses.dataclass(frozen=True)
class User:
    """A person who may log in to the console."""

    name: str
    role: str

    @property
    def operator(self) -> bool:
        """May command alarms."""
        return self.role == "operator"


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, as stored in the users file."""
    return _HASHER.hash(password)


def _read(path: str) -> dict[str, dict]:
    """The file's ``users`` mapping, checked (an absent file: no users)."""
    if not os.path.exists(path):
        return {}
    try:
        data = load_yaml_file(path)
    except YamlError as e:
        raise UsersError(str(e)) from None
    data = data or {}
    if not isinstance(data, dict) or not isinstance(data.get("users") or {}, dict):
        raise UsersError(f"{path}: expected a mapping 'users:' of name -> {{role, password}}")
    users = data.get("users") or {}
    for name, entry in users.items():
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise UsersError(f"{path}: user {name!r}: a name is 1 to 64 letters, digits or "
                             "'._@-', starting with a letter or digit")
        if not isinstance(entry, dict) or set(entry) != {"role", "password"}:
            raise UsersError(f"{path}: user {name!r}: expected exactly 'role' and 'password'")
        if entry["role"] not in ROLES:
            raise UsersError(f"{path}: user {name!r}: role {entry['role']!r} is not one of "
                             f"{', '.join(ROLES)}")
        if not isinstance(entry["password"], str) or not entry["password"].startswith("$argon2"):
            raise UsersError(f"{path}: user {name!r}: password must be an argon2 hash (use "
                             "'centaure console add-user' to write it)")
    return users


@implementer(IAuthenticator)
class UserFile:
    """The users of one file, read at start (and again by :meth:`reload`)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._users: dict[str, dict] = {}
        self._stamp: tuple | None = None
        self.reload()

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path) if self.path else None
        except OSError:
            return None
        return None if st is None else (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> None:
        """Read the file again (raises :class:`UsersError`, keeping the old users)."""
        stamp = self._file_stamp()
        self._users = _read(self.path) if self.path else {}
        self._stamp = stamp

    def _fresh(self) -> None:
        """Read the file again when it changed ('centaure console add-user' while running);
        a file made unreadable or broken keeps the users read before."""
        if self.path and self._file_stamp() != self._stamp:
            try:
                self.reload()
            except UsersError as e:
                _log.warn("console users file not reloaded, the previous users stay: {error}",
                          error=str(e))
                self._stamp = self._file_stamp()

    def __len__(self) -> int:
        return len(self._users)

    def role(self, name: str) -> str | None:
        self._fresh()
        entry = self._users.get(name)
        return None if entry is None else entry["role"]

    def authenticate(self, name: str, password: str) -> User | None:
        self._fresh()
        entry = self._users.get(name)
        if entry is None:
            # Hash anyway: an unknown name takes as long as a wrong password.
            try:
                _HASHER.verify(_DUMMY, password)
            except VerificationError:
                pass
            return None
        try:
            _HASHER.verify(entry["password"], password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return User(name, entry["role"])


_DUMMY = _HASHER.hash("not a password of anyone")


def write_user(path: str, name: str, role: str, password: str | None) -> bool:
    """Add or update ``name`` in the file (created 0600); True when it was new.

    ``password`` None keeps the user's password (changes only the role).
    """
    if not NAME_RE.fullmatch(name):
        raise UsersError(f"user {name!r}: a name is 1 to 64 letters, digits or '._@-', "
                         "starting with a letter or digit")
    if role not in ROLES:
        raise UsersError(f"role {role!r} is not one of {', '.join(ROLES)}")
    users = _read(path)
    new = name not in users
    if password is None and new:
        raise UsersError(f"user {name!r} does not exist: give a password")
    entry = {"role": role, "password": users.get(name, {}).get("password")}
    if password is not None:
        entry["password"] = hash_password(password)
    users[name] = entry
    _write(path, users)
    return new


def remove_user(path: str, name: str) -> bool:
    """Remove ``name`` from the file; False when it was not there."""
    users = _read(path)
    if users.pop(name, None) is None:
        return False
    _write(path, users)
    return True


def _write(path: str, users: dict) -> None:
    """Replace the file atomically, readable by its owner only (it holds hashes)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".users-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            yaml.safe_dump({"users": users}, f, sort_keys=True, default_flow_style=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
