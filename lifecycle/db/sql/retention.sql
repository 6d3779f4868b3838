-- Retention: what may be deleted, phase 1 (rows), the dry run, purge and tombstones
-- (lifecycle.db.retention.RetentionRepo).
--
-- A statement that decides by time takes %(now)s: NULL means the database clock; a test may pass a
-- time instead.

-- fragment: expired
-- Expired at %(now)s (the first half of the eligibility rule; the dry run's "kept" counts use it alone).
expires_at <= coalesce(CAST(%(now)s AS timestamptz), now())

-- fragment: eligible
-- The one rule for "eligible for deletion": expired, not being processed, not on hold. Used by the
-- selection, the dry run, the count, the sensor's probe and the attach guard, on the database clock.
{{retention.expired}}
AND status <> 'processing'
AND NOT retention_hold

-- name: set_timeouts
-- Per-batch timeouts, transaction-local (set_config(..., true) is SET LOCAL with parameters).
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       -- The planner overestimates the CTE joins of a batch and JIT-compiles it: about 15 ms
       -- of a 10k batch spent compiling a plan that runs once.
       set_config('jit', 'off', true)

-- fragment: locked_selection
-- Phase 1's selection: lock up to %(limit)s expired jobs (oldest expiry first, SKIP LOCKED lets
-- concurrent runs and busy workers pass each other). The ids never go through the client (that round
-- trip was a fifth of a 1k batch), and the rows are deleted by the ctid this statement locked them at
-- (a TID scan, not a scan of jobs per batch): a locked row cannot move, and a TID that does not hold
-- the locked version deletes nothing. A row updated between the statement's snapshot and its lock is
-- locked but not deleted (the locked version is newer than the snapshot): "locked" vs "jobs" shows
-- it, and the next batch takes it.
SELECT id, ctid AS tid FROM jobs
WHERE {{retention.eligible}}
ORDER BY expires_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- fragment: named_selection
-- Purge's selection: the named jobs, already locked by retention.lock_for_purge.
SELECT id, ctid AS tid FROM jobs WHERE id = ANY(%(ids)s)

-- fragment: delete_selected
-- Phase 1, the body (the CTEs after "sel", the selected rows): count each job's events, delete the
-- jobs (events cascade) and queue every recorded object key in the outbox; the tombstones
-- (retention.tombstone_selected) follow in the same statement. Tombstones and outbox rows are fed by
-- DELETE ... RETURNING, so they describe exactly what was deleted. Measured choices (EXPLAIN ANALYZE
-- per batch, BENCHMARKS.md):
-- - the keys go in as chunk rows (object_keys: sources or results, at most %(chunk)s keys each; one
--   row per job when %(per_job)s, for purge), not one row per key through the unique object_key
--   index with ON CONFLICT: that was the largest cost of a batch. A key also queued as a single-key
--   row is harmless (the second remove finds it absent, its row is deleted);
-- - events are counted from an index-only scan of idx_job_events_job_id_ts (it also warms the pages
--   the cascade reads next); deleting them explicitly with RETURNING costs a second pass, since the
--   cascade trigger still probes every job.
ev AS (
    SELECT job_id, count(*) AS n FROM job_events
    WHERE job_id = ANY(ARRAY(SELECT id FROM sel)) GROUP BY job_id
), gone AS (
    DELETE FROM jobs WHERE ctid = ANY(ARRAY(SELECT tid FROM sel))
    RETURNING id, status, created_at, expires_at, source_key, result_keys
), queued AS (
    -- Source keys and result keys in separate rows, sliced to %(chunk)s keys: a chunk row is then
    -- one remove call (the drain groups by prefix anyway). No sort, no per-key expression.
    INSERT INTO storage_deletions (object_keys, job_id, run_id, next_attempt_at)
    SELECT s.keys[i : i + %(chunk)s - 1], s.job_id, %(run_id)s,
           least(coalesce(CAST(%(now)s AS timestamptz), now()), now())
    FROM (
        SELECT NULL::uuid AS job_id, array_agg(source_key) AS keys
        FROM gone WHERE NOT %(per_job)s AND source_key IS NOT NULL
        UNION ALL
        SELECT NULL::uuid, array_agg(k.key)
        FROM gone CROSS JOIN LATERAL unnest(result_keys) AS k(key)
        WHERE NOT %(per_job)s AND k.key IS NOT NULL
        UNION ALL
        SELECT id, array_remove(array_prepend(source_key, result_keys), NULL)
        FROM gone WHERE %(per_job)s AND (source_key IS NOT NULL OR cardinality(result_keys) > 0)
    ) AS s
    CROSS JOIN LATERAL generate_series(1, cardinality(s.keys), %(chunk)s) AS i
    RETURNING cardinality(object_keys) AS n
)

-- fragment: tombstone_selected
-- One tombstone per deleted job. A plain INSERT: a job id is tombstoned once, since ids come from
-- gen_random_uuid(); a re-used id (a restored row) fails with pk_job_deletions and the batch is
-- retried with retention.delete_batch_retomb (ON CONFLICT), so the fast path pays nothing.
INSERT INTO job_deletions
    (job_id, final_status, created_at, expired_at, deleted_at, object_count,
     events_deleted, reason, run_id)
SELECT g.id, g.status, g.created_at, g.expires_at, now(),
       (g.source_key IS NOT NULL)::int + coalesce(cardinality(g.result_keys), 0),
       coalesce(ev.n, 0), %(reason)s, %(run_id)s
