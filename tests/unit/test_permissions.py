"""Least-privilege broker users with ``[bus] partitions``: tokens, members, partition queues."""

from __future__ import annotations

import re

from connector.permissions import connector_rights, definitions, names_regex


def allows(regex: str, name: str) -> bool:
    # RabbitMQ matches with Erlang's re (PCRE): these regexes use nothing Python reads otherwise.
    return re.search(regex, name) is not None


def test_single_node_rights_know_no_token():
    for name in ("snmp", "correlator", "alerter", "db", "traps"):
        rights = connector_rights("p", name)
        assert not any("token" in r or "members" in r or r".p[0-9]" in r
                       for r in rights.values()), (name, rights)
    assert allows(connector_rights("p", "correlator")["read"], "p.correlator")


def test_a_partitioned_connector_reads_its_partition_queues_and_no_other():
    rights = connector_rights("p", "correlator", partitions=64)
    for right in ("configure", "write", "read"):
        assert allows(rights[right], "p.correlator.p0")
        assert allows(rights[right], "p.correlator.p63")
        assert allows(rights[right], "p.correlator.p1000")  # any P: the same rights
        for other in ("p.correlator", "p.correlator.px", "p.correlator.p1.x", "p.alerter.p0",
                      "x.correlator.p0", "pXcorrelator.p0"):
            assert not allows(rights[right], other), (right, other)
    assert connector_rights("p", "db", partitions=64) == connector_rights("p", "db")
    assert connector_rights("p", "traps", partitions=64) == connector_rights("p", "traps")


def test_token_rights_follow_the_roles_of_each_process():
    snmp = connector_rights("p", "snmp", partitions=8)
    correlator = connector_rights("p", "correlator", partitions=8)
    alerter = connector_rights("p", "alerter", partitions=8)
    for rights, roles in ((snmp, ("snmp",)), (correlator, ("correlator",)),
                          (alerter, ("alerter", "notifier"))):
        for right in ("configure", "write", "read"):
            # The token exchange: declared, published to (write), bound from (read).
            assert allows(rights[right], "p.token")
            for role in ("snmp", "correlator", "alerter", "notifier"):
                mine = role in roles
                assert allows(rights[right], f"p.token.{role}.0") == mine, (right, role)
                assert allows(rights[right], f"p.token.{role}.12") == mine, (right, role)
        for role in ("snmp", "correlator", "alerter", "notifier"):
            mine = role in roles
            # The members queue is declared and consumed, never published to.
            assert allows(rights["configure"], f"p.members.{role}") == mine
            assert allows(rights["read"], f"p.members.{role}") == mine
            assert not allows(rights["write"], f"p.members.{role}")
    # The notifier's queue: every alarm, read by the holder of the notifier token.
    for right in ("configure", "write", "read"):
        assert allows(alerter[right], "p.alerter.notifier")
        assert not allows(correlator[right], "p.alerter.notifier")
    assert not allows(connector_rights("p", "alerter")["read"], "p.alerter.notifier")
    assert not allows(snmp["read"], "p.token.snmp.x")
    assert not allows(snmp["read"], "p.token.snmp")


def test_definitions_declare_the_partition_queues_not_the_token_queues():
    doc = definitions("p", partitions=4, queue_type="quorum")
    queues = {q["name"]: q for q in doc["queues"]}
    assert set(queues) == ({f"p.{c}.p{n}" for c in ("correlator", "alerter") for n in range(4)}
                           | {"p.db", "p.console", "p.dead", "p.status"})
    assert queues["p.correlator.p2"]["arguments"]["x-single-active-consumer"] is True
    keys = {b["routing_key"] for b in doc["bindings"] if b["destination"] == "p.correlator.p2"}
    assert "event.2.#" in keys
    perms = {p["user"]: p for p in doc["permissions"]}
    assert allows(perms["centaure-correlator"]["read"], "p.correlator.p3")
    assert allows(perms["centaure-alerter"]["read"], "p.token.notifier.0")
    # One node: as before.
    single = definitions("p")
    assert {q["name"] for q in single["queues"]} == {"p.db", "p.correlator", "p.alerter",
                                                      "p.console", "p.dead", "p.status"}


def test_names_regex_anchors_patterns_with_the_names():
    regex = names_regex(["a.b"], [r"c\.[0-9]+"])
    assert regex == r"^(a\.b|c\.[0-9]+)$"
    assert names_regex([]) == "^$"
