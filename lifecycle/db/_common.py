"""Small pieces the repositories share: input checks, JSON, cursors, statement execution."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
import sqlalchemy.exc

from lifecycle import errors, logs, metrics
from lifecycle.db._translate import translate


def as_uuid(value: object, field: str) -> UUID:
    """``value`` as a UUID; anything else is ``InvalidInput`` (before any SQL is sent)."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str) and len(value) <= 64:
        try:
            return UUID(value)
        except ValueError:
            pass
    raise errors.InvalidInput("not a UUID", field=field)


def dump_json(value: object, field: str, *, max_bytes: int | None = None) -> str:
    """``value`` serialised for a ``jsonb`` column; unserialisable or too large is ``InvalidInput``."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise errors.InvalidInput("must be a JSON object", field=field)
    try:
        # allow_nan=False: PostgreSQL's jsonb has no NaN/Infinity.
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise errors.InvalidInput("not JSON-serialisable", field=field) from exc
    if "\\u0000" in text:
        # jsonb cannot store a NUL character; refuse it here rather than abort the transaction.
        raise errors.InvalidInput("JSON must not contain NUL characters", field=field)
    if max_bytes is not None and len(text.encode("utf-8")) > max_bytes:
        raise errors.InvalidInput("too large", field=field, max_bytes=max_bytes)
    return text


def check_text(value: object, field: str, *, max_length: int = 10_000, allow_empty: bool = False) -> str:
    """``value`` as a storable string (no NUL, bounded); anything else is ``InvalidInput``."""
    if not isinstance(value, str) or (not value and not allow_empty):
        raise errors.InvalidInput("must be a non-empty string", field=field)
    if len(value) > max_length:
        raise errors.InvalidInput("too long", field=field, max_length=max_length)
    if "\x00" in value:
        raise errors.InvalidInput("must not contain NUL characters", field=field)
    return value


def check_limit(limit: object, *, maximum: int) -> int:
    """A page or batch size between 1 and ``maximum``."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum:
        raise errors.InvalidInput(f"limit must be an integer from 1 to {maximum}", field="limit")
    return limit


def check_datetime(value: object, field: str) -> datetime:
    """A timezone-aware ``datetime`` (naive ones are ambiguous for ``timestamptz``)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise errors.InvalidInput("must be a timezone-aware datetime", field=field)
    return value


def encode_cursor(ts: datetime, row_id: UUID | int) -> str:
    """An opaque keyset cursor for ``(ts, id)``."""
    raw = json.dumps([ts.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: object) -> tuple[datetime, str]:
    """``(ts, id)`` from a cursor made by ``encode_cursor``; anything else is ``InvalidInput``."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 200:
        raise errors.InvalidInput("invalid cursor", field="after")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts_text, row_id = json.loads(raw)
        ts = datetime.fromisoformat(ts_text)
        if ts.tzinfo is None or not isinstance(row_id, str):
            raise ValueError("naive timestamp")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise errors.InvalidInput("invalid cursor", field="after") from exc
    return ts, row_id


def execute(
    connection: sa.Connection, statement: sa.TextClause, params: Mapping[str, Any], **context: Any
) -> sa.CursorResult[Any]:
    """Run ``statement``, translating a driver error with ``context`` (e.g. the job id)."""
    try:
        return connection.execute(statement, params)
    except sqlalchemy.exc.DBAPIError as exc:
        raise translate(exc, **context) from exc


@contextmanager
def operation(repo: str, name: str, job_id: UUID | str | None = None) -> Iterator[None]:
    """Time one repository operation and bind the job id to log lines written inside it."""
    with metrics.timed(repo, name):
        if job_id is None:
            yield
        else:
            with logs.bound(job_id=job_id):
                yield
