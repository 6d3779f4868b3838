"""Object keys bound to their job; outbox claims owned by a live run.

- ``jobs.source_key`` and every ``jobs.result_keys`` entry must be this row's own key
  (``ck_jobs_keys_owner``, ``lifecycle_owns_keys(id, source_key, result_keys)``)
  (``sources/{id}/source.<ext>``, ``results/{id}/clip.<ext>``, ``ext`` 1-16 of ``[a-z0-9]``), so no
  client (the repository, the SQL editor, PostgREST) can record another job's object, a path
  outside the layout or a wildcard, and purging one job can never remove another's object. Keys
  already recorded that break the rule are dropped from their row first, with a ``key_dropped``
  event each; they are not queued for deletion, since such a key may name another job's live object.
- ``storage_deletions.claimed_by``: the advisory-lock token of the drain that claimed the row. A
  claim is alive only while its owner's session holds ``pg_advisory_lock(CLAIM_LOCK_CLASS, token)``
  (``lifecycle_claim_alive``), so a killed run's claims are free at once, with no lease to wait out.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 1818458467 is the first key of the two-key advisory locks that own outbox claims (ASCII "lcyc",
# ``lifecycle.db.outbox.CLAIM_LOCK_CLASS``); the second key is the claiming drain's token.
# Fixed offsets: 'sources/' and 'results/' are 8 characters, a UUID's text 36, then '/': the file
# name starts at character 46. One PL/pgSQL function checks both columns: a CHECK runs on every
# write of a row, and this form cost about half of a SQL expression for the source plus PL/pgSQL for
# the results (a SQL function over unnest() was worse still: planned again for each statement).
_FUNCTIONS = """
CREATE FUNCTION lifecycle_owns_keys(job_id uuid, source text, results text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    id_text text := job_id::text;
    k text;
BEGIN
    IF source IS NOT NULL AND NOT (substr(source, 1, 45) = 'sources/' || id_text || '/'
                                   AND substr(source, 46) ~ '^source\\.[a-z0-9]{1,16}$') THEN
        RETURN false;
    END IF;
    FOREACH k IN ARRAY results LOOP
        IF k IS NULL OR NOT (substr(k, 1, 45) = 'results/' || id_text || '/'
                             AND substr(k, 46) ~ '^clip\\.[a-z0-9]{1,16}$') THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;
CREATE FUNCTION lifecycle_claim_alive(token integer) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid = 1818458467::oid AND objid = token::oid AND objsubid = 2
    )
$$;
"""

_DROP_INVALID_KEYS = """
WITH bad AS (
    SELECT id, source_key,
           ARRAY(SELECT k FROM unnest(result_keys) AS k WHERE NOT lifecycle_owns_keys(id, NULL, ARRAY[k]))
               AS bad_results
    FROM jobs
    WHERE NOT lifecycle_owns_keys(id, source_key, result_keys)
), fixed AS (
    UPDATE jobs AS j
    SET source_key = CASE WHEN lifecycle_owns_keys(j.id, j.source_key, '{}') THEN j.source_key END,
        result_keys = ARRAY(SELECT k FROM unnest(j.result_keys) AS k
                            WHERE lifecycle_owns_keys(j.id, NULL, ARRAY[k])),
        version = j.version + 1, updated_at = now()
    FROM bad WHERE j.id = bad.id
    RETURNING j.id
)
INSERT INTO job_events (job_id, type, data)
SELECT bad.id, 'key_dropped', jsonb_build_object('key', k.key, 'why', 'not this job''s own key')
FROM bad
CROSS JOIN LATERAL unnest(
    CASE WHEN lifecycle_owns_keys(bad.id, bad.source_key, '{}')
         THEN bad.bad_results ELSE array_prepend(bad.source_key, bad.bad_results) END
) AS k(key)
WHERE bad.id IN (SELECT id FROM fixed)
"""


def upgrade() -> None:
    op.execute(_FUNCTIONS)
    op.execute(_DROP_INVALID_KEYS)
    op.create_check_constraint(
        op.f("ck_jobs_keys_owner"), "jobs", "lifecycle_owns_keys(id, source_key, result_keys)"
    )
    op.add_column("storage_deletions", sa.Column("claimed_by", sa.Integer(), nullable=True))
    op.create_index(
        op.f("idx_storage_deletions_claimed_by"),
        "storage_deletions",
        ["claimed_by"],
        postgresql_where=sa.text("claimed_by IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("idx_storage_deletions_claimed_by"), table_name="storage_deletions")
    op.drop_column("storage_deletions", "claimed_by")
    op.drop_constraint(op.f("ck_jobs_keys_owner"), "jobs", type_="check")
    op.execute("DROP FUNCTION lifecycle_claim_alive(integer)")
    op.execute("DROP FUNCTION lifecycle_owns_keys(uuid, text, text[])")
