"""The console's seams: who logs in, and the sessions they get."""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IAuthenticator", "ISessionStore"]


class IAuthenticator(Interface):
    """Checks a name and password against the console's users."""

    def authenticate(name, password):
        """The :class:`~connector_console.users.User` for these credentials, or None.

        Takes about as long for an unknown name as for a wrong password.
        """

    def role(name):
        """The role of user ``name`` (``viewer`` or ``operator``), or None for no such user."""


class ISessionStore(Interface):
    """Logged-in sessions, by an unguessable token held in the browser's cookie."""

    lifetime = Attribute("Seconds a session lasts after its login.")

    def open(user):
        """A new :class:`~connector_console.sessions.Session` for ``user``."""

    def get(token):
        """The live session of ``token``, or None (unknown or expired)."""

    def close(token):
        """Forget the session of ``token`` (log out)."""
