"""An error that lists every problem found in a file, not just the first.

Operators fix a whole inventory or definitions file in one go when they see
all its problems at once; the list is capped so a broken file of 10,000 rows
does not flood the log.
"""

from __future__ import annotations

MAX_SHOWN = 50


class ProblemsError(ValueError):
    """``source`` cannot be used; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        shown = problems[:MAX_SHOWN]
        more = len(problems) - len(shown)
        text = "\n".join(f"{source}: {p}" for p in shown)
        if more > 0:
            text += f"\n{source}: ... and {more} more problem(s)"
        super().__init__(text)
