"""Seeding: every status, events that replay, the expired share, processing jobs with a lease."""

from __future__ import annotations

import pytest

from lifecycle import errors, seeding
from lifecycle.states import JobStatus


def test_seed_thousand_jobs(db, raw):
    summary = seeding.seed(db, n_jobs=1000, expired_fraction=0.3, seed=7)
    counts = dict(raw.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    assert set(counts) == {s.value for s in JobStatus}
    assert sum(counts.values()) == summary.jobs == 1000
    assert counts == dict(summary.by_status)
    expired = raw.execute("SELECT count(*) FROM jobs WHERE expires_at <= now()").fetchone()[0]
    assert expired == summary.expired == 300
    assert (
        raw.execute(
            "SELECT count(*) FROM jobs WHERE status = 'processing' AND expires_at <= now()"
        ).fetchone()[0]
        == 0
    )
    assert (
        raw.execute(
            "SELECT count(*) FROM jobs WHERE (status = 'processing') <> (lease_expires_at IS NOT NULL)"
        ).fetchone()[0]
        == 0
    )
    assert raw.execute("SELECT count(*) FROM job_events").fetchone()[0] == summary.events
    # The last status event of every job names its current status.
    mismatched = raw.execute(
        """
        SELECT count(*) FROM jobs j
        JOIN LATERAL (
            SELECT to_status FROM job_events e WHERE e.job_id = j.id AND e.to_status IS NOT NULL
            ORDER BY ts DESC, id DESC LIMIT 1
        ) last ON true
        WHERE last.to_status <> j.status
        """
    ).fetchone()[0]
    assert mismatched == 0
    params = raw.execute("SELECT params FROM jobs LIMIT 1").fetchone()[0]
    assert {"source", "clip", "format"} <= set(params)
    text = seeding.format_summary(summary)
    assert "1000 jobs" in text
    assert "300 already expired" in text


def test_seed_is_repeatable_and_validates(db, raw):
    a = seeding.seed(db, n_jobs=20, expired_fraction=0.0, seed=1)
    assert a.expired == 0
    assert seeding.seed(db, n_jobs=0, expired_fraction=0.5).jobs == 0
    with pytest.raises(errors.InvalidInput):
        seeding.seed(db, n_jobs=-1, expired_fraction=0.1)
    with pytest.raises(errors.InvalidInput):
        seeding.seed(db, n_jobs=1, expired_fraction=1.5)
    assert raw.execute("SELECT count(*) FROM jobs").fetchone()[0] == 20


def test_seed_with_objects_records_and_uploads_them(db, raw, storage):
    summary = seeding.seed(db, n_jobs=20, expired_fraction=0.2, seed=3, storage=storage)
    rows = raw.execute("SELECT id, status, source_key, result_keys FROM jobs").fetchall()
    assert all(source for _, _, source, _ in rows)
    succeeded = [r for r in rows if r[1] == "succeeded"]
    assert succeeded
    assert all(len(keys) == 1 for _, status, _, keys in rows if status == "succeeded")
    assert all(keys == [] for _, status, _, keys in rows if status != "succeeded")
    assert summary.objects == len(rows) + len(succeeded)
    job_id, _, source, keys = succeeded[0]
    assert storage.download(source).startswith(b"\x00\x00\x00\x18ftyp")
    assert storage.download(keys[0])
    assert source == f"sources/{job_id}/source.mp4"


def _status_counts(raw):
    return dict(raw.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


def test_seeding_twice_moves_only_its_own_jobs(db, raw):
    """Issue 10, item 10: the second seed crashed with KeyError (it moved the first seed's jobs)."""
    first = seeding.seed(db, n_jobs=50, expired_fraction=0.2, seed=1)
    before = {r[0]: r[1:] for r in raw.execute("SELECT id, status, version, expires_at FROM jobs")}
    second = seeding.seed(db, n_jobs=50, expired_fraction=0.2, seed=2)
    assert set(first.job_ids).isdisjoint(second.job_ids)
    # The first seed's jobs are exactly as they were.
    after = {r[0]: r[1:] for r in raw.execute("SELECT id, status, version, expires_at FROM jobs")}
    assert {job_id: after[job_id] for job_id in before} == before
    assert sum(_status_counts(raw).values()) == 100
    for summary in (first, second):
        rows = raw.execute(
            "SELECT status, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY status", (summary.job_ids,)
        ).fetchall()
        assert dict(rows) == dict(summary.by_status)
    assert raw.execute("SELECT count(*) FROM job_events").fetchone()[0] == first.events + second.events


def test_seeding_more_than_a_chunk(db, raw):
    """1,500 jobs: the second chunk moved the first chunk's queued jobs and crashed."""
    summary = seeding.seed(db, n_jobs=1500, expired_fraction=0.3, seed=5)
    counts = _status_counts(raw)
    assert sum(counts.values()) == summary.jobs == 1500
    assert counts == dict(summary.by_status)
    # Each chunk is shared out on its own: 1000 and 500 jobs.
    expected = seeding._split(1000)
    for status, n in seeding._split(500).items():
        expected[status] += n
    assert counts == {status.value: n for status, n in expected.items()}
    assert raw.execute("SELECT count(*) FROM jobs WHERE expires_at <= now()").fetchone()[0] == 450
    assert raw.execute("SELECT count(*) FROM job_events").fetchone()[0] == summary.events
