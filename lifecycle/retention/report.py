"""What a cleanup, drain, or reconciliation did (or, for a dry run, would do).

Reports are plain data: fields, ``as_dict()`` (JSON-ready: Dagster metadata, logs), ``work_left()``,
and labelled rows in reading order that the run page (``lifecycle.defs.markdown``) and the terminal
tables (``lifecycle.cli``) both show. Nothing here carries a secret: job ids, keys, counts and
redacted errors only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

#: ``CleanupReport.expired_jobs_left`` is counted up to this (an exact count could scan millions).
EXPIRED_LEFT_CAP = 10_000


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


@dataclass
class CleanupPlan:
    """What a real run would do, as found by a dry run (the same selection, no writes)."""

    eligible_jobs: int = 0
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    oldest_expiry: datetime | None = None
    newest_expiry: datetime | None = None
    events: int = 0
    objects: int = 0
    sample_job_ids: list[UUID] = field(default_factory=list)
    skipped_processing: int = 0
    skipped_on_hold: int = 0
    tombstones_to_prune: int = 0
    outbox_pending: int = 0
    batches: int = 0
    min_duration_seconds: float | None = None
    would_do: str = ""

    def rows(self) -> list[tuple[str, Any]]:
        """The plan as labelled rows, in reading order (the markdown and the CLI table share them)."""
        return [
            ("eligible jobs", self.eligible_jobs),
            *((f"status {k}", v) for k, v in sorted(self.jobs_by_status.items())),
            ("oldest expiry", self.oldest_expiry),
            ("newest expiry", self.newest_expiry),
            ("events", self.events),
            ("objects", self.objects),
            ("expired but processing (kept)", self.skipped_processing),
            ("expired but on hold (kept)", self.skipped_on_hold),
            ("tombstones to prune", self.tombstones_to_prune),
            ("outbox pending", self.outbox_pending),
            ("batches", self.batches),
            ("minimum duration s (rate limits)", self.min_duration_seconds),
        ]


@dataclass
class DrainPlan:
    """What a drain would do now, as found by its dry run (read only). Counts are object keys."""

    queued: int = 0
    due: int = 0
    claimed_by_live_run: int = 0
    claimed_by_dead_run: int = 0
    failed_before: int = 0
    max_attempts: int = 0
    oldest_queued_at: datetime | None = None
    oldest_age_seconds: float | None = None
    next_due_at: datetime | None = None
    would_do: str = ""

    def rows(self) -> list[tuple[str, Any]]:
        """The plan as labelled rows, in reading order."""
        return [
            ("objects queued", self.queued),
            ("due now (a drain would take them)", self.due),
            ("of which claimed by a run that died", self.claimed_by_dead_run),
            ("claimed by a live run (being removed)", self.claimed_by_live_run),
            ("failed before (still queued)", self.failed_before),
            ("most attempts of one key", self.max_attempts),
            ("oldest queued at", self.oldest_queued_at),
            ("oldest age s", self.oldest_age_seconds),
            ("next retry at", self.next_due_at),
        ]

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready values."""
        return dict(_jsonable(self))


def _outbox_left(pending: int, claimed: int, failed: int) -> str:
    """``"N object(s) still queued for removal (F failed, C claimed by a live run, W waiting)"``."""
    waiting = max(0, pending - claimed - failed)
    details = [
        f"{n} {what}"
        for n, what in ((failed, "failed"), (claimed, "claimed by a live run"), (waiting, "not yet tried"))
        if n
    ]
    return f"{pending} object(s) still queued for removal" + (f" ({', '.join(details)})" if details else "")


@dataclass
class DrainReport:
    """Phase 2: what happened to the object keys waiting in ``storage_deletions``.

    Counts are objects, not attempts: ``objects_failed`` is the number of distinct keys whose
    removal failed in this run and that are still queued at its end. ``pending*`` describe the
    outbox at the end (restricted to the purged jobs for a purge): every key left, those claimed by
    a live run, those whose last attempt failed.
    """

    objects_removed: int = 0
    objects_absent: int = 0
    objects_failed: int = 0
    requests: int = 0
    duration_seconds: float = 0.0
    stopped_by: str | None = None
    pending: int = 0
    pending_claimed: int = 0
    pending_failed: int = 0
    connection_losses: int = 0
    errors: list[str] = field(default_factory=list)

    def work_left(self) -> str | None:
        """One line saying what this drain left undone, or ``None`` when the outbox is empty."""
        if not self.pending:
            return None
        line = _outbox_left(self.pending, self.pending_claimed, self.pending_failed)
        return line + (f"; stopped by {self.stopped_by}" if self.stopped_by else "")

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return dict(_jsonable(self))


