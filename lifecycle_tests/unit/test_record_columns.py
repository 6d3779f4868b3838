"""Records are built from rows by position: the column lists and the dataclass fields must agree."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from lifecycle.db import events, jobs
from lifecycle.records import Job, JobEvent
from lifecycle.states import JobStatus


def _names(columns: str) -> list[str]:
    return [c.strip() for c in columns.split(",")]


def test_job_columns_are_in_field_order() -> None:
    assert _names(jobs._COLUMNS) == [f.name for f in dataclasses.fields(Job)]


def test_event_columns_are_in_field_order() -> None:
    assert _names(events._COLUMNS) == [f.name for f in dataclasses.fields(JobEvent)]


def test_job_from_row_equals_the_constructed_record() -> None:
    now = datetime.now(UTC)
    job_id, key_id = uuid.uuid4(), uuid.uuid4()
    row = (job_id, "failed", {"a": 1}, "s/k", ["r/1"], "boom", 2, 5, None, True, key_id, now, now, now)
    job = jobs.job_from_row(row)
    expected = Job(
        job_id, JobStatus.FAILED, {"a": 1}, "s/k", ("r/1",), "boom", 2, 5, None, True, key_id, now, now, now
    )
    assert job == expected
    assert repr(job) == repr(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.version = 6  # type: ignore[misc]
