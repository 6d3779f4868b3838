"""Demo data: jobs in every status, with their events, a share already past retention.

Everything goes through the repositories (``create``, ``transition``, ``update``) and, for objects,
``lifecycle.artifacts``, so the rows, events and objects look exactly like production ones. Work is
done in chunks of ``CHUNK`` jobs. Each job is moved by its own id: the jobs already in the database
(an earlier seed, real ones) are never touched. With objects, a job's source is attached while it
is queued and its result while it is processing, as a client and a worker would (attach refuses
any other state), so a chunk is committed in three steps: create, start, finish.
"""

from __future__ import annotations

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
    from lifecycle.db.unit_of_work import Transaction

#: Jobs seeded per chunk.
CHUNK: Final = 1000
#: The ``run_id`` of seeded events.
RUN_ID: Final = "seed"

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
    done = 0
    while done < n_jobs:
        size = min(CHUNK, n_jobs - done)
        _Chunk(db, rng, storage, summary).seed(size, done, expired_fraction)
        done += size
    return summary


class _Chunk:
    """One chunk of seeded jobs, moved by id through its statuses."""

    def __init__(self, db: Database, rng: random.Random, storage: Any, summary: SeedSummary) -> None:
        self.db = db
        self.rng = rng
        self.storage = storage
        self.summary = summary
        self.version: dict[UUID, int] = {}
        self.status: dict[UUID, JobStatus] = {}

    def seed(self, size: int, offset: int, expired_fraction: float) -> None:
        counts = _split(size)
        canceled_early = counts[JobStatus.CANCELED] // 2
        started = size - counts[JobStatus.QUEUED] - canceled_early
        ends = (
            [JobStatus.SUCCEEDED] * counts[JobStatus.SUCCEEDED]
            + [JobStatus.FAILED] * counts[JobStatus.FAILED]
            + [JobStatus.CANCELED] * (counts[JobStatus.CANCELED] - canceled_early)
        )
        if self.storage is None:
            # No objects: the whole chunk is one transaction.
            with self.db.transaction(run_id=RUN_ID) as tx:
                ids = self._create(tx, size, offset)
                running = self._start(tx, ids, canceled_early, started)
                self._finish(tx, ids, running, ends, expired_fraction)
        else:
            with self.db.transaction(run_id=RUN_ID) as tx:
                ids = self._create(tx, size, offset)
            self._attach(ids, "source")
            with self.db.transaction(run_id=RUN_ID) as tx:
                running = self._start(tx, ids, canceled_early, started)
            self._attach(
                [job_id for job_id, end in zip(running, ends, strict=False) if end is JobStatus.SUCCEEDED],
                "result",
            )
            with self.db.transaction(run_id=RUN_ID) as tx:
                self._finish(tx, ids, running, ends, expired_fraction)
        self.summary.jobs += size
        self.summary.job_ids.extend(ids)
        for job_id in ids:
            self.summary.by_status[self.status[job_id].value] += 1

    def _create(self, tx: Transaction, size: int, offset: int) -> list[UUID]:
        created = [tx.jobs.create(params=_params(self.rng, offset + i)) for i in range(size)]
        for job in created:
            self.version[job.id] = job.version
            self.status[job.id] = job.status
        self.summary.events += size
        return [job.id for job in created]

    def _move(self, tx: Transaction, job_id: UUID, target: JobStatus, **kwargs: Any) -> None:
        moved = tx.jobs.transition(job_id, target, expected_from=self.status[job_id], **kwargs)
        self.version[job_id] = moved.version
        self.status[job_id] = moved.status
        self.summary.events += 1

    def _start(self, tx: Transaction, ids: list[UUID], canceled_early: int, started: int) -> list[UUID]:
        """Cancel the first ``canceled_early`` jobs, start the next ``started``; the started ids."""
        for job_id in ids[:canceled_early]:
            self._move(tx, job_id, JobStatus.CANCELED, reason="canceled by the user")
        running = ids[canceled_early : canceled_early + started]
        for job_id in running:
            self._move(tx, job_id, JobStatus.PROCESSING)
        return running

    def _finish(
        self,
        tx: Transaction,
        ids: list[UUID],
        running: list[UUID],
        ends: list[JobStatus],
        expired_fraction: float,
    ) -> None:
        """End the started jobs as planned (the rest keep processing), then expire a share."""
        for job_id, end in zip(running, ends, strict=False):
            if end is JobStatus.FAILED:
                self._move(tx, job_id, end, data={"error": self.rng.choice(_ERRORS)})
            elif end is JobStatus.CANCELED:
                self._move(tx, job_id, end, reason="canceled while processing")
            else:
                self._move(tx, job_id, end)
        # Expired: a share of the jobs that retention may delete (never processing ones).
        eligible = [job_id for job_id in ids if self.status[job_id] is not JobStatus.PROCESSING]
        n_expired = min(len(eligible), round(len(ids) * expired_fraction))
        now = datetime.now(UTC)
        for job_id in self.rng.sample(eligible, n_expired):
            past = now - timedelta(minutes=self.rng.randint(1, 7 * 24 * 60))
            tx.jobs.update(job_id, expected_version=self.version[job_id], expires_at=past)
        self.summary.expired += n_expired

    def _attach(self, ids: list[UUID], what: str) -> None:
        """A small source (or result) object for each job, through ``lifecycle.artifacts``."""
        from lifecycle import artifacts  # only when objects are wanted

        for job_id in ids:
            payload = b"\x00\x00\x00\x18ftypmp42" + self.rng.randbytes(64)
            if what == "source":
                artifacts.attach_source(self.db, self.storage, job_id, payload, "mp4", "video/mp4")
            else:
                artifacts.attach_result(self.db, self.storage, job_id, payload[:48], "mp4", "video/mp4")
            self.version[job_id] += 1  # recording a new key is one more version
            self.summary.objects += 1
            self.summary.events += 1  # source_attached / result_attached


def format_summary(summary: SeedSummary) -> str:
    """A few human-readable lines about what was seeded."""
    lines = [f"seeded {summary.jobs} jobs ({summary.events} events, {summary.expired} already expired)"]
    for status in JobStatus:
        lines.append(f"  {status.value:<11} {summary.by_status.get(status.value, 0)}")
    if summary.objects:
        lines.append(f"  objects     {summary.objects}")
    return "\n".join(lines)
