"""Demo data: jobs in every status, with their events, a share already past retention.

Everything goes through the repositories (``create``, ``transition_many``, ``update``), so the rows
and events look exactly like production ones. Work is done in chunks of ``CHUNK`` jobs, one
transaction each, with set-based transitions: 1,000 jobs take about a second.
"""

from __future__ import annotations

import importlib
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from lifecycle import errors
from lifecycle.states import JobStatus

if TYPE_CHECKING:
    from lifecycle.db import Database

#: Jobs seeded per transaction.
CHUNK: Final = 1000

#: Share of jobs per final status of the seed (the rest of ``processing`` keeps its lease).
STATUS_SHARES: Final[dict[JobStatus, float]] = {
    JobStatus.QUEUED: 0.20,
    JobStatus.PROCESSING: 0.10,
    JobStatus.SUCCEEDED: 0.40,
    JobStatus.FAILED: 0.15,
    JobStatus.CANCELED: 0.15,
}

_FORMATS = ("mp4", "webm", "mov")
_ERRORS = ("ffmpeg exited with status 1", "source is not a video", "clip is past the end of the source")


@dataclass
class SeedSummary:
    """What ``seed`` created."""

    jobs: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    expired: int = 0
    events: int = 0
    objects: int = 0
    job_ids: list[UUID] = field(default_factory=list)


def _params(rng: random.Random, index: int) -> dict[str, Any]:
    fmt = rng.choice(_FORMATS)
    return {
        "source": f"upload-{index:06d}.{fmt}",
        "clip": {"start": rng.randint(0, 600), "duration": rng.choice([5, 10, 15, 30, 60])},
        "format": "mp4" if rng.random() < 0.8 else "webm",
        "resolution": rng.choice(["480p", "720p", "1080p"]),
    }


def _split(n: int) -> dict[JobStatus, int]:
    """``n`` jobs shared out by ``STATUS_SHARES`` (rounding leftovers go to ``queued``)."""
    counts = {status: int(n * share) for status, share in STATUS_SHARES.items()}
    counts[JobStatus.QUEUED] += n - sum(counts.values())
    return counts


def seed(
    db: Database,
    *,
    n_jobs: int,
    expired_fraction: float,
    seed: int | None = None,
    storage: Any = None,
) -> SeedSummary:
    """Create ``n_jobs`` demo jobs in every status; ``expired_fraction`` of them already expired.

    Processing jobs hold a lease and are never made expired (cleanup skips them anyway). With
    ``storage`` (a ``lifecycle.storage.StorageRepo``), each job also gets a small source object and
    each succeeded job a result, through ``lifecycle.artifacts``.
    """
    if n_jobs < 0:
        raise errors.InvalidInput("n_jobs must not be negative", field="n_jobs")
    if not 0.0 <= expired_fraction <= 1.0:
        raise errors.InvalidInput("expired_fraction must be between 0 and 1", field="expired_fraction")
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    summary = SeedSummary()
    final: dict[UUID, JobStatus] = {}
    done = 0
    while done < n_jobs:
        size = min(CHUNK, n_jobs - done)
        _seed_chunk(db, rng, size, done, expired_fraction, summary, final)
        done += size
    if storage is not None:
        summary.objects = _attach_objects(db, storage, rng, final)
    return summary


def _seed_chunk(
    db: Database,
    rng: random.Random,
    size: int,
    offset: int,
    expired_fraction: float,
    summary: SeedSummary,
    final: dict[UUID, JobStatus],
) -> None:
    counts = _split(size)
    run_id = "seed"
    with db.transaction(run_id=run_id) as tx:
        created = [tx.jobs.create(params=_params(rng, offset + i)) for i in range(size)]
        ids = [job.id for job in created]
        # Every job starts queued at version 1; each transition adds one.
        version = dict.fromkeys(ids, 1)
        status = dict.fromkeys(ids, JobStatus.QUEUED)
        summary.events += size

        def move(source: JobStatus, target: JobStatus, limit: int, **kwargs: Any) -> None:
            if limit <= 0:
                return
            moved = tx.jobs.transition_many(source, target, limit=limit, **kwargs)
            for job_id in moved:
                version[job_id] += 1
                status[job_id] = target
            summary.events += len(moved)

        canceled_early = counts[JobStatus.CANCELED] // 2
        started = size - counts[JobStatus.QUEUED] - canceled_early
        move(JobStatus.QUEUED, JobStatus.CANCELED, canceled_early, reason="canceled by the user")
        move(JobStatus.QUEUED, JobStatus.PROCESSING, started)
        move(JobStatus.PROCESSING, JobStatus.SUCCEEDED, counts[JobStatus.SUCCEEDED])
        move(
            JobStatus.PROCESSING,
            JobStatus.FAILED,
            counts[JobStatus.FAILED],
            data={"error": rng.choice(_ERRORS)},
        )
        move(
            JobStatus.PROCESSING,
            JobStatus.CANCELED,
            counts[JobStatus.CANCELED] - canceled_early,
            reason="canceled while processing",
        )

        # Expired: a share of the jobs that retention may delete (never processing ones).
        eligible = [job_id for job_id in ids if status[job_id] is not JobStatus.PROCESSING]
        n_expired = min(len(eligible), round(size * expired_fraction))
        now = datetime.now(UTC)
        for job_id in rng.sample(eligible, n_expired):
            past = now - timedelta(minutes=rng.randint(1, 7 * 24 * 60))
            tx.jobs.update(job_id, expected_version=version[job_id], expires_at=past)
        summary.expired += n_expired
        summary.jobs += size
        summary.job_ids.extend(ids)
        for job_id in ids:
            summary.by_status[status[job_id].value] += 1
        final.update(status)


def _attach_objects(db: Database, storage: Any, rng: random.Random, final: dict[UUID, JobStatus]) -> int:
    """Upload a small source for every job and a result for each succeeded one."""
    # Imported only when objects are wanted (and typed loosely: the module is built alongside).
    artifacts: Any = importlib.import_module("lifecycle.artifacts")

    objects = 0
    for job_id, status in final.items():
        payload = b"\x00\x00\x00\x18ftypmp42" + rng.randbytes(64)
        artifacts.attach_source(db, storage, job_id, payload, "mp4", "video/mp4")
        objects += 1
        if status is JobStatus.SUCCEEDED:
            artifacts.attach_result(db, storage, job_id, payload[:48], "mp4", "video/mp4")
            objects += 1
    return objects


def format_summary(summary: SeedSummary) -> str:
    """A few human-readable lines about what was seeded."""
    lines = [f"seeded {summary.jobs} jobs ({summary.events} events, {summary.expired} already expired)"]
    for status in JobStatus:
        lines.append(f"  {status.value:<11} {summary.by_status.get(status.value, 0)}")
    if summary.objects:
        lines.append(f"  objects     {summary.objects}")
    return "\n".join(lines)
