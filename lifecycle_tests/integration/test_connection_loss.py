"""A pooled connection the server dropped (restart, failover, a pooler's idle timeout).

Pre-ping off (the default): the first transaction on a dead connection fails with
``DatabaseUnavailable``; the pool drops it and checks its idle connections, so the next transaction
gets a live one. Pre-ping on (the pool's ``check``): no transaction fails. The same for the
one-round-trip operations (``db.jobs``), which borrow a pooled connection per statement.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from lifecycle import errors
from lifecycle.db import Database, Transaction
from lifecycle.settings import Settings


def _database(url: str, *, pre_ping: bool) -> Database:
    settings = Settings.load(env={"BCRYPT_ROUNDS": "4", "DATABASE_POOL_PRE_PING": str(pre_ping).lower()})
    return Database.from_url(url, settings=settings, pool_size=2)


@pytest.fixture
def job_id(database_url: str) -> Any:
    db = _database(database_url, pre_ping=False)
    try:
        with db.transaction() as tx:
            job = tx.jobs.create(params={"source": "a.mp4"})
    finally:
        db.dispose()
    return job.id


def _pooled_backends(db: Database) -> set[int]:
    """Open both pooled connections at once (so the pool holds two) and return their server pids."""
    with db.transaction() as first, db.transaction() as second:
        return {_pid(first), _pid(second)}


def _pid(tx: Transaction) -> int:
    row = tx.connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _terminate(raw: psycopg.Connection[Any], pids: set[int]) -> None:
    for pid in pids:
        raw.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while raw.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
    ).fetchone() != (0,):
        assert time.monotonic() < deadline, "backends did not exit"
        time.sleep(0.02)


# The first call after the server dropped every pooled connection: a repository call inside a
# transaction, a transaction with no statement at all (only BEGIN and COMMIT go out), and a
# one-round-trip call outside any transaction.
_FIRST_CALLS: dict[str, Callable[[Database, Any], object]] = {
    "transaction": lambda db, job_id: _in_transaction(db, lambda tx: tx.jobs.get(job_id)),
    "empty transaction": lambda db, job_id: _in_transaction(db, lambda tx: None),
    "one round trip": lambda db, job_id: db.jobs.get(job_id),
}


def _in_transaction(db: Database, call: Callable[[Transaction], object]) -> object:
    with db.transaction() as tx:
        return call(tx)


@pytest.mark.parametrize("path", sorted(_FIRST_CALLS))
def test_without_pre_ping_one_call_fails_and_the_next_reconnects(
    database_url: str, raw: psycopg.Connection[Any], job_id: Any, path: str
) -> None:
    first_call = _FIRST_CALLS[path]
    db = _database(database_url, pre_ping=False)
    try:
        old = _pooled_backends(db)
        assert len(old) == 2
        _terminate(raw, old)

        with pytest.raises(errors.DatabaseUnavailable):
            first_call(db, job_id)

        # Both pooled connections were dead: the failed one was dropped, and the other was found
        # dead by the pool's check of its idle connections, so neither is handed out again.
        for _ in range(3):
            first_call(db, job_id)
            assert db.jobs.get(job_id).id == job_id
            with db.transaction() as tx:
                assert tx.jobs.get(job_id).id == job_id
                assert _pid(tx) not in old
    finally:
        db.dispose()


def test_with_pre_ping_no_transaction_fails(
    database_url: str, raw: psycopg.Connection[Any], job_id: Any
) -> None:
    db = _database(database_url, pre_ping=True)
    try:
        old = _pooled_backends(db)
        _terminate(raw, old)
        for _ in range(3):
            with db.transaction() as tx:
                assert tx.jobs.get(job_id).id == job_id
                assert _pid(tx) not in old
    finally:
        db.dispose()


def test_a_connection_older_than_the_recycle_age_is_replaced(database_url: str) -> None:
    settings = Settings.load(env={"DATABASE_POOL_RECYCLE_SECONDS": "1"})
    db = Database.from_url(database_url, settings=settings, pool_size=1)
    try:
        with db.transaction() as tx:
            first = _pid(tx)
        deadline = time.monotonic() + 15
        while True:
            with db.transaction() as tx:
                if _pid(tx) != first:
                    break
            assert time.monotonic() < deadline, "the pooled connection was never replaced"
            time.sleep(0.2)
    finally:
        db.dispose()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_database_fails_at_once() -> None:
    db = Database.from_url(f"postgresql://nobody:secret-pw-5521@127.0.0.1:{_unused_port()}/none")
    try:
        started = time.monotonic()
        with pytest.raises(errors.DatabaseUnavailable) as caught, db.transaction():
            pass
        # Not the pool's 30-second wait for a connection it keeps retrying in the background.
        assert time.monotonic() - started < 10
        assert "secret-pw-5521" not in str(caught.value)
        with pytest.raises(errors.DatabaseUnavailable):
            db.jobs.get("00000000-0000-0000-0000-000000000001")
    finally:
        db.dispose()
