"""What issue 10 costs on the write path: the key-owner CHECK constraints.

Every write of a ``jobs`` row evaluates ``ck_jobs_keys_owner`` (``lifecycle_owns_keys``, PL/pgSQL
over the source key and the result keys). The same one-row UPDATE, of jobs that
record a source and two results, runs (raw psycopg, autocommit) on two copies of the migrated
database, one as migrated ("project") and one with the two key constraints dropped ("raw"),
alternating; then the project's own transition (queued <-> processing, each with its event) on two
such databases.

    .venv/bin/python -m benchmarks keys [--quick]
"""

from __future__ import annotations

import uuid
from typing import Any

from benchmarks.harness import Bench, Report, Row, compare_rounds, timed
from benchmarks.sql import setup_sql
from lifecycle.states import JobStatus

AREA = "keys"
TITLE = "Key-owner CHECK constraints (issue 10)"


def run(bench: Bench) -> Report:
    n = 500 if bench.quick else 2000
    rounds = 3 if bench.quick else 7
    report = Report(parameters={"quick": bench.quick, "rows": n, "rounds": rounds})
    with bench.database() as checked_url, bench.database() as unchecked_url:
        _drop_key_checks(bench, unchecked_url)
        with (
            bench.raw_connect(checked_url, autocommit=True) as checked,
            bench.raw_connect(unchecked_url, autocommit=True) as unchecked,
        ):
            ids = [uuid.uuid4() for _ in range(n)]
            for conn in (checked, unchecked):
                _insert_jobs(conn, ids)
                conn.execute("VACUUM ANALYZE jobs")

            def updates(conn: Any) -> Any:
                update = setup_sql("keys.bump_version")

                def rate(_: int) -> float:
                    return n / timed(lambda: [conn.execute(update, {"id": i}) for i in ids])

                return rate

            project, raw, p_values, r_values = compare_rounds(updates(checked), updates(unchecked), rounds)
    report.rows.append(
        Row(
            "one-row UPDATE (raw psycopg) of a job (a source, two results), with vs without the key CHECK",
            "updates/s",
            project,
            raw,
            note=f"rounds {[round(v) for v in p_values]} vs {[round(v) for v in r_values]}",
        )
    )
    report.rows.append(_transitions(bench, n, rounds))
    report.notes.append(
        "Both sides of each row run the same code on two copies of the migrated database, one with "
        "ck_jobs_keys_owner dropped. Forms tried while writing migration 0002 (same machine): two "
        "CHECKs, a SQL expression for the source and a SQL function over unnest() for the results "
        "(planned again for each statement), 0.72-0.82x on the one-row UPDATE; the same with the "
        "results in PL/pgSQL, 0.87x on the UPDATE and 0.83-0.98x on the transition; one PL/pgSQL "
        "function for both columns (its plan cached per session), the form the migration uses, 0.92-0.93x."
    )
    return report


def _drop_key_checks(bench: Bench, url: str) -> None:
    with bench.raw_connect(url, autocommit=True) as conn:
        conn.execute(setup_sql("keys.drop_key_check"))


def _transitions(bench: Bench, n: int, rounds: int) -> Row:
    with bench.database() as checked_url, bench.database() as unchecked_url:
        _drop_key_checks(bench, unchecked_url)
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
        "project transition (guarded UPDATE + event), with vs without the key CHECK",
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
            setup_sql("keys.insert_job_with_keys"),
            [
                {
                    "id": i,
                    "source_key": f"sources/{i}/source.mp4",
                    "result_keys": [f"results/{i}/clip.{e}" for e in ("mp4", "webm")],
                }
                for i in ids
            ],
        )
