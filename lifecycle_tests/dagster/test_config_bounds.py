"""Config bounds: an out-of-range value fails the run before the op does anything (issue 10, item 13).

Dagster's config schema has no numeric ranges, so the Launchpad accepts any integer; the op's
pydantic ``Config`` rejects it when the step starts, naming the field, before any work.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import psycopg
import pytest

from lifecycle import errors
from lifecycle.db import Database
from lifecycle.retention import reconcile_orphans
from lifecycle.storage import StorageRepo, source_key

Raw = psycopg.Connection[tuple[Any, ...]]


def _step_failure(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_node_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error  # type: ignore[union-attr]
    causes = [error] if error.cause is None else [error, error.cause]
    return "\n".join(str(e.message) for e in causes)


@pytest.mark.parametrize(
    ("job", "config", "field"),
    [
        ("reconcile_orphans", {"grace_seconds": 10**12, "dry_run": False}, "grace_seconds"),
        ("retention_cleanup", {"batch_size": 10**12}, "batch_size"),
        ("purge_job", {"reason": "x" * 1_000_000}, "reason"),
    ],
)
def test_out_of_range_config_fails_the_run_before_any_work(
    defs: dg.Definitions,
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    storage_db: Database,
    storage: StorageRepo,
    raw: Raw,
    job: str,
    config: dict[str, Any],
    field: str,
) -> None:
    orphan = source_key("11111111-1111-4111-8111-111111111111", "mp4")
    storage.upload(orphan, b"x", "video/mp4")
    with storage_db.transaction() as tx:
        expired = tx.jobs.create(params={}, expires_at=datetime(2000, 1, 1, tzinfo=UTC))
    if job == "purge_job":
        config = {**config, "job_id": str(expired.id)}
    result = defs.resolve_job_def(job).execute_in_process(
        resources=resources,
        run_config={"ops": {f"{job}_op": {"config": config}}},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    message = _step_failure(result)
    assert field in message
    assert "OverflowError" not in message
    # Nothing was queued or deleted.
    assert raw.execute("SELECT count(*) FROM jobs WHERE id = %s", (expired.id,)).fetchone() == (1,)
    assert raw.execute("SELECT count(*) FROM storage_deletions").fetchone() == (0,)
    assert raw.execute("SELECT count(*) FROM job_deletions").fetchone() == (0,)
    assert storage.download(orphan) == b"x"  # nothing was removed either


def test_reconcile_orphans_refuses_a_grace_beyond_the_bound(
    storage_db: Database, storage: StorageRepo, raw: Raw
) -> None:
    """The function checks too (OverflowError from ``now - timedelta`` before)."""
    orphan = source_key("11111111-1111-4111-8111-111111111111", "mp4")
    storage.upload(orphan, b"x", "video/mp4")
    for grace in (10**12, -1):
        with pytest.raises(errors.InvalidInput) as info:
            reconcile_orphans(storage_db, storage, dry_run=False, grace_seconds=grace)
        assert info.value.field == "grace_seconds"
    assert raw.execute("SELECT count(*) FROM storage_deletions").fetchone() == (0,)
    assert storage.download(orphan) == b"x"
