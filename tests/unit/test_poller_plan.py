"""What the poller publishes a metric as: a counter turned into a rate is a gauge."""

from __future__ import annotations

from centaure_shared import operators as ops
from centaure_shared.metric import MetricSpec, OperatorCall
from connector_snmp.model import Profile
from connector_snmp.poller import compile_plan

HC_IN = "1.3.6.1.2.1.31.1.1.1.6"


def _plan(*specs: MetricSpec):
    profile = Profile(name="p", device_types=("server",), scalars=specs)
    return compile_plan(ops.default_registry(), [profile])


def test_a_counter_through_counter_rate_is_published_as_a_gauge():
    # Stored, graphed and rolled up as a counter, a rate would become a rate of a rate.
    rate = MetricSpec(name="inRate", oid=HC_IN + ".1", kind="counter",
                      operators=(OperatorCall("counter_rate", {"bits": 64}),))
    (spec, pipeline), = _plan(rate).scalars
    assert spec.kind == "gauge"
    assert spec.name == "inRate" and pipeline.names == ("counter_rate",)


def test_a_raw_counter_and_a_gauge_keep_their_kind():
    raw = MetricSpec(name="in", oid=HC_IN + ".1", kind="counter")
    scaled = MetricSpec(name="load", oid="1.3.6.1.4.1.2021.10.1.5.1", kind="gauge",
                        operators=(OperatorCall("scale", {"factor": 0.01}),))
    assert [s.kind for s, _ in _plan(raw, scaled).scalars] == ["counter", "gauge"]
