"""Records are built from rows by position: the catalogue's column lists and the dataclass fields agree."""

from __future__ import annotations

import dataclasses
import importlib.resources
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from lifecycle.db import api_keys, events, jobs, sql
from lifecycle.records import ApiKey, Job, JobEvent
from lifecycle.states import JobStatus


def _fragment(domain: str, name: str) -> list[str]:
    text = (importlib.resources.files(sql) / f"{domain}.sql").read_text(encoding="utf-8")
    _, fragments = sql.parse(domain, text)
    body = "\n".join(line for line in fragments[f"{domain}.{name}"].splitlines() if not line.startswith("--"))
    return [c.strip() for c in body.split(",")]


@pytest.mark.parametrize(("domain", "record"), [("jobs", Job), ("events", JobEvent), ("api_keys", ApiKey)])
def test_column_lists_are_in_field_order(domain: str, record: Any) -> None:
    assert _fragment(domain, "columns") == [f.name for f in dataclasses.fields(record)]


def test_the_aliased_job_columns_are_the_same_list() -> None:
    assert _fragment("jobs", "j_columns") == ["j." + c for c in _fragment("jobs", "columns")]


def test_the_job_row_factory_builds_the_constructed_record() -> None:
    now = datetime.now(UTC)
    job_id, key_id = uuid.uuid4(), uuid.uuid4()
    row = (job_id, "failed", {"a": 1}, "s/k", ["r/1"], "boom", 2, 5, None, True, key_id, now, now, now)
    job = jobs.job_row(None)(row)  # type: ignore[arg-type]
    expected = Job(
        job_id, JobStatus.FAILED, {"a": 1}, "s/k", ("r/1",), "boom", 2, 5, None, True, key_id, now, now, now
    )
    assert job == expected
    assert job.status is JobStatus.FAILED
    assert repr(job) == repr(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.version = 6  # type: ignore[misc]


def test_the_event_and_api_key_row_factories() -> None:
    now = datetime.now(UTC)
    job_id, key_id = uuid.uuid4(), uuid.uuid4()
    event = events.event_row(None)((7, job_id, now, "transition", "queued", "processing", {}, "run-1"))  # type: ignore[arg-type]
    assert event == JobEvent(
        7, job_id, now, "transition", JobStatus.QUEUED, JobStatus.PROCESSING, {}, "run-1"
    )
    key = api_keys.api_key_row(None)((key_id, "n", "abcd", ["read"], now, None, None, None))  # type: ignore[arg-type]
    assert key == ApiKey(key_id, "n", "abcd", ("read",), now, None, None, None)
