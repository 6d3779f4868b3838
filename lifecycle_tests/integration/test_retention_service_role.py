"""Absent means confirmed absent: only a service-role key may remove objects (and so run phase 2),
and an object counts as gone only when a check that can see it says so.

The anon key sees nothing: its remove deletes nothing and its existence check finds nothing, so a
drain run with it would read "I cannot see it" as "it is gone" and orphan every object.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from lifecycle import errors
from lifecycle.cli import main
from lifecycle.retention import cleanup, drain_outbox, purge, reconcile_orphans
from lifecycle.storage import ObjectKind, StorageRepo, result_key
from lifecycle.storage.keys import BucketLayout
from lifecycle.storage.repo import key_role
from lifecycle_tests.integration.test_retention_support import (
    QUEUED_KEYS,
    cli_env,
    count,
    insert_jobs,
    keys_of,
    snapshot,
)


def _jwt(claims: dict[str, object]) -> str:
    """An unsigned-looking JWT with these claims (the role is read without verifying)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("key", "role"),
    [
        (_jwt({"role": "service_role", "iss": "supabase"}), "service_role"),
        (_jwt({"role": "anon"}), "anon"),
        (_jwt({"role": "authenticated"}), "authenticated"),
        (_jwt({"iss": "no role"}), None),
        ("sb_secret_" + "a" * 32, "service_role"),
        ("sb_publishable_" + "b" * 32, "anon"),
        ("not-a-jwt", None),
        ("a.b.c", None),
        ("", None),
    ],
)
def test_the_role_of_a_key_is_read_without_verifying_it(key: str, role: str | None) -> None:
    assert key_role(key) == role


def _anon(storage_server, storage_settings) -> StorageRepo:
    return StorageRepo.connect(
        storage_server.url,
        storage_server.anon_key,
        layout=BucketLayout.single(storage_settings.supabase_storage_bucket),
        retries=1,
    )


def listed(storage) -> set[str]:
    return {obj.key for kind in ObjectKind for obj in storage.iter_keys(kind)}


@pytest.fixture
def anon(storage_server, storage_settings, storage) -> Iterator[StorageRepo]:
    if not storage_server.anon_key:
        pytest.skip("no anon key for this Storage endpoint")
    repo = _anon(storage_server, storage_settings)
    try:
        yield repo
    finally:
        repo.close()


def test_the_repo_knows_its_role(storage, anon) -> None:
    assert storage.is_service_role
    assert not anon.is_service_role


def test_remove_with_a_key_that_cannot_see_refuses_before_any_request(storage, anon, storage_server) -> None:
    key = result_key(uuid.uuid4(), "mp4")
    storage.upload(key, b"kept", "video/mp4")
    # A remove that reached the server would wait here: the refusal must come first.
    storage_server.set_faults(remove_delay_seconds=30, sign_delay_seconds=30)
    with pytest.raises(errors.ServiceRoleRequired) as info:
        anon.remove([key])
    storage_server.clear_faults()
    assert "SUPABASE_SERVICE_ROLE_KEY" in str(info.value)
    assert storage.download(key) == b"kept"


def test_cleanup_with_the_anon_key_refuses_the_whole_run_and_writes_nothing(db, raw, storage, anon) -> None:
    expired = insert_jobs(raw, 4)
    for key in keys_of(expired):
        storage.upload(key, b"x", "video/mp4")
    # Something already queued by an earlier run stays queued too.
    queued = result_key(uuid.uuid4(), "mp4")
    storage.upload(queued, b"x", "video/mp4")
    raw.execute("INSERT INTO storage_deletions (object_key) VALUES (%s)", [queued])
    tables, objects = snapshot(raw), listed(storage)

    with pytest.raises(errors.ServiceRoleRequired):
        cleanup(db, anon)
    with pytest.raises(errors.ServiceRoleRequired):
        drain_outbox(db, anon)
    with pytest.raises(errors.ServiceRoleRequired):
        purge(db, anon, [expired[0]])
    with pytest.raises(errors.ServiceRoleRequired):
        reconcile_orphans(db, anon, grace_seconds=0)

    assert snapshot(raw) == tables
    assert listed(storage) == objects
    assert count(raw, QUEUED_KEYS) == 1


