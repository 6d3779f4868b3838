-- The storage_deletions outbox, phase 2 of retention (lifecycle.db.outbox): the drain's claim lock,
-- its claims, the results it records, and what is in the outbox.
--
-- A statement that decides by time takes %(now)s: NULL means the database clock; a test may pass a
-- time instead. %(job_ids)s NULL means every row; a list restricts a statement to those jobs' rows
-- (purge). Recording a result (done, keep_keys, failed, release) touches a row only while this
-- drain's claim (%(token)s) is still on it: a row taken over (its claim died with a lost lock session)
-- or deleted by an attach meanwhile is left to its new owner.

-- name: try_claim_lock
-- Phase 2, the drain's identity: a session-level advisory lock on a connection of its own, held for
-- the drain's whole life. Its token marks the rows it claims; the lock ends with the session, so a
-- killed drain's claims are dead at once (lifecycle_claim_alive). %(cls)s is
-- lifecycle.db.outbox.CLAIM_LOCK_CLASS; both keys are int4, hence the casts.
SELECT pg_try_advisory_lock(CAST(%(cls)s AS integer), CAST(%(token)s AS integer))

-- name: unlock_claim_lock
SELECT pg_advisory_unlock(CAST(%(cls)s AS integer), CAST(%(token)s AS integer))

