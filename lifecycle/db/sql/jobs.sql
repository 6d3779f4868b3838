-- Jobs and their status changes (lifecycle.db.jobs.JobsRepo).
--
-- Every status change is one statement: a guarded UPDATE ... WHERE status = <allowed> RETURNING
-- inside a data-modifying CTE that also inserts the event. Zero rows is never a silent no-op: the
-- repository reads the row's status (jobs.get_status) to tell JobNotFound from InvalidTransition.
-- A row comes back in the column order of jobs.columns (the order of lifecycle.records.Job).

-- fragment: columns
id, status, params, source_key, result_keys, error, attempts, version, lease_expires_at,
retention_hold, api_key_id, created_at, updated_at, expires_at

-- fragment: j_columns
j.id, j.status, j.params, j.source_key, j.result_keys, j.error, j.attempts, j.version,
j.lease_expires_at, j.retention_hold, j.api_key_id, j.created_at, j.updated_at, j.expires_at

-- fragment: set_status
-- The SET list every status change shares. lease and retention are intervals or NULL: a NULL lease
-- clears it (only a processing job holds one: ck_jobs_lease), a NULL retention keeps the expiry.
status = %(to_status)s,
version = j.version + 1,
updated_at = now(),
attempts = j.attempts + %(attempt_inc)s,
lease_expires_at = now() + CAST(%(lease)s AS interval),
expires_at = COALESCE(now() + CAST(%(retention)s AS interval), j.expires_at),
error = COALESCE(%(error)s, j.error)

-- fragment: insert_transition_event
-- One transition event per row of the "moved" CTE.
INSERT INTO job_events (job_id, type, from_status, to_status, data, run_id)
SELECT id, %(event_type)s, from_status, status, CAST(%(data)s AS jsonb), %(run_id)s FROM moved

-- name: create
-- A new queued job and its "created" event, in one statement.
WITH created AS (
    INSERT INTO jobs (params, expires_at, api_key_id)
    VALUES (
        CAST(%(params)s AS jsonb),
        COALESCE(%(expires_at)s, now() + CAST(%(retention)s AS interval)),
        %(api_key_id)s
    )
    RETURNING {{jobs.columns}}
), ev AS (
    INSERT INTO job_events (job_id, type, from_status, to_status, data, run_id)
    SELECT id, %(event_type)s, NULL, status, '{}'::jsonb, %(run_id)s FROM created
)
SELECT {{jobs.columns}} FROM created

-- name: get
SELECT {{jobs.columns}} FROM jobs WHERE id = %(id)s

-- name: get_status
-- After a guarded statement changed nothing: is the job there, and in which status and version?
SELECT status, version FROM jobs WHERE id = %(id)s

-- name: update
-- Non-status fields, if the job is still at expected_version. Each field changes only when its
-- set_<field> flag is true, so one statement serves every combination (no SQL built per call).
UPDATE jobs SET
    params = CASE WHEN %(set_params)s THEN CAST(%(params)s AS jsonb) ELSE params END,
    error = CASE WHEN %(set_error)s THEN CAST(%(error)s AS text) ELSE error END,
    retention_hold = CASE WHEN %(set_retention_hold)s THEN CAST(%(retention_hold)s AS boolean)
                          ELSE retention_hold END,
    expires_at = CASE WHEN %(set_expires_at)s THEN CAST(%(expires_at)s AS timestamptz)
                      ELSE expires_at END,
    version = version + 1,
    updated_at = now()
WHERE id = %(id)s AND version = %(expected_version)s
RETURNING {{jobs.columns}}

-- name: list_first
-- The first page of a status, oldest first (idx_jobs_status_created_at_id; keyset pagination).
SELECT {{jobs.columns}} FROM jobs WHERE status = %(status)s
ORDER BY created_at, id LIMIT %(limit)s

-- name: list_after
-- The next page: a row-value comparison the same index answers. Two statements rather than an
-- optional cursor filter, so that each keeps the plan that walks the index.
SELECT {{jobs.columns}} FROM jobs
WHERE status = %(status)s AND (created_at, id) > (%(after_ts)s, %(after_id)s)
ORDER BY created_at, id LIMIT %(limit)s

