"""The expired-jobs sensor's probe at 10M rows, and right after a large purge.

    .venv/bin/python -m benchmarks.bench_sensor [--rows 10000000] [--expired 1000000] [--quick]

Loads ``--rows`` jobs (``--expired`` of them already expired, at the low end of
``idx_jobs_expires_at``) with ``generate_series`` into a migrated database (indexes built after the
load), then times, each as the median of many calls:
- the project's probe, ``status_counts.oldest_expired_job(db)`` (SQLAlchemy + psycopg 3, one
  transaction), against the same SQL on a plain psycopg connection;
- two worse shapes for contrast: the probe without ``ORDER BY`` and ``count(*)`` of the backlog;
- after deleting every expired row in batches of 10,000 (as cleanup does), before and after
  ``VACUUM (ANALYZE) jobs``, which ``retention.cleanup`` runs after deleting >= 10,000 jobs.
Autovacuum is off for the table so that "right after a purge" stays that way while measuring.
Uses ``LIFECYCLE_BENCH_DATABASE_URL`` (an admin URL) if set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "bench_sensor"
PROBE = (
    "SELECT id FROM jobs WHERE expires_at <= %(now)s AND status <> 'processing' AND NOT retention_hold "
    "ORDER BY expires_at LIMIT 1"
)
PROBE_NO_ORDER = (
    "SELECT id FROM jobs WHERE expires_at <= %(now)s AND status <> 'processing' AND NOT retention_hold "
    "LIMIT 1"
)
COUNT = (
    "SELECT count(*) FROM jobs WHERE expires_at <= %(now)s AND status <> 'processing' AND NOT retention_hold"
)
LOAD = """
INSERT INTO jobs (id, status, params, created_at, updated_at, expires_at)
SELECT gen_random_uuid(),
       (ARRAY['queued', 'succeeded', 'failed', 'canceled'])[1 + g %% 4],
       '{}'::jsonb, now() - interval '2 days', now() - interval '2 days',
       CASE WHEN g < %(expired)s
            THEN now() - interval '1 hour' - g * interval '1 millisecond'
            ELSE now() + interval '1 day' + g * interval '100 milliseconds' END
FROM generate_series(%(lo)s, %(hi)s - 1) AS g
"""
PURGE_BATCH = """
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE expires_at <= now() AND status <> 'processing' AND NOT retention_hold
    ORDER BY expires_at LIMIT 10000 FOR UPDATE SKIP LOCKED)
