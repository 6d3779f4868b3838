"""Orphan reconciliation: objects whose job row is gone, and job rows whose objects are gone.

An orphan is an object whose key no job records (its job row is gone, or the job records another
key: a replaced key whose removal was lost with a crashed process, an upload by hand), that is not
already queued in ``storage_deletions``, and that is older than the grace period (an upload racing
its row is left alone; attach records a key before its bytes are sent, so a live upload is never
an orphan). A dry run (the default) only reports; a real run queues orphans in the outbox,
and the next cleanup (or ``drain_outbox``) removes them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

from lifecycle import errors, logs, metrics
from lifecycle.db import Database
from lifecycle.retention.outbox import ObjectStore, require_service_role
from lifecycle.retention.report import ReconcileReport
from lifecycle.settings import MAX_RECONCILE_GRACE_SECONDS

#: Keys checked against the database per query.
PAGE = 1000
#: Keys listed per report sample.
SAMPLE_SIZE = 20

_log = logs.get_logger("lifecycle.retention")


def _job_id(key: str, listed_job_id: UUID | None) -> UUID | None:
    if listed_job_id is not None:
        return listed_job_id
    from lifecycle.storage import parse_key

    try:
        return parse_key(key).job_id
    except errors.InvalidInput:
        return None


def _check_page(
    db: Database,
    page: Sequence[tuple[str, UUID, datetime | None]],
    report: ReconcileReport,
    *,
    cutoff: datetime,
    dry_run: bool,
    run_id: str | None,
) -> None:
    with db.transaction(run_id=run_id) as tx:
        recorded = tx.outbox.recorded_keys([(key, job_id) for key, job_id, _ in page])
        # Only keys no job records can be pending (this also keeps the chunk-row scan rare).
        candidates = [key for key, _, _ in page if key not in recorded]
        queued = tx.outbox.queued_keys(candidates) if candidates else set()
        orphans: list[tuple[str, UUID]] = []
        for key, job_id, created in page:
            if key in recorded:
                continue
            if key in queued:
                report.pending_in_outbox += 1
            elif created is None or created > cutoff:
                # Unknown age counts as recent: never remove what we cannot prove is old.
                report.inside_grace_skipped += 1
            else:
                orphans.append((key, job_id))
        report.orphans_found += len(orphans)
        for key, _ in orphans:
            if len(report.orphan_sample) < SAMPLE_SIZE:
                report.orphan_sample.append(key)
        if orphans and not dry_run:
            # A key its job records by now (an attach since the listing) is left out here.
            report.orphans_queued += tx.outbox.queue_keys(orphans)
    for key, job_id in orphans:
        with logs.bound(job_id=job_id, run_id=run_id):
            _log.info("orphan object" + ("" if dry_run else " queued for removal"), key=key)


@metrics.timed("retention", "reconcile_orphans")
def reconcile_orphans(
    db: Database,
    storage: ObjectStore,
    dry_run: bool = True,
    grace_seconds: int = 3600,
    now: datetime | None = None,
    run_id: str | None = None,
) -> ReconcileReport:
    """List every object, report (and unless ``dry_run``, queue) orphans; report missing objects.

    Needs the service role (``errors.ServiceRoleRequired`` otherwise, before any request): any other
    key lists nothing, which would report every recorded object as missing and no orphan at all.
    Memory: the listed keys are kept in a set for the second direction (rows whose objects are
    missing), about 100 bytes per object.
    """
    from lifecycle.storage import ObjectKind

    require_service_role(storage)

    # Checked before any listing: a grace beyond the bound overflowed ``clock - timedelta``.
    if (
        isinstance(grace_seconds, bool)
        or not isinstance(grace_seconds, int)
        or not 0 <= grace_seconds <= MAX_RECONCILE_GRACE_SECONDS
    ):
        raise errors.InvalidInput(
            f"grace_seconds must be an integer from 0 to {MAX_RECONCILE_GRACE_SECONDS}", field="grace_seconds"
        )
    started = time.perf_counter()
    report = ReconcileReport(dry_run=dry_run, run_id=run_id)
    clock = now or datetime.now(UTC)
    cutoff = clock - timedelta(seconds=grace_seconds)
    listed: set[str] = set()
    page: list[tuple[str, UUID, datetime | None]] = []
    for kind in ObjectKind:
        for obj in storage.iter_keys(kind):
            report.objects_listed += 1
            listed.add(obj.key)
            job_id = _job_id(obj.key, obj.job_id)
            if job_id is None:
                report.unparseable_keys += 1
                if len(report.unparseable_sample) < SAMPLE_SIZE:
                    report.unparseable_sample.append(obj.key)
                continue
            page.append((obj.key, job_id, obj.created_at or obj.updated_at))
            if len(page) >= PAGE:
                _check_page(db, page, report, cutoff=cutoff, dry_run=dry_run, run_id=run_id)
                page = []
    if page:
        _check_page(db, page, report, cutoff=cutoff, dry_run=dry_run, run_id=run_id)

    # The other direction: rows (untouched for the grace period) whose recorded objects are missing.
    after: UUID | None = None
    while True:
        with db.transaction() as tx:
            rows = tx.outbox.recorded_keys_page(now=now, grace_seconds=grace_seconds, after=after, limit=PAGE)
        for row in rows:
            for key in row.keys or ():
                if key not in listed:
                    report.missing_objects += 1
                    if len(report.missing_sample) < SAMPLE_SIZE:
                        report.missing_sample.append((str(row.id), key))
        if len(rows) < PAGE:
            break
        after = rows[-1].id
    report.duration_seconds = time.perf_counter() - started
    _log.info(
        "reconciliation finished",
        dry_run=dry_run,
        listed=report.objects_listed,
        orphans=report.orphans_found,
        queued=report.orphans_queued,
        missing=report.missing_objects,
    )
    return report
