"""Repositories (issues 3 and 11): transitions, batches, keyset pages, claims, API keys, records.

Each scenario runs ``lifecycle`` and raw psycopg 3 sending the same statements, taken from the SQL
catalogue by name (``lifecycle.db.sql.query``), with the same bound values, on the same fresh
database. Two shapes are compared, each against its own raw reference:

- inside ``db.transaction()`` (a pooled autocommit connection, ``BEGIN`` ... ``COMMIT``) against
  raw psycopg's ``with conn.transaction():`` on an autocommit connection: the same three round trips;
- ``db.jobs.<operation>(...)`` (the statement alone on a pooled autocommit connection: one round
  trip) against ``conn.execute(...)`` on a raw autocommit connection.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt

from benchmarks.harness import Bench, Report, Row, compare_rounds, percentile
from benchmarks.sql import setup_sql
from lifecycle.db import Database
from lifecycle.db import jobs as jobs_repo
from lifecycle.db.api_keys import LAST_USED_RESOLUTION
from lifecycle.db.sql import query
from lifecycle.records import Job
from lifecycle.settings import Settings
from lifecycle.states import JobStatus, allowed_sources

AREA = "repos"
TITLE = "Repositories: transitions, batches, pages, claims, API keys"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("repos")
    group.add_argument(
        "--rows",
        default="1000000,10000000",
        help="comma-separated row counts for the list_by_status scenario (e.g. 1000000,10000000)",
    )


def _settings() -> Settings:
    return Settings.load(env={})


def _status_values(target: JobStatus, settings: Settings) -> dict[str, Any]:
    """What ``JobsRepo._status_values`` binds for entering ``target`` (no reason, data or error)."""
    processing = target is JobStatus.PROCESSING
    retention = None
    if target in (JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED):
        retention = settings.retention_for(target)
    return {
        "to_status": target.value,
        "attempt_inc": 1 if processing else 0,
        "lease": timedelta(seconds=settings.lease_seconds) if processing else None,
        "retention": retention,
        "error": None,
        "event_type": jobs_repo.EVENT_TRANSITION,
        "data": "{}",
        "run_id": None,
    }


def _encode_cursor(ts: datetime, row_id: uuid.UUID) -> str:
    """The project's keyset cursor for ``(ts, id)`` (a copy of its three lines: the format is opaque)."""
    raw = json.dumps([ts.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _load_queued(conn: Any, n: int) -> list[uuid.UUID]:
    """``n`` queued jobs (server-side generate_series), their ids in creation order."""
    with conn.transaction():
        conn.execute("TRUNCATE jobs, job_events")
        rows = conn.execute(setup_sql("repos.load_queued"), {"n": n}).fetchall()
    conn.execute("ANALYZE jobs")
    return [r[0] for r in rows]


Work = Callable[[int, list[uuid.UUID]], None]


def _parallel(connections: int, work: Work, chunk: list[uuid.UUID]) -> float:
    """Seconds ``work(i, slice_i)`` took on ``connections`` threads, ``chunk`` dealt out round-robin."""
    slices = [chunk[i::connections] for i in range(connections)]
    if connections == 1:
        start = time.perf_counter()
        work(0, slices[0])
        return time.perf_counter() - start
    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(slices)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


# -- scenarios --------------------------------------------------------------------------------------


def single_transitions(bench: Bench, report: Report, connections: int, target: JobStatus) -> None:
    """Single transitions on ``connections`` threads, five variants interleaved in blocks.

    ``tx``: ``db.transaction()`` + ``tx.jobs.transition``; ``tx raw``: the same statement in
    ``with conn.transaction():`` on a raw autocommit connection; ``auto``: ``db.jobs.transition``;
    ``auto raw``: the statement alone on a raw autocommit connection; ``tx ping``: ``tx`` with
    DATABASE_POOL_PRE_PING on. Blocks of 100 per connection rotate through the variants, so load
    from other processes on the machine hits all of them alike.
    """
    per_round = (400 if bench.quick else 2000) // connections * connections
    rounds = 3 if bench.quick else 5
    block = 100 * connections
    settings = _settings()
    sources = sorted(s.value for s in allowed_sources(target))
    values = _status_values(target, settings)
    if len(sources) == 1:
        statement = query("jobs.transition_known_from")
        values["from_status"] = sources[0]
    else:
        statement = query("jobs.transition_any_from")
        values["allowed"] = sources
    with bench.database() as url:
        admin = bench.raw_connect(url, autocommit=True)
        db = bench.project_db(url, pool_size=connections)
        db_ping = bench.project_db(url, pool_size=connections, DATABASE_POOL_PRE_PING="true")
        raws = [bench.raw_connect(url, autocommit=True) for _ in range(connections)]
        try:

            def in_transaction(database: Database) -> Callable[[int, list[uuid.UUID]], None]:
                def work(_: int, job_ids: list[uuid.UUID]) -> None:
                    for job_id in job_ids:
                        with database.transaction() as tx:
                            tx.jobs.transition(job_id, target)

                return work

            def autocommit(_: int, job_ids: list[uuid.UUID]) -> None:
                jobs = db.jobs
                for job_id in job_ids:
                    jobs.transition(job_id, target)

            def raw_in_transaction(i: int, job_ids: list[uuid.UUID]) -> None:
                conn = raws[i]
                for job_id in job_ids:
                    with conn.transaction():
                        row = conn.execute(statement, {**values, "id": job_id}).fetchone()
                        assert row is not None

            def raw_autocommit(i: int, job_ids: list[uuid.UUID]) -> None:
                conn = raws[i]
                for job_id in job_ids:
                    row = conn.execute(statement, {**values, "id": job_id}).fetchone()
                    assert row is not None

            variants: dict[str, Callable[[int, list[uuid.UUID]], None]] = {
                "tx": in_transaction(db),
                "tx raw": raw_in_transaction,
                "auto": autocommit,
                "auto raw": raw_autocommit,
                "tx ping": in_transaction(db_ping),
            }
            names = list(variants)
            warmup = 20 * connections
            ids = _load_queued(admin, (per_round * rounds + warmup) * len(variants))
            pending = iter(ids)
            for name in names:  # pools filled, statements prepared on every connection
                _parallel(connections, variants[name], [next(pending) for _ in range(warmup)])
            rates: dict[str, list[float]] = {name: [] for name in names}
            for k in range(rounds):
                spent = dict.fromkeys(names, 0.0)
                done = dict.fromkeys(names, 0)
                for b in range(per_round // block):
                    # Rotate the order so no variant always runs right after another.
                    shift = (b + k) % len(names)
                    for name in names[shift:] + names[:shift]:
                        chunk = [next(pending) for _ in range(block)]
                        spent[name] += _parallel(connections, variants[name], chunk)
                        done[name] += len(chunk)
                for name in names:
                    rates[name].append(done[name] / spent[name])
            rate = {name: statistics.median(r) for name, r in rates.items()}
        finally:
            db.dispose()
            db_ping.dispose()
            for conn in raws:
                conn.close()
            admin.close()
    form = "known source: plain guarded UPDATE" if len(sources) == 1 else "2 sources: FOR UPDATE CTE"
    how = f"{per_round}/round, {rounds} rounds, interleaved blocks"
    label = f"transition queued->{target.value}, {connections} connection(s)"
    report.rows += [
        Row(
            f"{label}, in db.transaction() vs raw BEGIN/COMMIT",
            "transitions/s",
            rate["tx"],
            rate["tx raw"],
            target=0.95 if connections > 1 else 0.9,
            note=f"{form}; {how}",
        ),
        Row(
            f"{label}, db.jobs.transition vs raw autocommit",
            "transitions/s",
            rate["auto"],
            rate["auto raw"],
            target=0.9,
            note=f"one round trip each; {rate['auto'] / rate['tx']:.2f}x the in-transaction rate",
        ),
        Row(
            f"{label}, in db.transaction() with pre-ping vs raw BEGIN/COMMIT",
            "transitions/s",
            rate["tx ping"],
            rate["tx raw"],
            note="DATABASE_POOL_PRE_PING=true: the pool's check, one more round trip per checkout",
        ),
    ]


def batch_transitions(bench: Bench, report: Report, batch: int) -> None:
    total = 20_000 if bench.quick else 100_000
    rounds = 2 if bench.quick else 3
    settings = _settings()
    values = _status_values(JobStatus.PROCESSING, settings)
    values.update(
        from_status="queued", limit=batch, created_before=None, updated_before=None, lease_expired=False
    )
    statement = query("jobs.transition_many")
    with bench.database() as url:
        admin = bench.raw_connect(url, autocommit=True)
        db = bench.project_db(url)
        raw = bench.raw_connect(url, autocommit=True)
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
                        n = len(raw.execute(statement, values).fetchall())
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
            note=f"queued->processing with one event per job, in db.transaction(); {rounds} rounds",
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
        with conn.cursor().copy(setup_sql("repos.copy_jobs")) as copy:
            for i in range(n):
                status = statuses[i % 5]
                ts = (base + timedelta(milliseconds=i)).isoformat()
                lease = "2030-01-01 00:00:00+00" if status == "processing" else None
                copy.write_row((uuid.uuid4(), status, '{"source": "a.mp4"}', ts, ts, expires, lease))
                if i and i % 1_000_000 == 0:
                    bench.log(f"  loaded {i:,} rows")
        conn.execute("CREATE INDEX idx_jobs_status_created_at ON jobs (status, created_at, id)")
        conn.execute("CREATE INDEX idx_jobs_expires_at ON jobs (expires_at)")
    conn.execute("VACUUM ANALYZE jobs")


def list_pages(bench: Bench, report: Report, rows: int) -> None:
    """Pages of 100 from random cursors: in ``db.transaction()`` and ``db.jobs``, each against raw."""
    samples = 300 if bench.quick else 2000
    limit = 100
    statement = query("jobs.list_after")
    with bench.database() as url:
        admin = bench.raw_connect(url, autocommit=True)
        bench.log(f"list_by_status: loading {rows:,} rows with COPY")
        started = time.perf_counter()
        _copy_jobs(admin, rows, bench)
        load_s = time.perf_counter() - started
        anchors = admin.execute(setup_sql("repos.random_queued_anchors"), {"n": samples}).fetchall()
        db = bench.project_db(url)
        raw = bench.raw_connect(url, autocommit=True)
        ms: dict[str, list[float]] = {"tx": [], "tx raw": [], "auto": [], "auto raw": []}
        try:

            def variants(ts: datetime, job_id: uuid.UUID) -> dict[str, Callable[[], object]]:
                cursor = _encode_cursor(ts, job_id)
                values = {"status": "queued", "after_ts": ts, "after_id": job_id, "limit": limit + 1}

                def tx() -> object:
                    with db.transaction() as t:
                        return t.jobs.list_by_status(JobStatus.QUEUED, limit=limit, after=cursor)

                def tx_raw() -> object:
                    with raw.transaction():
                        return raw.execute(statement, values).fetchall()

                def auto() -> object:
                    return db.jobs.list_by_status(JobStatus.QUEUED, limit=limit, after=cursor)

                def auto_raw() -> object:
                    return raw.execute(statement, values).fetchall()

                return {"tx": tx, "tx raw": tx_raw, "auto": auto, "auto raw": auto_raw}

            # Warm every path (prepared statements, pool, buffer cache) before measuring.
            for ts, job_id in anchors[:20]:
                for func in variants(ts, job_id).values():
                    func()
            for i, (ts, job_id) in enumerate(anchors):
                funcs = list(variants(ts, job_id).items())
                shift = i % len(funcs)
                for name, func in funcs[shift:] + funcs[:shift]:
                    start = time.perf_counter()
                    func()
                    ms[name].append((time.perf_counter() - start) * 1000)
        finally:
            db.dispose()
            raw.close()
            admin.close()
    big = rows >= 10_000_000
    for shape, project, raw_name in (
        ("in db.transaction() vs raw BEGIN/COMMIT", "tx", "tx raw"),
        ("db.jobs.list_by_status vs raw autocommit", "auto", "auto raw"),
    ):
        for q in (50, 99):
            note = ""
            if q == 50:
                note = f"{samples} pages from random cursors; COPY load {load_s:.0f} s"
            elif big:
                met = percentile(ms[project], 99) <= 2
                note = f"target: p99 <= 2 ms at 10M rows: {'met' if met else 'MISSED'}"
            report.rows.append(
                Row(
                    f"list_by_status page of {limit} at {rows:,} rows, {shape}, p{q}",
                    "ms",
                    percentile(ms[project], q),
                    percentile(ms[raw_name], q),
                    higher_is_better=False,
                    note=note,
                )
            )


def claims(bench: Bench, report: Report, connections: int = 4) -> None:
    """Drain ``total`` queued jobs with ``claim_next`` on ``connections`` threads, four variants."""
    total = 4000 if bench.quick else 20_000
    rounds = 2 if bench.quick else 3
    settings = _settings()
    values = _status_values(JobStatus.PROCESSING, settings)
    statement = query("jobs.claim_next")
    with bench.database() as url:
        admin = bench.raw_connect(url, autocommit=True)
        db = bench.project_db(url, pool_size=connections)
        raws = [bench.raw_connect(url, autocommit=True) for _ in range(connections)]
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
                assert sum(counts) == total, counts
                return total / elapsed

            def tx(_: int) -> int:
                n = 0
                while True:
                    with db.transaction() as t:
                        if t.jobs.claim_next() is None:
                            return n
                    n += 1

            def tx_raw(i: int) -> int:
                conn, n = raws[i], 0
                while True:
                    with conn.transaction():
                        if conn.execute(statement, values).fetchone() is None:
                            return n
                    n += 1

            def auto(_: int) -> int:
                jobs, n = db.jobs, 0
                while jobs.claim_next() is not None:
                    n += 1
                return n

            def auto_raw(i: int) -> int:
                conn, n = raws[i], 0
                while conn.execute(statement, values).fetchone() is not None:
                    n += 1
                return n

            variants = {"tx": tx, "tx raw": tx_raw, "auto": auto, "auto raw": auto_raw}
            names = list(variants)
            rates: dict[str, list[float]] = {name: [] for name in names}
            for k in range(rounds + 1):
                shift = k % len(names)
                for name in names[shift:] + names[:shift]:
                    _load_queued(admin, total if k else 200 * connections)
                    if k == 0:  # warm-up: pools filled, statements prepared
                        drain_any(variants[name], connections)
                        continue
                    rates[name].append(drain(variants[name]))
            rate = {name: statistics.median(r) for name, r in rates.items()}
        finally:
            db.dispose()
            for conn in raws:
                conn.close()
            admin.close()
    how = f"{total:,} queued jobs drained per round, SKIP LOCKED; {rounds} rounds"
    report.rows += [
        Row(
            f"claim_next, {connections} connections, in db.transaction() vs raw BEGIN/COMMIT",
            "claims/s",
            rate["tx"],
            rate["tx raw"],
            target=0.9,
            note=how,
        ),
        Row(
            f"claim_next, {connections} connections, db.jobs.claim_next vs raw autocommit",
            "claims/s",
            rate["auto"],
            rate["auto raw"],
            target=0.9,
            note=f"one round trip each; {rate['auto'] / rate['tx']:.2f}x the in-transaction rate",
        ),
    ]


def drain_any(work: Callable[[int], int], connections: int) -> None:
    """Run ``work(i)`` on ``connections`` threads until each returns (a warm-up drain, not timed)."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def api_keys(bench: Bench, report: Report) -> None:
    cold_n = 4 if bench.quick else 12
    warm_n = 2000 if bench.quick else 20_000
    settings = _settings()
    by_key_id, touch = query("api_keys.by_key_id"), query("api_keys.touch")
    with bench.database() as url:
        cold_db = bench.project_db(url, API_KEY_CACHE_TTL_SECONDS="0")
        warm_db = bench.project_db(url)
        raw = bench.raw_connect(url, autocommit=True)
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
                        row = raw.execute(by_key_id, {"key_id": key_id}).fetchone()
                        assert row is not None
                        assert bcrypt.checkpw(secret.encode(), row[8].encode())
                        raw.execute(touch, {"id": row[0], "resolution": LAST_USED_RESOLUTION}).fetchone()
                return cold_n / (time.perf_counter() - start)

            p, r, _, _ = compare_rounds(project_cold, raw_cold, 3)
            report.rows.append(
                Row(
                    f"api_keys.verify cold (bcrypt cost {settings.bcrypt_rounds})",
                    "verifies/s",
                    p,
                    r,
                    note=f"cache off; in db.transaction() vs raw BEGIN/COMMIT; {cold_n}/round, 3 rounds",
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
                    note="no SQL sent for the check; cost is the pool checkout and an empty BEGIN/COMMIT",
                )
            )
            with warm_db.transaction() as tx:
                repo = tx.api_keys
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
                    note="SHA-256 + cache lookup + metrics (all calls in one transaction)",
                )
            )
        finally:
            cold_db.dispose()
            warm_db.dispose()
            raw.close()


# -- records: psycopg row factory against the former slot setters ------------------------------------

# What ``lifecycle/db/jobs.py`` did before issue 11 (commit 425cad2~1), copied here to measure it:
# set the slots of a frozen dataclass directly instead of calling its ``__init__``.
_SLOT_SETTERS = tuple(Job.__dict__[f.name].__set__ for f in dataclasses.fields(Job))
_STATUS_BY_VALUE = {status.value: status for status in JobStatus}


def _job_by_slots(row: Sequence[Any]) -> Job:
    (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13) = _SLOT_SETTERS
    job: Job = object.__new__(Job)
    s0(job, row[0])
    s1(job, _STATUS_BY_VALUE[row[1]])
    s2(job, row[2])
    s3(job, row[3])
    s4(job, tuple(row[4]))
    s5(job, row[5])
    s6(job, row[6])
    s7(job, row[7])
    s8(job, row[8])
    s9(job, row[9])
    s10(job, row[10])
    s11(job, row[11])
    s12(job, row[12])
    s13(job, row[13])
    return job


def _job_by_init(row: Sequence[Any]) -> Job:
    values = list(row[:14])
    values[1] = _STATUS_BY_VALUE[values[1]]
    values[4] = tuple(values[4])
    return Job(*values)


def records(bench: Bench, report: Report) -> None:
    """Build 100k ``Job`` records from row tuples: the project's row maker, ``Job(*values)``, slots."""
    n = 20_000 if bench.quick else 100_000
    rounds = 5 if bench.quick else 9
    now = datetime.now(UTC)
    rows = [
        (uuid.uuid4(), "queued", {"source": "a.mp4"}, None, [], None, 0, 1, None, False, None, now, now, now)
        for _ in range(n)
    ]
    makers: dict[str, Callable[[Sequence[Any]], Job]] = {
        "row factory": jobs_repo.job_row(None),  # type: ignore[arg-type]  # the maker ignores its cursor
        "Job(*values)": _job_by_init,
        "slot setters": _job_by_slots,
    }
    assert len({repr(make(rows[0])) for make in makers.values()}) == 1, "the three differ"
    us: dict[str, list[float]] = {name: [] for name in makers}
    for k in range(rounds):
        items = list(makers.items())
        shift = k % len(items)
        for name, make in items[shift:] + items[:shift]:
            start = time.perf_counter()
            for row in rows:
                make(row)
            us[name].append((time.perf_counter() - start) / n * 1e6)
    per = {name: statistics.median(v) for name, v in us.items()}
    report.rows += [
        Row(
            f"build {n:,} Job records: {name} vs the former slot setters",
            "us/record",
            per[name],
            per["slot setters"],
            higher_is_better=False,
            note=f"{per[name] * 100:.0f} us per page of 100 "
            f"(slot setters {per['slot setters'] * 100:.0f} us); median of {rounds}",
        )
        for name in ("row factory", "Job(*values)")
    ]


def run(bench: Bench) -> Report:
    """Every scenario of this area."""
    report = Report()
    random.seed(0)
    row_counts = [int(x) for x in str(bench.options.rows).split(",") if x.strip()]
    if bench.quick:
        row_counts = [min(n, 200_000) for n in row_counts]
    report.parameters = {"quick": bench.quick, "list_by_status rows": ",".join(f"{n:,}" for n in row_counts)}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("records", lambda: records(bench, report)),
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
        "Same statements on both sides: the raw side takes them from the SQL catalogue by name "
        '(`lifecycle.db.sql.query("jobs.transition_known_from")`, ...) and binds the values the '
        "repository binds (`JobsRepo._status_values`: status, attempt increment, lease and retention as "
        "intervals, error, event type, data, run id), psycopg defaults, prepare_threshold 5 like the "
        "project, raw connections in autocommit.",
        "`in db.transaction() vs raw BEGIN/COMMIT`: the project checks a connection out of its "
        "psycopg_pool (autocommit) and runs `conn.transaction()` (BEGIN ... COMMIT); the raw side runs "
        "`with conn.transaction():` on its own autocommit connection: three round trips each. "
        "`db.jobs.<op> vs raw autocommit`: the statement alone, one round trip each (each call its own "
        "transaction). Beyond the SQL the project validates the arguments, builds a `Job` through its "
        "row factory, records metrics and binds the job id for logging.",
        "With one allowed source status (or expected_from) the UPDATE is guarded by `status = "
        "%(from_status)s`; with two (-> canceled, -> queued) a `FOR UPDATE` CTE reads the status "
        "actually left, so the event's from_status is right under races.",
        "Variants run interleaved (single transitions: blocks of 100 per connection in rotating order; "
        "claims and pages: rotating order per round / per page) so drift hits all sides; the machine is "
        "shared with other test runs, so absolute numbers are noisy (every commit waits for fsync): "
        "compare the ratios.",
    ]
    return report
