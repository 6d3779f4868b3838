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
from psycopg import sql

from lifecycle.db import Database, migrate
from lifecycle.db.engine import libpq_url
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
    migrate.upgrade(url)
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


# Storage --------------------------------------------------------------------------------------------
# The local Storage server (lifecycle.devstack.storage_server) in a subprocess, once per run; or the
# endpoint of LIFECYCLE_TEST_SUPABASE_URL + LIFECYCLE_TEST_SUPABASE_SERVICE_ROLE_KEY (optionally
# LIFECYCLE_TEST_SUPABASE_ANON_KEY / LIFECYCLE_TEST_SUPABASE_JWT_SECRET). Isolation: every test that
# asks for `storage_settings` gets its own bucket (single-bucket layout, SUPABASE_STORAGE_BUCKET =
# "lifecycle-t-<random>"), emptied and deleted afterwards, so tests never see each other's objects.


class StorageEndpoint:
    """A Storage endpoint for tests: its URL and keys, and fault injection when it is the local server."""

    def __init__(
        self,
        url: str,
        service_role_key: str,
        anon_key: str | None,
        jwt_secret: str | None,
        server: object | None = None,
    ) -> None:
        self.url = url
        self.service_role_key = service_role_key
        self.anon_key = anon_key
        self.jwt_secret = jwt_secret
        self.server = server

    @property
    def local(self) -> bool:
        """True for the project's local server (fault injection and hard limits available)."""
        return self.server is not None

    def set_faults(self, **faults: float | int | bool | None) -> dict[str, object]:
        """Turn on fault injection on the local server (skips the test against a real endpoint)."""
        if self.server is None:
            pytest.skip("fault injection needs the local Storage server")
        return self.server.set_faults(**faults)  # type: ignore[attr-defined, no-any-return]

    def clear_faults(self) -> None:
        if self.server is not None:
            self.server.clear_faults()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"StorageEndpoint(url={self.url!r}, local={self.local})"


@pytest.fixture(scope="session")
def storage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageEndpoint]:
    from lifecycle.redaction import register_secret

    url = os.environ.get("LIFECYCLE_TEST_SUPABASE_URL")
    key = os.environ.get("LIFECYCLE_TEST_SUPABASE_SERVICE_ROLE_KEY")
    if url and key:
        register_secret(key)
        yield StorageEndpoint(
            url.rstrip("/"),
            key,
            os.environ.get("LIFECYCLE_TEST_SUPABASE_ANON_KEY"),
            os.environ.get("LIFECYCLE_TEST_SUPABASE_JWT_SECRET"),
        )
        return
    import secrets

    from lifecycle.devstack.storage_server import start_storage_server

    server = start_storage_server(tmp_path_factory.mktemp("storage"), jwt_secret=secrets.token_urlsafe(32))
    try:
        for secret in (server.jwt_secret, server.service_role_key, server.anon_key):
            register_secret(secret)
        yield StorageEndpoint(server.url, server.service_role_key, server.anon_key, server.jwt_secret, server)
    finally:
        server.stop()


@pytest.fixture
def storage_settings(storage_server: StorageEndpoint) -> Iterator[Settings]:
    """Settings pointing at the test Storage endpoint, with a bucket of this test's own."""
    bucket = f"lifecycle-t-{uuid.uuid4().hex[:12]}"
    settings = Settings.load(
        env={
            "BCRYPT_ROUNDS": "4",
            "SUPABASE_URL": storage_server.url,
            "SUPABASE_SERVICE_ROLE_KEY": storage_server.service_role_key,
            "SUPABASE_STORAGE_BUCKET": bucket,
        }
    )
    try:
        yield settings
    finally:
        storage_server.clear_faults()
        _drop_bucket(storage_server, bucket)


def _drop_bucket(endpoint: StorageEndpoint, bucket: str) -> None:
    """Empty and delete a test bucket (best effort: it may never have been created)."""
    import httpx
    from storage3.exceptions import StorageApiError
    from supabase import ClientOptions, create_client

    with httpx.Client(timeout=30) as http:
        client = create_client(endpoint.url, endpoint.service_role_key, ClientOptions(httpx_client=http))
        try:
            client.storage.empty_bucket(bucket)
            client.storage.delete_bucket(bucket)
        except StorageApiError:
            pass


@pytest.fixture
def storage(storage_settings: Settings) -> Iterator[object]:
    """A StorageRepo on this test's bucket (ensured); retries back off briefly to keep tests fast."""
    from lifecycle.storage import StorageRepo

    repo = StorageRepo.from_settings(storage_settings, backoff_seconds=0.01)
    try:
        repo.ensure_buckets()
        yield repo
    finally:
        repo.close()
