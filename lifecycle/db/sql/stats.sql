-- Read-only counts and the sensor's probes (lifecycle.db.stats.StatsRepo), for the job_status_counts
-- asset and the expired_jobs_sensor.
--
-- Statements that take %(now)s read NULL as the database clock (now(): the start of the
-- transaction, so every statement of one snapshot sees the same instant); a test may pass a time.
-- "Eligible" is always {{retention.eligible}}: the probe and the backlog count cannot drift from
-- what retention cleanup selects.

-- name: counts_by_status
SELECT status, count(*) AS n FROM jobs GROUP BY status

-- name: expired_backlog
-- How many jobs retention cleanup would delete now, and the expiry of the oldest; "at" is the
-- instant they were counted at (the database's, unless the caller passed one).
SELECT coalesce(CAST(%(now)s AS timestamptz), now()) AS at, count(*) AS n, min(expires_at) AS oldest
FROM jobs
WHERE {{retention.eligible}}

-- name: outbox_size
-- Keys, not rows: retention queues a batch's keys as chunk rows (object_keys, up to 1000 each).
SELECT coalesce(sum(coalesce(cardinality(object_keys), 1)), 0) AS n, min(created_at) AS oldest
FROM storage_deletions

-- name: oldest_eligible_job
-- The sensor's probe. ORDER BY expires_at LIMIT 1 makes the planner walk idx_jobs_expires_at from
-- its low end and stop at the first live match (about 0.1 ms at 10M rows); without ORDER BY, with
-- no match, the planner may scan the wrong way for over a second (../shared/reference/postgres.md).
SELECT id FROM jobs
WHERE {{retention.eligible}}
ORDER BY expires_at
LIMIT 1

-- name: outbox_due
-- Does the outbox hold a row a drain could claim now? Due and unclaimed (the first row along
-- idx_storage_deletions_next_attempt_at), or claimed by a drain whose lock session is gone: the
-- drain's own lookup (outbox.dead_tokens), with no token of its own (%(token)s is NULL).
SELECT (SELECT id FROM storage_deletions
        WHERE claimed_by IS NULL
          AND next_attempt_at <= coalesce(CAST(%(now)s AS timestamptz), now())
        ORDER BY next_attempt_at LIMIT 1) IS NOT NULL
    OR EXISTS ({{outbox.dead_tokens}})
