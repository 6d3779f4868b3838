"""Helpers shared by the repository tests: put a job in a status, read rows independently."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from lifecycle.db import Database
from lifecycle.records import Job
from lifecycle.states import JobStatus

#: The shortest path from ``queued`` to each status.
PATHS: dict[JobStatus, tuple[JobStatus, ...]] = {
    JobStatus.QUEUED: (),
    JobStatus.PROCESSING: (JobStatus.PROCESSING,),
    JobStatus.SUCCEEDED: (JobStatus.PROCESSING, JobStatus.SUCCEEDED),
    JobStatus.FAILED: (JobStatus.PROCESSING, JobStatus.FAILED),
    JobStatus.CANCELED: (JobStatus.CANCELED,),
}


def job_in(db: Database, status: JobStatus, **create: Any) -> Job:
    """A new job moved (through the repository) into ``status``."""
    with db.transaction() as tx:
        job = tx.jobs.create(params=create.pop("params", {"source": "a.mp4"}), **create)
        for step in PATHS[status]:
            job = tx.jobs.transition(job.id, step)
    return job


def row(raw: psycopg.Connection[Any], job_id: UUID) -> dict[str, Any] | None:
    """The ``jobs`` row as a dict, read over the independent connection."""
    cur = raw.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()


def events(raw: psycopg.Connection[Any], job_id: UUID) -> list[dict[str, Any]]:
    """The job's events in order, read over the independent connection."""
    cur = raw.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute("SELECT * FROM job_events WHERE job_id = %s ORDER BY ts, id", (job_id,)).fetchall()


def snapshot(raw: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """Everything the repositories can write, to prove that a rejected call wrote nothing."""
    return tuple(
        raw.execute(f"SELECT coalesce(jsonb_agg(t ORDER BY t::text), '[]') FROM {table} t").fetchone()
        for table in ("jobs", "job_events", "api_keys", "storage_deletions")
    )
