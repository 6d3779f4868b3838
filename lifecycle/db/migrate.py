"""Schema migrations (Alembic) driven from Python: ``lifecycle migrate`` and the Dagster asset.

With ``lifecycle.db.tables``, the only run-time module that uses SQLAlchemy: Alembic runs on it.
Each call opens one short-lived engine (no pool) for a database URL. Driver and Alembic errors
leave this module as ``lifecycle.errors`` (an unreachable or misnamed database is
``DatabaseUnavailable``), so the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
import sqlalchemy.exc
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from lifecycle import errors
from lifecycle.db._translate import translate
from lifecycle.db.engine import libpq_url
from lifecycle.db.tables import metadata


def sqlalchemy_url(url: str) -> str:
    """``url`` with the psycopg 3 driver named (``postgresql+psycopg://``), for SQLAlchemy."""
    parts = urlsplit(libpq_url(url))
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


@contextmanager
def _engine(url: str) -> Iterator[sa.Engine]:
    # Parameters may hold secrets: never echo them in an error.
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool, hide_parameters=True)
    try:
        yield engine
    finally:
        engine.dispose()


def migrations_dir() -> Path:
    """The Alembic script directory: the package ``lifecycle.migrations`` (``migrations/`` in a checkout).

    The wheel ships it as that package; the editable install maps the package to the top-level
    directory, so both find it the same way.
    """
    return Path(str(importlib.resources.files("lifecycle.migrations")))


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        raise translate(exc.orig if exc.orig is not None else exc) from exc
    except CommandError as exc:
        # Alembic's own failures (a revision it does not know: the database is newer than this code).
        raise errors.LifecycleError(f"migration failed: {exc}") from exc


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic ``Config`` with no ini file; ``connection`` is handed to ``env.py``."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision in ``migrations/versions``."""
    with _translated():
        return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None`` before the first migration)."""
    with _translated(), _engine(url) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> str | None:
    """Upgrade to ``revision``; returns the revision reached."""
    with _translated(), _engine(url) as engine, engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    return current_revision(url)


def downgrade(url: str, revision: str = "base") -> str | None:
    """Downgrade to ``revision``; returns the revision reached."""
    with _translated(), _engine(url) as engine, engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)
    return current_revision(url)


def drift(url: str) -> list[Any]:
    """Differences between the migrated schema and ``lifecycle.db.tables`` (empty: no drift)."""
    with _translated(), _engine(url) as engine, engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))
