"""What issue 10 costs on the write path: the key-owner CHECK constraints.

Every write of a ``jobs`` row evaluates ``ck_jobs_source_key_owner`` (an inlinable SQL expression)
and ``ck_jobs_result_keys_owner`` (PL/pgSQL over the array). The same one-row UPDATE, of jobs that
record a source and two results, runs on the migrated table ("project") and on a copy of it made
without its CHECK constraints ("raw"), alternating, on one connection in autocommit. Then the
project's own ``db.jobs`` transition (queued <-> processing, each with its event) on two databases,
one as migrated and one with the two key constraints dropped: both sides are the project's code.

    .venv/bin/python -m benchmarks keys [--quick]
"""

from __future__ import annotations

import uuid
from typing import Any

from benchmarks.harness import Bench, Report, Row, compare_rounds, timed
from lifecycle.states import JobStatus

AREA = "keys"
TITLE = "Key-owner CHECK constraints (issue 10)"

UPDATE = "UPDATE {table} SET version = version + 1, updated_at = now() WHERE id = %s"


def run(bench: Bench) -> Report:
    n = 500 if bench.quick else 2000
    rounds = 3 if bench.quick else 7
    report = Report(parameters={"quick": bench.quick, "rows": n, "rounds": rounds})
    with bench.database() as url, bench.raw_connect(url, autocommit=True) as conn:
        ids = [uuid.uuid4() for _ in range(n)]
        _insert_jobs(conn, ids)
        # LIKE without INCLUDING CONSTRAINTS leaves the CHECKs out; defaults and indexes stay.
        conn.execute("CREATE TABLE jobs_unchecked (LIKE jobs INCLUDING DEFAULTS INCLUDING INDEXES)")
        conn.execute("INSERT INTO jobs_unchecked SELECT * FROM jobs")
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("VACUUM ANALYZE jobs_unchecked")

        def updates(table: str) -> Any:
            statement = UPDATE.format(table=table)

            def rate(_: int) -> float:
                return n / timed(lambda: [conn.execute(statement, (i,)) for i in ids])  # type: ignore[call-overload]

            return rate

        project, raw, p_values, r_values = compare_rounds(updates("jobs"), updates("jobs_unchecked"), rounds)
    report.rows.append(
        Row(
            "one-row UPDATE of a job with a source and two results",
            "updates/s",
            project,
            raw,
            note=f"rounds {[round(v) for v in p_values]} vs {[round(v) for v in r_values]}",
        )
    )
    report.rows.append(_transitions(bench, n, rounds))
    report.notes.append(
        "Measured while writing migration 0002 (same machine, other work running): the array check as "
        "a SQL function over unnest() (planned again for each statement) cost 0.72-0.82x; as PL/pgSQL "
        "(plan cached per session) 0.86-1.06x, which is what the migration uses."
    )
    return report


def _transitions(bench: Bench, n: int, rounds: int) -> Row:
    with bench.database() as checked_url, bench.database() as unchecked_url:
        with bench.raw_connect(unchecked_url, autocommit=True) as conn:
            conn.execute(
                "ALTER TABLE jobs DROP CONSTRAINT ck_jobs_source_key_owner, "
                "DROP CONSTRAINT ck_jobs_result_keys_owner"
            )
        sides = []
        for url in (checked_url, unchecked_url):
            db = bench.project_db(url, pool_size=1)
            ids = [uuid.uuid4() for _ in range(n)]
            with bench.raw_connect(url, autocommit=True) as conn:
                _insert_jobs(conn, ids)
            sides.append((db, ids))

        def transitions(db: Any, ids: list[uuid.UUID]) -> Any:
            def rate(round_: int) -> float:
                # queued -> processing, then back (a lease expired): both are legal, so rounds repeat.
                to = JobStatus.PROCESSING if round_ % 2 == 0 else JobStatus.QUEUED
                return n / timed(lambda: [_transition(db, i, to) for i in ids])

            return rate

        project, raw, _, _ = compare_rounds(transitions(*sides[0]), transitions(*sides[1]), rounds * 2)
        for db, _ in sides:
            db.dispose()
    return Row(
        "project transition (guarded UPDATE + event), with vs without the key CHECKs",
        "transitions/s",
        project,
        raw,
    )


def _transition(db: Any, job_id: uuid.UUID, to: JobStatus) -> None:
    with db.transaction() as tx:
        tx.jobs.transition(job_id, to)


def _insert_jobs(conn: Any, ids: list[uuid.UUID]) -> None:
    """Jobs that record a source and two results (what every write of the row re-checks)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO jobs (id, source_key, result_keys, expires_at) "
            "VALUES (%s, %s, %s, now() + interval '1 day')",
            [(i, f"sources/{i}/source.mp4", [f"results/{i}/clip.{e}" for e in ("mp4", "webm")]) for i in ids],
        )
