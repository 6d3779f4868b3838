"""Metrics after a scripted workload through the repositories: exact counts per operation and
outcome, errors counted by class, bounded labels, and ``lifecycle metrics`` reading the gauges."""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from lifecycle import errors, metrics
from lifecycle.cli import main
from lifecycle.db import Database
from lifecycle.states import JobStatus

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _counts(before: dict[str, float]) -> dict[tuple[str, str, str], float]:
    """(repo, operation, outcome) -> operations observed since ``before``."""
    found: dict[tuple[str, str, str], float] = {}
    for key, value in metrics.since(before).items():
        name, _, labels = key.partition("[")
        if name != "lifecycle_repo_operation_seconds_count":
            continue
        parts = dict(p.split("=", 1) for p in labels.rstrip("]").split(","))
        found[(parts["repo"], parts["operation"], parts["outcome"])] = value
    return found


def _errors(before: dict[str, float]) -> dict[tuple[str, str, str], float]:
    found: dict[tuple[str, str, str], float] = {}
    for key, value in metrics.since(before).items():
        name, _, labels = key.partition("[")
        if name == "lifecycle_repo_errors_total":
            parts = dict(p.split("=", 1) for p in labels.rstrip("]").split(","))
            found[(parts["repo"], parts["operation"], parts["error"])] = value
    return found


def test_workload_counts_per_operation_and_outcome(db: Database) -> None:
    before = metrics.snapshot()

    with db.transaction() as tx:
        jobs = [tx.jobs.create(params={"n": i}) for i in range(3)]
        tx.jobs.get(jobs[0].id)
        tx.jobs.get(jobs[1].id)
        tx.jobs.transition(jobs[0].id, JobStatus.PROCESSING)
        tx.jobs.transition(jobs[0].id, JobStatus.SUCCEEDED)
        tx.events.add(jobs[1].id, "note", data={"k": "v"})
        tx.events.list(jobs[1].id)
        tx.jobs.list_by_status(JobStatus.QUEUED, limit=10)
        _, plaintext = tx.api_keys.create("workload")
        tx.api_keys.verify(plaintext)

    # Induced errors, each in its own (rolled back) transaction.
    with pytest.raises(errors.InvalidTransition), db.transaction() as tx:
        tx.jobs.transition(jobs[1].id, JobStatus.SUCCEEDED)
    with pytest.raises(errors.JobNotFound), db.transaction() as tx:
        tx.jobs.get(uuid.uuid4())
    with pytest.raises(errors.InvalidApiKey), db.transaction() as tx:
        tx.api_keys.verify("lk_0123456789abcdef_" + "x" * 43)

    counts = _counts(before)
    assert counts == {
        ("jobs", "create", "ok"): 3,
        ("jobs", "get", "ok"): 2,
        ("jobs", "get", "error"): 1,
        ("jobs", "transition", "ok"): 2,
        ("jobs", "transition", "error"): 1,
        ("jobs", "list_by_status", "ok"): 1,
        ("events", "add", "ok"): 1,
        ("events", "list", "ok"): 1,
        ("api_keys", "create", "ok"): 1,
        ("api_keys", "verify", "ok"): 1,
        ("api_keys", "verify", "error"): 1,
    }
    assert _errors(before) == {
        ("jobs", "transition", "InvalidTransition"): 1,
        ("jobs", "get", "JobNotFound"): 1,
        ("api_keys", "verify", "InvalidApiKey"): 1,
    }
    # The histogram observed real durations.
    delta = metrics.since(before)
    assert delta["lifecycle_repo_operation_seconds_sum[operation=create,outcome=ok,repo=jobs]"] > 0


def test_database_error_is_counted_with_its_class(db: Database, raw: psycopg.Connection[Any]) -> None:
    """A driver-level failure (here a statement timeout) is counted under the translated class."""
    with db.transaction() as tx:
        job = tx.jobs.create(params={})
    before = metrics.snapshot()
    raw.execute("BEGIN")
    raw.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job.id,))

    def cancel_with_short_lock_timeout() -> None:
        with db.transaction() as tx:
            tx.connection.execute("SET LOCAL lock_timeout = '50ms'")
            tx.jobs.transition(job.id, JobStatus.CANCELED)

    try:
        with pytest.raises(errors.QueryTimeout):
            cancel_with_short_lock_timeout()
    finally:
        raw.execute("ROLLBACK")
    assert _errors(before) == {("jobs", "transition", "QueryTimeout"): 1}
    assert _counts(before) == {("jobs", "transition", "error"): 1}


def test_labels_are_bounded(db: Database) -> None:
    with db.transaction() as tx:
        job = tx.jobs.create(params={"url": "https://example.test/a"})
        tx.jobs.get(job.id)
    with pytest.raises(errors.JobNotFound), db.transaction() as tx:
        tx.jobs.get(uuid.uuid4())
    text = metrics.exposition()
    assert not _UUID.search(text), "a job id became a label value"
    assert "https://" not in text
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        assert set(labels) <= {"repo", "operation", "outcome", "error", "kind", "status", "le"}, line


def test_cli_metrics_prints_status_gauges(
    database_url: str, db: Database, raw: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.transaction() as tx:
        for _ in range(2):
            tx.jobs.create(params={})
        done = tx.jobs.create(params={})
        tx.jobs.transition(done.id, JobStatus.CANCELED)
    monkeypatch.delenv("PROMETHEUS_PUSHGATEWAY_URL", raising=False)
    result = CliRunner().invoke(main, ["metrics"], env={"DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    queued = raw.execute("SELECT count(*) FROM jobs WHERE status = 'queued'").fetchone()
    assert queued is not None
    assert f'lifecycle_jobs{{status="queued"}} {float(queued[0])}' in result.stdout
    assert 'lifecycle_jobs{status="canceled"} 1.0' in result.stdout
    assert "lifecycle_expired_backlog 0.0" in result.stdout
    assert "lifecycle_storage_deletions_outbox 0.0" in result.stdout
    assert "# TYPE lifecycle_repo_operation_seconds histogram" in result.stdout


def test_retention_operations_are_timed_and_count_what_they_delete(db: Database) -> None:
    from datetime import UTC, datetime, timedelta

    from lifecycle import retention

    with db.transaction() as tx:
        for _ in range(2):
            job = tx.jobs.create(params={}, expires_at=datetime.now(UTC) - timedelta(days=1))
            tx.events.add(job.id, "note")
    before = metrics.snapshot()
    retention.cleanup(db, None, dry_run=True)
    report = retention.cleanup(db, None)
    with pytest.raises(errors.JobNotFound):
        retention.purge(db, None, [uuid.uuid4()])

    assert report.jobs_deleted == 2
    counts = _counts(before)
    assert counts[("retention", "cleanup", "ok")] == 2
    assert counts[("retention", "purge", "error")] == 1
    assert _errors(before)[("retention", "purge", "JobNotFound")] == 1
    delta = metrics.since(before)
    assert delta["lifecycle_retention_deleted_total[kind=jobs]"] == 2
    # Two "created" events and two notes went with their jobs.
    assert delta["lifecycle_retention_deleted_total[kind=events]"] == 4
