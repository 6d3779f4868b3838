"""The job state machine: one table, used by the repositories and mirrored by the database trigger."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from lifecycle import errors


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    #: Waiting for a worker.
    QUEUED = "queued"
    #: Claimed by a worker that holds a lease (``lease_expires_at``).
    PROCESSING = "processing"
    #: Finished with a result; final.
    SUCCEEDED = "succeeded"
    #: Finished with an error; may be retried (back to ``queued``).
    FAILED = "failed"
    #: Stopped by a user or an operator; final.
    CANCELED = "canceled"


#: Every allowed status change. Anything not listed here is an ``InvalidTransition``, in Python
#: and in the database (the trigger in the initial migration is generated from this table).
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.CANCELED}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED}
    ),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}

#: Statuses a job never leaves.
FINAL_STATUSES: frozenset[JobStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

#: Statuses whose entry starts the retention clock (``expires_at = now() + retention[status]``).
RETENTION_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
)


def can_transition(from_status: JobStatus, to_status: JobStatus) -> bool:
    """True when the state machine allows ``from_status -> to_status``."""
    return to_status in TRANSITIONS[from_status]


def allowed_sources(to_status: JobStatus) -> frozenset[JobStatus]:
    """The statuses from which ``to_status`` may be entered."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if to_status in nxt)


def parse_status(value: str) -> JobStatus:
    """``value`` as a ``JobStatus``; anything else is ``errors.InvalidInput``."""
    try:
        return JobStatus(value)
    except ValueError:
        raise errors.InvalidInput("unknown job status", field="status") from None
