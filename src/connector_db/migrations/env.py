"""Alembic's environment, run by :mod:`connector_db.migrate` only.

The caller owns the connection (in ``Config.attributes["connection"]``), its
transaction and its lock; this script only points Alembic at the prefixed
version table and runs the revisions.
"""

from alembic import context

from centaure_shared.sql import table_prefix, version_table

if context.is_offline_mode():
    raise RuntimeError("Centaure's migrations run on a live connection only "
                       "(centaure db upgrade), not in offline --sql mode")

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run Centaure's migrations through connector_db.migrate "
                       "(centaure db upgrade), which hands over the connection")

context.configure(
    connection=connection,
    target_metadata=None,
    version_table=version_table(table_prefix()),
)
with context.begin_transaction():
    context.run_migrations()
