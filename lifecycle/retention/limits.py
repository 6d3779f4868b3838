"""Limits for cleanup: ``CleanupLimits`` (one value, from the settings and a run's overrides), a token
bucket per resource (jobs/s, objects/s) and a deadline; and the checks of every limit a caller passes."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lifecycle import errors
from lifecycle.settings import MAX_CLEANUP_BATCH_SIZE

if TYPE_CHECKING:
    from lifecycle.settings import Settings


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


# -- argument checks ---------------------------------------------------------------------------------
# Every entry point (cleanup, drain_outbox, purge) checks its arguments before it writes anything:
# a bad value is ``errors.InvalidInput`` naming the field, never a crash halfway through a run.

#: The most jobs per transaction (``CLEANUP_BATCH_SIZE`` has the same bound).
MAX_BATCH_SIZE = MAX_CLEANUP_BATCH_SIZE
#: The most jobs one run may be asked to delete (a bound the database's LIMIT can take).
MAX_JOBS_PER_RUN = 10**12
#: The longest text recorded on tombstones and outbox rows (purge reason, run id).
MAX_LABEL_LENGTH = 200


def check_count(value: object, field: str, *, low: int, high: int) -> None:
    """``value`` is ``None`` or an integer in ``low..high``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise errors.InvalidInput(f"{field} must be an integer from {low} to {high}", field=field)


def check_positive(value: object, field: str) -> None:
    """``value`` is ``None`` or a finite number above zero (a rate, a duration)."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise errors.InvalidInput(f"{field} must be a finite number above zero", field=field)


def check_now(value: object) -> None:
    """``value`` is ``None`` (the database clock) or a timezone-aware ``datetime``."""
    if value is None:
        return
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise errors.InvalidInput("now must be a timezone-aware datetime", field="now")


def check_label(value: object, field: str, *, required: bool = False) -> None:
    """``value`` is text of at most ``MAX_LABEL_LENGTH`` characters (``None`` unless ``required``)."""
    if value is None and not required:
        return
    if not isinstance(value, str) or len(value) > MAX_LABEL_LENGTH or (required and not value):
        raise errors.InvalidInput(f"{field} must be text of 1 to {MAX_LABEL_LENGTH} characters", field=field)


@dataclass(frozen=True)
class CleanupLimits:
    """The limits of one cleanup run. ``None`` rates and caps mean unlimited.

    Built once from the settings (``from_settings``); a run's own values replace them
    (``with_overrides``). Both check what they are given: ``errors.InvalidInput`` naming the setting
    or the argument, before anything is written.
    """

    #: Jobs per phase-1 transaction (halved on a timeout, down to ``min_batch_size``).
    batch_size: int
    min_batch_size: int
    max_jobs_per_second: float | None
    max_objects_per_second: float | None
    #: Jobs one run deletes at most.
    max_jobs: int | None
    max_runtime_seconds: float | None
    #: Per-batch timeouts (``SET LOCAL``), milliseconds.
    statement_timeout_ms: int
    lock_timeout_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CleanupLimits:
        """The configured limits (``CLEANUP_*``); a value no run could use is ``InvalidInput``."""
        # The settings' own bounds let some values through that a run cannot use (e.g. "inf").
        check_count(settings.cleanup_batch_size, "CLEANUP_BATCH_SIZE", low=1, high=MAX_BATCH_SIZE)
        check_positive(settings.cleanup_max_jobs_per_second, "CLEANUP_MAX_JOBS_PER_SECOND")
        check_positive(settings.cleanup_max_objects_per_second, "CLEANUP_MAX_OBJECTS_PER_SECOND")
        check_positive(settings.cleanup_max_runtime_seconds, "CLEANUP_MAX_RUNTIME_SECONDS")
        return cls(
            batch_size=settings.cleanup_batch_size,
            min_batch_size=settings.cleanup_min_batch_size,
            max_jobs_per_second=settings.cleanup_max_jobs_per_second,
            max_objects_per_second=settings.cleanup_max_objects_per_second,
            max_jobs=settings.cleanup_max_jobs,
            max_runtime_seconds=settings.cleanup_max_runtime_seconds,
            statement_timeout_ms=settings.cleanup_statement_timeout_ms,
            lock_timeout_ms=settings.cleanup_lock_timeout_ms,
        )

    @staticmethod
    def check_overrides(
        *,
        batch_size: int | None = None,
        max_jobs_per_second: float | None = None,
        max_objects_per_second: float | None = None,
        max_jobs: int | None = None,
        max_runtime_seconds: float | None = None,
    ) -> None:
        """Check a run's own limits (``None``: not given) as ``with_overrides`` does."""
        check_count(batch_size, "batch_size", low=1, high=MAX_BATCH_SIZE)
        check_count(max_jobs, "max_jobs", low=1, high=MAX_JOBS_PER_RUN)
        check_positive(max_jobs_per_second, "max_jobs_per_second")
        check_positive(max_objects_per_second, "max_objects_per_second")
        check_positive(max_runtime_seconds, "max_runtime_seconds")

    def with_overrides(
        self,
        *,
        batch_size: int | None = None,
        max_jobs_per_second: float | None = None,
        max_objects_per_second: float | None = None,
        max_jobs: int | None = None,
        max_runtime_seconds: float | None = None,
    ) -> CleanupLimits:
        """A copy with a run's own limits; ``None`` keeps this value (a limit cannot be lifted)."""
        given: dict[str, Any] = {
            "batch_size": batch_size,
            "max_jobs_per_second": max_jobs_per_second,
            "max_objects_per_second": max_objects_per_second,
            "max_jobs": max_jobs,
            "max_runtime_seconds": max_runtime_seconds,
        }
        self.check_overrides(**given)
        return dataclasses.replace(self, **{name: v for name, v in given.items() if v is not None})
