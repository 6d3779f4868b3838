"""``Database``: one psycopg connection pool per process, and the unit of work (``db.transaction()``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from lifecycle import errors
from lifecycle.db._translate import translate
from lifecycle.redaction import redact_url, register_secret

if TYPE_CHECKING:
    from lifecycle.db.events import JobEventsRepo
    from lifecycle.db.jobs import JobsRepo
    from lifecycle.db.stats import StatsRepo
    from lifecycle.db.unit_of_work import Transaction
    from lifecycle.settings import Settings

#: Connections the pool may open beyond ``DATABASE_POOL_SIZE`` under load (SQLAlchemy's overflow, as before).
MAX_OVERFLOW: Final = 10
#: An idle connection is closed after this long (the pool opens connections on demand).
MAX_IDLE_SECONDS: Final = 600.0
#: Seconds a transaction waits for a pooled connection (all in use, or the server unreachable).
POOL_TIMEOUT_SECONDS: Final = 30.0

_URL_SCHEMES: Final = ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg")


def libpq_url(url: str) -> str:
    """``url`` as plain ``postgresql://`` for psycopg and libpq tools; anything else is ``InvalidInput``."""
    parts = urlsplit(url)
    if parts.scheme not in _URL_SCHEMES:
        raise errors.InvalidInput("database URL must be a postgresql:// URL", field="DATABASE_URL")
    return urlunsplit(parts._replace(scheme="postgresql"))


class Database:
    """The application database: a psycopg connection pool and the settings the repositories follow.

    ``db.transaction()`` is the unit of work. ``db.jobs``, ``db.events`` and ``db.stats`` run the
    one-statement operations (``transition``, ``claim_next``, ``get``, the sensor's probes, ...) each
    as its own transaction in a single round trip, with the same errors and events as inside a
    transaction.
    """

    def __init__(
        self,
        url: str,
        settings: Settings,
        *,
        pool_size: int | None = None,
        prepare_threshold: int | None | str = "default",
    ) -> None:
        self._url = libpq_url(url)
        self.settings = settings
        threshold = (
            settings.database_prepare_threshold if prepare_threshold == "default" else prepare_threshold
        )
        #: Keyword arguments of every connection: autocommit (a transaction is ``conn.transaction()``,
        #: and a one-statement operation needs no BEGIN/COMMIT round trips), and psycopg's prepare
        #: threshold (``None`` behind Supabase's transaction pooler).
        self._connect_kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": threshold}
        self._pool_size = pool_size or settings.database_pool_size
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._lock = threading.Lock()
        self._jobs: JobsRepo | None = None
        self._events: JobEventsRepo | None = None
        self._stats: StatsRepo | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        settings: Settings | None = None,
        pool_size: int | None = None,
        prepare_threshold: int | None | str = "default",
    ) -> Database:
        """A ``Database`` for ``url``; no connection is made until the first transaction."""
        from lifecycle.settings import Settings

        register_secret(urlsplit(url).password)
        return cls(
            url, settings or Settings.load(env={}), pool_size=pool_size, prepare_threshold=prepare_threshold
        )

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> Database:
        """A ``Database`` for ``settings.database_url`` (or ``url``)."""
        if url is None:
            if settings.database_url is None:
                raise errors.ConfigurationError("DATABASE_URL is not set", variable="DATABASE_URL")
            url = settings.database_url.get_secret_value()
        return cls.from_url(url, settings=settings)

    @property
    def url(self) -> str:
        """The ``postgresql://`` URL (it holds the password: never log it; ``repr`` redacts it)."""
        return self._url

    # -- connections --------------------------------------------------------------------------------

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._pool is None:
                # The pool connects in the background and a caller would wait POOL_TIMEOUT_SECONDS
                # for a server that is not there: connect once here, so that an unreachable or
                # misnamed database is one prompt DatabaseUnavailable.
                self.connect().close()
                s = self.settings
                recycle = s.database_pool_recycle_seconds
                self._pool = ConnectionPool(
                    self._url,
                    kwargs=self._connect_kwargs,
                    min_size=0,
                    max_size=self._pool_size + MAX_OVERFLOW,
                    # Pre-ping: a round trip before each checkout; off by default (see README).
                    check=ConnectionPool.check_connection if s.database_pool_pre_ping else None,
                    # Replaced before a pooler or proxy would drop them for being old.
                    max_lifetime=float("inf") if recycle < 0 else float(recycle),
                    max_idle=MAX_IDLE_SECONDS,
                    timeout=POOL_TIMEOUT_SECONDS,
                    name="lifecycle",
                    open=True,
                )
            return self._pool

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection of its own, outside the pool (autocommit): for a session-long lock."""
        try:
            return psycopg.connect(self._url, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode (each statement its own transaction).

        A connection found broken is dropped by the pool when it comes back; the idle ones are then
        checked too (the server may have dropped them all: a restart, a failover), so the next
        caller gets a live one.
        """
        pool = self._open_pool()
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            error = translate(exc)
            if isinstance(error, errors.DatabaseUnavailable):
                pool.check()
            raise error from exc
        except errors.DatabaseUnavailable:
            pool.check()
            raise

    @contextmanager
    def transaction(self, *, run_id: str | None = None, read_only: bool = False) -> Iterator[Transaction]:
        """One connection, one transaction: commit on success, roll back on any exception.

        ``read_only``: ``BEGIN READ ONLY`` (no extra round trip), so the database itself refuses any
        write a bug might attempt (dry runs, reports).
        """
        from lifecycle.db.unit_of_work import Transaction

        with self.connection() as conn:
            if read_only:
                conn.read_only = True
            try:
                with conn.transaction():
                    yield Transaction(conn, self.settings, run_id=run_id)
            except psycopg.Error as exc:  # BEGIN or COMMIT failed (a lost connection, a deferred check)
                raise translate(exc) from exc
            finally:
                if read_only:
                    _restore_read_write(conn)

    # -- one statement, one round trip ---------------------------------------------------------------

    @property
    def jobs(self) -> JobsRepo:
        """``JobsRepo`` outside a transaction: each one-statement operation is its own transaction."""
        if self._jobs is None:
            from lifecycle.db._executor import PooledExecutor
            from lifecycle.db.jobs import JobsRepo

            self._jobs = JobsRepo(PooledExecutor(self), self.settings)
        return self._jobs

    @property
    def events(self) -> JobEventsRepo:
        """``JobEventsRepo`` outside a transaction: each ``add``/``page`` is its own transaction."""
        if self._events is None:
            from lifecycle.db._executor import PooledExecutor
            from lifecycle.db.events import JobEventsRepo

            self._events = JobEventsRepo(PooledExecutor(self))
        return self._events

    @property
    def stats(self) -> StatsRepo:
        """``StatsRepo`` outside a transaction: each probe or count is one round trip (the sensor's)."""
        if self._stats is None:
            from lifecycle.db._executor import PooledExecutor
            from lifecycle.db.stats import StatsRepo

            self._stats = StatsRepo(PooledExecutor(self))
        return self._stats

    def dispose(self) -> None:
        """Close every pooled connection (the next transaction opens a new pool)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __repr__(self) -> str:
        return f"Database({redact_url(self._url)})"


def _restore_read_write(conn: psycopg.Connection[Any]) -> None:
    """Give a connection back to the pool as it came: a connection still read-only would make the
    next caller's transactions read-only, so one that cannot be reset is closed (the pool drops it)."""
    try:
        conn.read_only = None
    except psycopg.Error:
        conn.close()
