"""``RetentionRepo``: retention's phase 1 (rows), its dry run, purge and tombstones (``sql/retention.sql``).

The policy (batch sizes, rates, retries, reports) lives in ``lifecycle.retention``; this module only
runs the statements. Every statement that decides by time takes ``now``: ``None`` is the database
clock. The repository never commits: the transaction (``db.transaction()``) does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple
from uuid import UUID

from psycopg.rows import class_row, scalar_row

from lifecycle import errors, logs
from lifecycle.db._common import as_uuid
from lifecycle.db._executor import Executor
from lifecycle.redaction import redact_known

if TYPE_CHECKING:
    from lifecycle.db.engine import Database

_log = logs.get_logger("lifecycle.retention")


class DeletedBatch(NamedTuple):
    """What one phase-1 batch (or a purge) did."""

    #: Rows the selection locked (a row updated between snapshot and lock is locked, not deleted).
    locked: int
    #: Jobs deleted (their events went with them), each with a tombstone.
    jobs: int
    #: The first ``log_ids`` deleted ids (``None``: none deleted).
    ids: list[UUID] | None
    events: int
    keys_queued: int


class StatusPlan(NamedTuple):
    """The dry run's summary of one status among the jobs a run would delete."""

    status: str
    jobs: int
    oldest: datetime
    newest: datetime
    objects: int
    #: Events of every selected job (the same number on each status's row).
    events: int


class KeptCounts(NamedTuple):
    """Expired jobs that cleanup keeps, by reason."""

    processing: int
    on_hold: int


def job_ids(values: Iterable[UUID | str]) -> list[UUID]:
    """``values`` as distinct UUIDs in order; any value that is not one is ``InvalidInput`` (``job_id``)."""
    return sorted({as_uuid(value, "job_id") for value in values})


class RetentionRepo:
    """Retention's statements on the transaction's connection."""

    def __init__(self, executor: Executor, *, run_id: str | None = None) -> None:
        self.executor = executor
        #: Written on tombstones and outbox rows.
        self.run_id = run_id

    # -- the transaction -----------------------------------------------------------------------------

    def set_timeouts(self, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
        """Statement and lock timeouts for the rest of this transaction (``0``: none); JIT off."""
        self.executor.one(
            "retention.set_timeouts",
            {"statement_timeout": str(statement_timeout_ms), "lock_timeout": str(lock_timeout_ms)},
        )

    # -- phase 1 -------------------------------------------------------------------------------------

    def delete_batch(
        self,
        *,
        limit: int,
        now: datetime | None,
        reason: str,
        chunk: int,
        log_ids: int,
        retomb: bool = False,
    ) -> DeletedBatch:
        """Lock up to ``limit`` eligible jobs, queue their keys in chunk rows of ``chunk``, tombstone
        and delete them. A job id tombstoned before fails with ``pk_job_deletions`` (``InvalidInput``)
        unless ``retomb``, which replaces the old tombstone."""
        return self._delete(
            "retention.delete_batch_retomb" if retomb else "retention.delete_batch",
            {
                "limit": limit,
                "now": now,
                "reason": reason,
                "per_job": False,
                "chunk": chunk,
                "log_ids": log_ids,
            },
        )

    def delete_named(self, ids: Sequence[UUID], *, reason: str, chunk: int, log_ids: int) -> DeletedBatch:
        """Purge: delete the named jobs (locked first by ``lock_for_purge``), one outbox row per job."""
        return self._delete(
            "retention.delete_named",
            {
                "ids": list(ids),
                "now": None,
                "reason": reason,
                "per_job": True,
                "chunk": chunk,
                "log_ids": log_ids,
            },
        )

    def _delete(self, name: str, params: dict[str, object]) -> DeletedBatch:
        row = self.executor.one(name, params | {"run_id": self.run_id}, row=class_row(DeletedBatch))
        if row is None:  # the statement's outer SELECT always returns its one row
            raise errors.LifecycleError("batch statement returned no row")
        return row

    def has_backlog(self, *, now: datetime | None) -> bool:
        """Whether any job is eligible for deletion (stops at the first one)."""
        return bool(self.executor.scalar("retention.backlog_probe", {"now": now}))

    def count_eligible(self, *, now: datetime | None, cap: int | None) -> int:
        """How many jobs are eligible for deletion, counted up to ``cap`` (``None``: all)."""
        return int(self.executor.scalar("retention.count_eligible", {"now": now, "cap": cap}))

    # -- the dry run ---------------------------------------------------------------------------------

    def plan_by_status(self, *, now: datetime | None, cap: int | None) -> list[StatusPlan]:
        """The first ``cap`` eligible jobs (a real run's order), summarised per status."""
        return self.executor.all(
            "retention.plan_by_status", {"now": now, "cap": cap}, row=class_row(StatusPlan)
        )

    def plan_sample(self, *, now: datetime | None, n: int) -> list[UUID]:
        """The first ``n`` job ids a run would delete."""
        return self.executor.all("retention.plan_sample", {"now": now, "n": n}, row=scalar_row)

    def kept(self, *, now: datetime | None) -> KeptCounts:
        """Expired jobs a run keeps: processing, and on hold."""
        row = self.executor.one("retention.plan_kept", {"now": now}, row=class_row(KeptCounts))
        return row if row is not None else KeptCounts(0, 0)

    # -- tombstones ----------------------------------------------------------------------------------

    def prune_tombstones(self, *, now: datetime | None, keep_seconds: int, limit: int) -> int:
        """Delete up to ``limit`` tombstones older than ``keep_seconds``; how many were deleted."""
        return self.executor.rowcount(
            "retention.prune_tombstones", {"now": now, "keep": keep_seconds, "limit": limit}
        )

    def count_prunable_tombstones(self, *, now: datetime | None, keep_seconds: int) -> int:
        """Tombstones older than ``keep_seconds``."""
        return int(
            self.executor.scalar("retention.count_prunable_tombstones", {"now": now, "keep": keep_seconds})
        )

    # -- purge ---------------------------------------------------------------------------------------

    def lock_for_purge(self, ids: Sequence[UUID]) -> dict[UUID, str]:
        """Lock the named jobs whatever their expiry; ``{id: status}`` of those that exist."""
        rows = self.executor.all("retention.lock_for_purge", {"ids": list(ids)})
        return {row[0]: str(row[1]) for row in rows}

    def tombstoned(self, ids: Sequence[UUID]) -> set[UUID]:
        """Which of ``ids`` have a tombstone (were deleted before)."""
        return set(self.executor.all("retention.tombstoned", {"ids": list(ids)}, row=scalar_row))

    def due_now(self, ids: Sequence[UUID]) -> int:
        """These jobs' outbox rows are due now (erasure does not wait for a failure's backoff)."""
        return self.executor.rowcount("retention.purge_due_now", {"ids": list(ids)})


def vacuum_jobs(db: Database) -> bool:
    """``VACUUM (ANALYZE) jobs`` on an autocommit connection; ``False`` (logged) if it fails here."""
    try:
        with db.connection() as connection:
            Executor(connection).rowcount("retention.vacuum_jobs")
        return True
    except errors.LifecycleError as exc:
        # Not fatal: autovacuum gets there too, just later (e.g. a role that does not own the table).
        _log.warning("vacuum skipped", error=redact_known(str(exc)))
        return False
