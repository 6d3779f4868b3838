"""What the database itself enforces, independent of the Python code."""

from __future__ import annotations

import itertools
import uuid

import psycopg
import pytest

from lifecycle.states import TRANSITIONS, JobStatus, can_transition

Conn = psycopg.Connection[tuple[object, ...]]


def _insert_job(raw: Conn, status: JobStatus) -> uuid.UUID:
    job_id = uuid.uuid4()
    lease = "now() + interval '5 minutes'" if status is JobStatus.PROCESSING else "NULL"
    raw.execute(
        "INSERT INTO jobs (id, status, expires_at, lease_expires_at) "
        f"VALUES (%s, %s, now() + interval '1 day', {lease})",
        (job_id, status.value),
    )
    return job_id


def _status(raw: Conn, job_id: uuid.UUID) -> str:
    row = raw.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(
    ("from_status", "to_status"),
    [(a, b) for a, b in itertools.product(JobStatus, JobStatus) if a is not b],
    ids=lambda s: s.value,
)
def test_trigger_agrees_with_the_python_table(
    raw: Conn, from_status: JobStatus, to_status: JobStatus
) -> None:
    job_id = _insert_job(raw, from_status)
    allowed_in_python = can_transition(from_status, to_status)
    update = "UPDATE jobs SET status = %s, lease_expires_at = NULL WHERE id = %s"
    if allowed_in_python:
        raw.execute(update, (to_status.value, job_id))
    else:
        with pytest.raises(psycopg.errors.CheckViolation) as info:
            raw.execute(update, (to_status.value, job_id))
        assert info.value.diag.constraint_name == "ck_jobs_status_transition"
    assert _status(raw, job_id) == (to_status if allowed_in_python else from_status).value


def test_python_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(JobStatus)


def test_same_status_update_is_not_a_transition(raw: Conn) -> None:
    job_id = _insert_job(raw, JobStatus.SUCCEEDED)
    raw.execute("UPDATE jobs SET status = 'succeeded', error = 'x' WHERE id = %s", (job_id,))
    assert _status(raw, job_id) == "succeeded"


def test_unknown_status_is_rejected(raw: Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        raw.execute("INSERT INTO jobs (status, expires_at) VALUES ('exploded', now())")
    assert info.value.diag.constraint_name == "ck_jobs_status"
    assert raw.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_event_for_missing_job_is_rejected(raw: Conn) -> None:
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as info:
        raw.execute("INSERT INTO job_events (job_id, type) VALUES (%s, 'note')", (uuid.uuid4(),))
    assert info.value.diag.constraint_name == "fk_job_events_job_id_jobs"
    assert raw.execute("SELECT count(*) FROM job_events").fetchone() == (0,)


def test_deleting_a_job_deletes_its_events(raw: Conn) -> None:
    doomed = _insert_job(raw, JobStatus.QUEUED)
    kept = _insert_job(raw, JobStatus.QUEUED)
    for job_id in (doomed, doomed, kept):
        raw.execute("INSERT INTO job_events (job_id, type) VALUES (%s, 'note')", (job_id,))
    raw.execute("DELETE FROM jobs WHERE id = %s", (doomed,))
    assert raw.execute("SELECT job_id FROM job_events").fetchall() == [(kept,)]


def test_deleting_an_api_key_keeps_its_jobs(raw: Conn) -> None:
    key_row = raw.execute(
        "INSERT INTO api_keys (name, key_id, key_hash) VALUES ('k', 'abc', 'h') RETURNING id"
    ).fetchone()
    assert key_row is not None
    raw.execute("INSERT INTO jobs (expires_at, api_key_id) VALUES (now(), %s)", (key_row[0],))
    raw.execute("DELETE FROM api_keys")
    assert raw.execute("SELECT api_key_id FROM jobs").fetchall() == [(None,)]


def test_rls_is_enabled_on_every_table(raw: Conn) -> None:
    rows = raw.execute(
        "SELECT c.relname, c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'alembic_version'"
    ).fetchall()
    assert {name for name, _ in rows} == {
        "jobs",
        "job_events",
        "api_keys",
        "storage_deletions",
        "job_deletions",
    }
    assert all(enabled for _, enabled in rows), rows


def test_rls_hides_rows_from_a_role_without_a_policy(raw: Conn) -> None:
    """A non-owner role (like Supabase's anon/authenticated) sees nothing, even with grants."""
    _insert_job(raw, JobStatus.QUEUED)
    role = f"anon_{uuid.uuid4().hex[:8]}"
    raw.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        raw.execute(f'GRANT SELECT, INSERT ON jobs TO "{role}"')
        with raw.transaction():
            raw.execute(f'SET LOCAL ROLE "{role}"')
            assert raw.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege), raw.transaction():
                raw.execute("INSERT INTO jobs (expires_at) VALUES (now())")
            raw.execute("RESET ROLE")
    finally:
        raw.execute(f'REVOKE ALL ON jobs FROM "{role}"')
        raw.execute(f'DROP ROLE "{role}"')


