"""The test harness: real PostgreSQL only.

The embedded server (``pgserver``, data under ``.lifecycle/test-pgdata``) by default, or the server
of ``LIFECYCLE_TEST_DATABASE_URL``. A migrated template database is built once per run; every test
that asks for ``database_url`` gets a fresh copy of it (``CREATE DATABASE ... TEMPLATE``), dropped
afterwards. Checks go through ``raw``: an independent psycopg connection, not the code under test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from lifecycle.db import Database, migrate
from lifecycle.db.engine import libpq_url, sqlalchemy_url
from lifecycle.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
_LAYERS = ("unit", "integration", "migration", "dagster", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer (the folder it lives in)."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if len(parts) > 1 and parts[1] in _LAYERS:
            item.add_marker(getattr(pytest.mark, parts[1]))


class PgServer:
    """Creates and drops databases on the test server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = libpq_url(admin_url)

    def url(self, database: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path="/" + database))

    def create(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            conn.execute(query)
        return self.url(name)

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get("LIFECYCLE_TEST_DATABASE_URL")
    if url:
        yield PgServer(url)
        return
    from lifecycle.devstack.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(ROOT / ".lifecycle" / "test").start()
    try:
        yield PgServer(server.url("postgres"))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_database(pg_server: PgServer) -> Iterator[str]:
    """A migrated database that each test copies; built once per run."""
    name = f"lifecycle_tpl_{os.getpid()}"
    pg_server.drop(name)
    url = pg_server.create(name)
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    try:
        yield name
    finally:
        pg_server.drop(name)


@pytest.fixture
def database_url(pg_server: PgServer, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for this test (a copy of the template)."""
    name = f"lifecycle_t_{uuid.uuid4().hex[:12]}"
    url = pg_server.create(name, template=template_database)
    try:
        yield url
    finally:
        pg_server.drop(name)


@pytest.fixture
def empty_database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"lifecycle_e_{uuid.uuid4().hex[:12]}"
    url = pg_server.create(name)
    try:
        yield url
    finally:
        pg_server.drop(name)


@pytest.fixture
def settings() -> Settings:
    """Settings for tests: defaults, with cheap bcrypt."""
    return Settings.load(env={"BCRYPT_ROUNDS": "4"})


@pytest.fixture
def db(database_url: str, settings: Settings) -> Iterator[Database]:
    database = Database.from_url(database_url, settings=settings)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def raw(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An independent autocommit connection for checking what the code under test wrote."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn
