"""SNMP on the wire: the BER codec (:mod:`snmpwire.ber`) and SNMPv3's USM (:mod:`snmpwire.usm`).

Neutral ground for every connector that speaks SNMP: the poller (a manager)
and the trap receiver (an agent receiving notifications) both stand on it.
"""
