"""Storage contract: StorageRepo through the official client against a real Storage endpoint.

The local server by default; any endpoint named by LIFECYCLE_TEST_SUPABASE_URL and
LIFECYCLE_TEST_SUPABASE_SERVICE_ROLE_KEY otherwise (tests that need fault injection or the server's
JWT secret skip there). Every test also checks that no token, key or JWT reached a log line, the
captured output, or the message of an error it caught.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import pytest

from lifecycle import errors
from lifecycle.settings import Settings
from lifecycle.storage import BucketLayout, ObjectKind, StorageRepo, result_key, source_key
from lifecycle_tests.integration._storage_secrets import leaks

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def no_secrets_in_output(
    storage_server: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[list[str]]:
    """Collect the text of every caught error (append to the list) and check it with the logs."""
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    yield messages
    known = [storage_server.service_role_key, storage_server.anon_key, storage_server.jwt_secret]
    out, err = capfd.readouterr()
    texts = [r.getMessage() for r in caplog.records] + [out, err] + messages
    problems = [p for text in texts for p in leaks(text, known)]
    assert problems == []


def caught(messages: list[str], exc: BaseException) -> BaseException:
    """Remember an error's text (and its cause's) for the secrets check."""
    messages.append(str(exc))
    messages.append(repr(exc))
    if exc.__cause__ is not None:
        messages.append(str(exc.__cause__))
    return exc


def job() -> uuid.UUID:
    return uuid.uuid4()


def test_upload_and_download(storage: StorageRepo) -> None:
    key = source_key(job(), "mp4")
    storage.upload(key, b"\x00source bytes\xff", "video/mp4")
    assert storage.download(key) == b"\x00source bytes\xff"


def test_duplicate_upload_is_refused_and_keeps_the_first(
    storage: StorageRepo, no_secrets_in_output: list[str]
) -> None:
    key = result_key(job(), "mp4")
    storage.upload(key, b"first", "video/mp4")
    with pytest.raises(errors.StorageError) as info:
        storage.upload(key, b"second", "video/mp4")
    caught(no_secrets_in_output, info.value)
    assert info.value.status == "409"
    assert info.value.code == "Duplicate"
    assert info.value.bucket == storage.layout.bucket_of(ObjectKind.RESULT)
    assert storage.download(key) == b"first"


def test_upsert_replaces(storage: StorageRepo) -> None:
    key = result_key(job(), "jpg")
    storage.upload(key, b"old", "image/jpeg")
    storage.upload(key, b"new bytes", "image/jpeg", upsert=True)
    assert storage.download(key) == b"new bytes"


def test_signed_url_serves_the_bytes_over_plain_http(storage: StorageRepo) -> None:
    key = result_key(job(), "mp4")
    data = secrets.token_bytes(4096)
    storage.upload(key, data, "video/mp4")
    url = storage.sign(key, 60)
    with httpx.Client() as client:  # no auth header: the token is the credential
        response = client.get(url)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"].startswith("video/mp4")
        etag = response.headers["etag"]
        partial = client.get(url, headers={"Range": "bytes=10-19"})
        assert partial.status_code == 206
        assert partial.content == data[10:20]
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_http_log_lines_of_signed_urls_are_redacted(
    storage: StorageRepo, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logs every request URL at INFO; a signed URL's token must not survive in it."""
    # `lifecycle.logs.configure` quiets httpx to WARNING; ask for INFO, as a debugging operator would.
    caplog.set_level(logging.INFO, logger="httpx")
    key = result_key(job(), "mp4")
    storage.upload(key, b"x", "video/mp4")
    assert httpx.get(storage.sign(key, 60)).status_code == 200
    lines = [
        r.getMessage() for r in caplog.records if r.name == "httpx" and "/object/sign/" in r.getMessage()
    ]
    assert any("token=[redacted]" in line for line in lines)


