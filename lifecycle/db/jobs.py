"""``JobsRepo``: jobs and their status changes.

Every status change is one statement (``sql/jobs.sql``): a guarded ``UPDATE ... WHERE status =
ANY(allowed) RETURNING`` inside a data-modifying CTE that also inserts the event. Zero rows is never
a silent no-op: a follow-up read tells ``JobNotFound`` from ``InvalidTransition``. The repository
never commits; the unit of work (``db.transaction()``) does. ``db.jobs`` runs the one-statement
operations outside a transaction, each its own transaction in one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal
from uuid import UUID

from psycopg.rows import RowMaker

from lifecycle import errors
from lifecycle.db._common import (
    Operation,
    as_uuid,
    check_datetime,
    check_limit,
    check_text,
    decode_cursor,
    dump_json,
    encode_cursor,
)
from lifecycle.records import Job, Page
from lifecycle.settings import MAX_LEASE_SECONDS
from lifecycle.states import JobStatus, allowed_sources, can_transition, parse_status
from lifecycle.storage import keys

if TYPE_CHECKING:
    import psycopg

    from lifecycle.db._executor import Executor
    from lifecycle.settings import Settings

#: Event types written by this repository.
EVENT_CREATED: Final = "created"
EVENT_TRANSITION: Final = "transition"
EVENT_SOURCE_ATTACHED: Final = "source_attached"
EVENT_RESULT_ATTACHED: Final = "result_attached"

#: Largest page of ``list_by_status`` and batch of ``transition_many``.
MAX_PAGE: Final = 1000
MAX_BATCH: Final = 100_000

_UNSET: Any = object()
#: The flags of ``jobs.update``: which fields a call changes.
_UPDATE_FLAGS: Final = ("set_params", "set_error", "set_retention_hold", "set_expires_at")

_STATUS_BY_VALUE: Final = {status.value: status for status in JobStatus}


def _job(values: Sequence[Any]) -> Job:
    """A ``Job`` from a row in ``jobs.columns`` order (extra trailing columns are ignored)."""
    return Job(
        values[0],
        _STATUS_BY_VALUE[values[1]],
        values[2],
        values[3],
        tuple(values[4]),
        values[5],
        values[6],
        values[7],
        values[8],
        values[9],
        values[10],
        values[11],
        values[12],
        values[13],
    )


def job_row(cursor: psycopg.Cursor[Any]) -> RowMaker[Job]:
    """psycopg row factory: rows selected with ``jobs.columns`` become ``Job`` records."""
    return _job


class JobsRepo:
    """Jobs: create, read, update, list, and every status change (each with its event)."""

    def __init__(self, executor: Executor, settings: Settings, *, run_id: str | None = None) -> None:
        self.executor = executor
        self.settings = settings
        self.run_id = run_id

    # -- reads and plain writes -------------------------------------------------------------------

    def create(
        self,
        params: Mapping[str, Any] | None = None,
        expires_at: datetime | None = None,
        api_key_id: UUID | str | None = None,
    ) -> Job:
        """A new queued job and its ``created`` event.

        ``expires_at`` defaults to now plus the queued retention. ``params`` must serialise to at
        most ``settings.max_params_bytes`` of JSON.
        """
        with Operation("jobs", "create"):
            params_json = dump_json(params, "params", max_bytes=self.settings.max_params_bytes)
            if expires_at is not None:
                check_datetime(expires_at, "expires_at")
            key_id = None if api_key_id is None else as_uuid(api_key_id, "api_key_id")
            job = self.executor.one(
                "jobs.create",
                {
                    "params": params_json,
                    "expires_at": expires_at,
                    "retention": self.settings.retention_for(JobStatus.QUEUED),
                    "api_key_id": key_id,
                    "event_type": EVENT_CREATED,
                    "run_id": self.run_id,
                },
                row=job_row,
            )
            if job is None:  # an INSERT ... RETURNING always returns its row
                raise errors.LifecycleError("job was not created")
            return job

    def get(self, job_id: UUID | str) -> Job:
        """The job ``job_id``; ``JobNotFound`` if there is none."""
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("jobs", "get", job_uuid):
            job = self.executor.one("jobs.get", {"id": job_uuid}, row=job_row, job_id=job_uuid)
            if job is None:
                raise errors.JobNotFound(job_uuid)
            return job

    def update(
        self,
        job_id: UUID | str,
        *,
        expected_version: int,
        params: Mapping[str, Any] = _UNSET,
        error: str | None = _UNSET,
        retention_hold: bool = _UNSET,
        expires_at: datetime = _UNSET,
        status: Any = _UNSET,
    ) -> Job:
        """Change non-status fields if the job is still at ``expected_version`` (then version + 1).

        A ``status`` here is ``InvalidInput``: status changes go through ``transition``.
        ``VersionConflict`` carries the actual version; ``JobNotFound`` if the job is gone.
        """
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("jobs", "update", job_uuid):
            if status is not _UNSET:
                raise errors.InvalidInput("status changes go through transition()", field="status")
            if not isinstance(expected_version, int) or isinstance(expected_version, bool):
                raise errors.InvalidInput("expected_version must be an integer", field="expected_version")
            values: dict[str, Any] = {
                "id": job_uuid,
                "expected_version": expected_version,
                "set_params": params is not _UNSET,
                "params": None,
                "set_error": error is not _UNSET,
                "error": None,
                "set_retention_hold": retention_hold is not _UNSET,
                "retention_hold": None,
                "set_expires_at": expires_at is not _UNSET,
                "expires_at": None,
            }
            if params is not _UNSET:
                values["params"] = dump_json(params, "params", max_bytes=self.settings.max_params_bytes)
            if error is not _UNSET:
                values["error"] = None if error is None else check_text(error, "error", allow_empty=True)
            if retention_hold is not _UNSET:
                if not isinstance(retention_hold, bool):
                    raise errors.InvalidInput("retention_hold must be a boolean", field="retention_hold")
                values["retention_hold"] = retention_hold
            if expires_at is not _UNSET:
                values["expires_at"] = check_datetime(expires_at, "expires_at")
            if not any(values[flag] for flag in _UPDATE_FLAGS):
                raise errors.InvalidInput("nothing to update")
            job = self.executor.one("jobs.update", values, row=job_row, job_id=job_uuid)
            if job is not None:
                return job
            current = self.executor.one("jobs.get_status", {"id": job_uuid}, job_id=job_uuid)
            if current is None:
                raise errors.JobNotFound(job_uuid)
            raise errors.VersionConflict(
                job_uuid, expected_version=expected_version, actual_version=current[1]
            )

    def list_by_status(
        self, status: JobStatus | str, limit: int = 100, after: str | None = None
    ) -> Page[Job]:
        """Jobs in ``status``, oldest first; keyset pagination on ``(created_at, id)``.

        Pass the returned ``next_cursor`` as ``after`` for the next page (``None``: last page).
        """
        with Operation("jobs", "list_by_status"):
            wanted = parse_status(status) if isinstance(status, str) else status
            check_limit(limit, maximum=MAX_PAGE)
            values: dict[str, Any] = {"status": wanted.value, "limit": limit + 1}
            statement = "jobs.list_first"
            if after is not None:
                values["after_ts"], after_id = decode_cursor(after)
                values["after_id"] = as_uuid(after_id, "after")
                statement = "jobs.list_after"
            jobs = self.executor.all(statement, values, row=job_row)
            more = len(jobs) > limit
            items = jobs[:limit] if more else jobs
            cursor = encode_cursor(items[-1].created_at, items[-1].id) if more else None
            return Page(items=items, next_cursor=cursor)

    # -- status changes ---------------------------------------------------------------------------

    def transition(
        self,
        job_id: UUID | str,
        to_status: JobStatus | str,
        expected_from: JobStatus | str | None = None,
        reason: str | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
        lease_seconds: int | None = None,
    ) -> Job:
        """Move a job to ``to_status`` and write its ``transition`` event, in one statement.

        ``expected_from`` narrows the allowed sources to that one status, so a lost race is an
        ``InvalidTransition`` carrying the actual status. Entering a final status (or ``failed``)
        starts its retention clock; entering ``queued`` restarts the queued one; entering
        ``processing`` takes a lease and counts an attempt; leaving it drops the lease.
        ``error`` (optional) is stored on the job, e.g. when it fails.
        """
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("jobs", "transition", job_uuid):
            target = parse_status(to_status) if isinstance(to_status, str) else to_status
            sources = allowed_sources(target)
            if expected_from is not None:
                source = parse_status(expected_from) if isinstance(expected_from, str) else expected_from
                sources = sources & {source}
            values = self._status_values(target, reason, data, error=error, lease_seconds=lease_seconds)
            values["id"] = job_uuid
            job = None
            if len(sources) == 1:
                for only in sources:
                    values["from_status"] = only.value
                job = self.executor.one("jobs.transition_known_from", values, row=job_row, job_id=job_uuid)
            elif sources:
                values["allowed"] = sorted(s.value for s in sources)
                job = self.executor.one("jobs.transition_any_from", values, row=job_row, job_id=job_uuid)
            if job is not None:
                return job
            current = self.executor.one("jobs.get_status", {"id": job_uuid}, job_id=job_uuid)
            if current is None:
                raise errors.JobNotFound(job_uuid)
            raise errors.InvalidTransition(job_id=job_uuid, from_status=current[0], to_status=target.value)

    def transition_many(
        self,
        from_status: JobStatus | str,
        to_status: JobStatus | str,
        *,
        limit: int = 1000,
        created_before: datetime | None = None,
        updated_before: datetime | None = None,
        lease_expired: bool = False,
        reason: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> list[UUID]:
        """Move up to ``limit`` jobs in ``from_status`` (oldest first) to ``to_status``.

        One statement: the matching rows are locked with ``FOR UPDATE SKIP LOCKED`` (rows another
        transaction holds are left for the next call), updated, and given one event each. Returns
        the moved ids; callers loop until fewer than ``limit`` come back.
        """
        with Operation("jobs", "transition_many"):
            source = parse_status(from_status) if isinstance(from_status, str) else from_status
            target = parse_status(to_status) if isinstance(to_status, str) else to_status
            if not can_transition(source, target):
                raise errors.InvalidTransition(from_status=source.value, to_status=target.value)
            check_limit(limit, maximum=MAX_BATCH)
            values = self._status_values(target, reason, data)
            values.update(
                from_status=source.value,
                limit=limit,
                created_before=None
                if created_before is None
                else check_datetime(created_before, "created_before"),
                updated_before=None
                if updated_before is None
                else check_datetime(updated_before, "updated_before"),
                lease_expired=bool(lease_expired),
            )
            return [row[0] for row in self.executor.all("jobs.transition_many", values)]

    def exhausted_leases(self, max_attempts: int, limit: int) -> list[UUID]:
        """Processing jobs whose lease ran out after ``max_attempts`` claims, locked (``SKIP LOCKED``)
        for the caller to fail them in this transaction; oldest lease first, at most ``limit``."""
        with Operation("jobs", "exhausted_leases"):
            check_limit(limit, maximum=MAX_BATCH)
            rows = self.executor.all("jobs.exhausted_leases", {"max_attempts": max_attempts, "limit": limit})
            return [row[0] for row in rows]

    def claim_next(self, lease_seconds: int | None = None) -> Job | None:
        """The oldest queued job, moved to ``processing`` with a lease; ``None`` if none is free.

        ``SKIP LOCKED``: concurrent workers never wait for each other nor get the same job.
        """
        with Operation("jobs", "claim_next"):
            values = self._status_values(JobStatus.PROCESSING, None, None, lease_seconds=lease_seconds)
            return self.executor.one("jobs.claim_next", values, row=job_row)

    def renew_lease(self, job_id: UUID | str, lease_seconds: int | None = None) -> Job:
        """Extend a processing job's lease to now plus ``lease_seconds`` (default: the setting)."""
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("jobs", "renew_lease", job_uuid):
            lease = self._lease(lease_seconds)
            job = self.executor.one(
                "jobs.renew_lease", {"id": job_uuid, "lease": lease}, row=job_row, job_id=job_uuid
            )
            if job is not None:
                return job
            current = self.executor.one("jobs.get_status", {"id": job_uuid}, job_id=job_uuid)
            if current is None:
                raise errors.JobNotFound(job_uuid)
            raise errors.InvalidTransition(
                "only a processing job holds a lease",
                job_id=job_uuid,
                from_status=current[0],
                to_status=JobStatus.PROCESSING.value,
            )

    # -- storage keys -------------------------------------------------------------------------------

    def record_source_key(self, job_id: UUID | str, key: str) -> Job:
        """Record the job's source object key (before its bytes are sent), with a ``source_attached`` event.

        ``key`` must be this job's own ``sources/{id}/source.<ext>`` (else ``InvalidInput``, before
        any SQL), and the job ``queued`` and not eligible for deletion (else ``AttachRefused``); a key
        a drain has tried to remove (claimed, or failed before) is ``KeyPendingDeletion`` until its
        removal is confirmed; one no drain has tried is taken out of the outbox. Recording the same key again
        changes nothing. A different key replaces the old one, and the old key goes to the
        ``storage_deletions`` outbox so its object is not orphaned.
        """
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("jobs", "record_source_key", job_uuid):
            keys.parse_own_key(key, keys.ObjectKind.SOURCE, job_uuid)
            return self._record_key(
                "jobs.record_source_key", job_uuid, key, JobStatus.QUEUED, EVENT_SOURCE_ATTACHED
            )

    def add_result_key(self, job_id: UUID | str, key: str) -> Job:
        """Append ``key`` to the job's result keys (if absent), with a ``result_attached`` event.

        ``key`` must be this job's own ``results/{id}/clip.<ext>`` (else ``InvalidInput``, before
        any SQL), and the job ``processing`` (else ``AttachRefused``); a key pending deletion is
        handled as in ``record_source_key``.
        """
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("jobs", "add_result_key", job_uuid):
            keys.parse_own_key(key, keys.ObjectKind.RESULT, job_uuid)
            return self._record_key(
                "jobs.add_result_key", job_uuid, key, JobStatus.PROCESSING, EVENT_RESULT_ATTACHED
            )

    def settle_uploaded_key(self, job_id: UUID | str, key: str) -> Literal["recorded", "replaced", "gone"]:
        """After an upload of ``key``: ``"recorded"`` if the job still records it; otherwise the key is
        queued for deletion (an attempt counted, see ``_SETTLE_UPLOAD``) and the answer says why:
        ``"replaced"`` (the job records another key) or ``"gone"`` (the job was deleted)."""
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("jobs", "settle_uploaded_key", job_uuid):
            if keys.parse_key(key).job_id != job_uuid:
                raise errors.InvalidInput("not this job's own key", field="key")
            outcome = self.executor.scalar(
                "jobs.settle_upload", {"id": job_uuid, "key": key, "run_id": self.run_id}, job_id=job_uuid
            )
            assert outcome is not None  # the statement always answers one row
            return outcome  # type: ignore[no-any-return]

    def _record_key(
        self, statement: str, job_uuid: UUID, key: str, attach_status: JobStatus, event_type: str
    ) -> Job:
        """Run a guarded recording statement; its outcome is the job, or the refusal raised."""
        if not self.executor.in_transaction:
            # The row lock must hold until the recording statement has decided.
            raise errors.LifecycleError("recording a key runs inside db.transaction()")
        if self.executor.one("jobs.lock", {"id": job_uuid}, job_id=job_uuid) is None:
            raise errors.JobNotFound(job_uuid)
        values = {
            "id": job_uuid,
            "key": key,
            "attach_status": attach_status.value,
            "event_type": event_type,
            "run_id": self.run_id,
            "now": None,
        }
        row = self.executor.one(statement, values, job_id=job_uuid)
        if row is None:  # the row is locked by this transaction: it cannot have gone
            raise errors.JobNotFound(job_uuid)
        outcome = row[-1]
        if outcome in ("recorded", "unchanged"):
            return _job(row)
        if outcome == "pending_deletion":
            raise errors.KeyPendingDeletion(job_uuid, key)
        raise errors.AttachRefused(job_uuid, reason=outcome, status=row[1])

    # -- helpers ----------------------------------------------------------------------------------

    def _lease(self, lease_seconds: int | None) -> timedelta:
        """The lease as a ``timedelta``: 1 s to ``MAX_LEASE_SECONDS`` (beyond, timedelta overflows)."""
        seconds = self.settings.lease_seconds if lease_seconds is None else lease_seconds
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= MAX_LEASE_SECONDS:
            raise errors.InvalidInput(
                f"lease_seconds must be an integer from 1 to {MAX_LEASE_SECONDS}", field="lease_seconds"
            )
        return timedelta(seconds=seconds)

    def _status_values(
        self,
        target: JobStatus,
        reason: str | None,
        data: Mapping[str, Any] | None,
        *,
        error: str | None = None,
        lease_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Bound values of the shared SET list and event insert for entering ``target``."""
        event_data: dict[str, Any] = dict(data) if isinstance(data, Mapping) else {}
        if data is not None and not isinstance(data, Mapping):
            raise errors.InvalidInput("must be a JSON object", field="data")
        if reason is not None:
            event_data["reason"] = check_text(reason, "reason")
        if error is not None:
            check_text(error, "error")
        entering_processing = target is JobStatus.PROCESSING
        retention: timedelta | None = None
        if target is JobStatus.QUEUED or target in (
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELED,
        ):
            retention = self.settings.retention_for(target)
        return {
            "to_status": target.value,
            "attempt_inc": 1 if entering_processing else 0,
            "lease": self._lease(lease_seconds) if entering_processing else None,
            "retention": retention,
            "error": error,
            "event_type": EVENT_TRANSITION,
            "data": dump_json(event_data, "data", max_bytes=self.settings.max_params_bytes)
            if event_data
            else "{}",
            "run_id": self.run_id,
        }
