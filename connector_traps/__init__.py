"""The SNMP trap and inform receiver connector (centaure-traps)."""
