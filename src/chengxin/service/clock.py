"""The clock port: the system clock in production, a fixed one in tests and replays."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the time; every service reads time through one of these."""

    def now(self) -> datetime:
        """The current instant (timezone-aware, UTC)."""
        ...

    def today(self) -> date:
        """The current date in UTC."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        """The current instant (UTC)."""
        return datetime.now(UTC)

    def today(self) -> date:
        """Today's date (UTC)."""
        return self.now().date()


@dataclass
class FixedClock:
    """A clock that stands still until moved (ships for tests and replays)."""

    instant: datetime = field(default_factory=lambda: datetime(2026, 11, 1, 12, tzinfo=UTC))

    @classmethod
    def on(cls, day: date) -> FixedClock:
        """A clock at noon UTC on ``day``."""
        return cls(datetime(day.year, day.month, day.day, 12, tzinfo=UTC))

    def now(self) -> datetime:
        """The fixed instant."""
        return self.instant

    def today(self) -> date:
        """The fixed instant's date."""
        return self.instant.date()

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward."""
        self.instant += delta
