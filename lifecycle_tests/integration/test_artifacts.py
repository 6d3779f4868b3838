"""Job-aware storage: keys recorded (committed) before bytes are sent; results signed for succeeded jobs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from lifecycle import errors
from lifecycle.artifacts import (
    JobExpired,
    ResultsNotAvailable,
    attach_result,
    attach_source,
    signed_result_urls,
)
from lifecycle.db import Database
from lifecycle.states import JobStatus
from lifecycle.storage import StorageRepo, result_key, source_key
from lifecycle_tests.integration._storage_secrets import leaks

pytestmark = pytest.mark.integration


def job_row(raw: psycopg.Connection[Any], job_id: object) -> tuple[Any, ...]:
    found = raw.execute(
        "SELECT status, source_key, result_keys, expires_at FROM jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert found is not None
    return found


def succeed(db: Database, job_id: object) -> None:
    with db.transaction() as tx:
        tx.jobs.transition(job_id, JobStatus.SUCCEEDED)


def test_the_seed_scenario(
    db: Database,
    storage: StorageRepo,
    raw: psycopg.Connection[Any],
    storage_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Create, attach a source, process, succeed, attach two results, list events, sign, fetch."""
    caplog.set_level(logging.DEBUG)
    with db.transaction() as tx:
        job = tx.jobs.create(params={"source": "upload.mp4"})
    key = attach_source(db, storage, job.id, b"source video", "MP4", "video/mp4")
    assert key == source_key(job.id, "mp4")
    assert job_row(raw, job.id)[1] == key
    assert storage.download(key) == b"source video"

    with db.transaction() as tx:
        tx.jobs.transition(job.id, JobStatus.PROCESSING)
    # The worker attaches its results while processing, then moves the job on.
    clip = attach_result(db, storage, job.id, b"clip bytes", "mp4", "video/mp4")
    thumb = attach_result(db, storage, job.id, b"\xff\xd8jpeg", "jpg", "image/jpeg")
    with db.transaction() as tx:
        tx.jobs.transition(job.id, JobStatus.SUCCEEDED)
    assert (clip, thumb) == (result_key(job.id, "mp4"), result_key(job.id, "jpg"))
    status, _, result_keys, _ = job_row(raw, job.id)
    assert status == "succeeded"
    assert result_keys == [clip, thumb]

    with db.transaction() as tx:
        types = [e.type for e in tx.events.list(job.id)]
    assert types == [
        "created",
        "source_attached",
        "transition",
        "result_attached",
        "result_attached",
        "transition",
    ]
    recorded = raw.execute(
        "SELECT data->>'key' FROM job_events WHERE job_id = %s AND type LIKE '%%_attached' ORDER BY id",
        (job.id,),
    ).fetchall()
    assert [r[0] for r in recorded] == [key, clip, thumb]

    urls = signed_result_urls(db, storage, job.id)
    assert set(urls) == {clip, thumb}
    assert httpx.get(urls[clip]).content == b"clip bytes"
    fetched = httpx.get(urls[thumb])
    assert fetched.content == b"\xff\xd8jpeg"
    assert fetched.headers["content-type"].startswith("image/jpeg")

    known = [storage_server.service_role_key, storage_server.anon_key, storage_server.jwt_secret]
    assert [p for r in caplog.records for p in leaks(r.getMessage(), known)] == []


def test_key_is_committed_before_the_upload(
    db: Database, storage: StorageRepo, raw: psycopg.Connection[Any], storage_server: Any
) -> None:
    """When the upload fails, the job still knows the key, so cleanup can find whatever was sent."""
    with db.transaction() as tx:
        job = tx.jobs.create(params={})
    storage_server.set_faults(upload_error_rate=1.0, seed=1)
    with pytest.raises(errors.StorageError) as info:
        attach_source(db, storage, job.id, b"bytes", "mov", "video/quicktime")
    assert info.value.status == "500"
    assert job_row(raw, job.id)[1] == source_key(job.id, "mov")
    storage_server.clear_faults()
    # Attaching again (same key) retries the upload.
    attach_source(db, storage, job.id, b"bytes", "mov", "video/quicktime")
    assert storage.download(source_key(job.id, "mov")) == b"bytes"


