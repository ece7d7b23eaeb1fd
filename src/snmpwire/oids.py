"""OIDs every SNMP notification carries (SNMPv2-MIB, RFC 3416 section 4.2.6)."""

#: sysUpTime.0: the first varbind of an SNMPv2-Trap or InformRequest.
SYS_UPTIME_0 = "1.3.6.1.2.1.1.3.0"
#: snmpTrapOID.0: the second varbind, the notification's OID.
SNMP_TRAP_OID_0 = "1.3.6.1.6.3.1.1.4.1.0"
