"""``JobsRepo``: jobs and their status changes.

Every status change is one statement: a guarded ``UPDATE ... WHERE status = ANY(:allowed)
RETURNING`` inside a data-modifying CTE that also inserts the event. Zero rows is never a silent
no-op: a follow-up read tells ``JobNotFound`` from ``InvalidTransition``. The repository never
commits; the unit of work (``db.transaction()``) does.
"""

# The f-strings that build SQL here join module constants (column lists, fixed fragments) only;
# every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, LiteralString
from uuid import UUID

import sqlalchemy as sa
import sqlalchemy.exc

from lifecycle import errors
from lifecycle.db._common import (
    as_uuid,
    check_datetime,
    check_limit,
    check_text,
    decode_cursor,
    dump_json,
    encode_cursor,
    fetch_all,
    fetch_one,
    operation,
)
from lifecycle.db._translate import translate
from lifecycle.records import Job, Page
from lifecycle.settings import MAX_LEASE_SECONDS
from lifecycle.states import JobStatus, allowed_sources, can_transition, parse_status
from lifecycle.storage import keys

if TYPE_CHECKING:
    from lifecycle.db.events import JobEventsRepo
    from lifecycle.settings import Settings

#: Event types written by this repository.
EVENT_CREATED: Final = "created"
EVENT_TRANSITION: Final = "transition"
EVENT_SOURCE_ATTACHED: Final = "source_attached"
EVENT_RESULT_ATTACHED: Final = "result_attached"

#: Largest page of ``list_by_status`` and batch of ``transition_many``.
MAX_PAGE: Final = 1000
MAX_BATCH: Final = 100_000

_COLUMNS = (
    "id, status, params, source_key, result_keys, error, attempts, version, lease_expires_at, "
    "retention_hold, api_key_id, created_at, updated_at, expires_at"
)
_J_COLUMNS = ", ".join("j." + c.strip() for c in _COLUMNS.split(","))

_UNSET: Any = object()


_STATUS_BY_VALUE: Final = {status.value: status for status in JobStatus}


# The slot setters of ``Job``, in field order (the order of ``_COLUMNS``; a unit test keeps the two
# in step). A record is built by setting its slots directly: the frozen dataclass's ``__init__``
# goes through ``object.__setattr__`` once per field, which doubles the cost of a page of 100.
(_S0, _S1, _S2, _S3, _S4, _S5, _S6, _S7, _S8, _S9, _S10, _S11, _S12, _S13) = (
    Job.__dict__[f.name].__set__ for f in dataclasses.fields(Job)
)
_new = object.__new__


def job_from_row(row: Sequence[Any]) -> Job:
    """A ``Job`` from a row whose first columns are the repository's column list."""
    job: Job = _new(Job)
    _S0(job, row[0])
    _S1(job, _STATUS_BY_VALUE[row[1]])
    _S2(job, row[2])
    _S3(job, row[3])
    _S4(job, tuple(row[4]))
    _S5(job, row[5])
    _S6(job, row[6])
    _S7(job, row[7])
    _S8(job, row[8])
    _S9(job, row[9])
    _S10(job, row[10])
    _S11(job, row[11])
    _S12(job, row[12])
    _S13(job, row[13])
    return job


# -- SQL ------------------------------------------------------------------------------------------
# psycopg's own placeholders: these are sent on the driver connection (``_common.fetch_one``), and
# the benchmark's raw side sends the same strings. The SET list is shared by every status change;
# ``lease`` and ``retention`` are intervals or NULL: a NULL lease clears it (only a processing job
# holds one: ck_jobs_lease), a NULL retention keeps the current expiry.
_SET_STATUS = """
        status = %(to_status)s,
        version = j.version + 1,
        updated_at = now(),
        attempts = j.attempts + %(attempt_inc)s,
        lease_expires_at = now() + CAST(%(lease)s AS interval),
        expires_at = COALESCE(now() + CAST(%(retention)s AS interval), j.expires_at),
        error = COALESCE(%(error)s, j.error)"""