def test_bad_input_touches_neither_row_nor_storage(
    db: Database, storage: StorageRepo, raw: psycopg.Connection[Any]
) -> None:
    from lifecycle_tests.integration._jobs_helpers import job_in

    job = job_in(db, JobStatus.PROCESSING)
    with pytest.raises(errors.InvalidInput):
        attach_result(db, storage, job.id, b"x", "../mp4", "video/mp4")
    assert job_row(raw, job.id)[2] == []
    assert storage.list_job_objects(job.id) == []


@pytest.mark.parametrize(
    "data",
    ["/etc/hostname", "bytes as text", None, 42, ["b"], {"a": 1}],
    ids=["local-path", "str", "none", "int", "list", "dict"],
)
def test_data_must_be_bytes(
    db: Database, storage: StorageRepo, raw: psycopg.Connection[Any], data: object
) -> None:
    """Issue 10, item 8: a str was read by the Storage client as a local file path and uploaded;
    None failed with TypeError after the key and its event were committed."""
    from lifecycle_tests.integration._jobs_helpers import job_in, snapshot

    queued, processing = job_in(db, JobStatus.QUEUED), job_in(db, JobStatus.PROCESSING)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput) as info:
        attach_source(db, storage, queued.id, data, "mp4", "video/mp4")  # type: ignore[arg-type]
    assert info.value.field == "data"
    with pytest.raises(errors.InvalidInput):
        attach_result(db, storage, processing.id, data, "mp4", "video/mp4")  # type: ignore[arg-type]
    assert snapshot(raw) == before  # no key, no event
    assert storage.list_job_objects(queued.id) == storage.list_job_objects(processing.id) == []


def test_bytes_like_data_is_uploaded(db: Database, storage: StorageRepo) -> None:
    with db.transaction() as tx:
        a, b = tx.jobs.create(params={}), tx.jobs.create(params={})
    attach_source(db, storage, a.id, bytearray(b"array"), "mp4", "video/mp4")
    attach_source(db, storage, b.id, memoryview(b"view"), "mp4", "video/mp4")
    assert storage.download(source_key(a.id, "mp4")) == b"array"
    assert storage.download(source_key(b.id, "mp4")) == b"view"


@pytest.mark.parametrize(
    "content_type",
    [
        "video/mp4\r\nX-Injected: 1",
        "video/mp4\n",
        "video/mp4\x00",
        "video/mp4; charset=utf-8",
        "video",
        "video/",
        "/mp4",
        "video/mp4/x",
        " video/mp4",
        "vidéo/mp4",
        "video/" + "a" * 200,
        "",
        None,
        b"video/mp4",
    ],
)
def test_content_type_must_be_a_plain_mime_type(
    db: Database, storage: StorageRepo, raw: psycopg.Connection[Any], content_type: object
) -> None:
    from lifecycle_tests.integration._jobs_helpers import job_in, snapshot

    job = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput) as info:
        attach_source(db, storage, job.id, b"x", "mp4", content_type)  # type: ignore[arg-type]
    assert info.value.field == "content_type"
    assert snapshot(raw) == before
    assert storage.list_job_objects(job.id) == []


def test_plain_mime_types_are_accepted(db: Database, storage: StorageRepo) -> None:
    with db.transaction() as tx:
        job = tx.jobs.create(params={})
    attach_source(db, storage, job.id, b"x", "mp4", "application/vnd.example+json")
    assert storage.list_job_objects(job.id)[0].content_type == "application/vnd.example+json"


