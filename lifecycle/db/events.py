"""``JobEventsRepo``: what happened to a job, in order.

Status changes write their own events (``JobsRepo``, in the same statement); ``add`` is for
everything else (notes, progress, storage actions). Events written inside a transaction carry its
``run_id``.
"""

# The f-strings that build SQL here join module constants (column lists, fixed fragments) only;
# every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa

from lifecycle import errors
from lifecycle.db._common import (
    as_uuid,
    check_limit,
    check_text,
    decode_cursor,
    dump_json,
    encode_cursor,
    fetch_all,
    fetch_one,
    operation,
)
from lifecycle.records import JobEvent, Page
from lifecycle.states import JobStatus

#: Largest page of ``list``/``page``.
MAX_PAGE: Final = 10_000
#: Largest event ``data`` (JSON bytes).
MAX_DATA_BYTES: Final = 64 * 1024

_COLUMNS = "id, job_id, ts, type, from_status, to_status, data, run_id"

_ADD = f"""
INSERT INTO job_events (job_id, type, data, run_id)
VALUES (%(job_id)s, %(type)s, CAST(%(data)s AS jsonb), %(run_id)s)
RETURNING {_COLUMNS}
"""
_LIST_FIRST = f"""
SELECT {_COLUMNS} FROM job_events WHERE job_id = %(job_id)s
ORDER BY ts, id LIMIT %(limit)s
"""
_LIST_AFTER = f"""
SELECT {_COLUMNS} FROM job_events
WHERE job_id = %(job_id)s AND (ts, id) > (%(after_ts)s, %(after_id)s)
ORDER BY ts, id LIMIT %(limit)s
"""


_STATUS_BY_VALUE: Final = {status.value: status for status in JobStatus}


def event_from_row(row: Sequence[Any]) -> JobEvent:
    """A ``JobEvent`` from a row selected with the repository's column list (positional: see jobs)."""
    from_status, to_status = row[4], row[5]
    return JobEvent(
        row[0],
        row[1],
        row[2],
        row[3],
        None if from_status is None else _STATUS_BY_VALUE[from_status],
        None if to_status is None else _STATUS_BY_VALUE[to_status],
        row[6],
        row[7],
    )


class JobEventsRepo:
    """Events of jobs: append and read in ``(ts, id)`` order."""

    def __init__(self, connection: sa.Connection, *, run_id: str | None = None) -> None:
        self.connection = connection
        self.run_id = run_id

    def add(self, job_id: UUID | str, type: str, data: Mapping[str, Any] | None = None) -> JobEvent:
        """Append an event of ``type`` to a job; ``JobNotFound`` if the job does not exist."""
        job_uuid = as_uuid(job_id, "job_id")
        with operation("events", "add", job_uuid):
            check_text(type, "type", max_length=200)
            payload = dump_json(data, "data", max_bytes=MAX_DATA_BYTES)
            row = fetch_one(
                self.connection,
                _ADD,
                {"job_id": job_uuid, "type": type, "data": payload, "run_id": self.run_id},
                job_id=job_uuid,
            )
            if row is None:  # an INSERT ... RETURNING always returns its row
                raise errors.LifecycleError("event was not written")
            return event_from_row(row)

    def page(self, job_id: UUID | str, limit: int = 100, after: str | None = None) -> Page[JobEvent]:
        """One page of a job's events, oldest first; pass ``next_cursor`` as ``after`` for the next."""
        job_uuid = as_uuid(job_id, "job_id")
        with operation("events", "page", job_uuid):
            return self._page(job_uuid, limit, after)

    def list(
        self, job_id: UUID | str, limit: int | None = None, after: str | None = None
    ) -> builtins.list[JobEvent]:
        """A job's events, oldest first: all of them, or the first ``limit`` (after ``after``).

        An unknown job has none. ``page`` gives the same events one page at a time.
        """
        job_uuid = as_uuid(job_id, "job_id")
        with operation("events", "list", job_uuid):
            if limit is not None:
                return builtins.list(self._page(job_uuid, limit, after).items)
            events: builtins.list[JobEvent] = []
            cursor = after
            while True:
                page = self._page(job_uuid, MAX_PAGE, cursor)
                events.extend(page.items)
                if page.next_cursor is None:
                    return events
                cursor = page.next_cursor

    def _page(self, job_uuid: UUID, limit: int, after: str | None) -> Page[JobEvent]:
        check_limit(limit, maximum=MAX_PAGE)
        values: dict[str, Any] = {"job_id": job_uuid, "limit": limit + 1}
        statement = _LIST_FIRST
        if after is not None:
            after_ts, after_id = decode_cursor(after)
            if not after_id.isdigit() or len(after_id) > 19:
                raise errors.InvalidInput("invalid cursor", field="after")
            values.update(after_ts=after_ts, after_id=int(after_id))
            statement = _LIST_AFTER
        rows = fetch_all(self.connection, statement, values, job_id=job_uuid)
        more = len(rows) > limit
        items = [event_from_row(r) for r in (rows[:limit] if more else rows)]
        cursor = encode_cursor(items[-1].ts, items[-1].id) if more else None
        return Page(items=items, next_cursor=cursor)
