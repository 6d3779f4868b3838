"""Migrations: upgrade, downgrade and upgrade again are clean, and the result equals the metadata."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from lifecycle.db import migrate
from lifecycle.db.engine import libpq_url, sqlalchemy_url
from lifecycle.db.tables import ALL_TABLES


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade_is_clean_and_has_no_drift(empty_database_url: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(empty_database_url), poolclass=sa.NullPool)
    try:
        assert migrate.current_revision(engine) is None
        assert migrate.upgrade(engine) == migrate.head_revision()
        assert _tables(empty_database_url) == {t.name for t in ALL_TABLES}
        assert migrate.drift(engine) == []

        assert migrate.downgrade(engine, "base") is None
        assert _tables(empty_database_url) == set()
        with psycopg.connect(libpq_url(empty_database_url)) as conn:
            leftover = conn.execute(
                "SELECT proname FROM pg_proc WHERE proname = 'lifecycle_guard_status_transition'"
            ).fetchall()
        assert leftover == []

        assert migrate.upgrade(engine) == migrate.head_revision()
        assert migrate.drift(engine) == []
    finally:
        engine.dispose()


def test_drift_is_detected(empty_database_url: str) -> None:
    """The drift check can fail: a column added behind Alembic's back shows up."""
    engine = sa.create_engine(sqlalchemy_url(empty_database_url), poolclass=sa.NullPool)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN rogue integer"))
        diffs = migrate.drift(engine)
        assert any("rogue" in str(d) for d in diffs)
    finally:
        engine.dispose()


def test_cli_migrate_and_check(empty_database_url: str, monkeypatch: object) -> None:
    from click.testing import CliRunner

    from lifecycle.cli import main

    env = {"DATABASE_URL": empty_database_url}
    runner = CliRunner()
    result = runner.invoke(main, ["migrate", "--check"], env=env)
    assert result.exit_code == 1, result.output
    result = runner.invoke(main, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert "-> 0001" in result.output
    result = runner.invoke(main, ["migrate", "--check"], env=env)
    assert result.exit_code == 0, result.output
    assert "no drift" in result.output
