"""centaure-db: the SQL writer connector (SQLAlchemy; SQLite, MySQL/MariaDB, PostgreSQL).

``schema`` defines the normalized tables, ``writer`` stores bus messages in
idempotent batches. The twistd plugin and settings come in a follow-up.
"""