def test_cli_cleanup_with_the_anon_key_exits_non_zero_with_one_line(
    database_url, raw, storage, storage_server, storage_settings
) -> None:
    if not storage_server.anon_key:
        pytest.skip("no anon key for this Storage endpoint")
    expired = insert_jobs(raw, 3)
    for key in keys_of(expired):
        storage.upload(key, b"x", "video/mp4")
    tables, objects = snapshot(raw), listed(storage)
    env = cli_env(database_url, storage_settings, key=storage_server.anon_key)

    for args in (["cleanup"], ["cleanup", "--drain-only"], ["reconcile"]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, result.stderr
        assert "service-role" in lines[0]
        assert storage_server.anon_key not in result.stderr + result.stdout
    assert snapshot(raw) == tables
    assert listed(storage) == objects


# -- an object is gone only when a check that can see it says so ---------------------------------


SERVICE = _jwt({"role": "service_role"})


def _scripted_repo(remove_answer: object, sign_answer: object | None) -> StorageRepo:
    """A service-role repo whose server answers remove and sign-many with these bodies
    (``sign_answer=None``: the existence check fails with HTTP 500)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(200, json=remove_answer)
        if "/object/sign/" in request.url.path:
            if sign_answer is None:
                return httpx.Response(500, json={"statusCode": "500", "error": "internal", "message": "down"})
            return httpx.Response(200, json=sign_answer)
        return httpx.Response(404, json={"statusCode": 404, "error": "not_found", "message": "?"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    return StorageRepo.connect("http://127.0.0.1:9", SERVICE, http_client=client, retries=1)


KEY = result_key(uuid.UUID(int=7), "mp4")
PATH = KEY.partition("/")[2]
MISSING = "Either the object does not exist or you do not have access to it"


@pytest.mark.parametrize(
    ("sign_answer", "why"),
    [
        (None, "the existence check failed"),
        ([], "the check did not mention the key"),
        (
            [{"path": "other/path", "error": MISSING, "signedURL": None}],
            "the check answered for another path",
        ),
        ([{"path": PATH, "error": "something else", "signedURL": None}], "an error that is not 'missing'"),
        ([{"path": PATH, "error": None, "signedURL": "/object/sign/x?token=t"}], "the object is still there"),
        (["not an object"], "an odd answer"),
    ],
)
def test_an_unconfirmed_removal_is_a_failure_not_an_absence(sign_answer: object, why: str) -> None:
    with _scripted_repo([], sign_answer) as repo:
        result = repo.remove([KEY])
    assert result.removed == [], why
    assert result.absent == [], why
    assert [f.key for f in result.failed] == [KEY], why


def test_a_key_the_service_role_check_confirms_missing_is_absent() -> None:
    with _scripted_repo([], [{"path": PATH, "error": MISSING, "signedURL": None}]) as repo:
        result = repo.remove([KEY])
    assert (result.removed, result.absent, result.failed) == ([], [KEY], [])


def test_a_service_role_key_the_server_refuses_stops_the_run_before_phase_one(
    db, raw, storage, storage_server, storage_settings
) -> None:
    """A key that reads as the service role offline (a rotated key, another project's, a forgery)
    but that Storage refuses: the run stops before phase 1 deletes anything, in one typed error."""
    from lifecycle.devstack.storage_server import mint_key

    expired = insert_jobs(raw, 3)
    for key in keys_of(expired):
        storage.upload(key, b"x", "video/mp4")
    tables, objects = snapshot(raw), listed(storage)
    forged = StorageRepo.connect(
        storage_server.url,
        mint_key("not-the-servers-secret-" + "x" * 32, "service_role"),
        layout=BucketLayout.single(storage_settings.supabase_storage_bucket),
        retries=1,
    )
    try:
        assert forged.is_service_role
        with pytest.raises(errors.ConfigurationError, match="Storage refused the key") as info:
            cleanup(db, forged)
        assert info.value.variable == "SUPABASE_SERVICE_ROLE_KEY"
        with pytest.raises(errors.ConfigurationError):
            drain_outbox(db, forged)
    finally:
        forged.close()
    assert snapshot(raw) == tables
    assert listed(storage) == objects


def test_an_unreachable_server_does_not_stop_phase_one(db, raw, storage_settings) -> None:
    """Storage down says nothing about the key: phase 1 runs (the keys wait in the outbox) and the
    report says the work left."""
    expired = insert_jobs(raw, 2)
    down = StorageRepo.connect(
        "http://127.0.0.1:9",
        _jwt({"role": "service_role"}),
        layout=BucketLayout.single(storage_settings.supabase_storage_bucket),
        retries=1,
    )
    try:
        report = cleanup(db, down)
    finally:
        down.close()
    assert report.jobs_deleted == len(expired)
    assert report.work_left() == "4 object(s) still queued for removal (4 failed)"
    assert count(raw, QUEUED_KEYS) == 4
