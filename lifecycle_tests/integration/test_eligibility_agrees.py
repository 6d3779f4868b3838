"""The sensor's probe, the dry run and the real selection agree on the same database at the same instant.

All three read "eligible for deletion" from one fragment (``retention.eligible``); these tests plant
jobs on both sides of the boundary (expired just before, exactly at and just after the instant, and
expired jobs that are processing or held) and check that the probe, the backlog count, the dry run's
plan and a real cleanup name exactly the same jobs, at an instant given by the caller and on the
database clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from lifecycle import status_counts
from lifecycle.db import Database
from lifecycle.retention import cleanup

Raw = psycopg.Connection[tuple[Any, ...]]

#: Just before and just after an instant (timestamptz keeps microseconds: distinct rows).
TICK = timedelta(microseconds=1)


def _job(raw: Raw, *, expires_at: datetime | str, status: str = "succeeded", hold: bool = False) -> UUID:
    """One job planted with plain SQL; ``expires_at`` a time, or an SQL interval added to now()."""
    if isinstance(expires_at, str):
        row = raw.execute(
            "INSERT INTO jobs (status, expires_at, retention_hold) "
            "VALUES (%s, now() + CAST(%s AS interval), %s) RETURNING id",
            (status, expires_at, hold),
        ).fetchone()
    else:
        row = raw.execute(
            "INSERT INTO jobs (status, expires_at, retention_hold) VALUES (%s, %s, %s) RETURNING id",
            (status, expires_at, hold),
        ).fetchone()
    assert row is not None
    job_id: UUID = row[0]
    return job_id


def _ids(raw: Raw) -> set[UUID]:
    return {r[0] for r in raw.execute("SELECT id FROM jobs").fetchall()}


def _tombstones(raw: Raw) -> set[UUID]:
    return {r[0] for r in raw.execute("SELECT job_id FROM job_deletions").fetchall()}


def test_probe_backlog_dry_run_and_cleanup_agree_at_a_given_instant(db: Database, raw: Raw) -> None:
    # An hour ahead of the database clock, so that the instant passed, not the clock, decides for
    # the jobs around it. (Near today, not years ahead: a run at t also prunes tombstones older than
    # t minus their retention, the ones it writes included.)
    row = raw.execute("SELECT date_trunc('second', now()) + interval '1 hour'").fetchone()
    assert row is not None
    t: datetime = row[0]
    long_before = _job(raw, expires_at=t - timedelta(days=1), status="failed")
    just_before = _job(raw, expires_at=t - TICK, status="queued")
    exactly_at = _job(raw, expires_at=t, status="canceled")
    eligible = {long_before, just_before, exactly_at}
    kept = {
        _job(raw, expires_at=t + TICK),  # expires just after t
        _job(raw, expires_at=t + timedelta(days=1)),
        _job(raw, expires_at=t, status="processing"),
        _job(raw, expires_at=t - timedelta(days=2), status="processing"),
        _job(raw, expires_at=t, hold=True),
        _job(raw, expires_at=t - timedelta(days=2), status="failed", hold=True),
    }
    assert _ids(raw) == eligible | kept
    # By the database clock (an hour before t) only the job a day older than t has expired.
    assert status_counts.status_counts(db).expired_backlog == 1

    # The sensor's probe: the eligible job that expired first (the processing and held jobs that
    # expired earlier do not count).
    assert status_counts.oldest_expired_job(db, now=t) == str(long_before)
    assert status_counts.has_expired_backlog(db, now=t)
    assert not status_counts.has_expired_backlog(db, now=t - timedelta(days=1) - TICK)
    counts = status_counts.status_counts(db, now=t)
    assert counts.at == t
    assert counts.expired_backlog == len(eligible)
    assert counts.oldest_expired_age_seconds == 86_400.0

    # The dry run: the same jobs, nothing written.
    report = cleanup(db, None, dry_run=True, now=t)
    assert report.plan is not None
    assert report.plan.eligible_jobs == len(eligible)
    assert set(report.plan.sample_job_ids) == eligible
    assert report.plan.oldest_expiry == t - timedelta(days=1)
    assert report.plan.newest_expiry == t
    assert report.plan.skipped_processing == 2
    assert report.plan.skipped_on_hold == 2
    assert _ids(raw) == eligible | kept
    assert _tombstones(raw) == set()

    # The real run at the same instant deletes exactly those.
    report = cleanup(db, None, now=t)
    assert report.jobs_deleted == len(eligible)
    assert _ids(raw) == kept
    assert _tombstones(raw) == eligible
    assert status_counts.oldest_expired_job(db, now=t) is None
    assert status_counts.status_counts(db, now=t).expired_backlog == 0


def test_probe_backlog_dry_run_and_cleanup_agree_on_the_database_clock(db: Database, raw: Raw) -> None:
    # Expiries relative to the database's now(); "now" below is the database clock (now=None),
    # which only moves forward from the inserts, so what expired then is expired at every call.
    oldest = _job(raw, expires_at="-1 day", status="failed")
    eligible = {
        oldest,
        _job(raw, expires_at="-1 second"),
        _job(raw, expires_at="0 seconds", status="queued"),
    }
    kept = {
        _job(raw, expires_at="1 hour"),
        _job(raw, expires_at="-2 days", status="processing"),
        _job(raw, expires_at="-2 days", hold=True),
    }

    assert status_counts.oldest_expired_job(db) == str(oldest)
    before = raw.execute("SELECT now()").fetchone()
    counts = status_counts.status_counts(db)
    after = raw.execute("SELECT now()").fetchone()
    assert before is not None
    assert after is not None
    # The snapshot's time is the database's, read inside its transaction.
    assert before[0] <= counts.at <= after[0]
    assert counts.expired_backlog == len(eligible)
    assert counts.oldest_expired_age_seconds is not None
    assert 86_400 <= counts.oldest_expired_age_seconds < 86_400 + 60

    report = cleanup(db, None, dry_run=True)
    assert report.plan is not None
    assert report.plan.eligible_jobs == len(eligible)
    assert set(report.plan.sample_job_ids) == eligible
    assert report.plan.skipped_processing == 1
    assert report.plan.skipped_on_hold == 1
    assert _ids(raw) == eligible | kept

    report = cleanup(db, None)
    assert report.jobs_deleted == len(eligible)
    assert _ids(raw) == kept
    assert _tombstones(raw) == eligible
    assert status_counts.oldest_expired_job(db) is None
    assert status_counts.status_counts(db).expired_backlog == 0
