"""The console's silences: the add form's checks (pure) and the table (blocking, in a thread).

The alerter owns the ``<prefix>silences`` table (``[alerter] table_prefix``) and
reads it again before every notification it sends; the console writes the same
rows as ``centaure silence add|remove``, through
:mod:`centaure_shared.storage.silences`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import sqlalchemy as sa

from centaure_shared.storage import silences as stored
from centaure_shared.storage.silences import COMMENT_MAX, MATCHER_MAX, Silence

__all__ = ["SilenceForm", "SilenceStore", "check_form"]

#: Longest duration a silence may be given in the console (a forgotten silence hides alarms).
DURATION_MAX = 90 * 86400.0


@dataclasses.dataclass(frozen=True)
class SilenceForm:
    """A checked add form: at least one matcher, a duration in seconds, a comment."""

    host: str | None
    name: str | None
    duration: float
    comment: str


def _matcher(fields: Mapping[str, str], key: str, label: str) -> str | None:
    value = (fields.get(key) or "").strip()
    if len(value) > MATCHER_MAX:
        raise ValueError(f"{label}: at most {MATCHER_MAX} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{label} {value!r}: control characters are not allowed")
    return value or None


def check_form(fields: Mapping[str, str]) -> SilenceForm:
    """The form's ``host``, ``name``, ``duration`` and ``comment`` checked; ValueError names
    the bad field."""
    host = _matcher(fields, "host", "Host")
    name = _matcher(fields, "name", "Alarm name")
    if not (host or name):
        raise ValueError("Give a host or an alarm name to match (globs such as core-* work; "
                         "'*' matches every host).")
    duration_text = (fields.get("duration") or "").strip()
    if not duration_text:
        raise ValueError("Give a duration (such as 30m, 2h or 1d).")
    try:
        duration = stored.parse_duration(duration_text)
    except ValueError as e:
        raise ValueError(f"Duration: {str(e).removeprefix('duration ')}.") from None
    if duration > DURATION_MAX:
        raise ValueError(f"Duration {duration_text!r}: at most {int(DURATION_MAX // 86400)} "
                         "days.")
    comment = (fields.get("comment") or "").strip()
    if not comment:
        raise ValueError("Give a comment: why the alarms are silenced.")
    if len(comment) > COMMENT_MAX:
        raise ValueError(f"Comment: at most {COMMENT_MAX} characters.")
    return SilenceForm(host, name, duration, comment)


class SilenceStore:
    """The silences table of ``[alerter] table_prefix`` (blocking: call from a thread)."""

    def __init__(self, engine: sa.Engine, prefix: str,
                 clock=time.time) -> None:
        self.engine = engine
        self.prefix = prefix
        self.clock = clock
        stored.make_table(prefix)  # a bad prefix fails at start, not at the first page

    def active(self) -> list[Silence]:
        """The silences not ended yet, the soonest to end first."""
        return stored.list_(self.engine, self.prefix, now=self.clock())

    def add(self, form: SilenceForm, created_by: str) -> Silence:
        """Store the silence from now on, recorded as set by ``created_by``."""
        return stored.add(self.engine, self.prefix, duration=form.duration,
                          comment=form.comment, host=form.host, name=form.name,
                          created_by=created_by, now=self.clock())

    def expire(self, silence_id: int) -> bool:
        """End the silence now; False when there is no such active silence."""
        return stored.remove(self.engine, self.prefix, silence_id, now=self.clock())
