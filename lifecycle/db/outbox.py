"""The ``storage_deletions`` outbox (``sql/outbox.sql``, ``sql/reconcile.sql``): a drain's claim lock,
its claims and results, the outbox's state, and reconciliation's queueing.

``ClaimLock`` is a drain's identity: a random token and the session-level advisory lock
``(CLAIM_LOCK_CLASS, token)``, held on a connection of its own (``db.connect()``) for the drain's
whole life. ``OutboxRepo`` runs on a transaction's connection (``tx.outbox``): a claim writes the
token on rows, and results are recorded only on rows that still carry it. The drain's policy
(rates, retries, reports) lives in ``lifecycle.retention.outbox``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from uuid import UUID

import psycopg
from psycopg.rows import class_row, scalar_row

from lifecycle import errors
from lifecycle.db._executor import Executor

if TYPE_CHECKING:
    from lifecycle.db.engine import Database

#: First key of the two-key advisory locks that own outbox claims (ASCII "lcyc"); the second key is
#: the claiming drain's token (``storage_deletions.claimed_by``). Migration 0002 holds the same value.
CLAIM_LOCK_CLASS: Final = 1818458467
#: Claim tokens are the advisory lock's second key, an int4 above zero.
MAX_TOKEN: Final = 2**31 - 1


class ClaimedRow(NamedTuple):
    """One claimed outbox row: its id and its keys (one, or a chunk phase 1 wrote)."""

    id: int
    keys: list[str]


class OutboxState(NamedTuple):
    """What is in the outbox (keys, a chunk row counting its keys), in disjoint groups."""

    keys: int
    #: Claimed by a live drain (being removed right now).
    claimed: int
    #: Claimed by a drain that is gone (free for the next drain).
    dead_claims: int
    #: Not claimed by a live drain; an earlier attempt failed.
    failed: int
    #: What a drain could claim now.
    due: int
    max_attempts: int
    oldest: datetime | None
    #: The earliest retry time of an unclaimed row not yet due.
    next_due: datetime | None
    #: The time these counts are for (``now``, or the database clock).
    at: datetime


class RecordedKeys(NamedTuple):
    """The keys one job records (its source and results)."""

    id: UUID
    keys: list[str]


def _ids(job_ids: Sequence[UUID] | None) -> list[UUID] | None:
    return None if job_ids is None else list(job_ids)


class OutboxRepo:
    """The outbox's statements on the transaction's connection."""

    def __init__(self, executor: Executor, *, run_id: str | None = None) -> None:
        self.executor = executor
        #: Written on the rows reconciliation queues.
        self.run_id = run_id

    # -- a drain's claims and results ----------------------------------------------------------------

    def claim(
        self, *, token: int, limit: int, chunk: int, now: datetime | None, job_ids: Sequence[UUID] | None
    ) -> list[ClaimedRow]:
        """Claim due rows and rows of dead drains for ``token``, up to ``limit`` keys (a chunk row
        counting ``chunk``; the first row is always taken). Nothing unless ``token``'s lock is held."""
        return self.executor.all(
            "outbox.claim",
            {"token": token, "limit": limit, "chunk": chunk, "now": now, "job_ids": _ids(job_ids)},
            row=class_row(ClaimedRow),
        )

    def done(self, ids: Sequence[int], *, token: int) -> int:
        """Delete rows whose keys are all confirmed gone (only rows ``token`` still claims)."""
        return self.executor.rowcount("outbox.done", {"ids": list(ids), "token": token})

    def keep_keys(self, row_id: int, keys: Sequence[str], *, token: int) -> int:
        """A partly done chunk row keeps only ``keys`` (if ``token`` still claims it)."""
        return self.executor.rowcount("outbox.keep_keys", {"id": row_id, "keys": list(keys), "token": token})

    def failed(
        self,
        failures: Sequence[tuple[int, str]],
        *,
        token: int,
        now: datetime | None,
        base_seconds: int,
        cap_seconds: int,
    ) -> int:
        """Count an attempt on each ``(row id, redacted reason)``, back off ``base_seconds * 2**attempts``
        (at most ``cap_seconds``) and give the claim back (only rows ``token`` still claims)."""
        return self.executor.rowcount(
            "outbox.failed",
            {
                "ids": [row_id for row_id, _ in failures],
                "errs": [reason for _, reason in failures],
                "token": token,
                "now": now,
                "base": base_seconds,
                "cap": cap_seconds,
            },
        )

    def release(self, *, token: int, ids: Sequence[int] | None = None) -> int:
        """Give back rows ``token`` claims, due again now: ``ids``, or all of them (``None``)."""
        return self.executor.rowcount(
            "outbox.release", {"token": token, "ids": None if ids is None else list(ids)}
        )

    def defer_due(self, *, now: datetime | None, job_ids: Sequence[UUID] | None) -> int:
        """Storage is down: unclaimed due rows wait until the earliest retry of a failed row."""
        return self.executor.rowcount("outbox.defer_due", {"now": now, "job_ids": _ids(job_ids)})

    # -- what is in it -------------------------------------------------------------------------------

    def state(self, *, now: datetime | None, job_ids: Sequence[UUID] | None = None) -> OutboxState:
        """Keys queued, due, claimed by live and dead drains, failed (of ``job_ids``' rows, or all)."""
        row = self.executor.one(
            "outbox.state", {"now": now, "job_ids": _ids(job_ids)}, row=class_row(OutboxState)
        )
        if row is None:  # an aggregate always returns its one row
            raise errors.LifecycleError("outbox state returned no row")
        return row

    def pending_keys(self) -> int:
        """Keys waiting in the outbox."""
        return int(self.executor.scalar("outbox.pending"))

    # -- reconciliation ------------------------------------------------------------------------------

    def recorded_keys(self, listed: Sequence[tuple[str, UUID]]) -> set[str]:
        """Which listed ``(key, job id)`` pairs' keys their job records (as its source or a result)."""
        return set(
            self.executor.all(
                "reconcile.recorded_keys",
                {"keys": [key for key, _ in listed], "job_ids": [job_id for _, job_id in listed]},
                row=scalar_row,
            )
        )

    def queued_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` are already queued (single-key or chunk rows)."""
        return set(self.executor.all("reconcile.queued_keys", {"keys": list(keys)}, row=scalar_row))

    def queue_keys(self, orphans: Sequence[tuple[str, UUID]]) -> int:
        """Queue ``(key, job id)`` orphans, except a key its job records by now or one already
        queued; how many were queued."""
        return self.executor.rowcount(
            "reconcile.queue_keys",
            {
                "keys": [key for key, _ in orphans],
                "job_ids": [job_id for _, job_id in orphans],
                "run_id": self.run_id,
            },
        )

    def recorded_keys_page(
        self, *, now: datetime | None, grace_seconds: int, after: UUID | None, limit: int
    ) -> list[RecordedKeys]:
        """Jobs untouched for ``grace_seconds`` and the keys they record, by id after ``after``."""
        return self.executor.all(
            "reconcile.recorded_keys_page",
            {"now": now, "grace": grace_seconds, "after": after, "limit": limit},
            row=class_row(RecordedKeys),
        )


class ClaimLock:
    """A drain's identity: the advisory lock ``(CLAIM_LOCK_CLASS, token)`` held by a session of its own.

    ``acquire`` picks a random token no live session holds and no row carries; ``check`` raises
    ``errors.DatabaseUnavailable`` once the session is gone (its claims are dead from then on);
    ``release`` unlocks and closes the session, whatever state it is in.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: psycopg.Connection[Any] | None = None
        self.token: int | None = None

    def acquire(self) -> int:
        """Take a fresh token and its lock (a new session); the previous one, if any, is released."""
        self.release()
        conn = self._db.connect()
        run = Executor(conn)
        try:
            while True:
                token = secrets.randbelow(MAX_TOKEN) + 1
                params = {"cls": CLAIM_LOCK_CLASS, "token": token}
                if not run.scalar("outbox.try_claim_lock", params):
                    continue  # a live drain holds it
                if run.scalar("outbox.token_in_use", params):
                    run.scalar("outbox.unlock_claim_lock", params)
                    continue
                self._conn, self.token = conn, token
                return token
        except BaseException:
            _close(conn)
            raise

    def check(self) -> None:
        """Raise ``errors.DatabaseUnavailable`` if the lock's session is gone (or was never taken)."""
        if self._conn is None:
            raise errors.DatabaseUnavailable("the drain holds no claim lock")
        try:
            Executor(self._conn).scalar("outbox.ping")
        except errors.LifecycleError:
            # The session, and so the lock, is gone: drop the connection (``token`` stays, to say
            # which claims died) and let the caller take a new lock.
            _close(self._conn)
            self._conn = None
            raise

    def release(self) -> None:
        """Unlock and close the session (a session that is already gone has released it)."""
        conn, token = self._conn, self.token
        self._conn = self.token = None
        if conn is None:
            return
        try:
            Executor(conn).scalar("outbox.unlock_claim_lock", {"cls": CLAIM_LOCK_CLASS, "token": token})
        except errors.LifecycleError:
            pass  # gone with its session already
        finally:
            _close(conn)


def _close(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.close()
