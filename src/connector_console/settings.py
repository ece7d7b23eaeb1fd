"""Settings of the web console: the ``[console]`` section.

Imported by every connector through :func:`connector.settings.discover_sections`:
keep it light (no twisted.web, no SQLAlchemy, no argon2 here).
"""

from __future__ import annotations

import dataclasses
import os

from connector.settings import (
    Bool, Choice, Duration, FilePath, Int, Str, StrList, register_section, setting, settings_dir,
)

__all__ = ["ConsoleSettings", "resolved"]


@register_section("console")
@dataclasses.dataclass(frozen=True)
class ConsoleSettings:
    """``[console]``: where the web console listens, who may log in, its sessions."""

    listen: str = setting(
        Str(r"\S+", "an address to listen on (a host name or IP address)"), "127.0.0.1",
        "Address the web console listens on (127.0.0.1: this machine only; 0.0.0.0: all).")
    port: int = setting(
        Int(0, 65535), "8480",
        "TCP port of the web console (0: any free port, told in the log).")
    users_file: str | None = setting(
        FilePath(optional=True), "",
        "YAML file of the console's users (name, role viewer or operator, argon2 password "
        "hash), written by 'centaure console add-user'; empty: nobody can log in.")
    anonymous_view: bool = setting(
        Bool(), "false",
        "true: the board and alarm pages are readable without logging in (commands still "
        "need an operator's login).")
    tls_cert: str | None = setting(
        FilePath(optional=True), "",
        "PEM certificate (chain) for HTTPS; empty: plain HTTP (put a TLS proxy in front).")
    tls_key: str | None = setting(
        FilePath(optional=True), "", "PEM private key of tls_cert (a file only its owner reads).")
    session_lifetime: float = setting(
        Duration(1, 30 * 86400), "8h",
        "How long a login lasts; after it the browser is asked to log in again.")
    proxy_user_header: str = setting(
        Str(r"[A-Za-z0-9-]{0,64}", "an HTTP header name such as X-Remote-User, or nothing"), "",
        "Header in which a reverse proxy that authenticates people (SSO) names the user; "
        "believed only from proxy_addresses. Empty: logins with the users file only.")
    proxy_addresses: tuple = setting(
        StrList(Str(r"\S+", "an IP address")), "127.0.0.1, ::1",
        "Addresses of the reverse proxies whose proxy_user_header is believed.")
    proxy_role: str = setting(
        Choice("none", "viewer", "operator"), "none",
        "Role of a user named by the proxy but absent from users_file (none: refused); "
        "one in the file has the file's role.")
    max_event_clients: int = setting(
        Int(1, 100_000), "1000",
        "Most live-update (server-sent events) connections served at once; more are refused "
        "with 503.")


def resolved(settings, path: str | None) -> str | None:
    """``path`` of a ``[console]`` setting, relative to the settings file's folder."""
    if not path:
        return None
    return os.path.join(settings_dir(settings), path)
