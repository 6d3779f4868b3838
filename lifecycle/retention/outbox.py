"""Phase 2: drain the ``storage_deletions`` outbox.

Due rows are claimed in chunks (a lease on ``next_attempt_at``, no lock held over HTTP), removed
through the storage repository (at most 1000 keys per bucket and call), and an outbox row is
deleted only when its key is confirmed gone (removed now, or already absent). A failure keeps the
row with ``attempts + 1``, a redacted ``last_error`` and an exponential, capped backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from lifecycle import errors, logs, metrics
from lifecycle.db import Database
from lifecycle.redaction import redact_known
from lifecycle.retention import queries
from lifecycle.retention.limits import Deadline, TokenBucket
from lifecycle.retention.report import DrainReport

if TYPE_CHECKING:
    from lifecycle.storage import ObjectKind, RemoveResult, StoredObject

#: Keys per claim (and per remove call): the Storage API's bulk limit.
CHUNK = 1000
#: How long a claimed row is hidden from other drains (covers one remove call with its retries).
CLAIM_LEASE_SECONDS = 300
#: First retry delay after a failure; doubles per attempt up to ``outbox_max_attempts_backoff_seconds``.
BACKOFF_BASE_SECONDS = 10
#: Whole remove calls failing in a row (storage down) before the drain stops trying this run.
MAX_CONSECUTIVE_CALL_FAILURES = 3
#: Objects logged one by one per drain; past this, chunks are summarised.
LOG_EACH_OBJECT_LIMIT = 100
#: Redacted error texts kept in a report.
MAX_ERRORS_REPORTED = 5

_log = logs.get_logger("lifecycle.retention")


class ObjectStore(Protocol):
    """What retention needs from ``lifecycle.storage.StorageRepo``."""

    def remove(self, keys: Iterable[str]) -> RemoveResult: ...

    def iter_keys(self, kind: ObjectKind | str, *, page_size: int = ...) -> Iterator[StoredObject]: ...


def _by_bucket(rows: Sequence[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """Group claimed rows by key prefix (the bucket, or the prefix in a one-bucket layout)."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for row_id, key in rows:
        groups.setdefault(key.partition("/")[0], []).append((row_id, key))
    return [group[i : i + CHUNK] for group in groups.values() for i in range(0, len(group), CHUNK)]


def _record(db: Database, *, now: datetime | None, done: list[int], failed: list[tuple[int, str]]) -> None:
    """Finish a chunk in one short transaction: drop confirmed rows, back off failed ones."""
    with db.transaction() as tx:
        conn = tx.connection
        if done:
            conn.execute(queries.OUTBOX_DONE, {"ids": done})
        if failed:
            conn.execute(
                queries.OUTBOX_FAILED,
                {
                    "ids": [row_id for row_id, _ in failed],
                    "errs": [err for _, err in failed],
                    "now": now,
                    "cap": db.settings.outbox_max_attempts_backoff_seconds,
                    "base": BACKOFF_BASE_SECONDS,
                },
            )


def _remove(storage: ObjectStore, keys: list[str]) -> tuple[set[str], set[str], dict[str, str]]:
    """``(removed, absent, failed -> redacted reason)``; a whole-call error fails every key."""
    try:
        result = storage.remove(keys)
    except errors.InvalidInput:
        # A malformed key (written by hand?) poisons the whole call: split it out, key by key.
        if len(keys) == 1:
            return set(), set(), {keys[0]: "not an object key"}
        removed: set[str] = set()
        absent: set[str] = set()
        failed: dict[str, str] = {}
        for key in keys:
            r, a, f = _remove(storage, [key])
            removed |= r
            absent |= a
            failed |= f
        return removed, absent, failed
    except errors.LifecycleError as exc:
        reason = redact_known(str(exc))[:500]
        return set(), set(), dict.fromkeys(keys, reason)
    return (
        set(result.removed),
        set(result.absent),
        {f.key: redact_known(f.reason)[:500] for f in result.failed},
    )


