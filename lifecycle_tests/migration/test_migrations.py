"""Migrations: upgrade, downgrade and upgrade again are clean, and the result equals the metadata."""

from __future__ import annotations

import psycopg
import pytest

from lifecycle.db import migrate
from lifecycle.db.engine import libpq_url
from lifecycle.db.tables import ALL_TABLES


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade_is_clean_and_has_no_drift(empty_database_url: str) -> None:
    url = empty_database_url
    assert migrate.current_revision(url) is None
    assert migrate.upgrade(url) == migrate.head_revision()
    assert _tables(url) == {t.name for t in ALL_TABLES}
    assert migrate.drift(url) == []

    assert migrate.downgrade(url, "base") is None
    assert _tables(url) == set()
    with psycopg.connect(libpq_url(url)) as conn:
        leftover = conn.execute(
            "SELECT proname FROM pg_proc WHERE proname = 'lifecycle_guard_status_transition'"
        ).fetchall()
    assert leftover == []

    assert migrate.upgrade(url) == migrate.head_revision()
    assert migrate.drift(url) == []


def test_drift_is_detected(empty_database_url: str) -> None:
    """The drift check can fail: a column added behind Alembic's back shows up."""
    migrate.upgrade(empty_database_url)
    with psycopg.connect(libpq_url(empty_database_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE jobs ADD COLUMN rogue integer")
    diffs = migrate.drift(empty_database_url)
    assert any("rogue" in str(d) for d in diffs)


def test_cli_migrate_and_check(empty_database_url: str, monkeypatch: object) -> None:
    from click.testing import CliRunner

    from lifecycle.cli import main

    env = {"DATABASE_URL": empty_database_url}
    runner = CliRunner()
    result = runner.invoke(main, ["migrate", "--check"], env=env)
    assert result.exit_code == 1, result.output
    result = runner.invoke(main, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert "-> 0002" in result.output
    result = runner.invoke(main, ["migrate", "--check"], env=env)
    assert result.exit_code == 0, result.output
    assert "no drift" in result.output


def test_0002_drops_keys_that_are_not_the_rows_own(empty_database_url: str) -> None:
    """Keys recorded before the constraints existed: a foreign or malformed key is dropped from its
    row (with a ``key_dropped`` event), the row's own keys stay, and the constraints then hold."""
    a, b = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
    own_source, own_result = f"sources/{a}/source.mp4", f"results/{a}/clip.mp4"
    url = empty_database_url
    migrate.upgrade(url, "0001")
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, source_key, result_keys, expires_at) VALUES "
            "(%(a)s, %(own_source)s, ARRAY[%(own_result)s, 'results/*'], now()), "
            "(%(b)s, '../../etc/passwd', ARRAY[%(own_result)s], now())",
            {"a": a, "b": b, "own_source": own_source, "own_result": own_result},
        )
    assert migrate.upgrade(url) == "0002"
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = {
            str(job_id): (source_key, list(result_keys))
            for job_id, source_key, result_keys in conn.execute(
                "SELECT id, source_key, result_keys FROM jobs"
            )
        }
        dropped = sorted(
            (str(job_id), key)
            for job_id, key in conn.execute(
                "SELECT job_id, data->>'key' AS key FROM job_events WHERE type = 'key_dropped'"
            )
        )
        assert rows == {a: (own_source, [own_result]), b: (None, [])}
        assert dropped == sorted([(a, "results/*"), (b, "../../etc/passwd"), (b, own_result)])
        with pytest.raises(psycopg.errors.CheckViolation, match="ck_jobs_keys_owner"):
            conn.execute("UPDATE jobs SET source_key = %s WHERE id = %s", (own_source, b))
