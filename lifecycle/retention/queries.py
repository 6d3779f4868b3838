"""The retention SQL, as named and commented blocks (clearer as SQL than as expressions).

Every value is a bound parameter. ``:now`` is NULL for "the database clock"; each statement folds
it with ``coalesce(CAST(:now AS timestamptz), now())``.
"""

from __future__ import annotations

import sqlalchemy as sa

#: The eligibility rule, shared by the real selection, the dry run and the backlog probe. It is a
#: module constant interpolated into constant SQL (hence the ``noqa: S608`` below); every value is
#: still a bound parameter.
_ELIGIBLE = """
    expires_at <= coalesce(CAST(:now AS timestamptz), now())
    AND status <> 'processing'
    AND NOT retention_hold
"""

#: Per-batch timeouts, transaction-local (``set_config(..., true)`` is ``SET LOCAL`` with parameters).
SET_TIMEOUTS = sa.text(
    """
    SELECT set_config('statement_timeout', :statement_timeout, true),
           set_config('lock_timeout', :lock_timeout, true),
           -- The planner overestimates the CTE joins of a batch and JIT-compiles it: about 15 ms
           -- of a 10k batch spent compiling a plan that runs once.
           set_config('jit', 'off', true)
    """
)

#: Phase 1, the body: for the locked rows (``sel``), in one statement: count each job's events,
#: delete the jobs (events cascade), queue every recorded object key in the outbox and write one
#: tombstone per deleted job. Tombstones and outbox rows are fed by DELETE ... RETURNING, so they
#: describe exactly what was deleted. Measured choices (EXPLAIN ANALYZE per batch, BENCHMARKS.md):
#: - the keys go in as chunk rows (``object_keys``: sources or results, at most ``:chunk`` keys
#:   each; one row per job when ``:per_job``, for purge), not one row per key through the unique
#:   ``object_key`` index with ON CONFLICT: that was the largest cost of a batch. A key also queued
#:   as a single-key row is harmless (the second remove finds it absent, its row is deleted);
#: - the tombstone is a plain INSERT: a job id is tombstoned once, since ids come from
#:   ``gen_random_uuid()``; a re-used id (a restored row) fails with ``pk_job_deletions`` and the
#:   batch is retried with ``DELETE_BATCH_RETOMB`` (ON CONFLICT), so the fast path pays nothing;
#: - events are counted from an index-only scan of ``idx_job_events_job_id_ts`` (it also warms the
#:   pages the cascade reads next); deleting them explicitly with RETURNING costs a second pass,
#:   since the cascade trigger still probes every job.
_DELETE_BATCH = """
    WITH sel AS ({select}
    ), ev AS (
        SELECT job_id, count(*) AS n FROM job_events
        WHERE job_id = ANY(ARRAY(SELECT id FROM sel)) GROUP BY job_id
    ), gone AS (
        DELETE FROM jobs WHERE ctid = ANY(ARRAY(SELECT tid FROM sel))
        RETURNING id, status, created_at, expires_at, source_key, result_keys
    ), queued AS (
        -- Source keys and result keys in separate rows, sliced to :chunk keys: a chunk row is then
        -- one remove call (the drain groups by prefix anyway). No sort, no per-key expression.
        INSERT INTO storage_deletions (object_keys, job_id, run_id, next_attempt_at)
        SELECT s.keys[i : i + :chunk - 1], s.job_id, :run_id,
               least(coalesce(CAST(:now AS timestamptz), now()), now())
        FROM (
            SELECT NULL::uuid AS job_id, array_agg(source_key) AS keys
            FROM gone WHERE NOT :per_job AND source_key IS NOT NULL
            UNION ALL
            SELECT NULL::uuid, array_agg(k.key)
            FROM gone CROSS JOIN LATERAL unnest(result_keys) AS k(key)
            WHERE NOT :per_job AND k.key IS NOT NULL
            UNION ALL
            SELECT id, array_remove(array_prepend(source_key, result_keys), NULL)
            FROM gone WHERE :per_job AND (source_key IS NOT NULL OR cardinality(result_keys) > 0)
        ) AS s
        CROSS JOIN LATERAL generate_series(1, cardinality(s.keys), :chunk) AS i
        RETURNING cardinality(object_keys) AS n
    ), tomb AS (
        INSERT INTO job_deletions
            (job_id, final_status, created_at, expired_at, deleted_at, object_count,
             events_deleted, reason, run_id)
        SELECT g.id, g.status, g.created_at, g.expires_at, now(),
               (g.source_key IS NOT NULL)::int + coalesce(cardinality(g.result_keys), 0),
               coalesce(ev.n, 0), :reason, :run_id
        FROM gone g LEFT JOIN ev ON ev.job_id = g.id
        {on_conflict}
        RETURNING events_deleted
    )
    SELECT (SELECT count(*) FROM sel) AS locked,
           (SELECT count(*) FROM gone) AS jobs,
           (SELECT array_agg(id) FROM (SELECT id FROM gone LIMIT :log_ids) AS l) AS ids,
           (SELECT coalesce(sum(events_deleted), 0) FROM tomb) AS events,
           (SELECT coalesce(sum(n), 0) FROM queued) AS keys_queued
"""
#: Phase 1, one statement per batch: lock up to ``:limit`` expired jobs (oldest expiry first, SKIP
#: LOCKED lets concurrent runs and busy workers pass each other), then the above. The ids never go
#: through the client (that round trip was a fifth of a 1k batch), and the rows are deleted by the
#: ``ctid`` this statement locked them at (a TID scan, not a scan of ``jobs`` per batch): a locked
#: row cannot move, and a TID that does not hold the locked version deletes nothing. A row updated
#: between the statement's snapshot and its lock is locked but not deleted (the locked version is
#: newer than the snapshot): ``locked`` vs ``jobs`` shows it, and the next batch takes it.
_LOCKED_SELECTION = f"""
        SELECT id, ctid AS tid FROM jobs
        WHERE {_ELIGIBLE}
        ORDER BY expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED"""  # noqa: S608
