"""Fixtures for running the code location in process against the test database and Storage."""

from collections.abc import Iterator

import dagster as dg
import pytest

from lifecycle.db import Database
from lifecycle.defs.location import build_definitions
from lifecycle.defs.resources import DatabaseResource, StorageResource
from lifecycle.settings import Settings


@pytest.fixture
def defs() -> dg.Definitions:
    return build_definitions(Settings.load(env={}))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def database_resource(database_url: str) -> DatabaseResource:
    return DatabaseResource(url=database_url, pool_size=2)


@pytest.fixture
def resources(
    database_resource: DatabaseResource, storage_settings: Settings, storage: object
) -> dict[str, object]:
    """Both resources, on this test's database and this test's (ensured) bucket."""
    assert storage_settings.supabase_url is not None
    assert storage_settings.supabase_service_role_key is not None
    return {
        "database": database_resource,
        "storage": StorageResource(
            url=storage_settings.supabase_url,
            service_role_key=storage_settings.supabase_service_role_key.get_secret_value(),
            bucket=storage_settings.supabase_storage_bucket,
        ),
    }


@pytest.fixture
def storage_db(database_url: str, storage_settings: Settings) -> Iterator[Database]:
    """A ``Database`` whose settings carry the test Storage (for seeding with objects)."""
    database = Database.from_url(database_url, settings=storage_settings)
    try:
        yield database
    finally:
        database.dispose()