_INSERT_TRANSITION_EVENT = """
    INSERT INTO job_events (job_id, type, from_status, to_status, data, run_id)
    SELECT id, %(event_type)s, from_status, status, CAST(%(data)s AS jsonb), %(run_id)s FROM moved"""

_CREATE = f"""
WITH created AS (
    INSERT INTO jobs (params, expires_at, api_key_id)
    VALUES (
        CAST(%(params)s AS jsonb),
        COALESCE(%(expires_at)s, now() + CAST(%(retention)s AS interval)),
        %(api_key_id)s
    )
    RETURNING {_COLUMNS}
), ev AS (
    INSERT INTO job_events (job_id, type, from_status, to_status, data, run_id)
    SELECT id, %(event_type)s, NULL, status, '{{}}'::jsonb, %(run_id)s FROM created
)
SELECT {_COLUMNS} FROM created
"""

_GET = f"SELECT {_COLUMNS} FROM jobs WHERE id = %(id)s"
_GET_STATUS = "SELECT status, version FROM jobs WHERE id = %(id)s"

# When the source status is known (one allowed source, or ``expected_from``): the plain guarded
# UPDATE, and the event's from_status is that status.
_TRANSITION_KNOWN_FROM = f"""
WITH moved AS (
    UPDATE jobs AS j SET {_SET_STATUS}
    WHERE j.id = %(id)s AND j.status = %(from_status)s
    RETURNING {_J_COLUMNS}, CAST(%(from_status)s AS text) AS from_status
), ev AS ({_INSERT_TRANSITION_EVENT}
)
SELECT * FROM moved
"""

# When several sources are allowed, the old status has to come from the row itself. The
# ``FOR UPDATE`` CTE waits for a concurrent writer and then reads the row's newest version, so the
# event's from_status is the status actually left (a plain self-join could see a stale one).
_TRANSITION_ANY_FROM = f"""
WITH old AS (
    SELECT id, status FROM jobs WHERE id = %(id)s FOR UPDATE
), moved AS (
    UPDATE jobs AS j SET {_SET_STATUS}
    FROM old
    WHERE j.id = old.id AND old.status = ANY(%(allowed)s)
    RETURNING {_J_COLUMNS}, old.status AS from_status
), ev AS ({_INSERT_TRANSITION_EVENT}
)
SELECT * FROM moved
"""

_CLAIM_NEXT = f"""
WITH next AS (
    SELECT id FROM jobs WHERE status = 'queued'
    ORDER BY created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs AS j SET {_SET_STATUS}
    FROM next
    WHERE j.id = next.id
    RETURNING {_J_COLUMNS}, CAST('queued' AS text) AS from_status
), ev AS ({_INSERT_TRANSITION_EVENT}
)
SELECT * FROM moved
"""

_RENEW_LEASE = f"""
UPDATE jobs AS j
SET lease_expires_at = now() + CAST(%(lease)s AS interval), version = j.version + 1, updated_at = now()
WHERE j.id = %(id)s AND j.status = 'processing'
RETURNING {_COLUMNS}
"""

# -- storage keys: attach and cleanup serialise on the job row ----------------------------------
# A key is recorded only in the state that produces its object (a source while ``queued``, before a
# worker claims the job; a result while ``processing``, by the worker making it) and never on a job
# eligible for deletion (what retention's phase 1 selects, on the database clock). The row is
# locked first (``_LOCK_JOB``), so the recording statement's snapshot follows every change to this
# job committed before it, including a replaced key that another attach queued for deletion.
_LOCK_JOB = "SELECT status FROM jobs WHERE id = %(id)s FOR UPDATE"