def test_signed_url_token_is_a_short_lived_download_jwt(storage: StorageRepo) -> None:
    key = result_key(job(), "mp4")
    storage.upload(key, b"x", "video/mp4")
    token = httpx.URL(storage.sign(key, 120)).params["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120
    assert claims["url"].endswith(storage.layout.locate(key)[1])


def test_expired_url_is_refused(storage: StorageRepo) -> None:
    key = result_key(job(), "mp4")
    storage.upload(key, b"soon gone", "video/mp4")
    url = storage.sign(key, 1)
    time.sleep(2.1)  # the token's exp has passed (whole seconds)
    response = httpx.get(url)
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidJWT"


def test_tampered_token_is_refused(storage: StorageRepo) -> None:
    key = result_key(job(), "mp4")
    other = result_key(job(), "mp4")
    storage.upload(key, b"mine", "video/mp4")
    storage.upload(other, b"other", "video/mp4")
    url = httpx.URL(storage.sign(key, 60))
    token = url.params["token"]
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    response = httpx.get(url.copy_set_param("token", f"{header}.{payload}.{flipped}"))
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidJWT"
    # A valid token for another object does not open this one.
    other_token = httpx.URL(storage.sign(other, 60)).params["token"]
    response = httpx.get(url.copy_set_param("token", other_token))
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidSignature"


def test_sign_of_a_missing_object_is_a_404(storage: StorageRepo, no_secrets_in_output: list[str]) -> None:
    with pytest.raises(errors.StorageError) as info:
        storage.sign(result_key(job(), "mp4"))
    caught(no_secrets_in_output, info.value)
    assert info.value.status == "404"


def test_sign_many_gives_none_for_a_missing_key(storage: StorageRepo) -> None:
    present = [result_key(job(), "mp4") for _ in range(3)]
    for key in present:
        storage.upload(key, key.encode(), "video/mp4")
    missing = result_key(job(), "jpg")
    urls = storage.sign_many([present[0], missing, *present[1:]], ttl_seconds=60)
    assert list(urls) == [present[0], missing, *present[1:]]
    assert urls[missing] is None
    for key in present:
        url = urls[key]
        assert url is not None
        assert httpx.get(url).content == key.encode()


def test_remove_reports_present_and_missing_keys(storage: StorageRepo) -> None:
    present = [result_key(job(), "mp4"), source_key(job(), "mov")]
    for key in present:
        storage.upload(key, b"bytes", "video/mp4")
    missing = [result_key(job(), "jpg")]
    result = storage.remove(present + missing)
    assert sorted(result.removed) == sorted(present)
    assert result.absent == missing
    assert result.failed == []
    for key in present:
        with pytest.raises(errors.StorageError) as info:
            storage.download(key)
        assert info.value.status == "404"


@pytest.mark.slow
def test_remove_of_2500_keys_goes_in_chunks(storage: StorageRepo, storage_server: Any) -> None:
    if storage_server.local:
        # Like a hosted project with hard limits: a request of more than 1000 keys would be a 400.
        storage_server.set_faults(hard_limits=True)
    keys = [result_key(job(), "mp4") for _ in range(2400)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda k: storage.upload(k, b"x", "video/mp4"), keys))
    missing = [result_key(job(), "jpg") for _ in range(100)]
    result = storage.remove(keys + missing)
    assert result.failed == []
    assert sorted(result.removed) == sorted(keys)
    assert sorted(result.absent) == sorted(missing)
    assert list(storage.iter_keys(ObjectKind.RESULT)) == []


def test_list_job_objects_and_iter_keys(storage: StorageRepo) -> None:
    mine, other = job(), job()
    keys = [source_key(mine, "mp4"), result_key(mine, "mp4"), result_key(mine, "jpg")]
    for key in keys:
        storage.upload(key, b"12345", "video/mp4")
    storage.upload(result_key(other, "mp4"), b"1", "video/mp4")
    listed = storage.list_job_objects(mine)
    assert sorted(o.key for o in listed) == sorted(keys)
    assert {o.job_id for o in listed} == {mine}
    assert all(o.size == 5 and o.created_at is not None for o in listed)
    results = list(storage.iter_keys(ObjectKind.RESULT, page_size=2))
    assert sorted(o.key for o in results) == sorted([*keys[1:], result_key(other, "mp4")])
    assert all(o.updated_at is not None for o in results)
    assert [o.key for o in storage.iter_keys(ObjectKind.SOURCE)] == [keys[0]]