-- name: token_in_use
-- A token still marking rows (a dead drain's, not yet stolen) is not reused: a new owner would
-- bring those claims back to life.
SELECT EXISTS (SELECT 1 FROM storage_deletions WHERE claimed_by = %(token)s)

-- name: ping
-- Is the session holding the lock still there? (one round trip on the lock's own connection).
SELECT 1

-- fragment: dead_tokens
-- Tokens on claimed rows whose drain is gone (a killed run, a lost lock session), each looked up in
-- pg_locks once (lifecycle_claim_alive): claimed rows are few, distinct tokens fewer. Rows still
-- carrying the claiming drain's own %(token)s are leftovers too (a claim committed while its
-- connection was lost; a drain claims only once its earlier claims are recorded), so they count.
-- (OFFSET 0 keeps the planner from pushing the test below the DISTINCT, which would look up every
-- claimed row's token: 0.1 ms each.)
SELECT d.token FROM (
    SELECT DISTINCT claimed_by AS token FROM storage_deletions WHERE claimed_by IS NOT NULL OFFSET 0
) AS d
WHERE d.token = %(token)s OR NOT lifecycle_claim_alive(d.token)

-- name: claim
-- Phase 2: claim outbox rows by writing this drain's token on them; no lock is held over the HTTP
-- call. Claimable: due and unclaimed (free, along idx_storage_deletions_next_attempt_at), or claimed
-- by a drain that is gone (orphaned, along the partial index on claimed_by: taken over at once,
-- whatever next_attempt_at says). A concurrent drain skips rows locked by this statement (SKIP
-- LOCKED) and, once it commits, rows whose claim is alive (the WHERE clause is checked again on the
-- row's newest version). The claim is made only while this drain's own lock is held (an InitPlan,
-- evaluated once): a drain that lost its lock session claims nothing. Rows are taken in order while
-- the claim stays within %(limit)s keys, a chunk row counting as %(chunk)s (its upper bound: no
-- detoasting to size it); the first row is always taken. next_attempt_at is left alone: it is the
-- backoff after a failure, nothing else. Taking over a dead claim counts as an attempt
-- (attempts + 1): the dead drain may have sent a DELETE that is still in flight, and a row with an
-- attempt is never taken back by an attach (jobs.sql), even if this drain gives it back untried.
WITH dead AS (
    {{outbox.dead_tokens}}
), free AS (
    SELECT id, next_attempt_at, CASE WHEN object_keys IS NULL THEN 1 ELSE %(chunk)s END AS n,
           0 AS taken_over
    FROM storage_deletions
    WHERE claimed_by IS NULL
      AND next_attempt_at <= coalesce(CAST(%(now)s AS timestamptz), now())
      AND (CAST(%(job_ids)s AS uuid[]) IS NULL OR job_id = ANY(CAST(%(job_ids)s AS uuid[])))
      AND (SELECT lifecycle_claim_alive(CAST(%(token)s AS integer)))
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), orphaned AS (
    SELECT id, next_attempt_at, CASE WHEN object_keys IS NULL THEN 1 ELSE %(chunk)s END AS n,
           1 AS taken_over
    FROM storage_deletions
    WHERE claimed_by IN (SELECT token FROM dead)
      AND (CAST(%(job_ids)s AS uuid[]) IS NULL OR job_id = ANY(CAST(%(job_ids)s AS uuid[])))
      AND (SELECT lifecycle_claim_alive(CAST(%(token)s AS integer)))
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), cand AS (
    SELECT * FROM orphaned UNION ALL SELECT * FROM free
), picked AS (
    SELECT id, taken_over FROM (
        SELECT id, n, taken_over, sum(n) OVER (ORDER BY next_attempt_at, id) AS upto FROM cand
    ) AS s
    WHERE upto <= %(limit)s OR upto = n
)
UPDATE storage_deletions d
SET claimed_by = %(token)s, attempts = d.attempts + picked.taken_over
FROM picked WHERE d.id = picked.id
RETURNING d.id, coalesce(d.object_keys, ARRAY[d.object_key]) AS keys

-- name: done
-- Keys confirmed gone (removed now, or confirmed absent by the service role): their rows are done.
DELETE FROM storage_deletions WHERE id = ANY(%(ids)s) AND claimed_by = %(token)s

-- name: keep_keys
-- A chunk row whose keys were partly confirmed gone keeps only the others (still claimed: the same
-- transaction records their failure or releases them next).
UPDATE storage_deletions SET object_keys = %(keys)s WHERE id = %(id)s AND claimed_by = %(token)s

-- name: failed
-- Keys that failed: count the attempt, keep a redacted reason, back off exponentially (capped), and
-- give the claim back.
UPDATE storage_deletions d
SET attempts = d.attempts + 1,
    last_error = f.err,
    claimed_by = NULL,
    next_attempt_at = coalesce(CAST(%(now)s AS timestamptz), now())
        + make_interval(secs => least(%(cap)s, %(base)s * power(2, least(d.attempts, 30))))
FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(errs)s AS text[])) AS f(id, err)
WHERE d.id = f.id AND d.claimed_by = %(token)s

-- name: release
-- Give back claimed rows that were not (fully) tried: due again now, for any drain. %(ids)s NULL:
-- every row this drain still claims (the end of a run, whatever ended it).
UPDATE storage_deletions SET claimed_by = NULL
WHERE claimed_by = %(token)s AND (CAST(%(ids)s AS bigint[]) IS NULL OR id = ANY(CAST(%(ids)s AS bigint[])))

-- name: defer_due
-- Storage is down (a drain stopped after whole remove calls failed in a row): the unclaimed rows
-- still due wait until the earliest retry of a failed row, instead of being due again at once.
WITH backoff AS (
    SELECT min(next_attempt_at) AS until FROM storage_deletions
    WHERE attempts > 0 AND claimed_by IS NULL
      AND next_attempt_at > coalesce(CAST(%(now)s AS timestamptz), now())
)
UPDATE storage_deletions d SET next_attempt_at = backoff.until
FROM backoff
WHERE d.claimed_by IS NULL AND d.next_attempt_at < backoff.until
  AND (CAST(%(job_ids)s AS uuid[]) IS NULL OR d.job_id = ANY(CAST(%(job_ids)s AS uuid[])))

-- name: state
-- What is in the outbox and why (keys, a chunk row counting its keys), for the end of a drain and
-- for a drain's dry run. Disjoint groups: claimed (by a live drain, being removed right now), failed
-- (not claimed by a live drain; an earlier attempt failed), the rest waiting. due is what a drain
-- could claim now (due and unclaimed, or claimed by a dead drain).
WITH tokens AS (
    SELECT d.token, lifecycle_claim_alive(d.token) AS live FROM (
        SELECT DISTINCT claimed_by AS token FROM storage_deletions WHERE claimed_by IS NOT NULL
    ) AS d
), r AS (
    SELECT coalesce(cardinality(s.object_keys), 1) AS n, s.attempts, s.created_at,
           s.next_attempt_at, s.claimed_by, coalesce(t.live, false) AS live
    FROM storage_deletions s LEFT JOIN tokens t ON t.token = s.claimed_by
    WHERE CAST(%(job_ids)s AS uuid[]) IS NULL OR s.job_id = ANY(CAST(%(job_ids)s AS uuid[]))
)
SELECT coalesce(sum(n), 0) AS keys,
       coalesce(sum(n) FILTER (WHERE live), 0) AS claimed,
       coalesce(sum(n) FILTER (WHERE claimed_by IS NOT NULL AND NOT live), 0) AS dead_claims,
       coalesce(sum(n) FILTER (WHERE NOT live AND attempts > 0), 0) AS failed,
       coalesce(sum(n) FILTER (
           WHERE (claimed_by IS NULL AND next_attempt_at <= coalesce(CAST(%(now)s AS timestamptz), now()))
              OR (claimed_by IS NOT NULL AND NOT live)), 0) AS due,
       coalesce(max(attempts), 0) AS max_attempts,
       min(created_at) AS oldest,
       min(next_attempt_at) FILTER (
           WHERE claimed_by IS NULL AND next_attempt_at > coalesce(CAST(%(now)s AS timestamptz), now()))
           AS next_due,
       coalesce(CAST(%(now)s AS timestamptz), now()) AS at
FROM r

-- name: pending
-- Keys waiting in the outbox (a chunk row counts its keys).
SELECT coalesce(sum(coalesce(cardinality(object_keys), 1)), 0) FROM storage_deletions
