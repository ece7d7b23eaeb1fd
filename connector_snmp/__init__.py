"""The SNMP poller connector (centaure-snmp)."""
