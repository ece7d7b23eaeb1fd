"""Logged-in sessions, kept in the console's memory (a restart logs everyone out).

A session is found by a 256-bit random token (the ``HttpOnly`` cookie) and
carries its own CSRF token, which every form repeats: a page of another site
can make the browser send the cookie, never read the CSRF token.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from collections.abc import Callable

from zope.interface import implementer

from .interfaces import ISessionStore
from .users import User

__all__ = ["Session", "SessionStore"]

#: Sessions kept at most; the oldest are dropped first (a login flood cannot fill memory).
MAX_SESSIONS = 10_000


@dataclasses.dataclass
class Session:
    """One login: who, until when, and the CSRF token of its forms."""

    token: str
    user: User
    csrf: str
    expires: float

    def csrf_ok(self, given: str | bytes | None) -> bool:
        """True when ``given`` is this session's CSRF token (compared in constant time)."""
        if isinstance(given, bytes):
            given = given.decode("utf-8", "replace")
        return bool(given) and hmac.compare_digest(given, self.csrf)


@implementer(ISessionStore)
class SessionStore:
    """Sessions by token, each valid ``lifetime`` seconds after its login."""

    def __init__(self, lifetime: float, clock: Callable[[], float]) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def open(self, user: User) -> Session:
        self._expire()
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32),
                          self.clock() + self.lifetime)
        self._sessions[session.token] = session
        return session

    def get(self, token: str | bytes | None) -> Session | None:
        if isinstance(token, bytes):
            token = token.decode("ascii", "replace")
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._sessions[token]
            return None
        return session

    def close(self, token: str | bytes | None) -> None:
        if isinstance(token, bytes):
            token = token.decode("ascii", "replace")
        if token:
            self._sessions.pop(token, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]
