#!/usr/bin/env python
"""Benchmark snmpwire.ber against pyasn1 (pysnmp 7's codec).

Decodes a v2c GetBulk Response of 50 varbinds shaped like an IF-MIB ifTable
walk (10 columns x 5 rows: OctetString, Integer, Gauge32, Counter32), and
encodes a GetBulk request, with both codecs in the same run.  Each
measurement runs --runs times (default 3); the median is printed.  Rates are
per CPU-second of this process (time.process_time), i.e. per core.

Our decoder is measured in three cache states:
  warm      the OID text cache holds every OID (steady-state polling of the
            same instances);
  new-inst  the OID cache is emptied before each message but the prefix
            cache is kept (walking instances never seen, of known columns);
  cold      every cache is emptied before each message (first contact).

Usage: .venv/bin/python bench/bench_ber.py [--seconds 1.0] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyasn1.codec.ber import decoder as pyasn1_decoder  # noqa: E402
from pyasn1.codec.ber import encoder as pyasn1_encoder  # noqa: E402
from pysnmp.proto import api  # noqa: E402

from snmpwire import ber  # noqa: E402

v2c = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

IF_ENTRY = "1.3.6.1.2.1.2.2.1"
# (column, tag) for 10 ifTable columns
COLUMNS = [
    (2, ber.OCTET_STRING),  # ifDescr
    (3, ber.INTEGER),  # ifType
    (4, ber.INTEGER),  # ifMtu
    (5, ber.GAUGE32),  # ifSpeed
    (8, ber.INTEGER),  # ifOperStatus
    (10, ber.COUNTER32),  # ifInOctets
    (11, ber.COUNTER32),  # ifInUcastPkts
    (14, ber.COUNTER32),  # ifInErrors
    (16, ber.COUNTER32),  # ifOutOctets
    (17, ber.COUNTER32),  # ifOutUcastPkts
]


def response_varbinds(rows: int, ifindex_base: int) -> list[tuple[str, str, object]]:
    """GetBulk answer order: each repetition carries one instance per column."""
    vbs = []
    for r in range(rows):
        idx = ifindex_base + r
        for col, tag in COLUMNS:
            oid = f"{IF_ENTRY}.{col}.{idx}"
            if tag == ber.OCTET_STRING:
                val: object = f"GigabitEthernet0/{idx}".encode()
            elif tag == ber.INTEGER:
                val = {3: 6, 4: 1500, 8: 1}[col]
            elif tag == ber.GAUGE32:
                val = 1_000_000_000
            else:
                val = (3_141_592_653 * (col + 1) * (idx + 7)) % 2**32
            vbs.append((oid, tag, val))
    return vbs


def measure(fn, seconds: float) -> float:
    """Calls of fn per CPU-second, over at least `seconds` of CPU time."""
    n = 0
    batch = 1
    start = time.process_time()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return n / elapsed
        batch *= 2


def median_of(fn, seconds: float, runs: int) -> tuple[float, list[float]]:
    rates = [measure(fn, seconds) for _ in range(runs)]
    return statistics.median(rates), rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per measurement (default 1.0)")
    ap.add_argument("--runs", type=int, default=3, help="measurements per case; the median is printed (default 3)")
    ap.add_argument("--rows", type=int, default=5, help="table rows (x10 columns = varbinds; default 5)")
    ap.add_argument("--ifindex-base", type=int, default=1, help="first ifIndex (>=128 gives 2-octet sub-identifiers)")
    args = ap.parse_args(argv)

    vbs = response_varbinds(args.rows, args.ifindex_base)
    nvb = len(vbs)
    data = ber.encode_response(1, b"public", 0x1234567, 0, 0, vbs)

    # Sanity: both codecs agree on this message before we time them.
    spec = v2c.Message()
    msg, rest = pyasn1_decoder.decode(data, asn1Spec=spec)
    assert not rest and pyasn1_encoder.encode(msg) == data
    ours = ber.decode_message(data)
    assert ours.varbinds == vbs, "our decoder disagrees with the encoder"
    pdu = v2c.apiMessage.get_pdu(msg)
    theirs = [(str(o), v) for o, v in v2c.apiPDU.get_varbinds(pdu)]
    assert [o for o, _ in theirs] == [o for o, _, _ in vbs]
    assert [bytes(v) if t == ber.OCTET_STRING else int(v) for (_, v), (_, t, _) in zip(theirs, vbs)] == [
        v for _, _, v in vbs
    ]

    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; message {len(data)} octets, "
          f"{nvb} varbinds; {args.runs} runs of {args.seconds:g} CPU-s, median shown")
    print()
    print("Decode, GetBulk Response (varbinds per CPU-second):")

    def pyasn1_decode() -> None:
        pyasn1_decoder.decode(data, asn1Spec=v2c.Message())

    decode = ber.decode_message
    clear = ber.clear_caches

    def ours_warm() -> None:
        decode(data)

    def ours_new_instances() -> None:
        clear(prefixes=False)
        decode(data)

    def ours_cold() -> None:
        clear()
        decode(data)

    ref_rate, ref_runs = median_of(pyasn1_decode, args.seconds, args.runs)
    ref = ref_rate * nvb
    print(f"  pyasn1 decoder      {ref:>12,.0f} /s   runs: {', '.join(f'{r * nvb:,.0f}' for r in ref_runs)}")
    results = {}
    for name, fn in (("warm", ours_warm), ("new-inst", ours_new_instances), ("cold", ours_cold)):
        ber.clear_caches()
        decode(data)
        rate, runs = median_of(fn, args.seconds, args.runs)
        results[name] = rate * nvb
        print(f"  ours, {name:<9}     {rate * nvb:>12,.0f} /s   x{rate * nvb / ref:5.1f} pyasn1   "
              f"runs: {', '.join(f'{r * nvb:,.0f}' for r in runs)}")
    print(f"  per varbind: pyasn1 {1e6 / ref:.2f} us, ours warm {1e6 / results['warm']:.2f} us, "
          f"new-inst {1e6 / results['new-inst']:.2f} us, cold {1e6 / results['cold']:.2f} us")

    print()
    print("Encode, GetBulk request, 10 OIDs (requests per CPU-second):")
    oids = [f"{IF_ENTRY}.{col}" for col, _ in COLUMNS]
    oid_tuples = [tuple(int(x) for x in o.split(".")) for o in oids]

    def pysnmp_encode() -> None:
        p = v2c.GetBulkRequestPDU()
        v2c.apiBulkPDU.set_defaults(p)
        v2c.apiBulkPDU.set_request_id(p, 12345)
        v2c.apiBulkPDU.set_non_repeaters(p, 0)
        v2c.apiBulkPDU.set_max_repetitions(p, 5)
        v2c.apiBulkPDU.set_varbinds(p, [(o, v2c.null) for o in oid_tuples])
        m = v2c.Message()
        v2c.apiMessage.set_defaults(m)
        v2c.apiMessage.set_community(m, b"public")
        v2c.apiMessage.set_pdu(m, p)
        return pyasn1_encoder.encode(m)

    def ours_encode() -> bytes:
        return ber.encode_getbulk(b"public", 12345, 0, 5, oids)

    assert pysnmp_encode() == ours_encode()
    e_ref, e_ref_runs = median_of(pysnmp_encode, args.seconds, args.runs)
    e_ours, e_ours_runs = median_of(ours_encode, args.seconds, args.runs)
    print(f"  pysnmp build+encode {e_ref:>12,.0f} /s   runs: {', '.join(f'{r:,.0f}' for r in e_ref_runs)}")
    print(f"  ours                {e_ours:>12,.0f} /s   x{e_ours / e_ref:5.1f} pysnmp   "
          f"runs: {', '.join(f'{r:,.0f}' for r in e_ours_runs)}")

    print()
    target = 300_000
    worst = min(results.values())
    print(f"Decode ratio to pyasn1 (warm): x{results['warm'] / ref:.1f}; target {target:,}/s: "
          f"warm {'met' if results['warm'] >= target else 'MISSED'}, "
          f"new-inst {'met' if results['new-inst'] >= target else 'MISSED'}, "
          f"cold {'met' if worst >= target else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
