"""Repositories (issue 3): transitions, batches, keyset pages, claims and API-key checks.

Each scenario runs ``lifecycle`` (``db.transaction()`` + the repository) and raw psycopg 3 sending
the same SQL, one transaction per operation on both sides, on the same fresh database.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt

from benchmarks.harness import Bench, Report, Row, compare_rounds, percentile
from lifecycle.db import Database
from lifecycle.db import jobs as jobs_sql
from lifecycle.db._common import encode_cursor
from lifecycle.settings import Settings
from lifecycle.states import JobStatus, allowed_sources

AREA = "repos"
TITLE = "Repositories: transitions, batches, pages, claims, API keys"

# -- the raw side: the repository's own statement strings (psycopg placeholders), sent by psycopg ------
# The project sends these same strings on the driver connection; the raw side binds the same values.

RAW_TRANSITION_KNOWN = jobs_sql._TRANSITION_KNOWN_FROM
RAW_TRANSITION_ANY = jobs_sql._TRANSITION_ANY_FROM
RAW_CLAIM = jobs_sql._CLAIM_NEXT
RAW_PAGE = jobs_sql._LIST_AFTER
# What ``JobsRepo.transition_many`` builds when only the source status filters.
RAW_TRANSITION_MANY = f"""
WITH picked AS (
    SELECT id FROM jobs WHERE status = %(from_status)s
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE jobs AS j SET {jobs_sql._SET_STATUS}
    FROM picked
    WHERE j.id = picked.id AND j.status = %(from_status)s
    RETURNING j.id, j.status, CAST(%(from_status)s AS text) AS from_status
), ev AS ({jobs_sql._INSERT_TRANSITION_EVENT}
)
SELECT id FROM moved
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("repos")
    group.add_argument(
        "--rows",
        default="1000000",
        help="comma-separated row counts for the list_by_status scenario (e.g. 1000000,10000000)",
    )


def _settings() -> Settings:
    return Settings.load(env={})


def _status_values(target: JobStatus, settings: Settings) -> dict[str, Any]:
    """The bound values the repository sends for entering ``target`` (no reason, no data)."""
    processing = target is JobStatus.PROCESSING
    return {
        "to_status": target.value,
        "attempt_inc": 1 if processing else 0,
        "lease": timedelta(seconds=settings.lease_seconds) if processing else None,
        "retention": None if processing else settings.retention_for(target),
        "error": None,
        "event_type": "transition",
        "data": "{}",
        "run_id": None,
    }


def _load_queued(conn: Any, n: int) -> list[uuid.UUID]:
    """``n`` queued jobs (server-side generate_series), their ids in creation order."""
    with conn.transaction():
        conn.execute("TRUNCATE jobs, job_events")
        rows = conn.execute(
            "INSERT INTO jobs (params, created_at, expires_at) "
            'SELECT \'{"source": "a.mp4", "format": "mp4"}\', '
            "       now() - make_interval(secs => %s - i), now() + interval '30 days' "
            "FROM generate_series(1, %s) i RETURNING id",
            (n, n),
        ).fetchall()
    conn.execute("ANALYZE jobs")
    return [r[0] for r in rows]


# -- scenarios --------------------------------------------------------------------------------------