@dataclass
class CleanupReport:
    """The outcome of ``cleanup`` or ``purge`` (``plan`` is set for a dry run only)."""

    dry_run: bool = False
    jobs_deleted: int = 0
    events_deleted: int = 0
    objects_queued: int = 0
    objects_removed: int = 0
    objects_absent: int = 0
    objects_failed: int = 0
    batches: int = 0
    duration_seconds: float = 0.0
    longest_batch_seconds: float = 0.0
    stopped_by: str | None = None
    tombstones_pruned: int = 0
    timeouts: int = 0
    final_batch_size: int = 0
    #: Expired jobs still waiting when a limit stopped phase 1 (counted up to ``EXPIRED_LEFT_CAP``).
    expired_jobs_left: int = 0
    outbox_pending: int = 0
    outbox_claimed: int = 0
    outbox_failed: int = 0
    connection_losses: int = 0
    vacuumed: bool = False
    run_id: str | None = None
    plan: CleanupPlan | None = None
    errors: list[str] = field(default_factory=list)

    def add_drain(self, drain: DrainReport) -> None:
        """Fold a phase-2 report into this one."""
        self.objects_removed += drain.objects_removed
        self.objects_absent += drain.objects_absent
        self.objects_failed += drain.objects_failed
        self.outbox_pending = drain.pending
        self.outbox_claimed = drain.pending_claimed
        self.outbox_failed = drain.pending_failed
        self.connection_losses += drain.connection_losses
        self.errors.extend(drain.errors)
        if drain.stopped_by and not self.stopped_by:
            self.stopped_by = drain.stopped_by

    def work_left(self) -> str | None:
        """One line saying what this run left undone (expired jobs a limit left behind, objects still
        queued, failed or claimed), or ``None`` when it finished everything. A dry run does nothing:
        ``None``."""
        if self.dry_run:
            return None
        parts: list[str] = []
        if self.expired_jobs_left:
            more = "+" if self.expired_jobs_left >= EXPIRED_LEFT_CAP else ""
            parts.append(f"{self.expired_jobs_left}{more} expired job(s) not deleted")
        if self.outbox_pending:
            parts.append(_outbox_left(self.outbox_pending, self.outbox_claimed, self.outbox_failed))
        if not parts:
            return None
        return "; ".join(parts) + (f"; stopped by {self.stopped_by}" if self.stopped_by else "")

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (Dagster metadata, logs)."""
        return dict(_jsonable(self))

    def summary_rows(self) -> list[tuple[str, Any]]:
        """The scalar fields worth showing (a dry run deletes nothing: its zero counts are left out)."""
        skip = {"plan", "errors"}
        if self.dry_run:
            skip |= {"jobs_deleted", "events_deleted", "objects_queued", "objects_removed"}
            skip |= {"objects_absent", "objects_failed", "tombstones_pruned", "vacuumed"}
            skip |= {"expired_jobs_left", "outbox_claimed", "outbox_failed", "connection_losses"}
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in skip]


@dataclass
class ReconcileReport:
    """Orphan reconciliation: objects without a job row, and job rows without their objects."""

    dry_run: bool = True
    objects_listed: int = 0
    orphans_found: int = 0
    orphans_queued: int = 0
    inside_grace_skipped: int = 0
    pending_in_outbox: int = 0
    unparseable_keys: int = 0
    missing_objects: int = 0
    duration_seconds: float = 0.0
    run_id: str | None = None
    orphan_sample: list[str] = field(default_factory=list)
    unparseable_sample: list[str] = field(default_factory=list)
    missing_sample: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return dict(_jsonable(self))
