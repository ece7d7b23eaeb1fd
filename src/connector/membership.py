"""Which live nodes run a connector, and which hosts this node owns.

Today every connector runs on one node, which owns every host. The seam is
here so that the HA issue can answer from the ``status`` heartbeats and
share hosts by rendezvous hashing without touching the connectors.
"""

from __future__ import annotations

from zope.interface import implementer

from connector.interfaces import IMembership


@implementer(IMembership)
class SingleNodeMembership:
    """This node runs everything and owns every host."""

    def __init__(self, node: str) -> None:
        self.node = node

    def live_nodes(self, connector: str) -> list[str]:
        return [self.node]

    def owns(self, connector: str, host: str) -> bool:
        return True
