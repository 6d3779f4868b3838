"""``Database``: one engine per process, and the unit of work (``db.transaction()``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
import sqlalchemy.exc

from lifecycle import errors
from lifecycle.db._translate import translate
from lifecycle.redaction import redact_url, register_secret

if TYPE_CHECKING:
    from lifecycle.db.unit_of_work import Transaction
    from lifecycle.settings import Settings


def sqlalchemy_url(url: str) -> str:
    """``url`` with the psycopg 3 driver named (``postgresql+psycopg://``)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        return urlunsplit(parts._replace(scheme="postgresql+psycopg"))
    raise errors.InvalidInput("database URL must be a postgresql:// URL", field="DATABASE_URL")


def libpq_url(url: str) -> str:
    """``url`` as plain ``postgresql://`` for psycopg and libpq tools."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


class Database:
    """The application database: an engine and the settings the repositories follow."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        settings: Settings | None = None,
        pool_size: int | None = None,
        prepare_threshold: int | None | str = "default",
        **engine_kwargs: object,
    ) -> Database:
        """A ``Database`` for ``url``; no connection is made until the first transaction."""
        from lifecycle.settings import Settings

        settings = settings or Settings.load(env={})
        register_secret(urlsplit(url).password)
        threshold = (
            settings.database_prepare_threshold if prepare_threshold == "default" else prepare_threshold
        )
        options: dict[str, Any] = {
            "pool_size": pool_size or settings.database_pool_size,
            "max_overflow": 10,
            # Off by default: a ping is one more round trip on every transaction. Without it a
            # connection the server dropped fails its first transaction (DatabaseUnavailable), and
            # the pool is invalidated so the next transaction reconnects (``_common``/SQLAlchemy).
            "pool_pre_ping": settings.database_pool_pre_ping,
            # Replaced before a pooler or proxy would drop them for being idle or old.
            "pool_recycle": settings.database_pool_recycle_seconds,
            # Parameters may hold secrets (hashes, keys): never echo them in an error.
            "hide_parameters": True,
            "connect_args": {"prepare_threshold": threshold},
        }
        options.update(engine_kwargs)
        return cls(sa.create_engine(sqlalchemy_url(url), **options), settings)

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> Database:
        """A ``Database`` for ``settings.database_url`` (or ``url``)."""
        if url is None:
            if settings.database_url is None:
                raise errors.ConfigurationError("DATABASE_URL is not set", variable="DATABASE_URL")
            url = settings.database_url.get_secret_value()
        return cls.from_url(url, settings=settings)

    @contextmanager
    def transaction(self, *, run_id: str | None = None) -> Iterator[Transaction]:
        """One connection, one transaction: commit on success, roll back on any exception."""
        from lifecycle.db.unit_of_work import Transaction

        try:
            conn = self.engine.connect()
        except sqlalchemy.exc.DBAPIError as exc:
            raise translate(exc) from exc
        try:
            with conn.begin():
                yield Transaction(conn, self.settings, run_id=run_id)
        except sqlalchemy.exc.DBAPIError as exc:
            raise translate(exc) from exc
        finally:
            conn.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({redact_url(self.engine.url.render_as_string(hide_password=True))})"
