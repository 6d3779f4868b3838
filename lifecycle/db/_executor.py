"""The one executor: a named statement of the catalogue, run on a psycopg connection.

Every statement the package sends goes through here, so driver errors are translated in one place
(``_translate``) and every statement can be logged (its name only, never its parameters) under the
``lifecycle.db.sql`` logger at DEBUG. Rows become records through psycopg row factories.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload
from uuid import UUID

import psycopg
from psycopg.rows import RowFactory

from lifecycle import logs
from lifecycle.db._translate import translate
from lifecycle.db.sql import query

if TYPE_CHECKING:
    from lifecycle.db.engine import Database

R = TypeVar("R")
Params = Mapping[str, Any] | None

#: Statement names are logged here at DEBUG (``LOG_LEVEL=DEBUG``), inside the caller's bound ``jobId``.
SQL_LOGGER = "lifecycle.db.sql"
_sql_log = logging.getLogger(SQL_LOGGER)


class Executor:
    """Named statements on one connection: inside ``db.transaction()``, its connection."""

    __slots__ = ("connection",)

    #: Whether consecutive calls share one transaction (repositories refuse multi-statement
    #: operations that need one when they do not).
    in_transaction = True

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    @overload
    def one(
        self, name: str, params: Params = None, *, row: None = None, job_id: UUID | None = None
    ) -> tuple[Any, ...] | None: ...
    @overload
    def one(
        self, name: str, params: Params = None, *, row: RowFactory[R], job_id: UUID | None = None
    ) -> R | None: ...
    def one(
        self,
        name: str,
        params: Params = None,
        *,
        row: RowFactory[Any] | None = None,
        job_id: UUID | None = None,
    ) -> Any:
        """The first row of ``name`` (or ``None``)."""
        return self._run(name, params, row, job_id, psycopg.Cursor.fetchone)

    @overload
    def all(
        self, name: str, params: Params = None, *, row: None = None, job_id: UUID | None = None
    ) -> list[tuple[Any, ...]]: ...
    @overload
    def all(
        self, name: str, params: Params = None, *, row: RowFactory[R], job_id: UUID | None = None
    ) -> list[R]: ...
    def all(
        self,
        name: str,
        params: Params = None,
        *,
        row: RowFactory[Any] | None = None,
        job_id: UUID | None = None,
    ) -> Any:
        """Every row of ``name``."""
        return self._run(name, params, row, job_id, psycopg.Cursor.fetchall)

    def scalar(self, name: str, params: Params = None, *, job_id: UUID | None = None) -> Any:
        """The first column of the first row of ``name`` (``None`` when there is no row)."""
        first = self._run(name, params, None, job_id, psycopg.Cursor.fetchone)
        return None if first is None else first[0]

    def rowcount(self, name: str, params: Params = None, *, job_id: UUID | None = None) -> int:
        """How many rows ``name`` changed."""
        count: int = self._run(name, params, None, job_id, _rowcount)
        return count

    def _run(
        self,
        name: str,
        params: Params,
        row: RowFactory[Any] | None,
        job_id: UUID | None,
        fetch: Callable[[psycopg.Cursor[Any]], Any],
    ) -> Any:
        statement = query(name)
        if _sql_log.isEnabledFor(logging.DEBUG):
            logs.get_logger(SQL_LOGGER).debug("statement", statement=name)
        try:
            cursor = self.connection.cursor() if row is None else self.connection.cursor(row_factory=row)
            cursor.execute(statement, params)
            return fetch(cursor)
        except psycopg.Error as exc:
            raise translate(exc, job_id=job_id) from exc


def _rowcount(cursor: psycopg.Cursor[Any]) -> int:
    return cursor.rowcount


class PooledExecutor(Executor):
    """Each statement its own transaction, on a pooled connection in autocommit: one round trip.

    What ``db.jobs`` and ``db.events`` run on. Operations that need several statements in one
    transaction refuse to run here (``in_transaction`` is false).
    """

    __slots__ = ("_db",)

    in_transaction = False

    def __init__(self, db: Database) -> None:
        self._db = db

    def _run(
        self,
        name: str,
        params: Params,
        row: RowFactory[Any] | None,
        job_id: UUID | None,
        fetch: Callable[[psycopg.Cursor[Any]], Any],
    ) -> Any:
        with self._db.connection() as connection:
            return Executor(connection)._run(name, params, row, job_id, fetch)
