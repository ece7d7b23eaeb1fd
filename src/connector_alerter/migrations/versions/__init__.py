"""The revisions, oldest first (ids ``alerter_0001``...)."""
