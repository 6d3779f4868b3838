-- Data and the raw references of the retention benchmark (benchmarks/bench_retention.py). The
-- project's own phase-1 statement is the catalogue's (lifecycle/db/sql/retention.sql).

-- name: copy_jobs
-- N expired jobs, each recording a source and a result (what phase 1 queues for removal).
COPY jobs (id, status, source_key, result_keys, expires_at, created_at, updated_at) FROM STDIN

-- name: copy_events
COPY job_events (job_id, type, ts) FROM STDIN

-- name: select_batch
-- raw-1k / raw-10k, first statement of a batch: lock up to %(limit)s eligible jobs, oldest expiry
-- first (the ids go to the client and back).
SELECT id FROM jobs WHERE expires_at <= now() AND status <> 'processing' AND NOT retention_hold
ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED

-- name: delete_batch
-- raw-1k / raw-10k, second statement: delete the locked jobs (events cascade). No tombstone, no
-- outbox: the least a batched delete can do.
DELETE FROM jobs WHERE id = ANY(%(ids)s)

-- name: delete_all
-- unbounded: every eligible job in one statement and one transaction (the pg-boss / procrastinate way).
DELETE FROM jobs WHERE expires_at <= now() AND status <> 'processing' AND NOT retention_hold

-- name: queue_keys
-- Phase 2's input as phase 1 writes it: chunk rows of at most 1000 keys.
INSERT INTO storage_deletions (object_keys)
SELECT k[i : i + 999]
FROM (SELECT CAST(%(keys)s AS text[]) AS k) AS s, generate_series(1, cardinality(k), 1000) AS i
