-- Data for the repositories benchmark (benchmarks/bench_repos.py). What the project sends is not
-- here: both sides of a comparison take it from lifecycle/db/sql by name.

-- name: load_queued
-- n queued jobs made on the server (generate_series), created one second apart, oldest first; their
-- ids in creation order.
INSERT INTO jobs (params, created_at, expires_at)
SELECT '{"source": "a.mp4", "format": "mp4"}', now() - make_interval(secs => %(n)s - i),
       now() + interval '30 days'
FROM generate_series(1, %(n)s) AS i
RETURNING id

-- name: copy_jobs
-- list_by_status at 1M and 10M rows: COPY is the fastest load (indexes dropped before, built after).
COPY jobs (id, status, params, created_at, updated_at, expires_at, lease_expires_at) FROM STDIN

-- name: random_queued_anchors
-- Where the pages start: random (created_at, id) cursors among the queued jobs.
SELECT created_at, id FROM jobs WHERE status = 'queued' ORDER BY random() LIMIT %(n)s
