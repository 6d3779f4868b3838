"""Job-aware storage: attach a job's source and results, and sign its result URLs.

The order is the point: a key is recorded on its job row (with an event) and committed *before* its
bytes are sent, so no object can exist that its job does not know about; retention cleanup and
reconciliation can always find every object. A failed upload leaves a recorded key without bytes,
which cleanup treats as absent; attaching again (same key) retries the upload.

Attach and cleanup serialise on the job row:

- Everything is checked before anything is recorded: the key (this job's own), ``data`` (bytes; a
  ``str`` would be read by the Storage client as a local file path) and ``content_type`` (a plain
  ``type/subtype``). Bad input is ``InvalidInput`` and writes nothing.
- A source is attached only while the job is ``queued`` (a worker has not claimed it yet), a result
  only while it is ``processing`` (by the worker that makes it), and never to a job eligible for
  deletion: ``AttachRefused`` (``reason`` ``"status"`` or ``"eligible_for_deletion"``). The check is
  the recording statement itself, not a read before it.
- A key queued for deletion (its source was replaced) is taken out of the outbox by attaching it
  again, unless a drain has already tried to remove it (claimed it, even if that drain died since,
  or failed before): its DELETE may still be in flight and would remove the new upload. That is
  ``KeyPendingDeletion``: attach again once a drain has confirmed the old object gone.
- After the upload, one short read confirms that the job still exists and still records the key.
  Otherwise (retention deleted the job while the bytes were in flight, or the key was replaced
  meanwhile) the key is queued for deletion, so nobody records it again before a drain confirms it
  gone, the object removed, and ``JobNotFound`` or ``KeyReplaced`` raised.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from lifecycle import errors
from lifecycle.errors import JobExpired, ResultsNotAvailable
from lifecycle.logs import bound, get_logger
from lifecycle.states import JobStatus
from lifecycle.storage.keys import normalize_job_id, result_key, source_key

if TYPE_CHECKING:
    from lifecycle.db import Database
    from lifecycle.storage.repo import StorageRepo

log = get_logger("lifecycle.artifacts")

__all__ = ["JobExpired", "ResultsNotAvailable", "attach_result", "attach_source", "signed_result_urls"]

# RFC 6838 restricted names: ``type/subtype`` of at most 127 characters each, no parameters. This
# keeps CR, LF and every other control character out of the request header.
_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_CONTENT_TYPE = re.compile(f"{_MIME_NAME}/{_MIME_NAME}")

Data = bytes | bytearray | memoryview


def attach_source(
    db: Database,
    storage: StorageRepo,
    job_id: UUID | str,
    data: Data,
    ext: str,
    content_type: str,
    *,
    run_id: str | None = None,
) -> str:
    """Record ``sources/{jobId}/source.<ext>`` on a queued job (committed), upload ``data``; the key.

    See the module docstring for what is refused and how a race with cleanup ends.
    """
    job = normalize_job_id(job_id)
    return _attach(db, storage, job, source_key(job, ext), data, content_type, run_id, "source")


def attach_result(
    db: Database,
    storage: StorageRepo,
    job_id: UUID | str,
    data: Data,
    ext: str,
    content_type: str,
    *,
    run_id: str | None = None,
) -> str:
    """Record ``results/{jobId}/clip.<ext>`` on a processing job (committed), upload ``data``; the key.

    See the module docstring for what is refused and how a race with cleanup ends.
    """
    job = normalize_job_id(job_id)
    return _attach(db, storage, job, result_key(job, ext), data, content_type, run_id, "result")


def _payload(data: object) -> bytes:
    """``data`` as bytes; anything else (a ``str`` path, ``None``) is ``InvalidInput``."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise errors.InvalidInput("data must be bytes, bytearray or memoryview", field="data")


def _check_content_type(content_type: object) -> str:
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
        raise errors.InvalidInput("content type must be a plain type/subtype", field="content_type")
    return content_type


def _attach(
    db: Database,
    storage: StorageRepo,
    job: UUID,
    key: str,
    data: object,
    content_type: object,
    run_id: str | None,
    what: str,
) -> str:
    payload = _payload(data)
    mime = _check_content_type(content_type)
    with bound(job_id=job, run_id=run_id):
        with db.transaction(run_id=run_id) as tx:
            if what == "source":
                tx.jobs.record_source_key(job, key)
            else:
                tx.jobs.add_result_key(job, key)
        # upsert: the key belongs to this job alone, and attaching again must be able to retry.
        storage.upload(key, payload, mime, upsert=True)
        _confirm(db, storage, job, key, run_id)
        log.info(f"{what} attached", key=key, size=len(payload))
    return key


def _confirm(db: Database, storage: StorageRepo, job: UUID, key: str, run_id: str | None) -> None:
    """After the upload: the job must still record ``key``, or the object just stored is removed.

    Cleanup may have deleted the job while the bytes were in flight, and its drain found the key
    absent then; or another attach replaced the key and its old object was already confirmed gone.
    Either way the object just stored is one no row points to: its key is queued for deletion
    (committed first, so the drain removes it if this removal fails or this process dies), then
    removed here.
    """
    with db.transaction(run_id=run_id) as tx:
        state = tx.jobs.settle_uploaded_key(job, key)
    if state == "recorded":
        return
    gone = state == "gone"
    _remove_own(
        storage,
        key,
        "the job was deleted while uploading" if gone else "the key was replaced while uploading",
    )
    if gone:
        raise errors.JobNotFound(job)
    raise errors.KeyReplaced(job, key)


def _remove_own(storage: StorageRepo, key: str, why: str) -> None:
    """Remove an upload no row records (its key already queued, so a failure here is the drain's)."""
    try:
        gone = key in storage.remove([key]).gone
    except errors.StorageError:
        gone = False
    if gone:
        log.warning("upload removed again", key=key, reason=why)
    else:
        log.warning("upload could not be removed again; the next drain removes it", key=key, reason=why)


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
    job = db.jobs.get(job_uuid)
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
