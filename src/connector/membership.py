"""Which hosts this node owns, per connector.

Every connector runs on one node, which owns every host. Connectors ask
this object rather than assume it, so that a multi-node membership (answering
from the ``status`` heartbeats, sharing hosts by rendezvous hashing) can
replace it without touching them.
"""

from __future__ import annotations

from zope.interface import implementer

from connector.interfaces import IMembership


@implementer(IMembership)
class SingleNodeMembership:
    """This node runs everything and owns every host."""

    def __init__(self, node: str) -> None:
        self.node = node

    def owns(self, connector: str, host: str) -> bool:
        return True