# The guard both recording statements share: ``verdict.outcome`` is NULL when the key may be
# recorded, else why not. The key's own outbox row (queued when it was replaced) is locked too: a
# drain claims rows with SKIP LOCKED, so it cannot take the row while this statement decides. A row
# that a drain ever sent a DELETE for may have that DELETE still in flight, and it would remove the
# new upload after the fact: a claim, live or dead (a dead drain's request can still land, and so can
# the request of a drain that merely lost its lock session), or an earlier attempt (a failed remove
# may have timed out while the server still runs it; a dead claim taken over counts as an attempt).
# Such a key is refused (``pending_deletion``) until a drain confirms it gone and deletes the row.
# A row no DELETE was ever sent for is taken out of the outbox (``taken_back``): the job needs it.
# A job id with a tombstone is a re-used one (a restored row): its old keys may wait in the chunk
# rows phase 1 or a purge wrote (``chunked``), and the drain would remove them; refused as well. The
# tombstone probe (a primary key lookup, an InitPlan) keeps the chunk-row scan off every other attach.
_KEY_GUARD = f"""
WITH job AS (
    SELECT {_COLUMNS},
           CASE
               WHEN expires_at <= now() AND status <> 'processing' AND NOT retention_hold
                   THEN 'eligible_for_deletion'
               WHEN status <> %(attach_status)s THEN 'status'
           END AS refused
    FROM jobs WHERE id = %(id)s
    FOR UPDATE
), pending AS (
    SELECT id, claimed_by IS NOT NULL OR attempts > 0 AS claimed
    FROM storage_deletions WHERE object_key = %(key)s
    FOR UPDATE
), chunked AS (
    SELECT 1 FROM storage_deletions
    WHERE EXISTS (SELECT 1 FROM job_deletions WHERE job_id = %(id)s)
      AND object_keys IS NOT NULL AND CAST(%(key)s AS text) = ANY(object_keys)
    LIMIT 1
), verdict AS (
    SELECT job.*,
           coalesce(refused, CASE WHEN EXISTS (SELECT 1 FROM pending WHERE claimed)
                                       OR EXISTS (SELECT 1 FROM chunked)
                                  THEN 'pending_deletion' END) AS outcome
    FROM job
), taken_back AS (
    DELETE FROM storage_deletions AS d USING pending, verdict
    WHERE d.id = pending.id AND verdict.outcome IS NULL
)"""

# The last column is the outcome: 'recorded', 'unchanged' (the same key again: a retried upload),
# or the refusal reason.
_KEY_OUTCOME = f"""
SELECT {_COLUMNS}, 'recorded' AS outcome FROM moved
UNION ALL
SELECT {_COLUMNS}, coalesce(outcome, 'unchanged') FROM verdict WHERE NOT EXISTS (SELECT 1 FROM moved)
"""

_RECORD_SOURCE_KEY = f"""{_KEY_GUARD}, moved AS (
    UPDATE jobs AS j SET source_key = %(key)s, version = j.version + 1, updated_at = now()
    FROM verdict
    WHERE j.id = verdict.id AND verdict.outcome IS NULL AND verdict.source_key IS DISTINCT FROM %(key)s
    RETURNING {_J_COLUMNS}, verdict.source_key AS previous_key
), outbox AS (
    -- A replaced source would otherwise be an object no row points to: queue it for deletion.
    INSERT INTO storage_deletions (object_key, job_id, run_id)
    SELECT previous_key, id, %(run_id)s FROM moved WHERE previous_key IS NOT NULL
    ON CONFLICT (object_key) DO NOTHING
), ev AS (
    INSERT INTO job_events (job_id, type, data, run_id)
    SELECT id, %(event_type)s,
           jsonb_strip_nulls(jsonb_build_object('key', CAST(%(key)s AS text), 'previous', previous_key)),
           %(run_id)s
    FROM moved
){_KEY_OUTCOME}"""

_ADD_RESULT_KEY = f"""{_KEY_GUARD}, moved AS (
    UPDATE jobs AS j
    SET result_keys = array_append(j.result_keys, CAST(%(key)s AS text)), version = j.version + 1,
        updated_at = now()
    FROM verdict
    WHERE j.id = verdict.id AND verdict.outcome IS NULL
      AND NOT (CAST(%(key)s AS text) = ANY(verdict.result_keys))
    RETURNING {_J_COLUMNS}
), ev AS (
    INSERT INTO job_events (job_id, type, data, run_id)
    SELECT id, %(event_type)s, jsonb_build_object('key', CAST(%(key)s AS text)), %(run_id)s FROM moved
){_KEY_OUTCOME}"""