def test_ensure_buckets_twice(storage_settings: Settings) -> None:
    with StorageRepo.from_settings(storage_settings) as repo:
        first = repo.ensure_buckets()
        second = repo.ensure_buckets()
    assert first.created == (storage_settings.supabase_storage_bucket,)
    assert first.existed == ()
    assert second.created == ()
    assert second.existed == (storage_settings.supabase_storage_bucket,)


def test_anon_key_is_refused(
    storage: StorageRepo, storage_server: Any, no_secrets_in_output: list[str]
) -> None:
    if not storage_server.anon_key:
        pytest.skip("LIFECYCLE_TEST_SUPABASE_ANON_KEY is not set")
    key = result_key(job(), "mp4")
    storage.upload(key, b"private", "video/mp4")
    with StorageRepo.connect(storage_server.url, storage_server.anon_key, layout=storage.layout) as anon:
        with pytest.raises(errors.StorageError) as write:
            anon.upload(result_key(job(), "mp4"), b"x", "video/mp4")
        caught(no_secrets_in_output, write.value)
        assert write.value.status == "403"
        with pytest.raises(errors.StorageError) as read:
            anon.download(key)
        assert read.value.status in ("400", "404")
        assert anon.sign_many([key]) == {key: None}
        assert anon.list_job_objects(parse_job(key)) == []
        with pytest.raises(errors.ServiceRoleRequired):
            anon.remove([key])  # refused before any request: this key cannot see what it removes
    assert storage.download(key) == b"private"


def parse_job(key: str) -> uuid.UUID:
    return uuid.UUID(key.split("/")[1])


@pytest.mark.parametrize("kind", ["garbage", "wrong-secret"])
def test_bad_keys_are_refused(
    storage: StorageRepo, storage_server: Any, no_secrets_in_output: list[str], kind: str
) -> None:
    if kind == "garbage":
        api_key, message = "definitely-not-a-jwt", "Invalid Compact JWS"
    else:
        api_key = jwt.encode({"role": "service_role"}, secrets.token_urlsafe(32), algorithm="HS256")
        message = "signature verification failed"
    key = result_key(job(), "mp4")
    with (
        StorageRepo.connect(storage_server.url, api_key, layout=storage.layout) as bad,
        pytest.raises(errors.StorageError) as info,
    ):
        bad.upload(key, b"x", "video/mp4")
    caught(no_secrets_in_output, info.value)
    assert info.value.status == "403"
    assert info.value.message == message
    assert api_key not in str(info.value)


def test_failed_removes_are_reported_with_a_redacted_reason(
    storage: StorageRepo, storage_server: Any
) -> None:
    keys = [result_key(job(), "mp4") for _ in range(3)]
    for key in keys:
        storage.upload(key, b"x", "video/mp4")
    storage_server.set_faults(remove_error_rate=1.0, seed=1)
    result = storage.remove(keys)
    assert result.removed == []
    assert result.absent == []
    assert [f.key for f in result.failed] == keys
    assert {f.status for f in result.failed} == {"500"}
    storage_server.clear_faults()
    assert storage.download(keys[0]) == b"x"


def test_unreported_keys_that_still_exist_are_failures(storage: StorageRepo, storage_server: Any) -> None:
    keys = [result_key(job(), "mp4") for _ in range(2)]
    for key in keys:
        storage.upload(key, b"x", "video/mp4")
    storage_server.set_faults(remove_skip_rate=1.0, seed=1)
    result = storage.remove(keys)
    assert result.removed == []
    assert result.absent == []
    assert [(f.key, f.reason) for f in result.failed] == [
        (k, "object still exists after remove") for k in keys
    ]


def test_transient_5xx_are_retried(storage: StorageRepo, storage_server: Any) -> None:
    keys = [result_key(job(), "mp4") for _ in range(20)]
    for key in keys:
        storage.upload(key, b"x", "video/mp4")
    storage_server.set_faults(remove_error_rate=0.5, seed=3)
    storage.retries = 10
    result = storage.remove(keys)
    assert result.failed == []
    assert sorted(result.removed) == sorted(keys)


