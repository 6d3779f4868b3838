"""JobEventsRepo: add and list, checked over an independent connection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from lifecycle import errors
from lifecycle.states import JobStatus
from lifecycle_tests.integration._jobs_helpers import events, job_in, snapshot


def test_add_writes_an_event_with_the_run_id(db, raw):
    job = job_in(db, JobStatus.QUEUED)
    with db.transaction(run_id="run-42") as tx:
        event = tx.events.add(job.id, "note", data={"text": "hello", "n": [1, 2]})
        plain = tx.events.add(str(job.id), "progress")
    stored = events(raw, job.id)
    assert [(e["id"], e["type"], e["data"], e["run_id"]) for e in stored[1:]] == [
        (event.id, "note", {"text": "hello", "n": [1, 2]}, "run-42"),
        (plain.id, "progress", {}, "run-42"),
    ]
    assert stored[1]["from_status"] is None
    assert stored[1]["to_status"] is None


def test_add_to_a_missing_job_is_job_not_found(db, raw):
    missing = uuid.uuid4()
    before = snapshot(raw)
    with pytest.raises(errors.JobNotFound) as info, db.transaction() as tx:
        tx.events.add(missing, "note")
    assert info.value.job_id == missing
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("note", {"when": datetime.now(UTC)}),
        ("note", {"x": object()}),
        ("note", {"inf": float("inf")}),
        ("note", ["list"]),
        ("note", {"big": "x" * 70_000}),
        ("note", {"nul": "\x00"}),
        ("", {}),
        (None, {}),
        ("t" * 201, {}),
    ],
    ids=["datetime", "object", "inf", "list", "too-big", "nul", "empty-type", "none-type", "long-type"],
)
def test_add_bad_input_changes_nothing(db, raw, type_, data):
    job = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.events.add(job.id, type_, data=data)
    assert snapshot(raw) == before


def test_list_is_ordered_and_pages(db, raw):
    job = job_in(db, JobStatus.QUEUED)
    with db.transaction() as tx:
        for i in range(9):
            tx.events.add(job.id, "note", data={"i": i})
    with db.transaction() as tx:
        tx.jobs.transition(job.id, JobStatus.PROCESSING)
    expected = [e["id"] for e in events(raw, job.id)]
    assert len(expected) == 11
    with db.transaction() as tx:
        listed = tx.events.list(job.id)
        assert [e.id for e in listed] == expected
        assert listed[0].type == "created"
        assert listed[-1].from_status is JobStatus.QUEUED
        assert listed[-1].to_status is JobStatus.PROCESSING
        seen, cursor = [], None
        while True:
            page = tx.events.page(job.id, limit=4, after=cursor)
            seen.extend(e.id for e in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == expected
        assert [e.id for e in tx.events.list(job.id, limit=3)] == expected[:3]
        assert tx.events.list(uuid.uuid4()) == []


@pytest.mark.parametrize("after", ["junk", "W10", "WyIyMDIwLTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwieCJd"])
def test_list_bad_cursor_and_limit(db, after):
    job = job_in(db, JobStatus.QUEUED)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.events.list(job.id, after=after)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.events.list(job.id, limit=0)


def test_list_without_limit_returns_every_event(db, raw, monkeypatch):
    from lifecycle.db import events as events_module

    monkeypatch.setattr(events_module, "MAX_PAGE", 3)
    job = job_in(db, JobStatus.QUEUED)
    with db.transaction() as tx:
        for i in range(7):
            tx.events.add(job.id, "note", data={"i": i})
    with db.transaction() as tx:
        listed = tx.events.list(job.id)
    assert [e.id for e in listed] == [e["id"] for e in events(raw, job.id)]
    assert len(listed) == 8
