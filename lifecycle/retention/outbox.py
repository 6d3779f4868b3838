"""Phase 2: drain the ``storage_deletions`` outbox.

Due rows are claimed in chunks (a lease on ``next_attempt_at``, no lock held over HTTP), removed
through the storage repository (at most 1000 keys per bucket and call), and an outbox row is
deleted only when its key is confirmed gone (removed now, or already absent). A failure keeps the
row with ``attempts + 1``, a redacted ``last_error`` and an exponential, capped backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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
    """Group claimed ``(row id, key)`` pairs by key prefix (the bucket, or the prefix in a
    one-bucket layout), in remove calls of at most ``CHUNK`` keys."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for row_id, key in rows:
        groups.setdefault(key.partition("/")[0], []).append((row_id, key))
    return [group[i : i + CHUNK] for group in groups.values() for i in range(0, len(group), CHUNK)]


@dataclass
class _Claimed:
    """One claimed outbox row: a single key, or a chunk of keys (phase 1)."""

    keys: list[str]
    done: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)


def _record(db: Database, *, now: datetime | None, rows: dict[int, _Claimed], release: bool = False) -> None:
    """Finish rows in one short transaction: drop the rows whose keys are all confirmed gone; a
    chunk row that is partly done keeps only its other keys; rows with a failure back off; rows
    not (fully) tried are due again now when ``release``."""
    if not rows:
        return
    done: list[int] = []
    failed: list[tuple[int, str]] = []
    untried: list[int] = []
    keep: list[tuple[int, list[str]]] = []
    for row_id, row in rows.items():
        rest = [k for k in row.keys if k not in row.done]
        if not rest:
            done.append(row_id)
            continue
        if row.done:
            keep.append((row_id, rest))
        if row.failed:
            failed.append((row_id, next(iter(row.failed.values()))))
        elif release:
            untried.append(row_id)
    with db.transaction() as tx:
        conn = tx.connection
        if done:
            conn.execute(queries.OUTBOX_DONE, {"ids": done})
        for row_id, rest in keep:
            conn.execute(queries.OUTBOX_KEEP_KEYS, {"id": row_id, "keys": rest})
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
        if untried:
            conn.execute(queries.RELEASE_CLAIM, {"ids": untried, "now": now})


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
                claimed = {
                    int(r.id): _Claimed(list(r.keys))
                    for r in tx.connection.execute(
                        queries.CLAIM_OUTBOX,
                        {
                            "now": now,
                            "lease": CLAIM_LEASE_SECONDS,
                            "limit": claim_size,
                            "chunk": CHUNK,
                            "job_ids": list(job_ids) if job_ids is not None else None,
                        },
                    )
                }
            if not claimed:
                bucket.give_back(claim_size)
                break
            n_keys = sum(len(row.keys) for row in claimed.values())
            if n_keys < claim_size:
                bucket.give_back(claim_size - n_keys)
            elif n_keys > claim_size:
                # A chunk row larger than the rate allows per second: pay the difference (sleeps).
                bucket.take(n_keys - claim_size)
            chunks = _by_bucket([(row_id, key) for row_id, row in claimed.items() for key in row.keys])
            left = {row_id: len(row.keys) for row_id, row in claimed.items()}
            for chunk in chunks:
                keys = [key for _, key in chunk]
                removed, absent, failed = _remove(storage, keys)
                report.requests += 1
                n_done = n_bad = 0
                for row_id, key in chunk:
                    row = claimed[row_id]
                    if key in removed or key in absent:
                        row.done.add(key)
                        n_done += 1
                    else:
                        err = failed.get(key, "no answer for this key")
                        row.failed[key] = err
                        n_bad += 1
                        if err not in report.errors and len(report.errors) < MAX_ERRORS_REPORTED:
                            report.errors.append(err)
                    left[row_id] -= 1
                # Rows whose every key has an answer are recorded now (a crash later redoes less).
                finished = {row_id: claimed[row_id] for row_id in {r for r, _ in chunk} if left[row_id] == 0}
                _record(db, now=now, rows=finished)
                report.objects_removed += len(removed)
                report.objects_absent += len(absent)
                report.objects_failed += n_bad
                metrics.count_deleted("objects", len(removed))
                if n_bad and not n_done:
                    call_failures += 1
                    _log.warning("object removal failed", keys=n_bad, error=next(iter(failed.values()), "?"))
                    if call_failures >= MAX_CONSECUTIVE_CALL_FAILURES:
                        report.stopped_by = "storage_unavailable"
                        # Rows claimed but not (fully) tried: due again now, not after the lease.
                        rest = {r: claimed[r] for r, n in left.items() if n > 0}
                        if rest:
                            _record(db, now=now, rows=rest, release=True)
                        break
                else:
                    call_failures = 0
                for key in keys:
                    if logged >= LOG_EACH_OBJECT_LIMIT:
                        break
                    if key in removed:
                        _log.info("object removed", key=key)
                        logged += 1
                done_count += n_done
                if progress is not None:
                    progress("objects", done_count, total)
    with db.transaction() as tx:
        report.pending = int(tx.connection.execute(queries.OUTBOX_PENDING).scalar_one())
    report.duration_seconds = time.perf_counter() - started
    return report
