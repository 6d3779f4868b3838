"""JobsRepo: happy and error paths, checked over an independent connection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lifecycle import errors
from lifecycle.states import JobStatus
from lifecycle_tests.integration._jobs_helpers import events, job_in, row, snapshot

INJECTIONS = [
    "'; DROP TABLE jobs; --",
    "x' OR '1'='1",
    "\\'; SELECT pg_sleep(10); --",
    "$$; DELETE FROM job_events; $$",
    ":id",
    "%(id)s %s {}",
]
BAD_UUIDS = [
    "",
    "not-a-uuid",
    "123",
    "00000000-0000-0000-0000-00000000000g",
    "' OR 1=1 --",
    "x" * 10_000,
    42,
    None,
]


# -- create / get ---------------------------------------------------------------------------------


def test_create_writes_the_row_and_a_created_event(db, raw):
    params = {"source": "a.mp4", "clip": {"start": 3, "duration": 10}, "format": "mp4"}
    with db.transaction(run_id="run-7") as tx:
        job = tx.jobs.create(params=params)
    stored = row(raw, job.id)
    assert stored["status"] == "queued"
    assert stored["params"] == params
    assert stored["version"] == 1
    assert stored["attempts"] == 0
    assert stored["lease_expires_at"] is None
    assert [(e["type"], e["from_status"], e["to_status"], e["run_id"]) for e in events(raw, job.id)] == [
        ("created", None, "queued", "run-7")
    ]


def test_create_with_expiry_and_api_key(db, raw):
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with db.transaction() as tx:
        key, _ = tx.api_keys.create("owner")
        job = tx.jobs.create(params={}, expires_at=expires, api_key_id=str(key.id))
    stored = row(raw, job.id)
    assert stored["expires_at"] == expires
    assert stored["api_key_id"] == key.id


def test_create_with_unknown_api_key_writes_nothing(db, raw):
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.create(params={}, api_key_id=uuid.uuid4())
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    "params",
    [
        {"when": datetime.now(UTC)},
        {"x": object()},
        {"n": float("nan")},
        {"s": {1, 2}},
        {"nul": "a\x00b"},
        ["not", "an", "object"],
        "string",
    ],
    ids=["datetime", "object", "nan", "set", "nul", "list", "str"],
)
def test_create_rejects_unserialisable_params(db, raw, params):
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.create(params=params)
    assert snapshot(raw) == before


def test_params_size_limit(db, raw, settings):
    limit = settings.max_params_bytes
    overhead = len('{"blob":""}')
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput) as info, db.transaction() as tx:
        tx.jobs.create(params={"blob": "x" * (limit - overhead + 1)})
    assert info.value.field == "params"
    assert snapshot(raw) == before
    with db.transaction() as tx:
        job = tx.jobs.create(params={"blob": "x" * (limit - overhead)})
    assert len(row(raw, job.id)["params"]["blob"]) == limit - overhead


def test_naive_expiry_is_rejected(db, raw):
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.create(params={}, expires_at=datetime(2030, 1, 1))
    assert snapshot(raw) == before


def test_get(db):
    job = job_in(db, JobStatus.PROCESSING)
    with db.transaction() as tx:
        assert tx.jobs.get(job.id) == job
        assert tx.jobs.get(str(job.id)) == job
        with pytest.raises(errors.JobNotFound):
            tx.jobs.get(uuid.uuid4())


@pytest.mark.parametrize("bad", BAD_UUIDS, ids=range(len(BAD_UUIDS)))
def test_invalid_uuids_change_nothing(db, raw, bad):
    job = job_in(db, JobStatus.PROCESSING)
    before = snapshot(raw)
    calls = [
        lambda tx: tx.jobs.get(bad),
        lambda tx: tx.jobs.update(bad, expected_version=1, params={}),
        lambda tx: tx.jobs.transition(bad, JobStatus.CANCELED),
        lambda tx: tx.jobs.renew_lease(bad),
        lambda tx: tx.jobs.record_source_key(bad, "sources/x/source.mp4"),
        lambda tx: tx.jobs.add_result_key(bad, "results/x/clip.mp4"),
        lambda tx: tx.events.add(bad, "note"),
        lambda tx: tx.events.list(bad),
        lambda tx: tx.api_keys.revoke(bad),
    ]
    if bad is not None:
        calls.append(lambda tx: tx.jobs.create(params={}, api_key_id=bad))
    for call in calls:
        with pytest.raises(errors.InvalidInput), db.transaction() as tx:
            call(tx)
    assert snapshot(raw) == before
    assert row(raw, job.id)["status"] == "processing"


# -- update ---------------------------------------------------------------------------------------


def test_update_changes_fields_and_bumps_version(db, raw):
    job = job_in(db, JobStatus.QUEUED)
    expires = datetime(2031, 5, 6, tzinfo=UTC)
    with db.transaction() as tx:
        updated = tx.jobs.update(
            job.id,
            expected_version=1,
            params={"a": 2},
            error="bad frame",
            retention_hold=True,
            expires_at=expires,
        )
    stored = row(raw, job.id)
    assert (stored["params"], stored["error"], stored["retention_hold"], stored["expires_at"]) == (
        {"a": 2},
        "bad frame",
        True,
        expires,
    )
    assert stored["version"] == updated.version == 2
    assert stored["status"] == "queued"
    with db.transaction() as tx:
        tx.jobs.update(job.id, expected_version=2, error=None)
    assert row(raw, job.id)["error"] is None


def test_update_version_conflict_reports_actual_version(db, raw):
    job = job_in(db, JobStatus.SUCCEEDED)
    before = snapshot(raw)
    with pytest.raises(errors.VersionConflict) as info, db.transaction() as tx:
        tx.jobs.update(job.id, expected_version=1, retention_hold=True)
    assert info.value.actual_version == job.version == 3
    assert info.value.expected_version == 1
    assert snapshot(raw) == before


def test_update_missing_job(db, raw):
    before = snapshot(raw)
    with pytest.raises(errors.JobNotFound), db.transaction() as tx:
        tx.jobs.update(uuid.uuid4(), expected_version=1, retention_hold=True)
    assert snapshot(raw) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "canceled"},
        {"status": JobStatus.CANCELED, "params": {}},
        {},
        {"retention_hold": "yes"},
        {"params": {"x": object()}},
        {"expires_at": "tomorrow"},
        {"error": 5},
    ],
    ids=["status", "status+params", "nothing", "hold-str", "params-obj", "expires-str", "error-int"],
)
def test_update_rejects_bad_input(db, raw, changes):
    job = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.update(job.id, expected_version=job.version, **changes)
    assert snapshot(raw) == before


def test_injection_strings_are_stored_verbatim(db, raw):
    with db.transaction(run_id=INJECTIONS[0]) as tx:
        tx.api_keys.create(INJECTIONS[1], scopes=INJECTIONS)
        job = tx.jobs.create(params={s: s for s in INJECTIONS})
        tx.jobs.update(job.id, expected_version=1, error=INJECTIONS[2])
        tx.jobs.transition(job.id, JobStatus.PROCESSING, reason=INJECTIONS[3], data={"why": INJECTIONS[4]})
        tx.jobs.add_result_key(job.id, f"results/{job.id}/clip.mp4")
        tx.events.add(job.id, INJECTIONS[1], data={"note": INJECTIONS[2]})
    # An injection string is never a key: refused before any SQL (test_foreign_and_malformed_keys...).
    for payload in INJECTIONS:
        with pytest.raises(errors.InvalidInput), db.transaction() as tx:
            tx.jobs.add_result_key(job.id, payload)
    stored = row(raw, job.id)
    assert stored["params"] == {s: s for s in INJECTIONS}
    assert stored["error"] == INJECTIONS[2]
    assert stored["result_keys"] == [f"results/{job.id}/clip.mp4"]
    evs = events(raw, job.id)
    assert {e["run_id"] for e in evs} == {INJECTIONS[0]}
    assert evs[1]["data"] == {"why": INJECTIONS[4], "reason": INJECTIONS[3]}
    assert evs[-1]["type"] == INJECTIONS[1]
    assert raw.execute("SELECT name, scopes FROM api_keys").fetchone() == (INJECTIONS[1], INJECTIONS)
    assert raw.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    assert raw.execute("SELECT count(*) FROM job_events").fetchone()[0] == 4


# -- list_by_status -------------------------------------------------------------------------------


def test_list_by_status_pages_through_everything_once(db, raw):
    with db.transaction() as tx:
        ids = [tx.jobs.create(params={"i": i}).id for i in range(25)]
    with db.transaction() as tx:
        tx.jobs.transition(ids[0], JobStatus.CANCELED)
    expected = [
        r[0]
        for r in raw.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, id").fetchall()
    ]
    seen, cursor = [], None
    with db.transaction() as tx:
        while True:
            page = tx.jobs.list_by_status(JobStatus.QUEUED, limit=7, after=cursor)
            seen.extend(j.id for j in page.items)
            assert all(j.status is JobStatus.QUEUED for j in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert [j.id for j in tx.jobs.list_by_status("canceled").items] == [ids[0]]
        assert tx.jobs.list_by_status("succeeded").items == []
    assert seen == expected
    assert len(seen) == 24


def test_list_by_status_exact_multiple_has_no_empty_last_page(db):
    with db.transaction() as tx:
        for _ in range(4):
            tx.jobs.create(params={})
    with db.transaction() as tx:
        first = tx.jobs.list_by_status("queued", limit=2)
        second = tx.jobs.list_by_status("queued", limit=2, after=first.next_cursor)
    assert len(first.items) == len(second.items) == 2
    assert second.next_cursor is None


@pytest.mark.parametrize(
    ("status", "limit", "after"),
    [
        ("nope", 10, None),
        ("queued", 0, None),
        ("queued", 1001, None),
        ("queued", "10", None),
        ("queued", 10, "garbage"),
        ("queued", 10, "W10"),
        ("queued", 10, "eyJhIjoxfQ"),
        ("queued", 10, "WyIyMDIwLTAxLTAxIiwiYSJd"),
        ("queued", 10, "x" * 10_000),
    ],
)
def test_list_by_status_bad_input(db, status, limit, after):
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.list_by_status(status, limit=limit, after=after)


# -- transition_many ------------------------------------------------------------------------------


def test_transition_many_moves_up_to_limit_with_one_event_each(db, raw):
    with db.transaction() as tx:
        ids = [tx.jobs.create(params={}).id for _ in range(30)]
    with db.transaction(run_id="batch") as tx:
        first = tx.jobs.transition_many("queued", "processing", limit=20, reason="bulk")
        second = tx.jobs.transition_many("queued", "processing", limit=20)
    assert len(first) == 20
    assert len(second) == 10
    assert set(first) | set(second) == set(ids)
    rows = raw.execute("SELECT status, version, attempts, lease_expires_at IS NOT NULL FROM jobs").fetchall()
    assert set(rows) == {("processing", 2, 1, True)}
    counts = raw.execute(
        "SELECT from_status, to_status, run_id, count(*) FROM job_events WHERE type = 'transition' "
        "GROUP BY 1, 2, 3"
    ).fetchall()
    assert counts == [("queued", "processing", "batch", 30)]


def test_transition_many_filters(db, raw):
    with db.transaction() as tx:
        old = [tx.jobs.create(params={}).id for _ in range(3)]
    cutoff = raw.execute("SELECT clock_timestamp()").fetchone()[0]
    with db.transaction() as tx:
        new = [tx.jobs.create(params={}).id for _ in range(2)]
        for job_id in old + new:
            tx.jobs.transition(job_id, "processing")
    raw.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = %s", (old[0],))
    with db.transaction() as tx:
        assert tx.jobs.transition_many("processing", "queued", lease_expired=True) == [old[0]]
        assert sorted(tx.jobs.transition_many("processing", "failed", created_before=cutoff)) == sorted(
            old[1:]
        )
        assert tx.jobs.transition_many("processing", "failed", updated_before=cutoff) == []
        assert sorted(tx.jobs.transition_many("processing", "succeeded")) == sorted(new)
    assert row(raw, old[0])["lease_expires_at"] is None
    assert row(raw, old[0])["status"] == "queued"


def test_transition_many_skips_locked_rows(db, raw, database_url):
    import psycopg

    from lifecycle.db.engine import libpq_url

    with db.transaction() as tx:
        ids = [tx.jobs.create(params={}).id for _ in range(5)]
    with psycopg.connect(libpq_url(database_url)) as holder:
        holder.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (ids[0],))
        with db.transaction() as tx:
            moved = tx.jobs.transition_many("queued", "canceled")
        holder.rollback()
    assert sorted(moved) == sorted(ids[1:])
    assert row(raw, ids[0])["status"] == "queued"


def test_transition_many_rejects_illegal_pairs_and_bad_input(db, raw):
    job_in(db, JobStatus.SUCCEEDED)
    before = snapshot(raw)
    for source, target, kwargs in [
        ("succeeded", "queued", {}),
        ("queued", "failed", {}),
        ("queued", "queued", {}),
    ]:
        with pytest.raises(errors.InvalidTransition), db.transaction() as tx:
            tx.jobs.transition_many(source, target, **kwargs)
    for source, target, kwargs in [
        ("nope", "queued", {}),
        ("queued", "processing", {"limit": 0}),
        ("queued", "processing", {"created_before": "yesterday"}),
        ("queued", "processing", {"data": {"x": object()}}),
    ]:
        with pytest.raises(errors.InvalidInput), db.transaction() as tx:
            tx.jobs.transition_many(source, target, **kwargs)
    assert snapshot(raw) == before


# -- claim_next / renew_lease ---------------------------------------------------------------------


def test_claim_next_takes_the_oldest_and_returns_none_when_empty(db, raw, settings):
    with db.transaction() as tx:
        assert tx.jobs.claim_next() is None
    with db.transaction() as tx:
        first = tx.jobs.create(params={"n": 1})
    with db.transaction() as tx:
        tx.jobs.create(params={"n": 2})
    with db.transaction() as tx:
        claimed = tx.jobs.claim_next(lease_seconds=30)
    assert claimed.id == first.id
    stored = row(raw, first.id)
    assert stored["status"] == "processing"
    assert stored["lease_expires_at"] - stored["updated_at"] == timedelta(seconds=30)
    assert stored["attempts"] == 1
    assert [e["to_status"] for e in events(raw, first.id)] == ["queued", "processing"]
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.claim_next(lease_seconds=0)


def test_renew_lease(db, raw):
    job = job_in(db, JobStatus.PROCESSING)
    raw.execute("UPDATE jobs SET lease_expires_at = now() WHERE id = %s", (job.id,))
    with db.transaction() as tx:
        renewed = tx.jobs.renew_lease(job.id, lease_seconds=600)
    stored = row(raw, job.id)
    assert stored["lease_expires_at"] - stored["updated_at"] == timedelta(seconds=600)
    assert stored["version"] == renewed.version == job.version + 1
    queued = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidTransition) as info, db.transaction() as tx:
        tx.jobs.renew_lease(queued.id)
    assert info.value.from_status == "queued"
    with pytest.raises(errors.JobNotFound), db.transaction() as tx:
        tx.jobs.renew_lease(uuid.uuid4())
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.renew_lease(job.id, lease_seconds=-1)
    assert snapshot(raw) == before


# -- storage keys ---------------------------------------------------------------------------------


def test_record_source_key(db, raw):
    job = job_in(db, JobStatus.QUEUED)
    key = f"sources/{job.id}/source.mp4"
    with db.transaction() as tx:
        recorded = tx.jobs.record_source_key(job.id, key)
        again = tx.jobs.record_source_key(job.id, key)
    assert recorded.source_key == key
    assert again.version == recorded.version == 2
    evs = events(raw, job.id)
    assert [(e["type"], e["data"]) for e in evs[1:]] == [("source_attached", {"key": key})]
    assert raw.execute("SELECT count(*) FROM storage_deletions").fetchone()[0] == 0


def test_replacing_the_source_key_queues_the_old_object(db, raw):
    job = job_in(db, JobStatus.QUEUED)
    mp4, mov = f"sources/{job.id}/source.mp4", f"sources/{job.id}/source.mov"
    with db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mp4)
        tx.jobs.record_source_key(job.id, mov)
    assert raw.execute("SELECT object_key, job_id FROM storage_deletions").fetchall() == [(mp4, job.id)]
    with db.transaction() as tx:
        tx.jobs.record_source_key(job.id, mp4)
    # Back to the first key: it leaves the outbox, the second one goes in.
    assert raw.execute("SELECT object_key FROM storage_deletions").fetchall() == [(mov,)]
    assert row(raw, job.id)["source_key"] == mp4


def test_add_result_key(db, raw):
    job = job_in(db, JobStatus.PROCESSING)
    a, b = f"results/{job.id}/clip.mp4", f"results/{job.id}/clip.webm"
    with db.transaction() as tx:
        tx.jobs.add_result_key(job.id, a)
        tx.jobs.add_result_key(job.id, b)
        same = tx.jobs.add_result_key(job.id, a)
    assert same.result_keys == (a, b)
    stored = row(raw, job.id)
    assert stored["result_keys"] == [a, b]
    assert stored["version"] == job.version + 2
    assert [e["data"] for e in events(raw, job.id) if e["type"] == "result_attached"] == [
        {"key": a},
        {"key": b},
    ]


# The state each kind of key is recorded in, and the key's shape: (method, status, prefix, stem).
KINDS = {
    "source": ("record_source_key", JobStatus.QUEUED, "sources", "source"),
    "result": ("add_result_key", JobStatus.PROCESSING, "results", "clip"),
}


@pytest.mark.parametrize("kind", ["source", "result"])
def test_foreign_and_malformed_keys_are_refused_before_any_sql(db, raw, kind):
    """Issue 10, item 2: any text was accepted as a key (another job's, a path, a wildcard)."""
    method, status, prefix, stem = KINDS[kind]
    other_prefix, other_stem = ("results", "clip") if kind == "source" else ("sources", "source")
    a, b = job_in(db, status), job_in(db, status)
    bad = [
        f"{prefix}/{b.id}/{stem}.mp4",  # job B's own key
        "../../etc/passwd",
        "results/*",
        "sources/*",
        f"{prefix}/*",
        f"{prefix}/{a.id}/{stem}.MP4",  # upper-case extension
        f"{other_prefix}/{a.id}/{other_stem}.mp4",  # this job's key of the other kind
        f"{prefix}/{a.id}/{stem}.mp4/../../{b.id}/{stem}.mp4",
        f"{prefix}/{str(a.id).upper()}/{stem}.mp4",  # not the canonical UUID text
        f"{prefix}/{a.id}/{stem}.",
        f"{prefix}/{a.id}/{stem}." + "a" * 17,
        f"{prefix}/{a.id}/other.mp4",
        f" {prefix}/{a.id}/{stem}.mp4",
    ]
    before = snapshot(raw)
    for key in bad:
        with pytest.raises(errors.InvalidInput) as info, db.transaction() as tx:
            getattr(tx.jobs, method)(a.id, key)
        # Refused by the repository (field "key"), not by the database's CHECK constraint.
        assert info.value.field == "key", key
        # Before any SQL: a job that does not exist gets the same answer, not JobNotFound.
        with pytest.raises(errors.InvalidInput), db.transaction() as tx:
            getattr(tx.jobs, method)(uuid.uuid4(), key)
    assert snapshot(raw) == before


def test_the_database_refuses_foreign_keys_written_around_the_repository(db, raw):
    """The CHECK constraints of migration 0002 hold for a client that bypasses the repository."""
    import psycopg

    a, b = job_in(db, JobStatus.QUEUED), job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    for column, value in [
        ("source_key", f"sources/{b.id}/source.mp4"),
        ("source_key", "../../etc/passwd"),
        ("source_key", f"sources/{a.id}/source.MP4"),
        ("source_key", f"results/{a.id}/clip.mp4"),
        ("result_keys", [f"results/{b.id}/clip.mp4"]),
        ("result_keys", ["results/*"]),
        ("result_keys", [f"results/{a.id}/clip.mp4", None]),
    ]:
        with pytest.raises(psycopg.errors.CheckViolation):
            raw.execute(f"UPDATE jobs SET {column} = %s WHERE id = %s", (value, a.id))
    assert snapshot(raw) == before


@pytest.mark.parametrize("kind", ["source", "result"])
@pytest.mark.parametrize("status", list(JobStatus))
def test_a_key_is_recorded_only_in_the_state_that_produces_its_object(db, raw, kind, status):
    """Issue 10, item 4: keys were recorded in any status (a source on a succeeded job, ...)."""
    method, allowed, prefix, stem = KINDS[kind]
    job = job_in(db, status)
    key = f"{prefix}/{job.id}/{stem}.mp4"
    before = snapshot(raw)
    if status is allowed:
        with db.transaction() as tx:
            getattr(tx.jobs, method)(job.id, key)
        stored = row(raw, job.id)
        assert key in (stored["source_key"], *stored["result_keys"])
        return
    with pytest.raises(errors.AttachRefused) as info, db.transaction() as tx:
        getattr(tx.jobs, method)(job.id, key)
    assert (info.value.reason, info.value.status) == ("status", status.value)
    assert snapshot(raw) == before


def test_no_key_on_a_job_eligible_for_deletion(db, raw):
    """Eligible = expired (database clock), not processing, not on hold: what cleanup deletes."""
    expired_queued = job_in(db, JobStatus.QUEUED)
    expired_succeeded = job_in(db, JobStatus.SUCCEEDED)
    held = job_in(db, JobStatus.QUEUED)
    processing = job_in(db, JobStatus.PROCESSING)
    raw.execute(
        "UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = ANY(%s)",
        ([expired_queued.id, expired_succeeded.id, held.id, processing.id],),
    )
    raw.execute("UPDATE jobs SET retention_hold = true WHERE id = %s", (held.id,))
    before = snapshot(raw)
    for job, method, key in [
        (expired_queued, "record_source_key", f"sources/{expired_queued.id}/source.mp4"),
        (expired_succeeded, "add_result_key", f"results/{expired_succeeded.id}/clip.mp4"),
    ]:
        with pytest.raises(errors.AttachRefused) as info, db.transaction() as tx:
            getattr(tx.jobs, method)(job.id, key)
        assert info.value.reason == "eligible_for_deletion"
        assert info.value.status == row(raw, job.id)["status"]
    assert snapshot(raw) == before
    # On hold, or processing (never eligible), an expired job still takes its key.
    with db.transaction() as tx:
        tx.jobs.record_source_key(held.id, f"sources/{held.id}/source.mp4")
        tx.jobs.add_result_key(processing.id, f"results/{processing.id}/clip.mp4")
    assert row(raw, held.id)["source_key"] == f"sources/{held.id}/source.mp4"
    assert row(raw, processing.id)["result_keys"] == [f"results/{processing.id}/clip.mp4"]


def test_recording_the_same_key_again_is_idempotent(db, raw):
    """A retried upload records its key again: no new version, no new event, no refusal."""
    job = job_in(db, JobStatus.QUEUED)
    key = f"sources/{job.id}/source.mp4"
    with db.transaction() as tx:
        first = tx.jobs.record_source_key(job.id, key)
    with db.transaction() as tx:
        again = tx.jobs.record_source_key(job.id, key)
    assert again == first
    assert [e["type"] for e in events(raw, job.id)] == ["created", "source_attached"]


def test_storage_keys_error_paths(db, raw):
    job = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    for method, kind in (
        ("record_source_key", "sources/{}/source.mp4"),
        ("add_result_key", "results/{}/clip.mp4"),
    ):
        missing = uuid.uuid4()
        with pytest.raises(errors.JobNotFound), db.transaction() as tx:
            getattr(tx.jobs, method)(missing, kind.format(missing))
        for bad in ("", None, 5, "a\x00b", "k" * 2000):
            with pytest.raises(errors.InvalidInput), db.transaction() as tx:
                getattr(tx.jobs, method)(job.id, bad)
    assert snapshot(raw) == before


# -- untyped errors become InvalidInput (issue 10, item 13) ---------------------------------------


def _nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


def test_params_nested_too_deep_are_invalid_input_and_change_nothing(db, raw):
    """2,000 levels raised RecursionError from json.dumps; a bounded depth is InvalidInput."""
    job = job_in(db, JobStatus.QUEUED)
    before = snapshot(raw)
    deep_list: list = []
    for _ in range(2_000):
        deep_list = [deep_list]
    for params in (_nested(2_000), {"list": deep_list}):
        with pytest.raises(errors.InvalidInput) as info, db.transaction() as tx:
            tx.jobs.create(params=params)
        assert info.value.field == "params"
        with pytest.raises(errors.InvalidInput), db.transaction() as tx:
            tx.jobs.update(job.id, expected_version=job.version, params=params)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.transition(job.id, JobStatus.CANCELED, data=_nested(2_000))
    assert snapshot(raw) == before
    # Ordinary nesting is still fine.
    with db.transaction() as tx:
        created = tx.jobs.create(params=_nested(30))
    assert row(raw, created.id)["params"] == _nested(30)


@pytest.mark.parametrize("lease_seconds", [10**15, 10**9, 7 * 86_400 + 1])
def test_huge_lease_seconds_are_invalid_input_and_change_nothing(db, raw, lease_seconds):
    """10**15 s raised OverflowError from timedelta; a lease longer than the cap is InvalidInput."""
    queued = job_in(db, JobStatus.QUEUED)
    processing = job_in(db, JobStatus.PROCESSING)
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput) as info, db.transaction() as tx:
        tx.jobs.claim_next(lease_seconds=lease_seconds)
    assert info.value.field == "lease_seconds"
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.transition(queued.id, JobStatus.PROCESSING, lease_seconds=lease_seconds)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.jobs.renew_lease(processing.id, lease_seconds=lease_seconds)
    assert snapshot(raw) == before
    with db.transaction() as tx:
        renewed = tx.jobs.renew_lease(processing.id, lease_seconds=7 * 86_400)
    stored = row(raw, renewed.id)
    assert stored["lease_expires_at"] - stored["updated_at"] == timedelta(days=7)