"""
INDEXES = {
    "pk_jobs": "ALTER TABLE jobs ADD CONSTRAINT pk_jobs PRIMARY KEY (id)",
    "idx_jobs_status_created_at": "CREATE INDEX idx_jobs_status_created_at ON jobs (status, created_at, id)",
    "idx_jobs_expires_at": "CREATE INDEX idx_jobs_expires_at ON jobs (expires_at)",
    "idx_jobs_api_key_id": "CREATE INDEX idx_jobs_api_key_id ON jobs (api_key_id)",
}


def _say(message: str) -> None:
    print(f"[bench_sensor] {message}", flush=True)


def _admin_url() -> tuple[str, Any]:
    url = os.environ.get("LIFECYCLE_BENCH_DATABASE_URL")
    if url:
        return url, None
    from lifecycle.devstack.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(ROOT / ".lifecycle" / "bench").start()
    return server.url("postgres"), server


def _db_url(admin: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(admin)._replace(path="/" + name))


def _load(admin: str, rows: int, expired: int) -> str:
    """A fresh migrated database holding ``rows`` jobs; its URL."""
    import sqlalchemy as sa

    from lifecycle.db import migrate
    from lifecycle.db.engine import sqlalchemy_url

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    url = _db_url(admin, DATABASE)
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        # Indexes are built after the load: much faster than 10M random-UUID index inserts.
        conn.execute("ALTER TABLE jobs DROP CONSTRAINT pk_jobs CASCADE")
        for name in INDEXES:
            if name != "pk_jobs":
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        chunk = 1_000_000
        for lo in range(0, rows, chunk):
            conn.execute(LOAD, {"lo": lo, "hi": min(rows, lo + chunk), "expired": expired})
            _say(f"loaded {min(rows, lo + chunk):,} rows ({time.perf_counter() - started:.0f} s)")
        for statement in INDEXES.values():
            conn.execute(statement)  # type: ignore[arg-type]  # constant DDL
        # job_events.job_id references jobs.id: restore the FK dropped with the primary key.
        conn.execute(
            "ALTER TABLE job_events ADD CONSTRAINT fk_job_events_job_id_jobs "
            "FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE"
        )
        conn.execute("VACUUM (ANALYZE) jobs")
    _say(f"{rows:,} rows ready in {time.perf_counter() - started:.0f} s")
    return url


def _median_ms(call: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(first call, median of the following ``rounds``) in milliseconds."""
    times = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return times[0], statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--expired", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="1M rows, 100k expired")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.expired = 1_000_000, 100_000

    from lifecycle import status_counts
    from lifecycle.db import Database
    from lifecycle.settings import Settings

    admin, server = _admin_url()
    results: list[tuple[str, float, float]] = []
    try:
        url = _load(admin, args.rows, args.expired)
        db = Database.from_url(url, settings=Settings.load(env={}), pool_size=1)
        now = datetime.now(UTC)
        with psycopg.connect(url, autocommit=True) as conn:

            def raw(query: str) -> Callable[[], object]:
                return lambda: conn.execute(query, {"now": now}).fetchone()  # type: ignore[arg-type]

            def ours() -> object:
                return status_counts.oldest_expired_job(db, now)

            def measure(label: str, call: Callable[[], object], rounds: int = args.rounds) -> None:
                first, median = _median_ms(call, rounds)
                results.append((label, first, median))
                _say(f"{label}: first {first:.3f} ms, median {median:.3f} ms")

            assert ours() is not None
            measure("backlog: probe, ours (Database + SQLAlchemy)", ours)
            measure("backlog: probe, raw psycopg", raw(PROBE))
            measure("backlog: count(*) of the expired", raw(COUNT), rounds=5)

            t0 = time.perf_counter()
            deleted = 0
            while True:
                n = conn.execute(PURGE_BATCH).rowcount
                deleted += n
                if n == 0:
                    break
            _say(f"purged {deleted:,} expired rows in {time.perf_counter() - t0:.1f} s (autovacuum off)")
            assert ours() is None
            measure("after batched purge, no vacuum: probe, raw psycopg", raw(PROBE))
            measure("after batched purge, no vacuum: probe, ours", ours)
            measure("after purge, no vacuum: probe without ORDER BY", raw(PROBE_NO_ORDER), rounds=3)
            t0 = time.perf_counter()
            conn.execute("VACUUM (ANALYZE) jobs")
            vacuum_s = time.perf_counter() - t0
            _say(f"VACUUM (ANALYZE) jobs took {vacuum_s:.1f} s")
            measure("after purge + VACUUM: probe, ours", ours)
            measure("after purge + VACUUM: probe, raw psycopg", raw(PROBE))

            # Worst case: the same backlog deleted by ONE statement (no index scan in between
            # marks the dead entries), e.g. a manual DELETE in the SQL editor.
            conn.execute(LOAD, {"lo": 0, "hi": args.expired, "expired": args.expired})
            conn.execute("VACUUM (ANALYZE) jobs")
            t0 = time.perf_counter()
            conn.execute(
                "DELETE FROM jobs WHERE expires_at <= now() AND status <> 'processing' AND NOT retention_hold"
            )
            _say(f"one DELETE of {args.expired:,} rows: {time.perf_counter() - t0:.1f} s")
            measure("after one unbounded DELETE, no vacuum: probe, raw psycopg", raw(PROBE))
            measure("after one unbounded DELETE, no vacuum: probe, ours", ours)
            conn.execute("VACUUM (ANALYZE) jobs")
            measure("after one unbounded DELETE + VACUUM: probe, ours", ours)
        db.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
    finally:
        if server is not None:
            server.stop()
    print()
    print(f"Sensor probe, {args.rows:,} jobs ({args.expired:,} expired then purged), median of {args.rounds}")
    print()
    print("| case | first call (ms) | median (ms) |")
    print("|---|---:|---:|")
    for label, first, median in results:
        print(f"| {label} | {first:.3f} | {median:.3f} |")
    print(f"\nVACUUM (ANALYZE) jobs after the purge: {vacuum_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
