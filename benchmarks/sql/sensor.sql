-- Data and contrasts of the sensor-probe benchmark (benchmarks/bench_sensor.py). The probe itself
-- and the backlog count are the project's (stats.oldest_eligible_job, stats.expired_backlog).

-- name: load
-- Jobs hi - lo at a time, made on the server; the first "expired" of them already expired (at the low
-- end of idx_jobs_expires_at), the rest expiring from tomorrow on.
INSERT INTO jobs (id, status, params, created_at, updated_at, expires_at)
SELECT gen_random_uuid(),
       (ARRAY['queued', 'succeeded', 'failed', 'canceled'])[1 + g %% 4],
       '{}'::jsonb, now() - interval '2 days', now() - interval '2 days',
       CASE WHEN g < %(expired)s
            THEN now() - interval '1 hour' - g * interval '1 millisecond'
            ELSE now() + interval '1 day' + g * interval '100 milliseconds' END
FROM generate_series(%(lo)s, %(hi)s - 1) AS g

-- name: drop_primary_key
-- Indexes are built after the load: much faster than 10M random-UUID index inserts.
ALTER TABLE jobs DROP CONSTRAINT pk_jobs CASCADE

-- name: add_primary_key
ALTER TABLE jobs ADD CONSTRAINT pk_jobs PRIMARY KEY (id)

-- name: add_events_foreign_key
-- job_events.job_id references jobs.id: the FK dropped with the primary key, restored.
ALTER TABLE job_events ADD CONSTRAINT fk_job_events_job_id_jobs
FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE

-- name: purge_batch
-- A stand-in for retention's phase 1 as far as the index is concerned: 10,000 eligible rows deleted
-- per statement, oldest expiry first.
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE expires_at <= now() AND status <> 'processing' AND NOT retention_hold
    ORDER BY expires_at LIMIT 10000 FOR UPDATE SKIP LOCKED)

-- name: purge_all
-- The worst case: the whole backlog deleted by one statement (a manual DELETE in the SQL editor).
DELETE FROM jobs WHERE expires_at <= now() AND status <> 'processing' AND NOT retention_hold

-- name: probe_without_order
-- Contrast: the probe without ORDER BY (the planner may scan the wrong way when nothing matches).
SELECT id FROM jobs
WHERE expires_at <= %(now)s AND status <> 'processing' AND NOT retention_hold
LIMIT 1