DELETE_BATCH = sa.text(_DELETE_BATCH.format(select=_LOCKED_SELECTION, on_conflict=""))
_RETOMB = """ON CONFLICT (job_id) DO UPDATE
        SET final_status = EXCLUDED.final_status, created_at = EXCLUDED.created_at,
            expired_at = EXCLUDED.expired_at, deleted_at = EXCLUDED.deleted_at,
            object_count = EXCLUDED.object_count, events_deleted = EXCLUDED.events_deleted,
            reason = EXCLUDED.reason, run_id = EXCLUDED.run_id"""
#: The same, for a batch holding a job id that already has a tombstone: the newer deletion wins.
DELETE_BATCH_RETOMB = sa.text(_DELETE_BATCH.format(select=_LOCKED_SELECTION, on_conflict=_RETOMB))
#: Purge: the named jobs, already locked by ``LOCK_FOR_PURGE`` (a re-used id is fine here too).
DELETE_NAMED = sa.text(
    _DELETE_BATCH.format(select="SELECT id, ctid AS tid FROM jobs WHERE id = ANY(:ids)", on_conflict=_RETOMB)
)

#: Is anything left to do? (index-ordered probe: stops at the first eligible row).
BACKLOG_PROBE = sa.text(
    f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {_ELIGIBLE} ORDER BY expires_at LIMIT 1)"  # noqa: S608
)

#: How many jobs a run would delete (for the progress bar and the dry run), up to ``:cap``.
COUNT_ELIGIBLE = sa.text(
    f"SELECT count(*) FROM (SELECT 1 FROM jobs WHERE {_ELIGIBLE} LIMIT :cap) AS s"  # noqa: S608
)

#: Dry run: the same selection without locks, summarised per status.
PLAN_BY_STATUS = sa.text(
    f"""
    WITH sel AS (
        SELECT id, status, expires_at, source_key, result_keys FROM jobs
        WHERE {_ELIGIBLE}
        ORDER BY expires_at
        LIMIT :cap
    )
    SELECT status, count(*) AS jobs, min(expires_at) AS oldest, max(expires_at) AS newest,
           coalesce(sum(cardinality(array_remove(array_prepend(source_key, result_keys), NULL))), 0)
               AS objects,
           (SELECT count(*) FROM job_events e WHERE e.job_id IN (SELECT id FROM sel)) AS events
    FROM sel GROUP BY status
    """  # noqa: S608
)

PLAN_SAMPLE = sa.text(
    f"SELECT id FROM jobs WHERE {_ELIGIBLE} ORDER BY expires_at, id LIMIT :n"  # noqa: S608
)

#: Expired jobs that cleanup keeps, and why.
PLAN_KEPT = sa.text(
    """
    SELECT count(*) FILTER (WHERE status = 'processing') AS processing,
           count(*) FILTER (WHERE status <> 'processing' AND retention_hold) AS on_hold
    FROM jobs WHERE expires_at <= coalesce(CAST(:now AS timestamptz), now())
    """
)

