"""Rate limits for cleanup: a token bucket per resource (jobs/s, objects/s) and a deadline."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Deadline:
    """The end of a run's time budget (``None``: no budget)."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at = None if seconds is None else clock() + seconds

    def passed(self) -> bool:
        """Whether the budget is spent."""
        return self.at is not None and self._clock() >= self.at

    def remaining(self) -> float | None:
        """Seconds left (``None``: unbounded)."""
        return None if self.at is None else max(0.0, self.at - self._clock())


class TokenBucket:
    """``rate`` tokens per second, at most one second's worth banked (``rate=None``: unlimited).

    ``take(n)`` may go into debt and then sleeps the debt off, so a batch larger than the bank is
    still paced correctly: over a run, N units take at least ``(N - rate) / rate`` seconds.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = None if rate is None else max(rate, 1.0)
        self._tokens = self.capacity or 0.0
        self._clock = clock
        self._sleep = sleep
        self._last = clock()

    def chunk(self, wanted: int) -> int:
        """``wanted`` capped to one second's worth, so work is spread evenly over time."""
        if self.rate is None:
            return wanted
        return max(1, min(wanted, math.ceil(self.rate)))

    def _refill(self) -> None:
        now = self._clock()
        if self.rate is not None and self.capacity is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, n: int, deadline: Deadline | None = None) -> bool:
        """Wait until ``n`` units may go; ``False`` (nothing taken) if that would pass ``deadline``."""
        if self.rate is None:
            return True
        self._refill()
        wait = (n - self._tokens) / self.rate if n > self._tokens else 0.0
        remaining = deadline.remaining() if deadline is not None else None
        if remaining is not None and wait > remaining:
            return False
        self._tokens -= n
        if wait > 0:
            self._sleep(wait)
            self._refill()
        return True

    def give_back(self, n: int) -> None:
        """Return ``n`` units that were taken but not used."""
        if self.rate is not None and self.capacity is not None and n > 0:
            self._tokens = min(self.capacity, self._tokens + n)
