"""Phase 2: drain the ``storage_deletions`` outbox.

A drain first takes its identity: a random token and the session-level advisory lock
``pg_advisory_lock(CLAIM_LOCK_CLASS, token)``, held on a connection of its own for the drain's whole
life. It claims rows by writing its token on them (``claimed_by``); a claim is alive only while that
lock is held (``lifecycle_claim_alive``), so the claims of a drain that was killed, or that lost its
lock session, die with it and the next drain takes them over at once. No lock is held over HTTP.

Claimed keys are removed through the storage repository (at most 1000 keys per bucket and call,
service role only), and an outbox row is deleted only when its key is confirmed gone: removed now,
or confirmed absent by the service role's existence check. A failure keeps the row with
``attempts + 1``, a redacted ``last_error`` and an exponential, capped backoff. Results are recorded
only on rows the drain still claims, and recording gives the claim back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar
from uuid import UUID

from lifecycle import errors, logs, metrics
from lifecycle.db import Database
from lifecycle.db.outbox import ClaimLock, OutboxState
from lifecycle.redaction import redact_known
from lifecycle.retention.limits import (
    CleanupLimits,
    Deadline,
    TokenBucket,
    check_label,
    check_now,
    check_positive,
)
from lifecycle.retention.report import DrainPlan, DrainReport

if TYPE_CHECKING:
    from lifecycle.storage import ObjectKind, RemoveResult, StoredObject

T = TypeVar("T")

#: Keys per claim (and per remove call): the Storage API's bulk limit.
CHUNK = 1000
#: First retry delay after a failure; doubles per attempt up to ``outbox_max_attempts_backoff_seconds``.
BACKOFF_BASE_SECONDS = 10
#: Whole remove calls failing in a row (storage down) before the drain stops trying this run.
MAX_CONSECUTIVE_CALL_FAILURES = 3
#: Lost database connections a drain survives (each retried after a short pause) before it gives up.
MAX_CONNECTION_RETRIES = 3
#: Objects logged one by one per drain; past this, chunks are summarised.
LOG_EACH_OBJECT_LIMIT = 100
#: Redacted error texts kept in a report.
MAX_ERRORS_REPORTED = 5

_log = logs.get_logger("lifecycle.retention")


class ObjectStore(Protocol):
    """What retention needs from ``lifecycle.storage.StorageRepo``."""

    @property
    def is_service_role(self) -> bool: ...

    def check_key_accepted(self) -> None: ...

    def remove(self, keys: Iterable[str]) -> RemoveResult: ...

    def iter_keys(self, kind: ObjectKind | str, *, page_size: int = ...) -> Iterator[StoredObject]: ...


def require_service_role(storage: ObjectStore) -> None:
    """Refuse (``errors.ServiceRoleRequired``) a store whose key cannot see every object: its removes
    delete nothing and its existence checks find nothing, so "not found" would read as "gone"; and
    (``errors.ConfigurationError``) one whose key the server refuses."""
    if not storage.is_service_role:
        raise errors.ServiceRoleRequired()
    # A key that reads as the service role but that the server refuses (rotated, forged, another
    # project's) would fail every removal after phase 1 deleted the rows: ask the server first.
    storage.check_key_accepted()


def _by_bucket(rows: Sequence[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """Group claimed ``(row id, key)`` pairs by key prefix (the bucket, or the prefix in a
    one-bucket layout), in remove calls of at most ``CHUNK`` keys."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for row_id, key in rows:
        groups.setdefault(key.partition("/")[0], []).append((row_id, key))
    return [group[i : i + CHUNK] for group in groups.values() for i in range(0, len(group), CHUNK)]


@dataclass
class _Claimed:
    """One claimed outbox row: a single key, or a chunk of keys (phase 1)."""

    keys: list[str]
    done: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)