#: Keys waiting in the outbox (a chunk row counts its keys).
OUTBOX_PENDING = sa.text(
    "SELECT coalesce(sum(coalesce(cardinality(object_keys), 1)), 0) FROM storage_deletions"
)

#: Tombstone retention, in bounded batches (a backlog of old tombstones is never one long delete).
PRUNE_TOMBSTONES = sa.text(
    """
    DELETE FROM job_deletions WHERE job_id IN (
        SELECT job_id FROM job_deletions
        WHERE deleted_at < coalesce(CAST(:now AS timestamptz), now()) - make_interval(secs => :keep)
        LIMIT :limit
    )
    """
)

COUNT_PRUNABLE_TOMBSTONES = sa.text(
    """
    SELECT count(*) FROM job_deletions
    WHERE deleted_at < coalesce(CAST(:now AS timestamptz), now()) - make_interval(secs => :keep)
    """
)

#: Phase 2, the drain's identity: a session-level advisory lock on a connection of its own, held for
#: the drain's whole life. Its token marks the rows it claims; the lock ends with the session, so a
#: killed drain's claims are dead at once (``lifecycle_claim_alive``). ``:cls`` is
#: ``lifecycle.db.tables.CLAIM_LOCK_CLASS``; both keys are int4, hence the casts.
TRY_CLAIM_LOCK = sa.text("SELECT pg_try_advisory_lock(CAST(:cls AS integer), CAST(:token AS integer))")
CLAIM_LOCK_UNLOCK = sa.text("SELECT pg_advisory_unlock(CAST(:cls AS integer), CAST(:token AS integer))")
#: A token still marking rows (a dead drain's, not yet stolen) is not reused: a new owner would
#: bring those claims back to life.
TOKEN_IN_USE = sa.text("SELECT EXISTS (SELECT 1 FROM storage_deletions WHERE claimed_by = :token)")
#: Is the session holding the lock still there? (one round trip on the lock's own connection).
PING = sa.text("SELECT 1")

#: Tokens on claimed rows whose drain is gone (a killed run, a lost lock session), each looked up in
#: ``pg_locks`` once (``lifecycle_claim_alive``): claimed rows are few, distinct tokens fewer. Rows
#: still carrying the claiming drain's own ``:token`` are leftovers too (a claim committed while its
#: connection was lost; a drain claims only once its earlier claims are recorded), so they count.
#: (``OFFSET 0`` keeps the planner from pushing the test below the DISTINCT, which would look up every
#: claimed row's token: 0.1 ms each.)
_DEAD_TOKENS = """
    SELECT d.token FROM (
        SELECT DISTINCT claimed_by AS token FROM storage_deletions WHERE claimed_by IS NOT NULL OFFSET 0
    ) AS d
    WHERE d.token = :token OR NOT lifecycle_claim_alive(d.token)
"""

#: Phase 2: claim outbox rows by writing this drain's token on them; no lock is held over the HTTP
#: call. Claimable: due and unclaimed (``free``, along ``idx_storage_deletions_next_attempt_at``), or
#: claimed by a drain that is gone (``orphaned``, along the partial index on ``claimed_by``: taken
#: over at once, whatever ``next_attempt_at`` says). A concurrent drain skips rows locked by this
#: statement (SKIP LOCKED) and, once it commits, rows whose claim is alive (the WHERE clause is
#: checked again on the row's newest version). The claim is made only while this drain's own lock is
#: held (an InitPlan, evaluated once): a drain that lost its lock session claims nothing. Rows are
#: taken in order while the claim stays within ``:limit`` keys, a chunk row counting as ``:chunk``
#: (its upper bound: no detoasting to size it); the first row is always taken. ``next_attempt_at`` is
#: left alone: it is the backoff after a failure, nothing else. Taking over a dead claim counts as an
#: attempt (``attempts + 1``): the dead drain may have sent a DELETE that is still in flight, and a
#: row with an attempt is never taken back by an attach (``lifecycle.db.jobs``), even if this drain
#: gives it back untried.
CLAIM_OUTBOX = sa.text(
    f"""
    WITH dead AS ({_DEAD_TOKENS}
    ), free AS (
        SELECT id, next_attempt_at, CASE WHEN object_keys IS NULL THEN 1 ELSE :chunk END AS n,
               0 AS taken_over
        FROM storage_deletions
        WHERE claimed_by IS NULL
          AND next_attempt_at <= coalesce(CAST(:now AS timestamptz), now())
          AND (CAST(:job_ids AS uuid[]) IS NULL OR job_id = ANY(CAST(:job_ids AS uuid[])))
          AND (SELECT lifecycle_claim_alive(CAST(:token AS integer)))
        ORDER BY next_attempt_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), orphaned AS (
        SELECT id, next_attempt_at, CASE WHEN object_keys IS NULL THEN 1 ELSE :chunk END AS n,
               1 AS taken_over
        FROM storage_deletions
        WHERE claimed_by IN (SELECT token FROM dead)
          AND (CAST(:job_ids AS uuid[]) IS NULL OR job_id = ANY(CAST(:job_ids AS uuid[])))
          AND (SELECT lifecycle_claim_alive(CAST(:token AS integer)))
        ORDER BY next_attempt_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), cand AS (
        SELECT * FROM orphaned UNION ALL SELECT * FROM free
    ), picked AS (
        SELECT id, taken_over FROM (
            SELECT id, n, taken_over, sum(n) OVER (ORDER BY next_attempt_at, id) AS upto FROM cand
        ) AS s
        WHERE upto <= :limit OR upto = n
    )
    UPDATE storage_deletions d
    SET claimed_by = :token, attempts = d.attempts + picked.taken_over
    FROM picked WHERE d.id = picked.id
    RETURNING d.id, coalesce(d.object_keys, ARRAY[d.object_key]) AS keys
    """  # noqa: S608
)

