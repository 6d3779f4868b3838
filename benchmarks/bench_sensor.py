"""The expired-jobs sensor's probe at 10M rows, and right after a large purge.

    .venv/bin/python -m benchmarks.bench_sensor [--rows 10000000] [--expired 1000000] [--quick]

Loads ``--rows`` jobs (``--expired`` of them already expired, at the low end of
``idx_jobs_expires_at``) with ``generate_series`` into a migrated database (indexes built after the
load), then times, each as the median of many calls:
- the project's probe, ``status_counts.oldest_expired_job(db)`` (``db.stats``: the catalogue's
  ``stats.oldest_eligible_job``, one round trip), against the same statement on a plain psycopg
  connection in autocommit, and in ``BEGIN``/``COMMIT`` (what a probe inside ``db.transaction()`` pays);
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
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from benchmarks.sql import setup_sql
from lifecycle.db.sql import query

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "bench_sensor"
#: The secondary indexes of ``jobs``, dropped before the load and built after it.
INDEXES: dict[str, LiteralString] = {
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
    from lifecycle.db import migrate

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    url = _db_url(admin, DATABASE)
    migrate.upgrade(url)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        # Indexes are built after the load: much faster than 10M random-UUID index inserts.
        conn.execute(setup_sql("sensor.drop_primary_key"))
        for name in INDEXES:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        chunk = 1_000_000
        for lo in range(0, rows, chunk):
            bounds = {"lo": lo, "hi": min(rows, lo + chunk), "expired": expired}
            conn.execute(setup_sql("sensor.load"), bounds)
            _say(f"loaded {min(rows, lo + chunk):,} rows ({time.perf_counter() - started:.0f} s)")
        conn.execute(setup_sql("sensor.add_primary_key"))
        for statement in INDEXES.values():
            conn.execute(statement)
        conn.execute(setup_sql("sensor.add_events_foreign_key"))
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

            def raw(statement: LiteralString) -> Callable[[], object]:
                return lambda: conn.execute(statement, {"now": now}).fetchone()

            def raw_in_transaction(statement: LiteralString) -> Callable[[], object]:
                def call() -> object:
                    with conn.transaction():  # BEGIN ... COMMIT, as db.transaction() sends
                        return conn.execute(statement, {"now": now}).fetchone()

                return call

            def ours() -> object:
                return status_counts.oldest_expired_job(db, now)

            def measure(label: str, call: Callable[[], object], rounds: int = args.rounds) -> None:
                first, median = _median_ms(call, rounds)
                results.append((label, first, median))
                _say(f"{label}: first {first:.3f} ms, median {median:.3f} ms")

            probe, count = query("stats.oldest_eligible_job"), query("stats.expired_backlog")
            assert ours() is not None
            measure("backlog: probe, ours (db.stats, one round trip)", ours)
            measure("backlog: probe, raw psycopg", raw(probe))
            measure("backlog: probe, raw psycopg in BEGIN/COMMIT", raw_in_transaction(probe))
            measure("backlog: count(*) of the expired (stats.expired_backlog)", raw(count), rounds=5)

            t0 = time.perf_counter()
            deleted = 0
            while True:
                n = conn.execute(setup_sql("sensor.purge_batch")).rowcount
                deleted += n
                if n == 0:
                    break
            _say(f"purged {deleted:,} expired rows in {time.perf_counter() - t0:.1f} s (autovacuum off)")
            assert ours() is None
            measure("after batched purge, no vacuum: probe, raw psycopg", raw(probe))
            measure("after batched purge, no vacuum: probe, ours", ours)
            unordered = raw(setup_sql("sensor.probe_without_order"))
            measure("after purge, no vacuum: probe without ORDER BY", unordered, rounds=3)
            t0 = time.perf_counter()
            conn.execute("VACUUM (ANALYZE) jobs")
            vacuum_s = time.perf_counter() - t0
            _say(f"VACUUM (ANALYZE) jobs took {vacuum_s:.1f} s")
            measure("after purge + VACUUM: probe, ours", ours)
            measure("after purge + VACUUM: probe, raw psycopg", raw(probe))
            measure("after purge + VACUUM: probe, raw psycopg in BEGIN/COMMIT", raw_in_transaction(probe))

            # Worst case: the same backlog deleted by ONE statement (no index scan in between
            # marks the dead entries), e.g. a manual DELETE in the SQL editor.
            conn.execute(setup_sql("sensor.load"), {"lo": 0, "hi": args.expired, "expired": args.expired})
            conn.execute("VACUUM (ANALYZE) jobs")
            t0 = time.perf_counter()
            conn.execute(setup_sql("sensor.purge_all"))
            _say(f"one DELETE of {args.expired:,} rows: {time.perf_counter() - t0:.1f} s")
            measure("after one unbounded DELETE, no vacuum: probe, raw psycopg", raw(probe))
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