-- name: transition_known_from
-- When the source status is known (one allowed source, or expected_from): the plain guarded
-- UPDATE, and the event's from_status is that status.
WITH moved AS (
    UPDATE jobs AS j SET {{jobs.set_status}}
    WHERE j.id = %(id)s AND j.status = %(from_status)s
    RETURNING {{jobs.j_columns}}, CAST(%(from_status)s AS text) AS from_status
), ev AS (
    {{jobs.insert_transition_event}}
)
SELECT * FROM moved

-- name: transition_any_from
-- When several sources are allowed, the old status has to come from the row itself. The
-- FOR UPDATE CTE waits for a concurrent writer and then reads the row's newest version, so the
-- event's from_status is the status actually left (a plain self-join could see a stale one).
WITH old AS (
    SELECT id, status FROM jobs WHERE id = %(id)s FOR UPDATE
), moved AS (
    UPDATE jobs AS j SET {{jobs.set_status}}
    FROM old
    WHERE j.id = old.id AND old.status = ANY(%(allowed)s)
    RETURNING {{jobs.j_columns}}, old.status AS from_status
), ev AS (
    {{jobs.insert_transition_event}}
)
SELECT * FROM moved

-- name: transition_many
-- Up to limit jobs in from_status (oldest first), optionally only those created or updated before
-- a time or whose lease ran out; rows another transaction holds are skipped (SKIP LOCKED) and left
-- for the next call. A filter whose parameter is NULL (or false) is off.
WITH picked AS (
    SELECT id FROM jobs
    WHERE status = %(from_status)s
      AND (CAST(%(created_before)s AS timestamptz) IS NULL OR created_at < %(created_before)s)
      AND (CAST(%(updated_before)s AS timestamptz) IS NULL OR updated_at < %(updated_before)s)
      AND (NOT %(lease_expired)s OR lease_expires_at < now())
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs AS j SET {{jobs.set_status}}
    FROM picked
    WHERE j.id = picked.id AND j.status = %(from_status)s
    RETURNING j.id, j.status, CAST(%(from_status)s AS text) AS from_status
), ev AS (
    {{jobs.insert_transition_event}}
)
SELECT id FROM moved

-- name: exhausted_leases
-- Processing jobs whose lease ran out and that used up their attempts: they go to failed, one
-- guarded transition each (transition_many has no attempts filter). SKIP LOCKED, so a worker
-- renewing its lease right now is not waited for.
SELECT id FROM jobs
WHERE status = 'processing' AND lease_expires_at < now() AND attempts >= %(max_attempts)s
ORDER BY lease_expires_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: claim_next
-- The oldest queued job, moved to processing with a lease. SKIP LOCKED: concurrent workers never
-- wait for each other nor get the same job.
WITH next AS (
    SELECT id FROM jobs WHERE status = 'queued'
    ORDER BY created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs AS j SET {{jobs.set_status}}
    FROM next
    WHERE j.id = next.id
    RETURNING {{jobs.j_columns}}, CAST('queued' AS text) AS from_status
), ev AS (
    {{jobs.insert_transition_event}}
)
SELECT * FROM moved

-- name: renew_lease
UPDATE jobs AS j
SET lease_expires_at = now() + CAST(%(lease)s AS interval), version = j.version + 1, updated_at = now()
WHERE j.id = %(id)s AND j.status = 'processing'
RETURNING {{jobs.columns}}

-- name: lock
-- Storage keys: attach and cleanup serialise on the job row. A key is recorded only in the state
-- that produces its object (a source while queued, before a worker claims the job; a result while
-- processing, by the worker making it) and never on a job eligible for deletion (what retention's
-- phase 1 selects, on the database clock). The row is locked first (jobs.lock), so the recording
-- statement's snapshot follows every change to this job committed before it, including a replaced
-- key that another attach queued for deletion.
SELECT status FROM jobs WHERE id = %(id)s FOR UPDATE

