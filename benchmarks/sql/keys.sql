-- Data and the plain write of the key-owner CHECK benchmark (benchmarks/bench_keys.py).

-- name: bump_version
-- A one-row UPDATE of a job: every write of a jobs row re-checks ck_jobs_keys_owner.
UPDATE jobs SET version = version + 1, updated_at = now() WHERE id = %(id)s

-- name: insert_job_with_keys
-- A job that records a source and two results (what every write of the row re-checks).
INSERT INTO jobs (id, source_key, result_keys, expires_at)
VALUES (%(id)s, %(source_key)s, %(result_keys)s, now() + interval '1 day')

-- name: drop_key_check
-- The "raw" database of each row: the same schema without the key-owner CHECK.
ALTER TABLE jobs DROP CONSTRAINT ck_jobs_keys_owner
