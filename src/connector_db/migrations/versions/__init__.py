"""The revisions, oldest first; Alembic loads them by file (ids ``0001``, ``0002``...)."""
