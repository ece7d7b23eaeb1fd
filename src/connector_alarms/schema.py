"""The correlator's own tables: defined in :mod:`centaure_shared.storage.alarms`.

They live below the connectors so that readers (the web console) share the
definitions without importing the correlator; the correlator writes them and
its migrations (:mod:`connector_alarms.migrations`) follow them.
"""

from centaure_shared.storage.alarms import (
    MESSAGE_ID_MAX, NAME_MAX, AlarmSchema, create_all, drop_all, make_schema,
)

__all__ = ["AlarmSchema", "make_schema", "create_all", "drop_all", "NAME_MAX",
           "MESSAGE_ID_MAX"]
