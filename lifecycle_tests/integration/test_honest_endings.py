"""Honest endings: a run that leaves work undone says so (exit status 1, one line on stderr), counts
objects and not attempts, and a run asked for nonsense is refused before it writes anything.

The CLI runs in process (click's runner) against this test's database and bucket; outcomes are
read through ``raw`` and the bucket's listing.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result

from lifecycle import errors, status_counts
from lifecycle.cli import main
from lifecycle.retention import cleanup, drain_outbox, plan_drain, purge
from lifecycle.storage import ObjectKind, result_key
from lifecycle_tests.integration.test_retention_support import (
    QUEUED_KEYS,
    cli_env,
    count,
    insert_jobs,
    keys_of,
    snapshot,
)

#: Past every backoff: "the next run, later".
LATER = timedelta(hours=3)


def listed(storage) -> set[str]:
    return {obj.key for kind in ObjectKind for obj in storage.iter_keys(kind)}


def run_cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["cleanup", *args], env=env)


def table_value(output: str, name: str) -> int:
    """A number from the report table the CLI prints (``│ name │ value │``)."""
    match = re.search(rf"{re.escape(name)}\s*│\s*(\d+)", output)
    assert match, f"{name} not in:\n{output}"
    return int(match.group(1))


def last_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.output
    return lines[-1]


def plant(raw, storage, *, expired: int, live: int = 2):
    old = insert_jobs(raw, expired)
    new = insert_jobs(raw, live, expires_in_seconds=86_400)
    for key in keys_of(old + new):
        storage.upload(key, b"x", "video/mp4")
    return old, new


def failed_keys(raw) -> int:
    return count(
        raw,
        "SELECT coalesce(sum(coalesce(cardinality(object_keys), 1)), 0) FROM storage_deletions "
        "WHERE attempts > 0",
    )


# -- work left means exit status 1 -----------------------------------------------------------------


def test_storage_down_exits_1_with_one_line_and_counts_each_object_once(
    database_url, db, raw, storage, storage_settings, storage_server
):
    old, new = plant(raw, storage, expired=10)
    storage_server.set_faults(remove_error_rate=1.0)
    env = cli_env(database_url, storage_settings)

    result = run_cli(env)

    assert result.exit_code == 1, result.output
    assert table_value(result.stdout, "objects_failed") == 20
    assert table_value(result.stdout, "outbox_pending") == 20
    line = last_line(result)
    assert line.startswith("work left: 20 object(s) still queued for removal (20 failed)"), line
    assert "Traceback" not in result.output
    assert failed_keys(raw) == 20
    assert listed(storage) == set(keys_of(old + new))

    # A key queued twice (a chunk row and a single-key row) is one object that failed, not two.
    raw.execute("INSERT INTO storage_deletions (object_key) VALUES (%s)", [keys_of(old)[0]])
    again = drain_outbox(db, storage, now=datetime.now(UTC) + LATER)
    assert again.objects_failed == 20
    assert again.pending == 21  # keys, as rows hold them
    assert (
        again.work_left()
        == "21 object(s) still queued for removal (21 failed); stopped by storage_unavailable"
    )

    storage_server.clear_faults()
    done = run_cli(env, "--drain-only")
    assert done.exit_code == 1  # the failed keys back off: not due yet, still work left
    finished = drain_outbox(db, storage, now=datetime.now(UTC) + 2 * LATER)
    assert (finished.pending, finished.work_left()) == (0, None)
    assert listed(storage) == set(keys_of(new))


def test_storage_down_defers_every_due_row_so_no_run_retries_at_once(db, raw, storage, storage_server):
    """A drain that stops because Storage is down leaves nothing due now: the rows it never tried wait
    as long as the ones that failed, so the sensor does not launch a failing drain every tick."""
    plant(raw, storage, expired=10, live=0)
    storage_server.set_faults(remove_error_rate=1.0)

    # Two keys a claim: three failed calls stop the drain with most rows never tried.
    report = cleanup(db, storage, batch_size=1, max_objects_per_second=2)

    assert report.stopped_by == "storage_unavailable"
    assert 0 < failed_keys(raw) < 20
    assert count(raw, "SELECT count(*) FROM storage_deletions WHERE next_attempt_at <= now()") == 0
    assert not status_counts.outbox_due(db)
    storage_server.clear_faults()
    finished = drain_outbox(db, storage, now=datetime.now(UTC) + LATER)
    assert (finished.pending, finished.work_left()) == (0, None)
    assert listed(storage) == set()


def test_half_the_removes_failing_exits_1_and_counts_distinct_objects(
    database_url, raw, storage, storage_settings, storage_server
):
    plant(raw, storage, expired=30)
    # The CLI's client tries each call 3 times: 0.8 ** 3, about half the calls fail for good.
    storage_server.set_faults(remove_error_rate=0.8, seed=3)

    # Batches of 5 jobs queue rows of 5 keys: a dozen remove calls, some fail and some do not.
    result = run_cli(
        cli_env(database_url, storage_settings), "--batch-size", "5", "--max-objects-per-second", "20"
    )

    assert result.exit_code == 1, result.output
    removed = table_value(result.stdout, "objects_removed")
    failed = table_value(result.stdout, "objects_failed")
    pending = table_value(result.stdout, "outbox_pending")
    assert removed > 0
    assert failed > 0
    assert failed == failed_keys(raw)
    assert pending == count(raw, QUEUED_KEYS) == 60 - removed - table_value(result.stdout, "objects_absent")
    assert last_line(result).startswith(
        f"work left: {pending} object(s) still queued for removal ({failed} failed"
    )


def test_a_limit_that_leaves_expired_jobs_exits_1(database_url, raw, storage, storage_settings):
    plant(raw, storage, expired=5, live=0)
    result = run_cli(cli_env(database_url, storage_settings), "--max-jobs", "2")
    assert result.exit_code == 1, result.output
    assert last_line(result) == "work left: 3 expired job(s) not deleted; stopped by max_jobs"
    assert count(raw, "SELECT count(*) FROM jobs") == 3
    assert count(raw, QUEUED_KEYS) == 0  # what it did delete, it finished


def test_a_run_that_finishes_everything_exits_0(database_url, raw, storage, storage_settings):
    _, new = plant(raw, storage, expired=4)
    result = run_cli(cli_env(database_url, storage_settings))
    assert result.exit_code == 0, result.output
    assert "work left" not in result.stderr
    assert listed(storage) == set(keys_of(new))


def test_cleanup_help_documents_exit_codes_bounds_and_defaults() -> None:
    result = CliRunner().invoke(main, ["cleanup", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "0 all done" in text
    assert "1 work left undone" in text
    assert "2 error" in text
    assert "1-10000" in text
    assert "[default: CLEANUP_BATCH_SIZE, 1000]" in text


# -- a drain's dry run writes nothing ---------------------------------------------------------------


def test_drain_only_dry_run_writes_nothing_and_says_what_a_drain_would_do(
    database_url, db, raw, storage, storage_settings
):
    plant(raw, storage, expired=3, live=0)
    cleanup(db, None)  # 6 keys queued as chunk rows
    failed = result_key(uuid.uuid4(), "mp4")
    storage.upload(failed, b"x", "video/mp4")
    raw.execute(
        "INSERT INTO storage_deletions (object_key, attempts, last_error, next_attempt_at) "
        "VALUES (%s, 4, 'boom', now() + interval '1 hour')",
        [failed],
    )
    # A key a live drain is removing right now: a session holds its claim lock.
    claimed = result_key(uuid.uuid4(), "mp4")
    storage.upload(claimed, b"x", "video/mp4")
    raw.execute("SELECT pg_advisory_lock(1818458467, 4242)")
    raw.execute("INSERT INTO storage_deletions (object_key, claimed_by) VALUES (%s, 4242)", [claimed])
    tables, objects = snapshot(raw), listed(storage)

    result = run_cli(cli_env(database_url, storage_settings), "--drain-only", "--dry-run")

    assert result.exit_code == 0, result.output
    assert snapshot(raw) == tables
    assert listed(storage) == objects
    out = result.stdout
    assert table_value(out, "objects queued") == 8
    assert table_value(out, "due now (a drain would take them)") == 6
    assert table_value(out, "claimed by a live run (being removed)") == 1
    assert table_value(out, "failed before (still queued)") == 1
    assert table_value(out, "most attempts of one key") == 4
    assert "oldest age s" in out

    plan = plan_drain(db)
    assert (plan.queued, plan.due, plan.claimed_by_live_run, plan.failed_before) == (8, 6, 1, 1)
    assert plan.oldest_age_seconds is not None
    assert plan.oldest_age_seconds >= 0
    raw.execute("SELECT pg_advisory_unlock(1818458467, 4242)")


# -- bad arguments change nothing -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_objects_per_second": math.inf},
        {"max_objects_per_second": math.nan},
        {"max_jobs_per_second": -1.0},
        {"max_runtime_seconds": math.inf},
        {"batch_size": 0},
        {"batch_size": 10_001},
        {"batch_size": 10**12},
        {"batch_size": True},
        {"batch_size": 2.5},
        {"max_jobs": 0},
        {"now": datetime.now()},
        {"now": "2026-01-01"},
        {"run_id": "r" * 201},
    ],
)
def test_cleanup_refuses_bad_arguments_before_writing_anything(db, raw, storage, kwargs) -> None:
    plant(raw, storage, expired=3)
    tables, objects = snapshot(raw), listed(storage)
    with pytest.raises(errors.InvalidInput) as info:
        cleanup(db, storage, **kwargs)
    assert info.value.field is not None
    assert snapshot(raw) == tables
    assert listed(storage) == objects


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_objects_per_second": math.inf},
        {"max_runtime_seconds": 0},
        {"now": datetime.now()},
    ],
)
def test_drain_refuses_bad_arguments_before_writing_anything(db, raw, storage, kwargs) -> None:
    plant(raw, storage, expired=2)
    cleanup(db, None)
    tables, objects = snapshot(raw), listed(storage)
    with pytest.raises(errors.InvalidInput):
        drain_outbox(db, storage, **kwargs)
    assert snapshot(raw) == tables
    assert listed(storage) == objects


@pytest.mark.parametrize("reason", ["x" * 1_000_000, "", None, 42])
def test_purge_refuses_a_bad_reason_at_once_and_writes_nothing(db, raw, storage, reason) -> None:
    [job] = insert_jobs(raw, 1, expires_in_seconds=86_400)
    tables = snapshot(raw)
    with pytest.raises(errors.InvalidInput) as info:
        purge(db, storage, [job], reason=reason)  # type: ignore[arg-type]
    assert info.value.field == "reason"
    assert snapshot(raw) == tables


@pytest.mark.parametrize(
    "args",
    [
        ["--batch-size", "10001"],
        ["--batch-size", "0"],
        ["--max-objects-per-second", "inf"],
        ["--max-objects-per-second", "nan"],
        ["--max-jobs-per-second", "0"],
        ["--max-runtime-seconds", "inf"],
        ["--run-id", "r" * 201],
    ],
)
def test_cli_refuses_bad_options_with_one_line_and_writes_nothing(
    database_url, raw, storage, storage_settings, args
) -> None:
    plant(raw, storage, expired=3)
    tables, objects = snapshot(raw), listed(storage)
    result = run_cli(cli_env(database_url, storage_settings), *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert snapshot(raw) == tables
    assert listed(storage) == objects