-- fragment: key_guard
-- The guard both recording statements share: verdict.outcome is NULL when the key may be recorded,
-- else why not. The key's own outbox row (queued when it was replaced) is locked too: a drain claims
-- rows with SKIP LOCKED, so it cannot take the row while this statement decides. A row that a drain
-- ever sent a DELETE for may have that DELETE still in flight, and it would remove the new upload
-- after the fact: a claim, live or dead (a dead drain's request can still land, and so can the
-- request of a drain that merely lost its lock session), or an earlier attempt (a failed remove may
-- have timed out while the server still runs it; a dead claim taken over counts as an attempt). Such
-- a key is refused (pending_deletion) until a drain confirms it gone and deletes the row. A row no
-- DELETE was ever sent for is taken out of the outbox (taken_back): the job needs it. A job id with a
-- tombstone is a re-used one (a restored row): its old keys may wait in the chunk rows phase 1 or a
-- purge wrote (chunked), and the drain would remove them; refused as well. The tombstone probe (a
-- primary key lookup, an InitPlan) keeps the chunk-row scan off every other attach.
WITH job AS (
    SELECT {{jobs.columns}},
           CASE
               WHEN {{retention.eligible}} THEN 'eligible_for_deletion'
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
)

-- fragment: key_outcome
-- The last column is the outcome: 'recorded', 'unchanged' (the same key again: a retried upload),
-- or the refusal reason.
SELECT {{jobs.columns}}, 'recorded' AS outcome FROM moved
UNION ALL
SELECT {{jobs.columns}}, coalesce(outcome, 'unchanged') FROM verdict WHERE NOT EXISTS (SELECT 1 FROM moved)

-- name: record_source_key
-- A replaced source would otherwise be an object no row points to: it is queued for deletion.
{{jobs.key_guard}}, moved AS (
    UPDATE jobs AS j SET source_key = %(key)s, version = j.version + 1, updated_at = now()
    FROM verdict
    WHERE j.id = verdict.id AND verdict.outcome IS NULL AND verdict.source_key IS DISTINCT FROM %(key)s
    RETURNING {{jobs.j_columns}}, verdict.source_key AS previous_key
), outbox AS (
    INSERT INTO storage_deletions (object_key, job_id, run_id)
    SELECT previous_key, id, %(run_id)s FROM moved WHERE previous_key IS NOT NULL
    ON CONFLICT (object_key) DO NOTHING
), ev AS (
    INSERT INTO job_events (job_id, type, data, run_id)
    SELECT id, %(event_type)s,
           jsonb_strip_nulls(jsonb_build_object('key', CAST(%(key)s AS text), 'previous', previous_key)),
           %(run_id)s
    FROM moved
)
{{jobs.key_outcome}}

-- name: add_result_key
{{jobs.key_guard}}, moved AS (
    UPDATE jobs AS j
    SET result_keys = array_append(j.result_keys, CAST(%(key)s AS text)), version = j.version + 1,
        updated_at = now()
    FROM verdict
    WHERE j.id = verdict.id AND verdict.outcome IS NULL
      AND NOT (CAST(%(key)s AS text) = ANY(verdict.result_keys))
    RETURNING {{jobs.j_columns}}
), ev AS (
    INSERT INTO job_events (job_id, type, data, run_id)
    SELECT id, %(event_type)s, jsonb_build_object('key', CAST(%(key)s AS text)), %(run_id)s FROM moved
)
{{jobs.key_outcome}}

-- name: settle_upload
-- After an upload: does the job still record its key? If not (the job was deleted, or the key
-- replaced, while the bytes were in flight), the key is queued for deletion in the same statement,
-- committed before the caller removes the object, with an attempt counted: the caller's DELETE may
-- outlive the caller, so nobody may record the key again until a drain has confirmed it gone, and if
-- the caller dies mid-removal the drain still removes the object. The row lock keeps an attach of
-- the same key from recording it between this check and the queueing.
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
