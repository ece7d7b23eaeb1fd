"""The SQL writer connector (centaure-db): bus messages stored with SQLAlchemy."""

from connector.service import Options, makeService as _make

__all__ = ["Options", "makeService"]


def makeService(options):
    """The SQL writer alone in its process (``twistd centaure-db``)."""
    return _make(options, ["db"], "db")
