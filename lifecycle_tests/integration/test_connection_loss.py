"""A pooled connection the server dropped (restart, failover, a pooler's idle timeout).

Pre-ping off (the default): the first transaction on a dead connection fails with
``DatabaseUnavailable``, the pool is invalidated, and the next transaction reconnects. Pre-ping on:
no transaction fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

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
    return int(tx.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _terminate(raw: psycopg.Connection[Any], pids: set[int]) -> None:
    for pid in pids:
        raw.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while raw.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
    ).fetchone() != (0,):
        assert time.monotonic() < deadline, "backends did not exit"
        time.sleep(0.02)


# The first statement of the transaction: through a repository (sent on the driver connection)
# and through SQLAlchemy (``tx.connection.execute``), the two ways code talks to the database.
_FIRST_STATEMENTS: dict[str, Callable[[Transaction, Any], object]] = {
    "repository": lambda tx, job_id: tx.jobs.get(job_id),
    "sqlalchemy": lambda tx, job_id: tx.connection.execute(sa.text("SELECT 1")).scalar_one(),
}


@pytest.mark.parametrize("path", sorted(_FIRST_STATEMENTS))
def test_without_pre_ping_one_transaction_fails_and_the_next_reconnects(
    database_url: str, raw: psycopg.Connection[Any], job_id: Any, path: str
) -> None:
    first_statement = _FIRST_STATEMENTS[path]
    db = _database(database_url, pre_ping=False)
    try:
        old = _pooled_backends(db)
        assert len(old) == 2
        _terminate(raw, old)

        with pytest.raises(errors.DatabaseUnavailable), db.transaction() as tx:
            first_statement(tx, job_id)

        # Both pooled connections were dead; the pool was invalidated, so neither is handed out again.
        for _ in range(3):
            with db.transaction() as tx:
                first_statement(tx, job_id)
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


def test_pool_settings_reach_the_engine(database_url: str) -> None:
    settings = Settings.load(env={"DATABASE_POOL_PRE_PING": "true", "DATABASE_POOL_RECYCLE_SECONDS": "42"})
    db = Database.from_url(database_url, settings=settings)
    try:
        assert db.engine.pool._pre_ping is True
        assert db.engine.pool._recycle == 42
    finally:
        db.dispose()
    default = Database.from_url(database_url, settings=Settings.load(env={}))
    try:
        assert default.engine.pool._pre_ping is False
        assert default.engine.pool._recycle == 300
    finally:
        default.dispose()