# Recording a result touches a row only while this drain's claim is still on it: a row taken over
# (its claim died with a lost lock session) or deleted by an attach meanwhile is left to its new owner.

#: A chunk row whose keys were partly confirmed gone keeps only the others (still claimed: the same
#: transaction records their failure or releases them next).
OUTBOX_KEEP_KEYS = sa.text(
    "UPDATE storage_deletions SET object_keys = :keys WHERE id = :id AND claimed_by = :token"
)

#: Give back claimed rows that were not (fully) tried: due again now, for any drain. ``:ids`` NULL:
#: every row this drain still claims (the end of a run, whatever ended it).
RELEASE_CLAIM = sa.text(
    "UPDATE storage_deletions SET claimed_by = NULL "
    "WHERE claimed_by = :token AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[])))"
)

#: Storage is down (a drain stopped after whole remove calls failed in a row): the unclaimed rows
#: still due wait until the earliest retry of a failed row, instead of being due again at once.
DEFER_DUE = sa.text(
    """
    WITH backoff AS (
        SELECT min(next_attempt_at) AS until FROM storage_deletions
        WHERE attempts > 0 AND claimed_by IS NULL
          AND next_attempt_at > coalesce(CAST(:now AS timestamptz), now())
    )
    UPDATE storage_deletions d SET next_attempt_at = backoff.until
    FROM backoff
    WHERE d.claimed_by IS NULL AND d.next_attempt_at < backoff.until
      AND (CAST(:job_ids AS uuid[]) IS NULL OR d.job_id = ANY(CAST(:job_ids AS uuid[])))
    """
)

#: Keys confirmed gone (removed now, or confirmed absent by the service role): their rows are done.
OUTBOX_DONE = sa.text("DELETE FROM storage_deletions WHERE id = ANY(:ids) AND claimed_by = :token")

#: Keys that failed: count the attempt, keep a redacted reason, back off exponentially (capped), and
#: give the claim back.
OUTBOX_FAILED = sa.text(
    """
    UPDATE storage_deletions d
    SET attempts = d.attempts + 1,
        last_error = f.err,
        claimed_by = NULL,
        next_attempt_at = coalesce(CAST(:now AS timestamptz), now())
            + make_interval(secs => least(:cap, :base * power(2, least(d.attempts, 30))))
    FROM unnest(CAST(:ids AS bigint[]), CAST(:errs AS text[])) AS f(id, err)
    WHERE d.id = f.id AND d.claimed_by = :token
    """
)