def test_named_indexes_exist(raw: Conn) -> None:
    rows = raw.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall()
    defs = dict(rows)
    assert "(status, created_at, id)" in defs["idx_jobs_status_created_at"]
    assert "(expires_at)" in defs["idx_jobs_expires_at"]
    assert "(job_id, ts)" in defs["idx_job_events_job_id_ts"]


@pytest.mark.slow
def test_queries_use_the_indexes_at_100k_rows(raw: Conn) -> None:
    raw.execute(
        """
        INSERT INTO jobs (status, created_at, expires_at)
        SELECT (ARRAY['queued','processing','succeeded','failed','canceled'])[1 + g % 5],
               now() - g * interval '1 second',
               now() + (g % 1000 - 10) * interval '1 hour'
        FROM generate_series(1, 100000) AS g
        """
    )
    raw.execute("UPDATE jobs SET lease_expires_at = now() WHERE status = 'processing'")
    raw.execute("INSERT INTO job_events (job_id, type) SELECT id, 'created' FROM jobs")
    raw.execute("ANALYZE jobs")
    raw.execute("ANALYZE job_events")

    def plan(query: str, *params: object) -> str:
        rows = raw.execute("EXPLAIN " + query, params).fetchall()
        return "\n".join(str(r[0]) for r in rows)

    list_plan = plan(
        "SELECT * FROM jobs WHERE status = %s AND (created_at, id) > (now() - interval '1 day', "
        "'00000000-0000-0000-0000-000000000000'::uuid) ORDER BY created_at, id LIMIT 100",
        "queued",
    )
    assert "idx_jobs_status_created_at" in list_plan, list_plan

    expired_plan = plan(
        "SELECT id FROM jobs WHERE expires_at <= now() AND status <> 'processing' "
        "AND NOT retention_hold ORDER BY expires_at LIMIT 1000"
    )
    assert "idx_jobs_expires_at" in expired_plan, expired_plan

    events_plan = plan(
        "SELECT * FROM job_events WHERE job_id = (SELECT id FROM jobs LIMIT 1) ORDER BY ts, id LIMIT 50"
    )
    assert "idx_job_events_job_id_ts" in events_plan, events_plan


def test_constraint_names_match_the_metadata(raw: Conn) -> None:
    """The data layer maps errors by constraint name: the migrated names must be the declared ones."""
    import sqlalchemy as sa

    from lifecycle.db.tables import ALL_TABLES

    declared = set()
    for table in ALL_TABLES:
        for constraint in table.constraints:
            if isinstance(constraint, sa.CheckConstraint | sa.UniqueConstraint | sa.ForeignKeyConstraint):
                declared.add(str(constraint.name))
            elif isinstance(constraint, sa.PrimaryKeyConstraint):
                declared.add(f"pk_{table.name}")
    rows = raw.execute(
        "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE n.nspname = 'public' AND conrelid <> 'alembic_version'::regclass AND contype <> 'n'"
    ).fetchall()
    assert {r[0] for r in rows} == declared


_JOB = uuid.UUID("3f1c2a4e-9b7d-4c1e-8a2f-0d6e5b4c3a21")
_OTHER = uuid.UUID("22222222-2222-4222-8222-222222222222")
_CANDIDATE_KEYS = [
    f"{kind}/{job}/{stem}.{ext}"
    for kind, stem in (("sources", "source"), ("results", "clip"), ("results", "source"), ("sources", "clip"))
    for job in (_JOB, _OTHER, str(_JOB).upper(), "x")
    for ext in ("mp4", "webm", "MP4", "", "a" * 16, "a" * 17, "mp4/x", "mp4.mov", "*")
] + [
    "",
    "../../etc/passwd",
    "results/*",
    f"results/{_JOB}/",
    f"results/{_JOB}/clip.mp4\n",
    f"/results/{_JOB}/clip.mp4",
]


@pytest.mark.parametrize("kind", ["sources", "results"])
def test_the_database_and_the_repository_agree_on_a_jobs_own_keys(raw: Conn, kind: str) -> None:
    """Keys valid twice: the CHECK constraints' functions accept exactly what ``parse_own_key`` does."""
    from lifecycle import errors
    from lifecycle.storage.keys import ObjectKind, parse_own_key

    def python_accepts(key: str) -> bool:
        try:
            parse_own_key(key, ObjectKind(kind), _JOB)
        except errors.InvalidInput:
            return False
        return True

    query = (
        "SELECT lifecycle_owns_keys(%s, %s, '{}')"
        if kind == "sources"
        else "SELECT lifecycle_owns_keys(%s, NULL, ARRAY[%s]::text[])"
    )
    disagree = [
        key
        for key in _CANDIDATE_KEYS
        if bool(raw.execute(query, (_JOB, key)).fetchone()[0]) != python_accepts(key)  # type: ignore[index]
    ]
    assert disagree == []
    assert sum(python_accepts(k) for k in _CANDIDATE_KEYS) == 3  # .mp4, .webm and a 16-letter ext