def test_two_bucket_layout(storage_server: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    layout = BucketLayout(sources=f"lifecycle-t-src-{suffix}", results=f"lifecycle-t-res-{suffix}")
    with StorageRepo.connect(storage_server.url, storage_server.service_role_key, layout=layout) as repo:
        try:
            assert repo.ensure_buckets().created == layout.buckets
            j = job()
            repo.upload(source_key(j, "mp4"), b"s", "video/mp4")
            repo.upload(result_key(j, "mp4"), b"r", "video/mp4")
            assert sorted(o.key for o in repo.list_job_objects(j)) == [
                result_key(j, "mp4"),
                source_key(j, "mp4"),
            ]
            assert [o.path for o in repo.iter_keys(ObjectKind.RESULT)] == [f"{j}/clip.mp4"]
            assert sorted(repo.remove([source_key(j, "mp4"), result_key(j, "mp4")]).removed) == sorted(
                [source_key(j, "mp4"), result_key(j, "mp4")]
            )
        finally:
            from supabase import ClientOptions, create_client

            client = create_client(
                storage_server.url,
                storage_server.service_role_key,
                ClientOptions(httpx_client=httpx.Client()),
            ).storage
            for bucket in layout.buckets:
                client.empty_bucket(bucket)
                client.delete_bucket(bucket)


def test_missing_configuration_names_the_variable() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        StorageRepo.from_settings(Settings.load(env={}))
    assert info.value.variable == "SUPABASE_URL"
    with pytest.raises(errors.ConfigurationError) as info:
        StorageRepo.from_settings(Settings.load(env={"SUPABASE_URL": "http://127.0.0.1:9"}))
    assert info.value.variable == "SUPABASE_SERVICE_ROLE_KEY"


# Request-schema violations. The real server answers them in Fastify's validation shape: HTTP 400,
# {"statusCode": "400", "error": "Error", "message": ...} (issue 10, item 14); the reference gives the
# message of the missing header. The exact body messages are checked on the local server only
# (test_storage_server.py).


@pytest.fixture
def official_files(storage: StorageRepo, storage_server: Any) -> Iterator[Any]:
    """The official client's file API on this test's bucket (storage3, without the repository)."""
    from supabase import ClientOptions, create_client

    bucket = storage.layout.bucket_of(ObjectKind.RESULT)
    with httpx.Client(timeout=30) as http:
        client = create_client(
            storage_server.url, storage_server.service_role_key, ClientOptions(httpx_client=http)
        )
        yield client.storage.from_(bucket)


@pytest.mark.parametrize(
    ("violation", "field"),
    [
        ("sign with expiresIn 0", "expiresIn"),
        ("sign many with no paths", "paths"),
        ("sign many with 1001 paths", "paths"),
        ("remove with no prefixes", "prefixes"),
    ],
)
def test_request_schema_violations_through_the_official_client(
    storage: StorageRepo, official_files: Any, no_secrets_in_output: list[str], violation: str, field: str
) -> None:
    from storage3.exceptions import StorageApiError

    key = result_key(job(), "mp4")
    storage.upload(key, b"kept", "video/mp4")
    path = storage.layout.locate(key)[1]
    calls = {
        "sign with expiresIn 0": lambda: official_files.create_signed_url(path, 0),
        "sign many with no paths": lambda: official_files.create_signed_urls([], 60),
        "sign many with 1001 paths": lambda: official_files.create_signed_urls([path] * 1001, 60),
        "remove with no prefixes": lambda: official_files.remove([]),
    }
    with pytest.raises(StorageApiError) as info:
        calls[violation]()
    caught(no_secrets_in_output, info.value)
    assert (info.value.status, info.value.code) == ("400", "Error")
    assert field in info.value.message
    assert storage.download(key) == b"kept"


def test_missing_authorization_header_is_a_request_schema_violation(
    storage: StorageRepo, storage_server: Any
) -> None:
    key = result_key(job(), "mp4")
    storage.upload(key, b"kept", "video/mp4")
    bucket, path = storage.layout.locate(key)
    # The apikey header alone does not count (the reference: only Authorization does).
    response = httpx.request(
        "DELETE",
        f"{storage_server.url}/storage/v1/object/{bucket}",
        headers={"apikey": storage_server.service_role_key},
        json={"prefixes": [path]},
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["statusCode"], body["error"]) == ("400", "Error")
    assert body["message"] == "headers must have required property 'authorization'"
    assert storage.download(key) == b"kept"