@pytest.mark.parametrize(
    ("attach", "status"),
    [
        ("source", JobStatus.PROCESSING),
        ("source", JobStatus.SUCCEEDED),
        ("result", JobStatus.QUEUED),
        ("result", JobStatus.SUCCEEDED),
        ("result", JobStatus.CANCELED),
    ],
)
def test_attach_outside_its_state_is_refused_and_uploads_nothing(
    db: Database, storage: StorageRepo, raw: psycopg.Connection[Any], attach: str, status: JobStatus
) -> None:
    """A source only while queued, a result only while processing (issue 10, item 4)."""
    from lifecycle_tests.integration._jobs_helpers import job_in, snapshot

    job = job_in(db, status)
    before = snapshot(raw)
    call = attach_source if attach == "source" else attach_result
    with pytest.raises(errors.AttachRefused) as info:
        call(db, storage, job.id, b"x", "mp4", "video/mp4")
    assert (info.value.reason, info.value.status) == ("status", status.value)
    assert snapshot(raw) == before
    assert storage.list_job_objects(job.id) == []


def test_unknown_job_uploads_nothing(db: Database, storage: StorageRepo) -> None:
    import uuid

    missing = uuid.uuid4()
    with pytest.raises(errors.JobNotFound):
        attach_source(db, storage, missing, b"x", "mp4", "video/mp4")
    assert storage.list_job_objects(missing) == []


@pytest.mark.parametrize(
    "status", [JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.CANCELED]
)
def test_results_are_signed_only_for_succeeded_jobs(
    db: Database, storage: StorageRepo, status: JobStatus
) -> None:
    from lifecycle_tests.integration._jobs_helpers import job_in

    job = job_in(db, status)
    with pytest.raises(ResultsNotAvailable) as info:
        signed_result_urls(db, storage, job.id)
    assert info.value.status == status.value
    assert str(job.id) in str(info.value)


def test_expired_job_is_refused(db: Database, storage: StorageRepo, raw: psycopg.Connection[Any]) -> None:
    from lifecycle_tests.integration._jobs_helpers import job_in

    job = job_in(db, JobStatus.PROCESSING)
    attach_result(db, storage, job.id, b"x", "mp4", "video/mp4")
    succeed(db, job.id)
    raw.execute("UPDATE jobs SET expires_at = now() - interval '1 minute' WHERE id = %s", (job.id,))
    with pytest.raises(JobExpired):
        signed_result_urls(db, storage, job.id)


def test_ttl_never_reaches_past_expires_at(
    db: Database, storage: StorageRepo, raw: psycopg.Connection[Any]
) -> None:
    from lifecycle_tests.integration._jobs_helpers import job_in

    job = job_in(db, JobStatus.PROCESSING)
    key = attach_result(db, storage, job.id, b"x", "mp4", "video/mp4")
    succeed(db, job.id)
    raw.execute("UPDATE jobs SET expires_at = now() + interval '90 seconds' WHERE id = %s", (job.id,))
    expires_at = job_row(raw, job.id)[3]
    urls = signed_result_urls(db, storage, job.id, ttl_seconds=3600)
    claims = jwt.decode(httpx.URL(urls[key]).params["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 90
    assert datetime.fromtimestamp(claims["exp"], UTC) <= expires_at + timedelta(seconds=1)
    # A TTL shorter than the remaining retention is kept as asked.
    urls = signed_result_urls(db, storage, job.id, ttl_seconds=30)
    claims = jwt.decode(httpx.URL(urls[key]).params["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 30


def test_missing_result_object_is_left_out(db: Database, storage: StorageRepo) -> None:
    from lifecycle_tests.integration._jobs_helpers import job_in

    job = job_in(db, JobStatus.PROCESSING)
    kept = attach_result(db, storage, job.id, b"x", "mp4", "video/mp4")
    gone = attach_result(db, storage, job.id, b"y", "jpg", "image/jpeg")
    succeed(db, job.id)
    storage.remove([gone])
    assert set(signed_result_urls(db, storage, job.id)) == {kept}
