"""What one metric is and how its values are processed, as profiles and trap definitions write it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

__all__ = ["Kind", "MetricSpec", "OperatorCall"]

Kind = Literal["gauge", "counter", "text"]


@dataclass(frozen=True)
class OperatorCall:
    """A named operator and its arguments, as written in a profile."""

    name: str
    args: Mapping[str, object] = field(default_factory=dict, hash=False)

@dataclass(frozen=True)
class MetricSpec:
    """One scalar (full OID with its instance) or one table column (OID prefix)."""

    name: str
    oid: str
    kind: Kind = "gauge"
    unit: str | None = None
    operators: tuple[OperatorCall, ...] = ()
