-- Orphan reconciliation (lifecycle.retention.reconcile, through lifecycle.db.outbox.OutboxRepo):
-- listed objects no job records are queued in the storage_deletions outbox; recorded keys are paged
-- through to find objects that are missing.

-- name: recorded_keys
-- Which listed keys their job records (as its source or a result): any other key is not the job's
-- object any more, or never was (a job gone, a key replaced, an upload by hand).
SELECT u.k FROM unnest(CAST(%(keys)s AS text[]), CAST(%(job_ids)s AS uuid[])) AS u(k, j)
JOIN jobs ON jobs.id = u.j AND (jobs.source_key = u.k OR u.k = ANY(jobs.result_keys))

-- name: queued_keys
-- Which keys are already queued. Single-key rows through the unique index; chunk rows by scanning
-- them (only asked for keys no job records, and chunk rows exist only between a phase 1 and its
-- drain).
SELECT object_key FROM storage_deletions WHERE object_key = ANY(%(keys)s)
UNION
SELECT k.key FROM storage_deletions d CROSS JOIN LATERAL unnest(d.object_keys) AS k(key)
WHERE d.object_keys IS NOT NULL AND k.key = ANY(%(keys)s)

-- name: queue_keys
-- Queue orphans, but never a key its job records by now. The jobs are locked (FOR SHARE) and
-- re-read: a key an attach records meanwhile is not queued (an attach waits for this lock, then
-- takes back a key this queued and no drain tried yet).
WITH u AS (
    SELECT k, j FROM unnest(CAST(%(keys)s AS text[]), CAST(%(job_ids)s AS uuid[])) AS u(k, j)
), locked AS (
    SELECT id, source_key, result_keys FROM jobs WHERE id IN (SELECT j FROM u) FOR SHARE
)
INSERT INTO storage_deletions (object_key, job_id, run_id, next_attempt_at)
SELECT u.k, u.j, %(run_id)s, now() FROM u
WHERE NOT EXISTS (
    SELECT 1 FROM locked l WHERE l.id = u.j AND (l.source_key = u.k OR u.k = ANY(l.result_keys))
)
ON CONFLICT (object_key) DO NOTHING
RETURNING object_key

-- name: recorded_keys_page
-- The other direction: recorded keys of jobs older than the grace period, by id (keyset pages;
-- %(after)s NULL: the first page).
SELECT id, array_remove(array_prepend(source_key, result_keys), NULL) AS keys
FROM jobs
WHERE updated_at < coalesce(CAST(%(now)s AS timestamptz), now()) - make_interval(secs => %(grace)s)
  AND (CAST(%(after)s AS uuid) IS NULL OR id > CAST(%(after)s AS uuid))
ORDER BY id
LIMIT %(limit)s
