"""Schema migrations (Alembic) driven from Python: ``lifecycle migrate`` and the Dagster asset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from lifecycle.db.tables import metadata

#: ``migrations/`` beside the package (the project is installed editable, as the Makefile does).
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic ``Config`` with no ini file; ``connection`` is handed to ``env.py``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision in ``migrations/versions``."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at (``None`` before the first migration)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Upgrade to ``revision``; returns the revision reached."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    return current_revision(engine)


def downgrade(engine: sa.Engine, revision: str = "base") -> str | None:
    """Downgrade to ``revision``; returns the revision reached."""
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)
    return current_revision(engine)


def drift(engine: sa.Engine) -> list[Any]:
    """Differences between the migrated schema and ``lifecycle.db.tables`` (empty: no drift)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))
