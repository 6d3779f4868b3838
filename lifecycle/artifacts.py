"""Job-aware storage: attach a job's source and results, and sign its result URLs.

The order is the point: a key is recorded on its job row (with an event) and committed *before* its
bytes are sent, so no object can exist that its job does not know about; retention cleanup and
reconciliation can always find every object. A failed upload leaves a recorded key without bytes,
which cleanup treats as absent; attaching again (same key) retries the upload.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from lifecycle.errors import JobExpired, ResultsNotAvailable
from lifecycle.logs import bound, get_logger
from lifecycle.states import JobStatus
from lifecycle.storage.keys import normalize_job_id, result_key, source_key

if TYPE_CHECKING:
    from lifecycle.db import Database
    from lifecycle.storage.repo import StorageRepo

log = get_logger("lifecycle.artifacts")

__all__ = ["JobExpired", "ResultsNotAvailable", "attach_result", "attach_source", "signed_result_urls"]


def attach_source(
    db: Database,
    storage: StorageRepo,
    job_id: UUID | str,
    data: bytes,
    ext: str,
    content_type: str,
    *,
    run_id: str | None = None,
) -> str:
    """Record ``sources/{jobId}/source.<ext>`` on the job (committed), then upload ``data``; the key."""
    job = normalize_job_id(job_id)
    return _attach(db, storage, job, source_key(job, ext), data, content_type, run_id, "source")


def attach_result(
    db: Database,
    storage: StorageRepo,
    job_id: UUID | str,
    data: bytes,
    ext: str,
    content_type: str,
    *,
    run_id: str | None = None,
) -> str:
    """Record ``results/{jobId}/clip.<ext>`` on the job (committed), then upload ``data``; the key."""
    job = normalize_job_id(job_id)
    return _attach(db, storage, job, result_key(job, ext), data, content_type, run_id, "result")


def _attach(
    db: Database,
    storage: StorageRepo,
    job: UUID,
    key: str,
    data: bytes,
    content_type: str,
    run_id: str | None,
    what: str,
) -> str:
    with bound(job_id=job, run_id=run_id):
        with db.transaction(run_id=run_id) as tx:
            if what == "source":
                tx.jobs.record_source_key(job, key)
            else:
                tx.jobs.add_result_key(job, key)
        # upsert: the key belongs to this job alone, and attaching again must be able to retry.
        storage.upload(key, data, content_type, upsert=True)
        log.info(f"{what} attached", key=key, size=len(data))
    return key


def signed_result_urls(
    db: Database,
    storage: StorageRepo,
    job_id: UUID | str,
    ttl_seconds: int | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, str]:
    """Signed URLs of a succeeded job's results, valid no later than the job's ``expires_at``.

    ``ResultsNotAvailable`` unless the job succeeded, ``JobExpired`` once its retention ran out;
    a recorded result whose object is missing is left out (and logged).
    """
    job_uuid = normalize_job_id(job_id)
    ttl = storage.check_ttl(ttl_seconds)
    with db.transaction() as tx:
        job = tx.jobs.get(job_uuid)
    if job.status is not JobStatus.SUCCEEDED:
        raise ResultsNotAvailable(job.id, job.status.value)
    remaining = (job.expires_at - (now or datetime.now(UTC))).total_seconds()
    if remaining < 1:
        raise JobExpired(job.id, job.expires_at)
    # Never hand out a URL that outlives the job: cleanup deletes the bytes at expires_at.
    ttl = min(ttl, math.floor(remaining))
    if not job.result_keys:
        return {}
    urls = storage.sign_many(job.result_keys, ttl)
    missing = [key for key, url in urls.items() if url is None]
    if missing:
        with bound(job_id=job.id):
            log.warning("result objects missing", keys=missing)
    return {key: url for key, url in urls.items() if url is not None}
