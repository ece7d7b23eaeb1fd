"""The revisions, oldest first; Alembic loads them by file (ids ``correlator_0001``...)."""