def single_transitions(bench: Bench, report: Report, connections: int, target: JobStatus) -> None:
    """Single transitions, one transaction each, on ``connections`` threads.

    Three variants (project, project with DATABASE_POOL_PRE_PING on, raw) run interleaved in blocks
    of 100 per connection, so load from other processes on the machine hits all of them alike.
    """
    per_round = (400 if bench.quick else 2000) // connections * connections
    rounds = 3 if bench.quick else 5
    block = 100 * connections
    settings = _settings()
    sources = sorted(s.value for s in allowed_sources(target))
    with bench.database() as url:
        admin = bench.raw_connect(url, autocommit=True)
        db = bench.project_db(url, pool_size=connections)
        db_ping = bench.project_db(url, pool_size=connections, DATABASE_POOL_PRE_PING="true")
        raws = [bench.raw_connect(url) for _ in range(connections)]
        try:
            ids = _load_queued(admin, per_round * rounds * 3)

            def run_parallel(work: Callable[[int, list[uuid.UUID]], None], chunk: list[uuid.UUID]) -> float:
                slices = [chunk[i::connections] for i in range(connections)]
                threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(slices)]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return time.perf_counter() - start

            def project_work(database: Database) -> Callable[[int, list[uuid.UUID]], None]:
                def work(_: int, job_ids: list[uuid.UUID]) -> None:
                    for job_id in job_ids:
                        with database.transaction() as tx:
                            tx.jobs.transition(job_id, target)

                return work

            values = _status_values(target, settings)
            statement = RAW_TRANSITION_KNOWN if len(sources) == 1 else RAW_TRANSITION_ANY
            extra: dict[str, Any] = {"from_status": sources[0]} if len(sources) == 1 else {"allowed": sources}

            def raw_work(i: int, job_ids: list[uuid.UUID]) -> None:
                conn = raws[i]
                for job_id in job_ids:
                    with conn.transaction():
                        row = conn.execute(statement, {**values, **extra, "id": job_id}).fetchone()
                        assert row is not None

            variants = {"project": project_work(db), "ping": project_work(db_ping), "raw": raw_work}
            rates: dict[str, list[float]] = {name: [] for name in variants}
            pending = iter(ids)
            for k in range(rounds):
                spent = dict.fromkeys(variants, 0.0)
                done = dict.fromkeys(variants, 0)
                names = list(variants)
                for b in range(per_round // block):
                    # Rotate the order so no variant always runs right after another.
                    order = names[(b + k) % 3 :] + names[: (b + k) % 3]
                    for name in order:
                        chunk = [next(pending) for _ in range(block)]
                        spent[name] += run_parallel(variants[name], chunk)
                        done[name] += len(chunk)
                for name in variants:
                    rates[name].append(done[name] / spent[name])
            p, ping, r = (statistics.median(rates[n]) for n in ("project", "ping", "raw"))
        finally:
            db.dispose()
            db_ping.dispose()
            for conn in raws:
                conn.close()
            admin.close()
    form = "known source: plain guarded UPDATE" if len(sources) == 1 else "2 sources: FOR UPDATE CTE"
    report.rows.append(
        Row(
            f"transition queued->{target.value}, {connections} connection(s)",
            "transitions/s",
            p,
            r,
            target=0.8,
            note=f"{form}; one transaction each; {per_round}/round, {rounds} rounds, interleaved blocks",
        )
    )
    report.rows.append(
        Row(
            f"transition queued->{target.value}, {connections} connection(s), with pre-ping",
            "transitions/s",
            ping,
            r,
            note="same project code with DATABASE_POOL_PRE_PING=true (one more round trip per transaction)",
        )
    )


def batch_transitions(bench: Bench, report: Report, batch: int) -> None:
    total = 20_000 if bench.quick else 100_000
    rounds = 2 if bench.quick else 3
    settings = _settings()
    values = _status_values(JobStatus.PROCESSING, settings)
    with bench.database() as url:
        admin = bench.raw_connect(url, autocommit=True)
        db = bench.project_db(url)
        raw = bench.raw_connect(url)
        try:

            def project(_: int) -> float:
                _load_queued(admin, total)
                moved, start = 0, time.perf_counter()
                while True:
                    with db.transaction() as tx:
                        n = len(tx.jobs.transition_many(JobStatus.QUEUED, JobStatus.PROCESSING, limit=batch))
                    moved += n
                    if n < batch:
                        break
                assert moved == total
                return moved / (time.perf_counter() - start)

            def raw_side(_: int) -> float:
                _load_queued(admin, total)
                moved, start = 0, time.perf_counter()
                while True:
                    with raw.transaction():
                        n = len(
                            raw.execute(
                                RAW_TRANSITION_MANY, {**values, "from_status": "queued", "limit": batch}
                            ).fetchall()
                        )
                    moved += n
                    if n < batch:
                        break
                assert moved == total
                return moved / (time.perf_counter() - start)

            p, r, _, _ = compare_rounds(project, raw_side, rounds)
        finally:
            db.dispose()
            raw.close()
            admin.close()
    report.rows.append(
        Row(
            f"transition_many of {total:,} jobs, batches of {batch:,}",
            "jobs/s",
            p,
            r,
            target=0.8,
            note=f"queued->processing with one event per job; {rounds} rounds",
        )
    )


def _copy_jobs(conn: Any, n: int, bench: Bench) -> None:
    """``n`` jobs over the five statuses, loaded with COPY (indexes rebuilt after)."""
    statuses = [s.value for s in JobStatus]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    expires = "2030-01-01 00:00:00+00"
    with conn.transaction():
        conn.execute("TRUNCATE jobs, job_events")
        conn.execute("DROP INDEX idx_jobs_status_created_at")
        conn.execute("DROP INDEX idx_jobs_expires_at")
        with conn.cursor().copy(
            "COPY jobs (id, status, params, created_at, updated_at, expires_at, lease_expires_at) FROM STDIN"
        ) as copy:
            step = 0
            for i in range(n):
                status = statuses[i % 5]
                ts = (base + timedelta(milliseconds=i)).isoformat()
                lease = "2030-01-01 00:00:00+00" if status == "processing" else None
                copy.write_row((uuid.uuid4(), status, '{"source": "a.mp4"}', ts, ts, expires, lease))
                if i and i % 1_000_000 == 0:
                    step += 1
                    bench.log(f"  loaded {i:,} rows")
        conn.execute("CREATE INDEX idx_jobs_status_created_at ON jobs (status, created_at, id)")
        conn.execute("CREATE INDEX idx_jobs_expires_at ON jobs (expires_at)")
    conn.execute("VACUUM ANALYZE jobs")


def list_pages(bench: Bench, report: Report, rows: int) -> None:
    samples = 300 if bench.quick else 2000
    limit = 100
    with bench.database() as url:
        admin = bench.raw_connect(url, autocommit=True)
        bench.log(f"list_by_status: loading {rows:,} rows with COPY")
        started = time.perf_counter()
        _copy_jobs(admin, rows, bench)
        load_s = time.perf_counter() - started
        anchors = admin.execute(
            "SELECT created_at, id FROM jobs WHERE status = 'queued' ORDER BY random() LIMIT %s", (samples,)
        ).fetchall()
        db = bench.project_db(url)
        raw = bench.raw_connect(url)
        project_ms: list[float] = []
        raw_ms: list[float] = []
        try:
            # Warm both paths (prepared statements, pool, buffer cache) before measuring.
            for ts, job_id in anchors[:20]:
                with db.transaction() as tx:
                    tx.jobs.list_by_status(JobStatus.QUEUED, limit=limit, after=encode_cursor(ts, job_id))
                with raw.transaction():
                    raw.execute(
                        RAW_PAGE, {"status": "queued", "after_ts": ts, "after_id": job_id, "limit": limit + 1}
                    ).fetchall()
            for i, (ts, job_id) in enumerate(anchors):
                cursor = encode_cursor(ts, job_id)

                def project_page(cursor: str = cursor) -> None:
                    with db.transaction() as tx:
                        tx.jobs.list_by_status(JobStatus.QUEUED, limit=limit, after=cursor)

                def raw_page(ts: datetime = ts, job_id: uuid.UUID = job_id) -> None:
                    page_values = {"status": "queued", "after_ts": ts, "after_id": job_id, "limit": limit + 1}
                    with raw.transaction():
                        raw.execute(RAW_PAGE, page_values).fetchall()

                order = (project_page, raw_page) if i % 2 else (raw_page, project_page)
                for func in order:
                    start = time.perf_counter()
                    func()
                    elapsed = (time.perf_counter() - start) * 1000
                    (project_ms if func is project_page else raw_ms).append(elapsed)
        finally:
            db.dispose()
            raw.close()
            admin.close()
    for q in (50, 99):
        report.rows.append(
            Row(
                f"list_by_status page of {limit} at {rows:,} rows, p{q}",
                "ms",
                percentile(project_ms, q),
                percentile(raw_ms, q),
                higher_is_better=False,
                note=f"{samples} pages from random cursors, one transaction each; COPY load {load_s:.0f} s"
                if q == 50
                else ("target: p99 < 3 ms at 10M rows" if rows >= 10_000_000 else ""),
            )
        )


def claims(bench: Bench, report: Report, connections: int = 4) -> None:
    total = 4000 if bench.quick else 20_000
    rounds = 2 if bench.quick else 3
    settings = _settings()
    values = _status_values(JobStatus.PROCESSING, settings)
    with bench.database() as url:
        admin = bench.raw_connect(url, autocommit=True)
        db = bench.project_db(url, pool_size=connections)
        raws = [bench.raw_connect(url) for _ in range(connections)]
        try:

            def drain(work: Callable[[int], int]) -> float:
                counts = [0] * connections

                def worker(i: int) -> None:
                    counts[i] = work(i)

                threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.perf_counter() - start
                assert sum(counts) == total
                return total / elapsed

            def project_worker(_: int) -> int:
                n = 0
                while True:
                    with db.transaction() as tx:
                        if tx.jobs.claim_next() is None:
                            return n
                    n += 1

            def raw_worker(i: int) -> int:
                conn, n = raws[i], 0
                while True:
                    with conn.transaction():
                        if conn.execute(RAW_CLAIM, values).fetchone() is None:
                            return n
                    n += 1

            def project(_: int) -> float:
                _load_queued(admin, total)
                return drain(project_worker)

            def raw_side(_: int) -> float:
                _load_queued(admin, total)
                return drain(raw_worker)

            p, r, _, _ = compare_rounds(project, raw_side, rounds)
        finally:
            db.dispose()
            for conn in raws:
                conn.close()
            admin.close()
    report.rows.append(
        Row(
            f"claim_next, {connections} connections",
            "claims/s",
            p,
            r,
            note=f"{total:,} queued jobs drained per round, SKIP LOCKED; {rounds} rounds",
        )
    )


def api_keys(bench: Bench, report: Report) -> None:
    cold_n = 4 if bench.quick else 12
    warm_n = 2000 if bench.quick else 20_000
    settings = _settings()
    with bench.database() as url:
        cold_db = bench.project_db(url, API_KEY_CACHE_TTL_SECONDS="0")
        warm_db = bench.project_db(url)
        raw = bench.raw_connect(url)
        try:
            with cold_db.transaction() as tx:
                _, plaintext = tx.api_keys.create("bench")
            key_id, secret = plaintext.split("_", 2)[1:]

            def project_cold(_: int) -> float:
                start = time.perf_counter()
                for _ in range(cold_n):
                    with cold_db.transaction() as tx:
                        tx.api_keys.verify(plaintext)
                return cold_n / (time.perf_counter() - start)

            def raw_cold(_: int) -> float:
                start = time.perf_counter()
                for _ in range(cold_n):
                    with raw.transaction():
                        row = raw.execute(
                            "SELECT id, key_hash, revoked_at, expires_at FROM api_keys WHERE key_id = %s",
                            (key_id,),
                        ).fetchone()
                        assert row is not None
                        assert bcrypt.checkpw(secret.encode(), row[1].encode())
                        raw.execute(
                            "UPDATE api_keys SET last_used_at = now() WHERE id = %s AND "
                            "(last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')",
                            (row[0],),
                        )
                return cold_n / (time.perf_counter() - start)

            p, r, _, _ = compare_rounds(project_cold, raw_cold, 3)
            report.rows.append(
                Row(
                    f"api_keys.verify cold (bcrypt cost {settings.bcrypt_rounds})",
                    "verifies/s",
                    p,
                    r,
                    note=f"cache off; {cold_n} verifies/round, 3 rounds",
                )
            )
            with warm_db.transaction() as tx:
                tx.api_keys.verify(plaintext)

            def warm_in_tx() -> float:
                start = time.perf_counter()
                for _ in range(warm_n):
                    with warm_db.transaction() as tx:
                        tx.api_keys.verify(plaintext)
                return warm_n / (time.perf_counter() - start)

            warm_tx = statistics.median(warm_in_tx() for _ in range(3))
            report.rows.append(
                Row(
                    "api_keys.verify warm (cached), inside db.transaction()",
                    "verifies/s",
                    warm_tx,
                    None,
                    note="no SQL sent for the check; cost is the pool checkout and an empty transaction",
                )
            )
            with warm_db.engine.connect() as conn:
                from lifecycle.db.api_keys import ApiKeysRepo

                repo = ApiKeysRepo(conn, warm_db.settings)
                start = time.perf_counter()
                for _ in range(warm_n):
                    repo.verify(plaintext)
                warm_bare = warm_n / (time.perf_counter() - start)
            report.rows.append(
                Row(
                    "api_keys.verify warm (cached), repository call alone",
                    "verifies/s",
                    warm_bare,
                    None,
                    note="SHA-256 + cache lookup + metrics",
                )
            )
        finally:
            cold_db.dispose()
            warm_db.dispose()
            raw.close()


def run(bench: Bench) -> Report:
    """Every scenario of this area."""
    report = Report()
    random.seed(0)
    row_counts = [int(x) for x in str(bench.options.rows).split(",") if x.strip()]
    if bench.quick:
        row_counts = [min(n, 200_000) for n in row_counts]
    report.parameters = {"quick": bench.quick, "list_by_status rows": ",".join(f"{n:,}" for n in row_counts)}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("transition, 1 connection", lambda: single_transitions(bench, report, 1, JobStatus.PROCESSING)),
        ("transition (2 sources)", lambda: single_transitions(bench, report, 1, JobStatus.CANCELED)),
        ("transition, 4 connections", lambda: single_transitions(bench, report, 4, JobStatus.PROCESSING)),
        ("transition_many 1k", lambda: batch_transitions(bench, report, 1000)),
        ("transition_many 10k", lambda: batch_transitions(bench, report, 10_000)),
        ("claim_next", lambda: claims(bench, report)),
        ("api keys", lambda: api_keys(bench, report)),
    ]
    steps += [(f"list_by_status {n:,}", lambda n=n: list_pages(bench, report, n)) for n in row_counts]
    for name, step in steps:
        bench.log(f"repos: {name}")
        step()
    report.notes += [
        "Both sides open one transaction per operation. The project side also checks a pooled "
        "connection out of SQLAlchemy (DATABASE_POOL_PRE_PING off, the default), begins and commits "
        "through it, validates the arguments, builds records, records metrics and binds the job id "
        "for logging.",
        "Same SQL on both sides: the raw side sends the repository's own statement strings "
        "(`lifecycle/db/jobs.py`, psycopg `%(name)s` placeholders) with the same values, psycopg "
        "defaults, prepare_threshold 5 like the project. The repository sends them on the psycopg "
        "connection under its SQLAlchemy connection (no statement compilation or result wrapping). "
        "The statement is the one-statement data-modifying CTE (guarded UPDATE ... RETURNING feeding "
        "the event INSERT). With one allowed source status (or expected_from) the UPDATE is guarded by "
        "`status = %(from_status)s`; with two (-> canceled, -> queued) a `FOR UPDATE` CTE reads the "
        "status actually left, so the event's from_status is right under races.",
        "Rounds alternate project/raw (single transitions: interleaved blocks) so drift hits both "
        "sides; the machine runs other engineers' test suites at the same time, so absolute numbers "
        "are noisy and lower than on an idle machine (every commit waits for fsync); compare the ratios.",
        "`with pre-ping`: the same project code with DATABASE_POOL_PRE_PING=true; the gap to the "
        "default row is the ping SQLAlchemy sends on every checkout.",
    ]
    return report
