"""Calendar durations as policies write them: ``2y``, ``6m``, ``30d``, ``2w``, ``2y6m``.

A duration is a whole number of calendar months plus a whole number of days.
Adding one to a date adds the months first, clamping to the end of a shorter
month (31 January + 1m = 28 or 29 February), then the days. DuckDB's
``date + INTERVAL`` and Spark's ``add_months`` clamp the same way, which is
what lets every engine agree on when a record steps down or expires.

Durations are ordered by their length in days with a mean month (30.44 days),
ties broken by months then days, so ``400d > 1y`` and ``3653d > 10y`` (the
linter compares retentions with the ceiling this way). Two durations that mix
units are not ordered the same way from every start date (``1m`` is 28 to 31
days); :func:`always_before` says whether one ends first from every start.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache, total_ordering

_PART = re.compile(r"(\d+)([ymwd])")
_WHOLE = re.compile(r"^(?:\d+[ymwd])+$")


class DurationError(ValueError):
    """A duration could not be read."""


@total_ordering
@dataclass(frozen=True, slots=True)
class Duration:
    """A number of calendar months plus a number of days."""

    months: int = 0
    days: int = 0

    def _key(self) -> tuple[int, int, int]:
        return (self.approx_days, self.months, self.days)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        parts = []
        years, months = divmod(self.months, 12)
        if years:
            parts.append(f"{years}y")
        if months:
            parts.append(f"{months}m")
        if self.days or not parts:
            parts.append(f"{self.days}d")
        return "".join(parts)

    @property
    def approx_days(self) -> int:
        """Length in days using a mean month (30.44 days), for comparisons in the linter."""
        return self.months * 3044 // 100 + self.days

    def after(self, start: date) -> date:
        """The date this duration after ``start``."""
        return _after(self.months, self.days, start)


@lru_cache(maxsize=1 << 16)
def _after(months: int, days: int, start: date) -> date:
    # Scoring asks for the same few durations after the same days over and over.
    return add_months(start, months) + timedelta(days=days)


def add_months(start: date, months: int) -> date:
    """``start`` plus whole calendar months, clamped to the last day of the target month."""
    if months == 0:
        return start
    index = start.year * 12 + (start.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(start.day, last))


def parse_duration(text: str | int) -> Duration:
    """Read ``2y``, ``18m``, ``2y6m``, ``30d`` or ``4w``; refuse anything else."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise DurationError(f"a duration must be text such as '2y' or '30d', got {text!r}")
    raw = str(text).strip().lower().replace(" ", "")
    if isinstance(text, int) or raw.isdigit():
        raise DurationError(
            f"duration {text!r} has no unit: write e.g. '{raw}d', '{raw}m' or '{raw}y'"
        )
    if not _WHOLE.match(raw):
        raise DurationError(
            f"cannot read duration {text!r}: use whole numbers with units y, m, w, d "
            "(for example '2y', '6m', '2y6m', '30d')"
        )
    months = days = 0
    for number, unit in _PART.findall(raw):
        n = int(number)
        if unit == "y":
            months += 12 * n
        elif unit == "m":
            months += n
        elif unit == "w":
            days += 7 * n
        else:
            days += n
    if months == 0 and days == 0:
        raise DurationError(f"duration {text!r} is zero")
    return Duration(months=months, days=days)


def always_before(first: Duration, second: Duration) -> bool:
    """Whether ``first`` ends strictly before ``second`` whatever the start date.

    Exact when neither has more months and fewer days than the other (adding
    months is monotone); otherwise true only if ``first``'s longest possible
    length (31 days a month) is below ``second``'s shortest (28 days a month).
    """
    if first.months <= second.months and first.days <= second.days:
        return first != second
    return first.months * 31 + first.days < second.months * 28 + second.days
