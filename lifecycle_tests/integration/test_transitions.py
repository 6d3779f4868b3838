"""Every (from, to) pair, and what entering or leaving a status does to the row."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from lifecycle import errors
from lifecycle.states import TRANSITIONS, JobStatus
from lifecycle_tests.integration._jobs_helpers import events, job_in, row, snapshot

PAIRS = list(itertools.product(JobStatus, JobStatus))


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair(db, raw, source, target):
    job = job_in(db, source)
    before_events = len(events(raw, job.id))
    if target in TRANSITIONS[source]:
        with db.transaction(run_id="run-1") as tx:
            moved = tx.jobs.transition(job.id, target, reason="test")
        stored = row(raw, job.id)
        assert stored["status"] == target.value == moved.status
        assert stored["version"] == job.version + 1
        new = events(raw, job.id)[before_events:]
        assert [(e["type"], e["from_status"], e["to_status"], e["run_id"]) for e in new] == [
            ("transition", source.value, target.value, "run-1")
        ]
        assert new[0]["data"] == {"reason": "test"}
    else:
        before = snapshot(raw)
        with pytest.raises(errors.InvalidTransition) as info, db.transaction() as tx:
            tx.jobs.transition(job.id, target)
        assert info.value.from_status == source.value
        assert info.value.to_status == target.value
        assert info.value.job_id == job.id
        assert snapshot(raw) == before


@pytest.mark.parametrize("target", list(JobStatus))
def test_expected_from_mismatch_reports_the_actual_status(db, raw, target):
    job = job_in(db, JobStatus.PROCESSING)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidTransition) as info, db.transaction() as tx:
        tx.jobs.transition(job.id, target, expected_from=JobStatus.QUEUED)
    assert info.value.from_status == "processing"
    assert snapshot(raw) == before


def test_expected_from_match(db, raw):
    job = job_in(db, JobStatus.PROCESSING)
    with db.transaction() as tx:
        tx.jobs.transition(job.id, "canceled", expected_from="processing")
    assert row(raw, job.id)["status"] == "canceled"
    assert events(raw, job.id)[-1]["from_status"] == "processing"


def test_missing_job_is_job_not_found(db, raw):
    import uuid

    missing = uuid.uuid4()
    before = snapshot(raw)
    for target in JobStatus:
        with pytest.raises(errors.JobNotFound) as info, db.transaction() as tx:
            tx.jobs.transition(missing, target)
        assert info.value.job_id == missing
    assert snapshot(raw) == before


def test_entering_processing_takes_a_lease_and_counts_an_attempt(db, raw, settings):
    job = job_in(db, JobStatus.QUEUED)
    with db.transaction() as tx:
        tx.jobs.transition(job.id, JobStatus.PROCESSING)
    stored = row(raw, job.id)
    now = raw.execute("SELECT now()").fetchone()[0]
    assert stored["attempts"] == 1
    lease = stored["lease_expires_at"] - stored["updated_at"]
    assert lease == timedelta(seconds=settings.lease_seconds)
    assert stored["lease_expires_at"] > now


@pytest.mark.parametrize(
    "target", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED]
)
def test_leaving_processing_drops_the_lease_and_sets_retention(db, raw, settings, target):
    job = job_in(db, JobStatus.PROCESSING)
    with db.transaction() as tx:
        tx.jobs.transition(job.id, target, error="boom" if target is JobStatus.FAILED else None)
    stored = row(raw, job.id)
    assert stored["lease_expires_at"] is None
    assert stored["expires_at"] - stored["updated_at"] == settings.retention_for(target)
    assert stored["attempts"] == 1
    if target is JobStatus.FAILED:
        assert stored["error"] == "boom"


def test_retry_resets_to_queued_retention_and_counts_attempts(db, raw, settings):
    job = job_in(db, JobStatus.FAILED)
    with db.transaction() as tx:
        tx.jobs.transition(job.id, JobStatus.QUEUED, reason="retry")
        tx.jobs.transition(job.id, JobStatus.PROCESSING)
    stored = row(raw, job.id)
    assert stored["attempts"] == 2
    assert stored["version"] == job.version + 2
    assert stored["lease_expires_at"] is not None
    assert stored["expires_at"] - stored["updated_at"] == settings.retention_for(JobStatus.QUEUED)


def test_create_sets_queued_retention(db, raw, settings):
    job = job_in(db, JobStatus.QUEUED)
    stored = row(raw, job.id)
    assert stored["expires_at"] - stored["created_at"] == settings.retention_for(JobStatus.QUEUED)


def test_unknown_status_changes_nothing(db, raw):
    job = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    for bad in ("done", "QUEUED", "queued; DROP TABLE jobs", ""):
        with pytest.raises(errors.InvalidInput), db.transaction() as tx:
            tx.jobs.transition(job.id, bad)
        with pytest.raises(errors.InvalidInput), db.transaction() as tx:
            tx.jobs.transition(job.id, JobStatus.CANCELED, expected_from=bad)
    assert snapshot(raw) == before


def test_failed_transition_inside_a_transaction_rolls_back_earlier_work(db, raw):
    job = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidTransition), db.transaction() as tx:  # noqa: PT012
        tx.jobs.transition(job.id, JobStatus.PROCESSING)
        tx.jobs.transition(job.id, JobStatus.PROCESSING)
    assert snapshot(raw) == before


def test_database_trigger_rejects_a_bypassing_update(db, raw):
    import psycopg

    job = job_in(db, JobStatus.SUCCEEDED)
    with pytest.raises(psycopg.errors.CheckViolation):
        raw.execute("UPDATE jobs SET status = 'queued' WHERE id = %s", (job.id,))
    assert row(raw, job.id)["status"] == "succeeded"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {"x": object()}},
        {"data": {"n": float("nan")}},
        {"data": ["not", "a", "mapping"]},
        {"data": {"big": "x" * 70_000}},
        {"reason": 5},
        {"reason": ""},
        {"error": "a\x00b"},
        {"lease_seconds": 0},
    ],
    ids=["object", "nan", "list", "too-big", "reason-int", "reason-empty", "error-nul", "lease-0"],
)
def test_bad_event_data_changes_nothing(db, raw, kwargs):
    job = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.transition(job.id, JobStatus.PROCESSING, **kwargs)
    assert snapshot(raw) == before
