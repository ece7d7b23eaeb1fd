"""Pieces shared by the connectors, below them and above the core.

The device inventory (:mod:`~centaure_shared.inventory`, its ``[inventory]``
section), strict YAML files (:mod:`~centaure_shared.yamlfile`), the metric
model and the operators registry (:mod:`~centaure_shared.metric`,
:mod:`~centaure_shared.operators`) and the SQL helpers
(:mod:`~centaure_shared.sql`). A shared piece never imports a connector.
"""
