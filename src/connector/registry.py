"""The connectors installed: each declares itself once, through an entry point.

A connector package names a :class:`ConnectorSpec` in the entry-point group
``centaure.connectors`` of its distribution's metadata: what it is called,
the function that builds its service, the message types its queue receives
and the function that adds its subcommands to the ``centaure`` command. The
core reads only these declarations (the targets are ``module:function``
strings, imported when used), so adding a connector edits no core file.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["ENTRY_POINT_GROUP", "ConnectorSpec", "RegistryError", "installed", "load_target"]

#: The entry-point group where connector packages declare their :class:`ConnectorSpec`.
ENTRY_POINT_GROUP = "centaure.connectors"


class RegistryError(RuntimeError):
    """A connector's declaration is unusable (the message names the entry point)."""


@dataclasses.dataclass(frozen=True)
class ConnectorSpec:
    """What a connector says of itself.

    ``build`` is ``"module:function"``: the function takes the process's
    runtime and returns the connector's service. ``consumes`` lists the
    message types its queue ``<prefix>.<name>`` receives (none: it has no
    queue). ``publishes`` lists the message types it sends (besides the
    ``status`` heartbeat every connector sends): the broker permissions of its
    user are computed from both lists. ``commands`` is ``"module:function"``
    or None: the function takes the ``centaure`` command's subparsers and a
    ``with_config`` helper and returns ``{command: handler(settings, args) ->
    exit code}``. Processes that run several connectors start them in
    ``start_order`` (lower first). ``bounded_queue``: its queue only feeds a
    view that the connector rebuilds from SQL when it starts (the web console),
    so what waits there too long or beyond a length is dropped, oldest first,
    instead of piling up while it is stopped or being dead-lettered
    (:func:`connector.topology.connector_queue`).
    """

    name: str
    build: str
    consumes: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()
    commands: str | None = None
    start_order: int = 100
    bounded_queue: bool = False


def load_target(target: str) -> Callable[..., Any]:
    """Import ``"module:function"`` and return the function."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


_installed: dict[str, ConnectorSpec] | None = None


def installed() -> dict[str, ConnectorSpec]:
    """Every declared connector, by name, in start order (read once per process)."""
    global _installed
    if _installed is None:
        # Imported here: importlib.metadata costs ~0.1 s to import, once.
        import importlib.metadata

        found: dict[str, ConnectorSpec] = {}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            spec = ep.load()
            if not isinstance(spec, ConnectorSpec) or spec.name != ep.name:
                raise RegistryError(f"entry point {ep.name} = {ep.value} of {ENTRY_POINT_GROUP} "
                                    f"is not a ConnectorSpec named {ep.name!r}")
            found[spec.name] = spec
        _installed = dict(sorted(found.items(), key=lambda kv: (kv[1].start_order, kv[0])))
    return _installed
