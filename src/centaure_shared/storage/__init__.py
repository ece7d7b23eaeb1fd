"""What the SQL writer stores, for every reader: the normalized tables and the queries on them.

The SQL writer (``connector_db``) writes these tables and upgrades them with
its migrations; ``centaure query``, the demo's live view and the alerter's
start-up replay read them through :mod:`~centaure_shared.storage.query`.
"""
