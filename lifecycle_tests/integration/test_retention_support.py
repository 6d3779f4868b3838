"""Helpers for the retention tests (no tests here): rows planted with plain SQL, table snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

Raw = psycopg.Connection[tuple[Any, ...]]

#: Every table retention may touch, with an ordering that makes snapshots comparable.
SNAPSHOT_TABLES = {
    "jobs": "SELECT * FROM jobs ORDER BY id",
    "job_events": "SELECT * FROM job_events ORDER BY id",
    "storage_deletions": "SELECT * FROM storage_deletions ORDER BY id",
    "job_deletions": "SELECT * FROM job_deletions ORDER BY job_id",
}


#: Keys waiting in the outbox: single-key rows plus every key of the chunk rows phase 1 writes.
QUEUED_KEYS = "SELECT coalesce(sum(coalesce(cardinality(object_keys), 1)), 0) FROM storage_deletions"


def insert_jobs(
    raw: Raw,
    n: int,
    *,
    status: str = "succeeded",
    expires_in_seconds: float = -3600,
    hold: bool = False,
    events: int = 2,
    keys: bool = True,
    ext: str = "mp4",
) -> list[UUID]:
    """``n`` jobs inserted directly (like another client would), each with ``events`` events and,
    when ``keys``, a recorded source and result key built the way ``lifecycle.storage`` builds them."""
    rows = raw.execute(
        """
        WITH ids AS (
            SELECT gen_random_uuid() AS id, g AS i FROM generate_series(1, %(n)s) AS g
        )
        INSERT INTO jobs (id, status, expires_at, retention_hold, source_key, result_keys,
                          created_at, updated_at)
        SELECT id, %(status)s, now() + make_interval(secs => %(exp)s) + make_interval(secs => i * 0.001),
               %(hold)s,
               CASE WHEN %(keys)s THEN 'sources/' || id || '/source.' || %(ext)s END,
               CASE WHEN %(keys)s THEN ARRAY['results/' || id || '/clip.' || %(ext)s]
                    ELSE '{}'::text[] END,
               now() - interval '30 days', now() - interval '30 days'
        FROM ids
        RETURNING id
        """,
        {"n": n, "status": status, "exp": expires_in_seconds, "hold": hold, "keys": keys, "ext": ext},
    ).fetchall()
    ids = [r[0] for r in rows]
    if events and ids:
        raw.execute(
            """
            INSERT INTO job_events (job_id, type, data)
            SELECT j, 'note', jsonb_build_object('i', g)
            FROM unnest(%(ids)s::uuid[]) AS j, generate_series(1, %(events)s) AS g
            """,
            {"ids": ids, "events": events},
        )
    return ids


def keys_of(ids: Sequence[UUID], ext: str = "mp4") -> list[str]:
    """The source and result keys ``insert_jobs`` recorded for ``ids``."""
    out: list[str] = []
    for job_id in ids:
        out += [f"sources/{job_id}/source.{ext}", f"results/{job_id}/clip.{ext}"]
    return out


def snapshot(raw: Raw) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every retention table (for "a dry run writes nothing")."""
    return {name: raw.execute(query).fetchall() for name, query in SNAPSHOT_TABLES.items()}


def count(raw: Raw, query: str, params: Any = None) -> int:
    """The single integer a query returns."""
    row = raw.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def existing(raw: Raw, ids: Sequence[UUID]) -> set[UUID]:
    """Which of ``ids`` still have a row."""
    return {r[0] for r in raw.execute("SELECT id FROM jobs WHERE id = ANY(%s)", [list(ids)]).fetchall()}


def cli_env(database_url: str, storage_settings: Any, key: str | None = None) -> dict[str, str]:
    """The environment of a ``lifecycle`` command on this test's database and bucket (``key``: the
    API key to use instead of the service-role key)."""
    secret = storage_settings.supabase_service_role_key
    return {
        "DATABASE_URL": database_url,
        "SUPABASE_URL": storage_settings.supabase_url,
        "SUPABASE_SERVICE_ROLE_KEY": key if key is not None else secret.get_secret_value(),
        "SUPABASE_STORAGE_BUCKET": storage_settings.supabase_storage_bucket,
        "LOG_LEVEL": "WARNING",
    }


def live_claims(raw: Raw) -> int:
    """Outbox rows claimed by a drain whose lock session is alive."""
    return count(
        raw,
        "SELECT count(*) FROM storage_deletions "
        "WHERE claimed_by IS NOT NULL AND lifecycle_claim_alive(claimed_by)",
    )
