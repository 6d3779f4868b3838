"""Small pieces the repositories share: input checks, JSON, keyset cursors, operation timing."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from lifecycle import errors, logs, metrics


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


#: Deepest nesting of objects and arrays accepted in a JSON value (json.dumps recurses: 2,000 levels
#: raised RecursionError; PostgreSQL's own jsonb parser stops far deeper, at its stack limit).
MAX_JSON_DEPTH = 64


def _json_depth_exceeds(value: object, limit: int) -> bool:
    """Whether ``value`` nests mappings/lists/tuples deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def dump_json(value: object, field: str, *, max_bytes: int | None = None) -> str:
    """``value`` serialised for a ``jsonb`` column; unserialisable, too deep or too big: ``InvalidInput``."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise errors.InvalidInput("must be a JSON object", field=field)
    if _json_depth_exceeds(value, MAX_JSON_DEPTH):
        raise errors.InvalidInput(f"nested deeper than {MAX_JSON_DEPTH} levels", field=field)
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


class Operation:
    """Time one repository operation and bind the job id to log lines written inside it.

    What ``metrics.timed`` plus ``logs.bound`` do, as one plain object: these wrap every
    repository call, and a generator-based context manager each costs more than the work around it.
    """

    __slots__ = ("_job_id", "_name", "_repo", "_start", "_tokens")

    def __init__(self, repo: str, name: str, job_id: UUID | str | None = None) -> None:
        self._repo = repo
        self._name = name
        self._job_id = job_id
        self._tokens: Mapping[str, Any] | None = None
        self._start = 0.0

    def __enter__(self) -> None:
        if self._job_id is not None:
            self._tokens = logs.bind_job_id(self._job_id)
        self._start = time.perf_counter()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        elapsed = time.perf_counter() - self._start
        try:
            metrics.metrics().observe_operation(self._repo, self._name, elapsed, exc)
        finally:
            if self._tokens is not None:
                logs.unbind(self._tokens)
