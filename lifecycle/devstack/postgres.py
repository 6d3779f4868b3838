"""Embedded PostgreSQL (the ``pgserver`` wheel) with its data under ``.lifecycle/``.

``pgserver`` listens on a Unix socket only (no TCP port at all, so nothing is exposed beyond this
machine and nothing collides with another server on 5432). The server stops when the last process
that started it exits.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from lifecycle import errors
from lifecycle.db.sql import query

log = logging.getLogger(__name__)

APP_DATABASE = "lifecycle"
DAGSTER_DATABASE = "dagster"


class EmbeddedPostgres:
    """A PostgreSQL server whose data directory is ``<home>/pgdata``."""

    def __init__(self, home: Path) -> None:
        self.pgdata = (home / "pgdata").resolve()
        self._server: object | None = None
        self._uri: str | None = None

    def start(self) -> EmbeddedPostgres:
        """Start (or join) the server; idempotent."""
        if self._server is None:
            if importlib.util.find_spec("pgserver") is None:
                raise errors.ConfigurationError(
                    "DATABASE_URL is not set, and the embedded PostgreSQL needs the dev extra "
                    "(pip install 'lifecycle[dev]')",
                    variable="DATABASE_URL",
                )
            self.pgdata.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
                warnings.simplefilter("ignore")
                import pgserver  # heavy: imported only when the embedded stack is wanted

                server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
            self._server = server
            self._uri = server.get_uri()
            log.info("embedded PostgreSQL is up (data in %s)", self.pgdata)
        return self

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL for ``database`` on this server (socket form)."""
        if self._uri is None:
            raise RuntimeError("EmbeddedPostgres.start() was not called")
        parts = urlsplit(self._uri)
        return urlunsplit(parts._replace(path="/" + quote(database)))

    def ensure_database(self, name: str, *, template: str | None = None) -> str:
        """Create ``name`` if it does not exist; return its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(query("admin.database_exists"), {"name": name}).fetchone()
            if not exists:
                if template:
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                            sql.Identifier(name), sql.Identifier(template)
                        )
                    )
                else:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Let go of the server (it stops when no other process holds it)."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]


def default_home() -> Path:
    """Where the embedded stack keeps its data: ``$LIFECYCLE_HOME`` or ``./.lifecycle``."""
    from lifecycle.settings import Settings

    return Settings.load().lifecycle_home


#: One server per home in this process (the server stops when the last process holding it exits).
_embedded: dict[Path, EmbeddedPostgres] = {}


def embedded_database_url(home: Path, database: str = APP_DATABASE) -> str:
    """Start (or join) the embedded server under ``home`` and return the URL of ``database``."""
    key = home.resolve()
    if key not in _embedded:
        _embedded[key] = EmbeddedPostgres(home).start()
    return _embedded[key].ensure_database(database)