class _Drain:
    """One drain run: its lock, its retries, and what it found out about each key."""

    def __init__(self, db: Database, *, run_id: str | None) -> None:
        self.db = db
        self.run_id = run_id
        self.lock = ClaimLock(db)
        #: Whether rows may carry this drain's current token (set by a claim, cleared by release_all).
        self.holds_claims = False
        self.connection_losses = 0
        #: Whether any database call of this drain succeeded (only then is a failure a lost connection).
        self.reached = False
        #: Keys confirmed gone, and keys that failed (a key retried later counts once).
        self.gone: set[str] = set()
        self.failed: set[str] = set()

    @property
    def token(self) -> int:
        if self.lock.token is None:
            raise errors.DatabaseUnavailable("the drain holds no claim lock")
        return self.lock.token

    def retrying(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, retried after a lost database connection, up to ``MAX_CONNECTION_RETRIES``.

        A database never reached is not a lost connection: that error is raised as it is.
        """
        while True:
            try:
                result = call()
            except errors.DatabaseUnavailable:
                if not self.reached:
                    raise
                self.lost(what)
            else:
                self.reached = True
                return result

    def lost(self, what: str) -> None:
        """Count a lost connection: pause, or give up (raise) once the retries are used."""
        self.connection_losses += 1
        if self.connection_losses > MAX_CONNECTION_RETRIES:
            raise errors.DatabaseUnavailable(
                f"database connection lost {self.connection_losses} times during the outbox drain "
                "(while it was " + what + "); its claims died with its session: the next run takes them"
            ) from None
        _log.warning(
            "database connection lost during the drain; retrying", during=what, attempt=self.connection_losses
        )
        time.sleep(0.2 * self.connection_losses)

    def ensure_lock(self) -> None:
        """Make sure this drain holds its lock; a lost session means a new token (the old claims are
        dead, and free for anyone, this drain included)."""
        try:
            self.lock.check()
            return
        except errors.DatabaseUnavailable:
            if self.lock.token is not None:
                _log.warning("the drain's claim lock session was lost; its claims are free; taking a new one")
                self.lost("holding its claim lock")
        self.retrying("taking its claim lock", self.lock.acquire)

    def claim(
        self, *, now: datetime | None, limit: int, job_ids: Sequence[UUID] | None
    ) -> dict[int, _Claimed]:
        def run() -> dict[int, _Claimed]:
            self.holds_claims = True
            with self.db.transaction(run_id=self.run_id) as tx:
                rows = tx.outbox.claim(token=self.token, limit=limit, chunk=CHUNK, now=now, job_ids=job_ids)
                return {row.id: _Claimed(row.keys) for row in rows}

        return self.retrying("claiming outbox rows", run)

    def record(self, *, now: datetime | None, rows: dict[int, _Claimed]) -> None:
        """Finish rows in one short transaction: drop the rows whose keys are all confirmed gone; a
        chunk row that is partly done keeps only its other keys; rows with a failure back off; rows
        not (fully) tried are given back, due again now. Only rows this drain still claims change,
        and every one of them ends unclaimed."""
        if not rows:
            return
        done: list[int] = []
        failed: list[tuple[int, str]] = []
        untried: list[int] = []
        keep: list[tuple[int, list[str]]] = []
        for row_id, row in rows.items():
            rest = [k for k in row.keys if k not in row.done]
            if not rest:
                done.append(row_id)
                continue
            if row.done:
                keep.append((row_id, rest))
            if row.failed:
                failed.append((row_id, next(iter(row.failed.values()))))
            else:
                untried.append(row_id)
        token = self.token

        def run() -> None:
            with self.db.transaction(run_id=self.run_id) as tx:
                if done:
                    tx.outbox.done(done, token=token)
                for row_id, rest in keep:
                    tx.outbox.keep_keys(row_id, rest, token=token)
                if failed:
                    tx.outbox.failed(
                        failed,
                        token=token,
                        now=now,
                        base_seconds=BACKOFF_BASE_SECONDS,
                        cap_seconds=self.db.settings.outbox_max_attempts_backoff_seconds,
                    )
                if untried:
                    tx.outbox.release(token=token, ids=untried)

        self.retrying("recording results", run)

    def release_all(self) -> None:
        """Give back every row this drain still claims (best effort: if the database is gone, the
        claims die with the lock's session anyway)."""
        token = self.lock.token
        if token is None or not self.holds_claims:
            return
        try:
            with self.db.transaction(run_id=self.run_id) as tx:
                tx.outbox.release(token=token)
            self.holds_claims = False
        except errors.LifecycleError:
            pass


def _defer_due(db: Database, *, now: datetime | None, job_ids: Sequence[UUID] | None) -> None:
    with db.transaction() as tx:
        tx.outbox.defer_due(now=now, job_ids=job_ids)


def _remove(storage: ObjectStore, keys: list[str]) -> tuple[set[str], set[str], dict[str, str]]:
    """``(removed, absent, failed -> redacted reason)``; a whole-call error fails every key."""
    try:
        result = storage.remove(keys)
    except errors.ConfigurationError:
        raise  # the store cannot remove anything at all (ServiceRoleRequired): not a per-key failure
    except errors.InvalidInput:
        # A malformed key (written by hand?) poisons the whole call: split it out, key by key.
        if len(keys) == 1:
            return set(), set(), {keys[0]: "not an object key"}
        removed: set[str] = set()
        absent: set[str] = set()
        failed: dict[str, str] = {}
        for key in keys:
            r, a, f = _remove(storage, [key])
            removed |= r
            absent |= a
            failed |= f
        return removed, absent, failed
    except errors.LifecycleError as exc:
        reason = redact_known(str(exc))[:500]
        return set(), set(), dict.fromkeys(keys, reason)
    return (
        set(result.removed),
        set(result.absent),
        {f.key: redact_known(f.reason)[:500] for f in result.failed},
    )


def outbox_state(db: Database, *, now: datetime | None, job_ids: Sequence[UUID] | None = None) -> OutboxState:
    """Keys queued, due, claimed by live and dead drains, failed (a read-only transaction)."""
    with db.transaction(read_only=True) as tx:
        return tx.outbox.state(now=now, job_ids=job_ids)


def plan_drain(
    db: Database, *, now: datetime | None = None, job_ids: Sequence[UUID] | None = None
) -> DrainPlan:
    """A drain's dry run: what is queued, what a drain could take now, what a live drain holds, what
    failed before. Read only (the database refuses any write here)."""
    check_now(now)
    row = outbox_state(db, now=now, job_ids=job_ids)
    plan = DrainPlan(
        queued=row.keys,
        due=row.due,
        claimed_by_live_run=row.claimed,
        claimed_by_dead_run=row.dead_claims,
        failed_before=row.failed,
        max_attempts=row.max_attempts,
        oldest_queued_at=row.oldest,
        oldest_age_seconds=None if row.oldest is None else max(0.0, (row.at - row.oldest).total_seconds()),
        next_due_at=row.next_due,
    )
    plan.would_do = (
        f"remove up to {plan.due} queued object(s) now ({plan.claimed_by_dead_run} of them claimed by a "
        f"run that died); {plan.claimed_by_live_run} are being removed by a live run; "
        f"{plan.queued - plan.due - plan.claimed_by_live_run} wait for their retry time; "
        f"{plan.failed_before} failed before (at most {plan.max_attempts} attempt(s))"
    )
    return plan


@metrics.timed("retention", "drain_outbox")
def drain_outbox(
    db: Database,
    storage: ObjectStore,
    *,
    max_objects_per_second: float | None = None,
    max_runtime_seconds: float | None = None,
    now: datetime | None = None,
    run_id: str | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    job_ids: Sequence[UUID] | None = None,
    limits: CleanupLimits | None = None,
) -> DrainReport:
    """Remove the objects queued in ``storage_deletions`` that are due (``now``: default the DB clock),
    and those whose claim died with an earlier run.

    The rate and the runtime are ``limits``' (a run's ``CleanupLimits``) when given; a
    ``max_objects_per_second`` or ``max_runtime_seconds`` passed as well overrides them.

    ``job_ids`` restricts the drain to those jobs' keys (purge). Stops early on the runtime limit or
    when the storage server fails every call ``MAX_CONSECUTIVE_CALL_FAILURES`` times in a row. The
    report's ``pending*`` fields say what is left in the outbox (``work_left()``: one line, or
    ``None`` when nothing is). Needs the service role (``errors.ServiceRoleRequired`` otherwise).
    """
    check_positive(max_objects_per_second, "max_objects_per_second")
    check_positive(max_runtime_seconds, "max_runtime_seconds")
    check_now(now)
    check_label(run_id, "run_id")
    require_service_role(storage)
    if limits is not None:
        max_objects_per_second = max_objects_per_second or limits.max_objects_per_second
        max_runtime_seconds = max_runtime_seconds or limits.max_runtime_seconds
    rate = max_objects_per_second or db.settings.cleanup_max_objects_per_second
    check_positive(rate, "CLEANUP_MAX_OBJECTS_PER_SECOND")
    started = time.perf_counter()
    bucket = TokenBucket(rate)
    deadline = Deadline(max_runtime_seconds)
    report = DrainReport()
    claim_size = bucket.chunk(CHUNK)
    call_failures = 0
    done_count = 0
    total: int | None = None
    drain = _Drain(db, run_id=run_id)
    logged = 0
    try:
        with logs.bound(run_id=run_id):
            if progress is not None:
                state = drain.retrying("counting", lambda: outbox_state(db, now=now, job_ids=job_ids))
                total = state.keys
                progress("objects", 0, total)
            drain.ensure_lock()
            while report.stopped_by is None:
                if deadline.passed():
                    report.stopped_by = "max_runtime_seconds"
                    break
                if not bucket.take(claim_size, deadline):
                    report.stopped_by = "max_runtime_seconds"
                    break
                drain.ensure_lock()
                claimed = drain.claim(now=now, limit=claim_size, job_ids=job_ids)
                if not claimed:
                    bucket.give_back(claim_size)
                    try:
                        drain.lock.check()  # nothing claimable, or the lock was lost just now?
                    except errors.DatabaseUnavailable:
                        continue
                    break
                n_keys = sum(len(row.keys) for row in claimed.values())
                if n_keys < claim_size:
                    bucket.give_back(claim_size - n_keys)
                elif n_keys > claim_size:
                    # A chunk row larger than the rate allows per second: pay the difference (sleeps).
                    bucket.take(n_keys - claim_size)
                chunks = _by_bucket([(row_id, key) for row_id, row in claimed.items() for key in row.keys])
                left = {row_id: len(row.keys) for row_id, row in claimed.items()}
                for chunk in chunks:
                    try:
                        # Remove only under a live claim: if the lock's session is gone, another
                        # drain may have taken these rows over already.
                        drain.lock.check()
                    except errors.DatabaseUnavailable:
                        break  # the rest of this claim is dead: the next claim (a new lock) retakes it
                    keys = [key for _, key in chunk]
                    removed, absent, failed = _remove(storage, keys)
                    report.requests += 1
                    n_done = n_bad = 0
                    for row_id, key in chunk:
                        row = claimed[row_id]
                        if key in removed or key in absent:
                            row.done.add(key)
                            drain.gone.add(key)
                            n_done += 1
                        else:
                            err = failed.get(key, "no answer for this key")
                            row.failed[key] = err
                            drain.failed.add(key)
                            n_bad += 1
                            if err not in report.errors and len(report.errors) < MAX_ERRORS_REPORTED:
                                report.errors.append(err)
                        left[row_id] -= 1
                    # Rows whose every key has an answer are recorded now (a crash later redoes less).
                    finished = {r: claimed[r] for r in {r for r, _ in chunk} if left[r] == 0}
                    drain.record(now=now, rows=finished)
                    report.objects_removed += len(removed)
                    report.objects_absent += len(absent)
                    metrics.count_deleted("objects", len(removed))
                    if n_bad and not n_done:
                        call_failures += 1
                        _log.warning(
                            "object removal failed", keys=n_bad, error=next(iter(failed.values()), "?")
                        )
                        if call_failures >= MAX_CONSECUTIVE_CALL_FAILURES:
                            report.stopped_by = "storage_unavailable"
                            # Rows claimed but not (fully) tried: given back. Every row still
                            # due waits as long as the rows that just failed, so neither the next
                            # run nor the sensor's drain hammers a Storage that is down.
                            rest = {r: claimed[r] for r, n in left.items() if n > 0}
                            drain.record(now=now, rows=rest)
                            drain.retrying(
                                "deferring due rows",
                                lambda: _defer_due(db, now=now, job_ids=job_ids),
                            )
                            break
                    else:
                        call_failures = 0
                    for key in keys:
                        if logged >= LOG_EACH_OBJECT_LIMIT:
                            break
                        if key in removed:
                            _log.info("object removed", key=key)
                            logged += 1
                    done_count += n_done
                    if progress is not None:
                        progress("objects", done_count, total)
            drain.release_all()
            state = drain.retrying(
                "counting what is left", lambda: outbox_state(db, now=now, job_ids=job_ids)
            )
    finally:
        drain.release_all()  # after an error; a no-op when the run ended normally
        drain.lock.release()
    report.objects_failed = len(drain.failed - drain.gone)
    report.connection_losses = drain.connection_losses
    report.pending = state.keys
    report.pending_claimed = state.claimed
    report.pending_failed = state.failed
    report.duration_seconds = time.perf_counter() - started
    return report
