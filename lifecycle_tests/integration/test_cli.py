"""The ``lifecycle`` command at its boundary: an expected failure is one line and exit 2, never a
traceback; out-of-range options are refused before anything runs (issue 10, items 12 and 13)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from lifecycle.cli import main
from lifecycle_tests.conftest import PgServer
from lifecycle_tests.integration.test_retention_support import count, insert_jobs

Raw = psycopg.Connection[tuple[Any, ...]]


def _invoke(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=True)


def _one_line_error(result: Result) -> str:
    """The single stderr line of an expected failure (asserts there is no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _unreachable_url() -> str:
    """A URL nothing listens on (port 1 refuses at once)."""
    return "postgresql://postgres@127.0.0.1:1/postgres"


@pytest.mark.parametrize("args", [["migrate"], ["migrate", "--check"]])
def test_migrate_against_an_unreachable_database_is_one_line(args: list[str]) -> None:
    """It printed a 128-line SQLAlchemy traceback; the other commands already said one line."""
    line = _one_line_error(_invoke(args, {"DATABASE_URL": _unreachable_url()}))
    assert line.startswith("error: ")
    assert "could not be reached" in line


@pytest.mark.parametrize("args", [["migrate"], ["migrate", "--check"]])
def test_migrate_against_a_misnamed_database_is_one_line_and_creates_nothing(
    pg_server: PgServer, args: list[str]
) -> None:
    name = f"lifecycle_missing_{uuid.uuid4().hex[:12]}"
    line = _one_line_error(_invoke(args, {"DATABASE_URL": pg_server.url(name)}))
    assert line.startswith("error: ")
    with psycopg.connect(pg_server.admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)


def test_cleanup_refuses_a_batch_size_beyond_the_settings_bound(database_url: str, raw: Raw) -> None:
    """CLEANUP_BATCH_SIZE stops at 10,000; the option accepted 10**12 and ran."""
    insert_jobs(raw, 3, keys=False)
    result = _invoke(["cleanup", "--batch-size", str(10**12)], {"DATABASE_URL": database_url})
    assert result.exit_code == 2, result.output
    assert "--batch-size" in result.stderr
    assert count(raw, "SELECT count(*) FROM jobs") == 3
    assert count(raw, "SELECT count(*) FROM job_deletions") == 0


def test_reconcile_refuses_a_grace_beyond_a_year(database_url: str) -> None:
    """``--grace-seconds 10**12`` overflowed ``now - timedelta`` (OverflowError traceback)."""
    result = _invoke(["reconcile", "--grace-seconds", str(10**12)], {"DATABASE_URL": database_url})
    assert result.exit_code == 2, result.output
    assert "--grace-seconds" in result.stderr
    assert "OverflowError" not in result.output


@pytest.mark.parametrize(
    "args", [["seed", "--jobs", "3"], ["cleanup"], ["cleanup", "--drain-only", "--dry-run"], ["metrics"]]
)
def test_a_command_on_a_database_never_migrated_says_to_run_migrate(
    empty_database_url: str, args: list[str]
) -> None:
    """It said "database error (sqlstate=42P01)": nothing an operator can act on."""
    line = _one_line_error(_invoke(args, {"DATABASE_URL": empty_database_url}))
    assert "lifecycle migrate" in line, line
    with psycopg.connect(empty_database_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)


def test_migrate_check_on_a_database_never_migrated_names_no_revision_none(empty_database_url: str) -> None:
    """It said "database is at None, head is 0002"."""
    result = _invoke(["migrate", "--check"], {"DATABASE_URL": empty_database_url})
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert "None" not in line, line
    assert line.startswith("database is at base (no schema), head is "), line
    assert line.endswith("run `lifecycle migrate`")


@pytest.mark.parametrize("args", [["cleanup"], ["cleanup", "--drain-only"]])
def test_work_left_says_why_the_objects_failed(database_url: str, raw: Raw, args: list[str]) -> None:
    """With Storage down (or a key Storage rejects) the line said only "3 object(s) still queued for
    removal (3 failed)": the cause was in the outbox's last_error, nowhere in the output."""
    insert_jobs(raw, 2)
    env = {
        "DATABASE_URL": database_url,
        "SUPABASE_URL": "http://127.0.0.1:1",  # nothing listens: every remove fails
        "SUPABASE_SERVICE_ROLE_KEY": "sb_secret_cli-test-key-0123456789",
    }
    if args == ["cleanup", "--drain-only"]:
        assert _invoke(["cleanup"], env).exit_code == 1
        raw.execute("UPDATE storage_deletions SET next_attempt_at = now()")
    result = _invoke(args, env)
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("work left: 4 object(s) still queued"), last
    assert "unreachable" in last, last
    assert "cli-test-key" not in result.output
    assert count(raw, "SELECT count(*) FROM storage_deletions") > 0


@pytest.mark.parametrize(
    "args",
    [
        ["cleanup"],
        ["cleanup", "--dry-run"],
        ["cleanup", "--drain-only"],
        ["cleanup", "--drain-only", "--dry-run"],
        ["reconcile"],
        ["reconcile", "--apply"],
        ["seed", "--jobs", "5"],
        ["metrics"],
        ["migrate"],
    ],
)
def test_every_command_against_an_unreachable_database_is_one_line(args: list[str]) -> None:
    """One line, exit 2, the password never shown. A drain-only run that never reached the database
    said it had "lost the connection 4 times" after retrying as if it had one."""
    storage_key = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"
    env = {
        "DATABASE_URL": "postgresql://postgres:s3cretpw@127.0.0.1:1/postgres",
        "SUPABASE_URL": "http://127.0.0.1:1",
        "SUPABASE_SERVICE_ROLE_KEY": storage_key,
        "LOG_LEVEL": "ERROR",  # retry warnings are log lines (JSON on stderr), not the error line
    }
    result = _invoke(args, env)
    line = _one_line_error(result)
    # reconcile lists Storage before it reads the database: Storage is what it cannot reach first.
    expected = "storage server unreachable" if args[0] == "reconcile" else "could not be reached"
    assert expected in line, line
    assert "s3cretpw" not in result.output
    assert "c2lnbmF0dXJl" not in result.output