@metrics.timed("retention", "drain_outbox")
def drain_outbox(
    db: Database,
    storage: ObjectStore,
    *,
    max_objects_per_second: float | None = None,
    max_runtime_seconds: float | None = None,
    now: datetime | None = None,
    run_id: str | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    job_ids: Sequence[UUID] | None = None,
) -> DrainReport:
    """Remove the objects queued in ``storage_deletions`` that are due (``now``: default the DB clock).

    ``job_ids`` restricts the drain to those jobs' keys (purge). Stops early on the runtime limit or
    when the storage server fails every call ``MAX_CONSECUTIVE_CALL_FAILURES`` times in a row.
    """
    started = time.perf_counter()
    s = db.settings
    rate = max_objects_per_second or s.cleanup_max_objects_per_second
    bucket = TokenBucket(rate)
    deadline = Deadline(max_runtime_seconds)
    report = DrainReport()
    claim_size = bucket.chunk(CHUNK)
    call_failures = 0
    done_count = 0
    total: int | None = None
    if progress is not None:
        with db.transaction() as tx:
            total = int(tx.connection.execute(queries.OUTBOX_PENDING).scalar_one())
        progress("objects", 0, total)
    logged = 0
    with logs.bound(run_id=run_id):
        while report.stopped_by is None:
            if deadline.passed():
                report.stopped_by = "max_runtime_seconds"
                break
            if not bucket.take(claim_size, deadline):
                report.stopped_by = "max_runtime_seconds"
                break
            with db.transaction(run_id=run_id) as tx:
                rows = [
                    (int(r.id), str(r.object_key))
                    for r in tx.connection.execute(
                        queries.CLAIM_OUTBOX,
                        {
                            "now": now,
                            "lease": CLAIM_LEASE_SECONDS,
                            "limit": claim_size,
                            "job_ids": list(job_ids) if job_ids is not None else None,
                        },
                    )
                ]
            bucket.give_back(claim_size - len(rows))
            if not rows:
                break
            chunks = _by_bucket(rows)
            for index, chunk in enumerate(chunks):
                keys = [key for _, key in chunk]
                removed, absent, failed = _remove(storage, keys)
                report.requests += 1
                done = [row_id for row_id, key in chunk if key in removed or key in absent]
                bad = [
                    (row_id, failed.get(key, "no answer for this key"))
                    for row_id, key in chunk
                    if key not in removed and key not in absent
                ]
                _record(db, now=now, done=done, failed=bad)
                report.objects_removed += len(removed)
                report.objects_absent += len(absent)
                report.objects_failed += len(bad)
                metrics.count_deleted("objects", len(removed))
                for _, err in bad:
                    if err not in report.errors and len(report.errors) < MAX_ERRORS_REPORTED:
                        report.errors.append(err)
                if bad and not done:
                    call_failures += 1
                    _log.warning("object removal failed", keys=len(bad), error=bad[0][1])
                    if call_failures >= MAX_CONSECUTIVE_CALL_FAILURES:
                        report.stopped_by = "storage_unavailable"
                        # Chunks claimed but not tried: due again now, not after the lease.
                        untried = [row_id for rest in chunks[index + 1 :] for row_id, _ in rest]
                        if untried:
                            with db.transaction() as tx:
                                tx.connection.execute(queries.RELEASE_CLAIM, {"ids": untried, "now": now})
                        break
                else:
                    call_failures = 0
                for key in keys:
                    if logged >= LOG_EACH_OBJECT_LIMIT:
                        break
                    if key in removed:
                        _log.info("object removed", key=key)
                        logged += 1
                done_count += len(done)
                if progress is not None:
                    progress("objects", done_count, total)
    with db.transaction() as tx:
        report.pending = int(tx.connection.execute(queries.OUTBOX_PENDING).scalar_one())
    report.duration_seconds = time.perf_counter() - started
    return report
