"""``JobEventsRepo``: what happened to a job, in order.

Status changes write their own events (``JobsRepo``, in the same statement); ``add`` is for
everything else (notes, progress, storage actions). Events written inside a transaction carry its
``run_id``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from psycopg.rows import RowMaker

from lifecycle import errors
from lifecycle.db._common import (
    Operation,
    as_uuid,
    check_limit,
    check_text,
    decode_cursor,
    dump_json,
    encode_cursor,
)
from lifecycle.records import JobEvent, Page
from lifecycle.states import JobStatus

if TYPE_CHECKING:
    import psycopg

    from lifecycle.db._executor import Executor

#: Largest page of ``list``/``page``.
MAX_PAGE: Final = 10_000
#: Largest event ``data`` (JSON bytes).
MAX_DATA_BYTES: Final = 64 * 1024

_STATUS_BY_VALUE: Final = {status.value: status for status in JobStatus}


def _event(values: Sequence[Any]) -> JobEvent:
    """A ``JobEvent`` from a row in ``events.columns`` order."""
    from_status, to_status = values[4], values[5]
    return JobEvent(
        values[0],
        values[1],
        values[2],
        values[3],
        None if from_status is None else _STATUS_BY_VALUE[from_status],
        None if to_status is None else _STATUS_BY_VALUE[to_status],
        values[6],
        values[7],
    )


def event_row(cursor: psycopg.Cursor[Any]) -> RowMaker[JobEvent]:
    """psycopg row factory: rows selected with ``events.columns`` become ``JobEvent`` records."""
    return _event


class JobEventsRepo:
    """Events of jobs: append and read in ``(ts, id)`` order."""

    def __init__(self, executor: Executor, *, run_id: str | None = None) -> None:
        self.executor = executor
        self.run_id = run_id

    def add(self, job_id: UUID | str, type: str, data: Mapping[str, Any] | None = None) -> JobEvent:
        """Append an event of ``type`` to a job; ``JobNotFound`` if the job does not exist."""
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("events", "add", job_uuid):
            check_text(type, "type", max_length=200)
            payload = dump_json(data, "data", max_bytes=MAX_DATA_BYTES)
            event = self.executor.one(
                "events.add",
                {"job_id": job_uuid, "type": type, "data": payload, "run_id": self.run_id},
                row=event_row,
                job_id=job_uuid,
            )
            if event is None:  # an INSERT ... RETURNING always returns its row
                raise errors.LifecycleError("event was not written")
            return event

    def page(self, job_id: UUID | str, limit: int = 100, after: str | None = None) -> Page[JobEvent]:
        """One page of a job's events, oldest first; pass ``next_cursor`` as ``after`` for the next."""
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("events", "page", job_uuid):
            return self._page(job_uuid, limit, after)

    def list(
        self, job_id: UUID | str, limit: int | None = None, after: str | None = None
    ) -> builtins.list[JobEvent]:
        """A job's events, oldest first: all of them, or the first ``limit`` (after ``after``).

        An unknown job has none. ``page`` gives the same events one page at a time.
        """
        job_uuid = as_uuid(job_id, "job_id")
        with Operation("events", "list", job_uuid):
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
        statement = "events.list_first"
        if after is not None:
            after_ts, after_id = decode_cursor(after)
            if not after_id.isdigit() or len(after_id) > 19:
                raise errors.InvalidInput("invalid cursor", field="after")
            values.update(after_ts=after_ts, after_id=int(after_id))
            statement = "events.list_after"
        events = self.executor.all(statement, values, row=event_row, job_id=job_uuid)
        more = len(events) > limit
        items = events[:limit] if more else events
        cursor = encode_cursor(items[-1].ts, items[-1].id) if more else None
        return Page(items=items, next_cursor=cursor)