# After an upload: does the job still record its key? If not (the job was deleted, or the key
# replaced, while the bytes were in flight), the key is queued for deletion in the same statement,
# committed before the caller removes the object, with an attempt counted: the caller's DELETE may
# outlive the caller, so nobody may record the key again until a drain has confirmed it gone, and if
# the caller dies mid-removal the drain still removes the object. The row lock keeps an attach of
# the same key from recording it between this check and the queueing.
_SETTLE_UPLOAD = """
WITH job AS (
    SELECT coalesce(source_key = %(key)s, false) OR CAST(%(key)s AS text) = ANY(result_keys) AS records
    FROM jobs WHERE id = %(id)s
    FOR UPDATE
), queued AS (
    INSERT INTO storage_deletions (object_key, job_id, run_id, attempts, last_error)
    SELECT %(key)s, %(id)s, %(run_id)s, 1, 'removed by the attach whose upload outlived its job or key'
    WHERE NOT EXISTS (SELECT 1 FROM job WHERE records)
    ON CONFLICT (object_key) DO UPDATE SET attempts = storage_deletions.attempts + 1
)
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM job) THEN 'gone'
            WHEN (SELECT records FROM job) THEN 'recorded'
            ELSE 'replaced' END
"""


class JobsRepo:
    """Jobs: create, read, update, list, and every status change (each with its event)."""

    def __init__(
        self,
        connection: sa.Connection,
        settings: Settings,
        events: JobEventsRepo,
        *,
        run_id: str | None = None,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.events = events
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
        with operation("jobs", "create"):
            params_json = dump_json(params, "params", max_bytes=self.settings.max_params_bytes)
            if expires_at is not None:
                check_datetime(expires_at, "expires_at")
            key_id = None if api_key_id is None else as_uuid(api_key_id, "api_key_id")
            row = fetch_one(
                self.connection,
                _CREATE,
                {
                    "params": params_json,
                    "expires_at": expires_at,
                    "retention": self.settings.retention_for(JobStatus.QUEUED),
                    "api_key_id": key_id,
                    "event_type": EVENT_CREATED,
                    "run_id": self.run_id,
                },
            )
            if row is None:  # an INSERT ... RETURNING always returns its row
                raise errors.LifecycleError("job was not created")
            return job_from_row(row)

    def get(self, job_id: UUID | str) -> Job:
        """The job ``job_id``; ``JobNotFound`` if there is none."""
        job_uuid = as_uuid(job_id, "job_id")
        with operation("jobs", "get", job_uuid):
            row = fetch_one(self.connection, _GET, {"id": job_uuid}, job_id=job_uuid)
            if row is None:
                raise errors.JobNotFound(job_uuid)
            return job_from_row(row)

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
        with operation("jobs", "update", job_uuid):
            if status is not _UNSET:
                raise errors.InvalidInput("status changes go through transition()", field="status")
            if not isinstance(expected_version, int) or isinstance(expected_version, bool):
                raise errors.InvalidInput("expected_version must be an integer", field="expected_version")
            sets: list[str] = []
            values: dict[str, Any] = {"id": job_uuid, "expected_version": expected_version}
            if params is not _UNSET:
                values["params"] = dump_json(params, "params", max_bytes=self.settings.max_params_bytes)
                sets.append("params = CAST(%(params)s AS jsonb)")
            if error is not _UNSET:
                values["error"] = None if error is None else check_text(error, "error", allow_empty=True)
                sets.append("error = %(error)s")
            if retention_hold is not _UNSET:
                if not isinstance(retention_hold, bool):
                    raise errors.InvalidInput("retention_hold must be a boolean", field="retention_hold")
                values["retention_hold"] = retention_hold
                sets.append("retention_hold = %(retention_hold)s")
            if expires_at is not _UNSET:
                values["expires_at"] = check_datetime(expires_at, "expires_at")
                sets.append("expires_at = %(expires_at)s")
            if not sets:
                raise errors.InvalidInput("nothing to update")
            # The SET fragments are fixed strings chosen above; every value is a bound parameter.
            try:
                row = self.connection.exec_driver_sql(
                    f"UPDATE jobs SET {', '.join(sets)}, version = version + 1, updated_at = now() "
                    f"WHERE id = %(id)s AND version = %(expected_version)s RETURNING {_COLUMNS}",
                    values,
                ).fetchone()
            except sqlalchemy.exc.DBAPIError as exc:
                raise translate(exc, job_id=job_uuid) from exc
            if row is not None:
                return job_from_row(row)
            current = fetch_one(self.connection, _GET_STATUS, {"id": job_uuid}, job_id=job_uuid)
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
        with operation("jobs", "list_by_status"):
            wanted = parse_status(status) if isinstance(status, str) else status
            check_limit(limit, maximum=MAX_PAGE)
            values: dict[str, Any] = {"status": wanted.value, "limit": limit + 1}
            if after is None:
                statement = _LIST_FIRST
            else:
                values["after_ts"], after_id = decode_cursor(after)
                values["after_id"] = as_uuid(after_id, "after")
                statement = _LIST_AFTER
            rows = fetch_all(self.connection, statement, values)
            more = len(rows) > limit
            items = [job_from_row(r) for r in (rows[:limit] if more else rows)]
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
        with operation("jobs", "transition", job_uuid):
            target = parse_status(to_status) if isinstance(to_status, str) else to_status
            sources = allowed_sources(target)
            if expected_from is not None:
                source = parse_status(expected_from) if isinstance(expected_from, str) else expected_from
                sources = sources & {source}
            values = self._status_values(target, reason, data, error=error, lease_seconds=lease_seconds)
            values["id"] = job_uuid
            row = None
            if len(sources) == 1:
                for only in sources:
                    values["from_status"] = only.value
                row = fetch_one(self.connection, _TRANSITION_KNOWN_FROM, values, job_id=job_uuid)
            elif sources:
                values["allowed"] = sorted(s.value for s in sources)
                row = fetch_one(self.connection, _TRANSITION_ANY_FROM, values, job_id=job_uuid)
            if row is not None:
                return job_from_row(row)
            current = fetch_one(self.connection, _GET_STATUS, {"id": job_uuid}, job_id=job_uuid)
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
        with operation("jobs", "transition_many"):
            source = parse_status(from_status) if isinstance(from_status, str) else from_status
            target = parse_status(to_status) if isinstance(to_status, str) else to_status
            if not can_transition(source, target):
                raise errors.InvalidTransition(from_status=source.value, to_status=target.value)
            check_limit(limit, maximum=MAX_BATCH)
            values = self._status_values(target, reason, data)
            values.update(from_status=source.value, limit=limit)
            # Only fixed fragments are joined; the values are bound parameters.
            filters = ["status = %(from_status)s"]
            if created_before is not None:
                values["created_before"] = check_datetime(created_before, "created_before")
                filters.append("created_at < %(created_before)s")
            if updated_before is not None:
                values["updated_before"] = check_datetime(updated_before, "updated_before")
                filters.append("updated_at < %(updated_before)s")
            if lease_expired:
                filters.append("lease_expires_at < now()")
            try:
                result = self.connection.exec_driver_sql(
                    f"""
WITH picked AS (
    SELECT id FROM jobs WHERE {" AND ".join(filters)}
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs AS j SET {_SET_STATUS}
    FROM picked
    WHERE j.id = picked.id AND j.status = %(from_status)s
    RETURNING j.id, j.status, CAST(%(from_status)s AS text) AS from_status
), ev AS ({_INSERT_TRANSITION_EVENT}
)
SELECT id FROM moved
""",
                    values,
                )
                return [row[0] for row in result]
            except sqlalchemy.exc.DBAPIError as exc:
                raise translate(exc) from exc

    def claim_next(self, lease_seconds: int | None = None) -> Job | None:
        """The oldest queued job, moved to ``processing`` with a lease; ``None`` if none is free.

        ``SKIP LOCKED``: concurrent workers never wait for each other nor get the same job.
        """
        with operation("jobs", "claim_next"):
            values = self._status_values(JobStatus.PROCESSING, None, None, lease_seconds=lease_seconds)
            row = fetch_one(self.connection, _CLAIM_NEXT, values)
            return None if row is None else job_from_row(row)

    def renew_lease(self, job_id: UUID | str, lease_seconds: int | None = None) -> Job:
        """Extend a processing job's lease to now plus ``lease_seconds`` (default: the setting)."""
        job_uuid = as_uuid(job_id, "job_id")
        with operation("jobs", "renew_lease", job_uuid):
            lease = self._lease(lease_seconds)
            row = fetch_one(self.connection, _RENEW_LEASE, {"id": job_uuid, "lease": lease}, job_id=job_uuid)
            if row is not None:
                return job_from_row(row)
            current = fetch_one(self.connection, _GET_STATUS, {"id": job_uuid}, job_id=job_uuid)
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
        with operation("jobs", "record_source_key", job_uuid):
            keys.parse_own_key(key, keys.ObjectKind.SOURCE, job_uuid)
            return self._record_key(
                _RECORD_SOURCE_KEY, job_uuid, key, JobStatus.QUEUED, EVENT_SOURCE_ATTACHED
            )

    def add_result_key(self, job_id: UUID | str, key: str) -> Job:
        """Append ``key`` to the job's result keys (if absent), with a ``result_attached`` event.

        ``key`` must be this job's own ``results/{id}/clip.<ext>`` (else ``InvalidInput``, before
        any SQL), and the job ``processing`` (else ``AttachRefused``); a key pending deletion is
        handled as in ``record_source_key``.
        """
        job_uuid = as_uuid(job_id, "job_id")
        with operation("jobs", "add_result_key", job_uuid):
            keys.parse_own_key(key, keys.ObjectKind.RESULT, job_uuid)
            return self._record_key(
                _ADD_RESULT_KEY, job_uuid, key, JobStatus.PROCESSING, EVENT_RESULT_ATTACHED
            )

    def settle_uploaded_key(self, job_id: UUID | str, key: str) -> Literal["recorded", "replaced", "gone"]:
        """After an upload of ``key``: ``"recorded"`` if the job still records it; otherwise the key is
        queued for deletion (an attempt counted, see ``_SETTLE_UPLOAD``) and the answer says why:
        ``"replaced"`` (the job records another key) or ``"gone"`` (the job was deleted)."""
        job_uuid = as_uuid(job_id, "job_id")
        with operation("jobs", "settle_uploaded_key", job_uuid):
            if keys.parse_key(key).job_id != job_uuid:
                raise errors.InvalidInput("not this job's own key", field="key")
            row = fetch_one(
                self.connection,
                _SETTLE_UPLOAD,
                {"id": job_uuid, "key": key, "run_id": self.run_id},
                job_id=job_uuid,
            )
            assert row is not None  # the statement always answers one row
            return row[0]  # type: ignore[no-any-return]

    def _record_key(
        self, statement: LiteralString, job_uuid: UUID, key: str, attach_status: JobStatus, event_type: str
    ) -> Job:
        """Run a guarded recording statement; its outcome is the job, or the refusal raised."""
        if fetch_one(self.connection, _LOCK_JOB, {"id": job_uuid}, job_id=job_uuid) is None:
            raise errors.JobNotFound(job_uuid)
        values = {
            "id": job_uuid,
            "key": key,
            "attach_status": attach_status.value,
            "event_type": event_type,
            "run_id": self.run_id,
        }
        row = fetch_one(self.connection, statement, values, job_id=job_uuid)
        if row is None:  # the row is locked by this transaction: it cannot have gone
            raise errors.JobNotFound(job_uuid)
        outcome = row[-1]
        if outcome in ("recorded", "unchanged"):
            return job_from_row(row)
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


_LIST_FIRST = f"""
SELECT {_COLUMNS} FROM jobs WHERE status = %(status)s
ORDER BY created_at, id LIMIT %(limit)s
"""
_LIST_AFTER = f"""
SELECT {_COLUMNS} FROM jobs
WHERE status = %(status)s AND (created_at, id) > (%(after_ts)s, %(after_id)s)
ORDER BY created_at, id LIMIT %(limit)s
"""
