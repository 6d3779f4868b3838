"""Schema migrations (Alembic) driven from Python: ``lifecycle migrate`` and the Dagster asset.

Driver and Alembic errors leave this module as ``lifecycle.errors`` (an unreachable or misnamed
database is ``DatabaseUnavailable``), so the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
from lifecycle.db.tables import metadata


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
        raise translate(exc) from exc
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


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at (``None`` before the first migration)."""
    with _translated(), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Upgrade to ``revision``; returns the revision reached."""
    with _translated(), engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    return current_revision(engine)


def downgrade(engine: sa.Engine, revision: str = "base") -> str | None:
    """Downgrade to ``revision``; returns the revision reached."""
    with _translated(), engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)
    return current_revision(engine)


def drift(engine: sa.Engine) -> list[Any]:
    """Differences between the migrated schema and ``lifecycle.db.tables`` (empty: no drift)."""
    with _translated(), engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))