FROM gone g LEFT JOIN ev ON ev.job_id = g.id

-- fragment: retomb
-- A job id that already has a tombstone: the newer deletion wins.
ON CONFLICT (job_id) DO UPDATE
SET final_status = EXCLUDED.final_status, created_at = EXCLUDED.created_at,
    expired_at = EXCLUDED.expired_at, deleted_at = EXCLUDED.deleted_at,
    object_count = EXCLUDED.object_count, events_deleted = EXCLUDED.events_deleted,
    reason = EXCLUDED.reason, run_id = EXCLUDED.run_id

-- fragment: batch_counts
-- What a batch did: rows locked and deleted, the first %(log_ids)s ids (logged one by one), events
-- deleted with them, keys queued.
SELECT (SELECT count(*) FROM sel) AS locked,
       (SELECT count(*) FROM gone) AS jobs,
       (SELECT array_agg(id) FROM (SELECT id FROM gone LIMIT %(log_ids)s) AS l) AS ids,
       (SELECT coalesce(sum(events_deleted), 0) FROM tomb) AS events,
       (SELECT coalesce(sum(n), 0) FROM queued) AS keys_queued

-- name: delete_batch
-- Phase 1, one statement per batch: lock up to %(limit)s expired jobs, then delete them, queue their
-- keys and tombstone them (the fragments above say how and why).
WITH sel AS (
    {{retention.locked_selection}}
), {{retention.delete_selected}}, tomb AS (
    {{retention.tombstone_selected}}
    RETURNING events_deleted
)
{{retention.batch_counts}}

-- name: delete_batch_retomb
-- The same, for a batch holding a job id that already has a tombstone: the newer deletion wins.
WITH sel AS (
    {{retention.locked_selection}}
), {{retention.delete_selected}}, tomb AS (
    {{retention.tombstone_selected}}
    {{retention.retomb}}
    RETURNING events_deleted
)
{{retention.batch_counts}}

-- name: delete_named
-- Purge: the named jobs, already locked by retention.lock_for_purge (a re-used id is fine here too:
-- ON CONFLICT for the tombstone, a purge being small).
WITH sel AS (
    {{retention.named_selection}}
), {{retention.delete_selected}}, tomb AS (
    {{retention.tombstone_selected}}
    {{retention.retomb}}
    RETURNING events_deleted
)
{{retention.batch_counts}}

-- name: backlog_probe
-- Is anything left to do? (index-ordered probe: stops at the first eligible row).
SELECT EXISTS (SELECT 1 FROM jobs WHERE {{retention.eligible}} ORDER BY expires_at LIMIT 1)

-- name: count_eligible
-- How many jobs a run would delete (for the progress bar and the dry run), up to %(cap)s
-- (NULL: no cap).
SELECT count(*) FROM (SELECT 1 FROM jobs WHERE {{retention.eligible}} LIMIT %(cap)s) AS s

-- name: plan_by_status
-- Dry run: the same selection without locks, summarised per status.
WITH sel AS (
    SELECT id, status, expires_at, source_key, result_keys FROM jobs
    WHERE {{retention.eligible}}
    ORDER BY expires_at
    LIMIT %(cap)s
)
SELECT status, count(*) AS jobs, min(expires_at) AS oldest, max(expires_at) AS newest,
       coalesce(sum(cardinality(array_remove(array_prepend(source_key, result_keys), NULL))), 0)
           AS objects,
       (SELECT count(*) FROM job_events e WHERE e.job_id IN (SELECT id FROM sel)) AS events
FROM sel GROUP BY status

-- name: plan_sample
-- Dry run: the first %(n)s job ids a run would delete.
SELECT id FROM jobs WHERE {{retention.eligible}} ORDER BY expires_at, id LIMIT %(n)s

-- name: plan_kept
-- Expired jobs that cleanup keeps, and why.
SELECT count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status <> 'processing' AND retention_hold) AS on_hold
FROM jobs WHERE {{retention.expired}}

-- name: prune_tombstones
-- Tombstone retention, in bounded batches (a backlog of old tombstones is never one long delete).
DELETE FROM job_deletions WHERE job_id IN (
    SELECT job_id FROM job_deletions
    WHERE deleted_at < coalesce(CAST(%(now)s AS timestamptz), now()) - make_interval(secs => %(keep)s)
    LIMIT %(limit)s
)

-- name: count_prunable_tombstones
SELECT count(*) FROM job_deletions
WHERE deleted_at < coalesce(CAST(%(now)s AS timestamptz), now()) - make_interval(secs => %(keep)s)

-- name: lock_for_purge
-- Purge: lock the named jobs whatever their expiry (waits up to the lock timeout for a worker).
SELECT id, status FROM jobs WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE

-- name: tombstoned
-- Purge: which of the named ids were deleted before (purge is idempotent).
SELECT job_id FROM job_deletions WHERE job_id = ANY(%(ids)s)

-- name: purge_due_now
-- Purge: erasure does not wait for an earlier failure's backoff.
UPDATE storage_deletions SET next_attempt_at = now()
WHERE job_id = ANY(%(ids)s) AND next_attempt_at > now()

-- name: vacuum_jobs
-- After a large run, so that index probes for expired rows stay fast; outside any transaction
-- (an autocommit connection).
VACUUM (ANALYZE) jobs