#: What is in the outbox and why (keys, a chunk row counting its keys), for the end of a drain and
#: for a drain's dry run. Disjoint groups: ``claimed`` (by a live drain, being removed right now),
#: ``failed`` (not claimed by a live drain; an earlier attempt failed), the rest waiting. ``due`` is
#: what a drain could claim now (due and unclaimed, or claimed by a dead drain).
OUTBOX_STATE = sa.text(
    """
    WITH tokens AS (
        SELECT d.token, lifecycle_claim_alive(d.token) AS live FROM (
            SELECT DISTINCT claimed_by AS token FROM storage_deletions WHERE claimed_by IS NOT NULL
        ) AS d
    ), r AS (
        SELECT coalesce(cardinality(s.object_keys), 1) AS n, s.attempts, s.created_at,
               s.next_attempt_at, s.claimed_by, coalesce(t.live, false) AS live
        FROM storage_deletions s LEFT JOIN tokens t ON t.token = s.claimed_by
        WHERE CAST(:job_ids AS uuid[]) IS NULL OR s.job_id = ANY(CAST(:job_ids AS uuid[]))
    )
    SELECT coalesce(sum(n), 0) AS keys,
           coalesce(sum(n) FILTER (WHERE live), 0) AS claimed,
           coalesce(sum(n) FILTER (WHERE claimed_by IS NOT NULL AND NOT live), 0) AS dead_claims,
           coalesce(sum(n) FILTER (WHERE NOT live AND attempts > 0), 0) AS failed,
           coalesce(sum(n) FILTER (
               WHERE (claimed_by IS NULL AND next_attempt_at <= coalesce(CAST(:now AS timestamptz), now()))
                  OR (claimed_by IS NOT NULL AND NOT live)), 0) AS due,
           coalesce(max(attempts), 0) AS max_attempts,
           min(created_at) AS oldest,
           min(next_attempt_at) FILTER (
               WHERE claimed_by IS NULL AND next_attempt_at > coalesce(CAST(:now AS timestamptz), now()))
               AS next_due,
           coalesce(CAST(:now AS timestamptz), now()) AS at
    FROM r
    """
)

#: Purge: erasure does not wait for an earlier failure's backoff.
PURGE_DUE_NOW = sa.text(
    "UPDATE storage_deletions SET next_attempt_at = now() "
    "WHERE job_id = ANY(:ids) AND next_attempt_at > now()"
)

#: Purge: lock the named jobs whatever their expiry (waits up to the lock timeout for a worker).
LOCK_FOR_PURGE = sa.text("SELECT id, status FROM jobs WHERE id = ANY(:ids) ORDER BY id FOR UPDATE")

TOMBSTONED = sa.text("SELECT job_id FROM job_deletions WHERE job_id = ANY(:ids)")

#: Reconciliation: which listed keys their job records (as its source or a result): any other key is not the
#: job's object any more, or never was (a job gone, a key replaced, an upload by hand).
RECORDED_KEYS = sa.text(
    """
    SELECT u.k FROM unnest(CAST(:keys AS text[]), CAST(:job_ids AS uuid[])) AS u(k, j)
    JOIN jobs ON jobs.id = u.j AND (jobs.source_key = u.k OR u.k = ANY(jobs.result_keys))
    """
)
#: Which keys are already queued. Single-key rows through the unique index; chunk rows by scanning
#: them (only asked for keys no job records, and chunk rows exist only between a phase 1 and its drain).
QUEUED_KEYS = sa.text(
    """
    SELECT object_key FROM storage_deletions WHERE object_key = ANY(:keys)
    UNION
    SELECT k.key FROM storage_deletions d CROSS JOIN LATERAL unnest(d.object_keys) AS k(key)
    WHERE d.object_keys IS NOT NULL AND k.key = ANY(:keys)
    """
)
#: Queue orphans, but never a key its job records by now.
QUEUE_KEYS = sa.text(
    """
    -- The jobs are locked (FOR SHARE) and re-read: a key an attach records meanwhile is not queued
    -- (an attach waits for this lock, then takes back a key this queued and no drain tried yet).
    WITH u AS (
        SELECT k, j FROM unnest(CAST(:keys AS text[]), CAST(:job_ids AS uuid[])) AS u(k, j)
    ), locked AS (
        SELECT id, source_key, result_keys FROM jobs WHERE id IN (SELECT j FROM u) FOR SHARE
    )
    INSERT INTO storage_deletions (object_key, job_id, run_id, next_attempt_at)
    SELECT u.k, u.j, :run_id, now() FROM u
    WHERE NOT EXISTS (
        SELECT 1 FROM locked l WHERE l.id = u.j AND (l.source_key = u.k OR u.k = ANY(l.result_keys))
    )
    ON CONFLICT (object_key) DO NOTHING
    RETURNING object_key
    """
)

#: Reconciliation, the other direction: recorded keys of jobs older than the grace period, by id.
RECORDED_KEYS_PAGE = sa.text(
    """
    SELECT id, array_remove(array_prepend(source_key, result_keys), NULL) AS keys
    FROM jobs
    WHERE updated_at < coalesce(CAST(:now AS timestamptz), now()) - make_interval(secs => :grace)
      AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid))
    ORDER BY id
    LIMIT :limit
    """
)
