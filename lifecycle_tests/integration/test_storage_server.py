"""The local Storage server on the wire: the real server's status codes, error bodies and auth rules."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from lifecycle.devstack.storage_server import load_or_create_keys

pytestmark = pytest.mark.integration


@pytest.fixture
def api(storage_server: Any) -> Iterator[tuple[httpx.Client, str]]:
    if not storage_server.local:
        pytest.skip("wire details of the local server")
    bucket = f"lifecycle-w-{uuid.uuid4().hex[:10]}"
    headers = {"Authorization": f"Bearer {storage_server.service_role_key}"}
    with httpx.Client(base_url=f"{storage_server.url}/storage/v1", headers=headers, timeout=30) as client:
        assert client.post("/bucket", json={"id": bucket, "name": bucket}).json() == {"name": bucket}
        try:
            yield client, bucket
        finally:
            storage_server.clear_faults()
            client.post(f"/bucket/{bucket}/empty", json={})
            client.request("DELETE", f"/bucket/{bucket}", json={})


def put(client: httpx.Client, bucket: str, name: str, data: bytes = b"x") -> httpx.Response:
    return client.post(f"/object/{bucket}/{name}", files={"file": (name, data, "text/plain")})


def test_errors_are_http_400_with_a_string_status(api: tuple[httpx.Client, str]) -> None:
    client, bucket = api
    response = client.get(f"/object/{bucket}/missing.txt")
    assert response.status_code == 400
    assert response.json()["statusCode"] == "404"
    assert response.json()["error"] == "not_found"
    assert client.post("/bucket", json={"id": bucket}).json()["statusCode"] == "409"
    bad_name = client.post("/bucket", json={"id": "a/b"})
    assert (bad_name.status_code, bad_name.json()["error"]) == (400, "Invalid Input")


def test_unknown_route_is_a_plain_404(api: tuple[httpx.Client, str]) -> None:
    client, _ = api
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["statusCode"] == 404


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "headers must have required property 'authorization'"),
        ("Bearer not-a-jwt", "Invalid Compact JWS"),
        (
            "Bearer "
            + jwt.encode({"role": "service_role"}, "wrong-secret-" + "0123456789" * 3, algorithm="HS256"),
            "signature verification failed",
        ),
    ],
)
def test_auth_failures(storage_server: Any, authorization: str | None, message: str) -> None:
    if not storage_server.local:
        pytest.skip("wire details of the local server")
    headers = {"apikey": storage_server.service_role_key}  # ignored, as by the real server
    if authorization:
        headers["Authorization"] = authorization
    response = httpx.get(f"{storage_server.url}/storage/v1/bucket", headers=headers)
    assert response.status_code == 400
    assert response.json()["message"] == message


def test_expired_api_key_is_refused(storage_server: Any) -> None:
    if not storage_server.local:
        pytest.skip("needs the server's JWT secret")
    expired = jwt.encode({"role": "service_role", "exp": 1}, storage_server.jwt_secret, algorithm="HS256")
    response = httpx.get(
        f"{storage_server.url}/storage/v1/bucket", headers={"Authorization": f"Bearer {expired}"}
    )
    assert response.json()["message"] == '"exp" claim timestamp check failed'


def test_anon_sees_nothing(api: tuple[httpx.Client, str], storage_server: Any) -> None:
    client, bucket = api
    put(client, bucket, "a.txt")
    anon = {"Authorization": f"Bearer {storage_server.anon_key}"}
    base = f"{storage_server.url}/storage/v1"
    assert httpx.get(f"{base}/bucket", headers=anon).json() == []
    assert httpx.post(f"{base}/object/list/{bucket}", headers=anon, json={"prefix": ""}).json() == []
    assert httpx.get(f"{base}/bucket/{bucket}", headers=anon).json()["statusCode"] == "404"
    assert (
        httpx.request("DELETE", f"{base}/object/{bucket}", headers=anon, json={"prefixes": ["a.txt"]}).json()
        == []
    )
    write = httpx.post(
        f"{base}/object/{bucket}/b.txt", headers=anon, files={"file": ("b", b"b", "text/plain")}
    )
    assert write.json()["statusCode"] == "403"
    assert client.get(f"/object/{bucket}/a.txt").content == b"x"


def test_remove_semantics(api: tuple[httpx.Client, str], storage_server: Any) -> None:
    client, bucket = api
    put(client, bucket, "dir/a.txt")
    removed = client.request("DELETE", f"/object/{bucket}", json={"prefixes": ["dir", "dir/a.txt", "nope"]})
    assert [row["name"] for row in removed.json()] == ["dir/a.txt"]  # exact keys only; missing skipped
    assert client.request("DELETE", f"/object/{bucket}", json={"prefixes": []}).json()["statusCode"] == "400"
    assert client.request("DELETE", "/object/no-such-bucket", json={"prefixes": ["x"]}).json() == []
    storage_server.set_faults(hard_limits=True)
    over = client.request("DELETE", f"/object/{bucket}", json={"prefixes": [f"k{i}" for i in range(1001)]})
    assert over.json()["message"] == "Bulk object requests are limited to 1000 objects per request."
    big = json.dumps({"prefixes": ["x" * 100] * 11_000})
    too_big = client.request(
        "DELETE", f"/object/{bucket}", content=big, headers={"content-type": "application/json"}
    )
    assert too_big.status_code == 413


def test_sign_rules_and_ranges(api: tuple[httpx.Client, str], storage_server: Any) -> None:
    client, bucket = api
    put(client, bucket, "f.txt", b"0123456789")
    assert client.post(f"/object/sign/{bucket}/f.txt", json={"expiresIn": 0}).json()["statusCode"] == "400"
    many = client.post(
        f"/object/sign/{bucket}", json={"paths": [f"p{i}" for i in range(1001)], "expiresIn": 60}
    )
    assert many.json()["statusCode"] == "400"
    signed = client.post(f"/object/sign/{bucket}/f.txt", json={"expiresIn": "60"}).json()["signedURL"]
    token = httpx.URL(signed).params["token"]
    claims = jwt.decode(token, storage_server.jwt_secret, algorithms=["HS256"])
    assert claims["url"] == f"{bucket}/f.txt"
    assert claims["scope"] == "download"
    url = f"{storage_server.url}/storage/v1{signed}"
    assert httpx.get(url, headers={"Range": "bytes=-3"}).content == b"789"
    assert httpx.get(url, headers={"Range": "bytes=50-"}).status_code == 416
    assert put(client, bucket, "ünïcode.txt").json()["statusCode"] == "400"


# Request-schema violations: the real server validates the request (params, body, querystring,
# headers, in that order, first failure only) before it reads the JWT, and answers in Fastify's shape:
# HTTP 400, {"statusCode": "400", "error": "Error", "message": "<where> <ajv message>"}, no "code".
SCHEMA_VIOLATIONS = [
    ("POST", "/object/sign/{b}/f.txt", {"expiresIn": 0}, "body/expiresIn must be >= 1"),
    ("POST", "/object/sign/{b}/f.txt", {"expiresIn": "soon"}, "body/expiresIn must be integer"),
    ("POST", "/object/sign/{b}/f.txt", {"expiresIn": 1.5}, "body/expiresIn must be integer"),
    ("POST", "/object/sign/{b}/f.txt", {}, "body must have required property 'expiresIn'"),
    ("POST", "/object/sign/{b}/f.txt", [60], "body must be object"),
    (
        "POST",
        "/object/sign/{b}",
        {"paths": [], "expiresIn": 60},
        "body/paths must NOT have fewer than 1 items",
    ),
    (
        "POST",
        "/object/sign/{b}",
        {"paths": [f"p{i}" for i in range(1001)], "expiresIn": 60},
        "body/paths must NOT have more than 1000 items",
    ),
    ("POST", "/object/sign/{b}", {"paths": ["f.txt"]}, "body must have required property 'expiresIn'"),
    ("POST", "/object/sign/{b}", {"expiresIn": 60}, "body must have required property 'paths'"),
    ("POST", "/object/sign/{b}", {"paths": {"a": 1}, "expiresIn": 60}, "body/paths must be array"),
    # Properties in the schema's order: expiresIn is checked before paths.
    ("POST", "/object/sign/{b}", {"paths": [], "expiresIn": 0}, "body/expiresIn must be >= 1"),
    ("DELETE", "/object/{b}", {"prefixes": []}, "body/prefixes must NOT have fewer than 1 items"),
    ("DELETE", "/object/{b}", {}, "body must have required property 'prefixes'"),
    ("DELETE", "/object/{b}", {"prefixes": [{"k": "f.txt"}]}, "body/prefixes/0 must be string"),
    ("POST", "/object/list/{b}", {"limit": 10}, "body must have required property 'prefix'"),
    ("POST", "/object/list/{b}", {"prefix": "", "limit": 0}, "body/limit must be >= 1"),
    ("POST", "/object/list/{b}", {"prefix": "", "offset": -1}, "body/offset must be >= 0"),
    (
        "POST",
        "/object/list/{b}",
        {"prefix": "", "sortBy": {"column": "size"}},
        "body/sortBy/column must be equal to one of the allowed values",
    ),
    ("POST", "/object/list-v2/{b}", {"prefix": "", "limit": 0}, "body/limit must be >= 1"),
    ("POST", "/object/list-v2/{b}", {"prefix": "", "cursor": {"x": 1}}, "body/cursor must be string"),
]


@pytest.mark.parametrize(("method", "path", "body", "message"), SCHEMA_VIOLATIONS)
def test_request_schema_violations_have_the_real_body(
    api: tuple[httpx.Client, str], method: str, path: str, body: Any, message: str
) -> None:
    client, bucket = api
    put(client, bucket, "f.txt")
    response = client.request(method, path.format(b=bucket), json=body)
    assert response.status_code == 400
    assert response.json() == {"statusCode": "400", "error": "Error", "message": message}
    assert client.get(f"/object/{bucket}/f.txt").content == b"x"  # nothing was removed


def test_missing_authorization_header_has_the_real_body(
    api: tuple[httpx.Client, str], storage_server: Any
) -> None:
    client, bucket = api
    put(client, bucket, "f.txt")
    base = f"{storage_server.url}/storage/v1"
    apikey = {"apikey": storage_server.service_role_key}  # ignored, as by the real server
    calls = [
        httpx.get(f"{base}/bucket", headers=apikey),
        httpx.post(f"{base}/object/sign/{bucket}/f.txt", headers=apikey, json={"expiresIn": 60}),
        httpx.request("DELETE", f"{base}/object/{bucket}", headers=apikey, json={"prefixes": ["f.txt"]}),
        httpx.post(
            f"{base}/object/{bucket}/g.txt", headers=apikey, files={"file": ("g", b"g", "text/plain")}
        ),
    ]
    for response in calls:
        assert response.status_code == 400
        assert response.json() == {
            "statusCode": "400",
            "error": "Error",
            "message": "headers must have required property 'authorization'",
        }
    assert client.get(f"/object/{bucket}/f.txt").content == b"x"
    assert client.get(f"/object/{bucket}/g.txt").json()["statusCode"] == "404"


def test_the_body_is_validated_before_the_headers_and_the_key(
    api: tuple[httpx.Client, str], storage_server: Any
) -> None:
    client, bucket = api
    put(client, bucket, "f.txt")
    base = f"{storage_server.url}/storage/v1"
    for headers in (
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {storage_server.anon_key}"},
    ):
        response = httpx.request("DELETE", f"{base}/object/{bucket}", headers=headers, json={"prefixes": []})
        assert (response.status_code, response.json()["error"]) == (400, "Error")
        assert response.json()["message"] == "body/prefixes must NOT have fewer than 1 items"
    # A valid body goes on to the header and key checks, with their own answers.
    response = httpx.request("DELETE", f"{base}/object/{bucket}", json={"prefixes": ["f.txt"]})
    assert response.json()["message"] == "headers must have required property 'authorization'"
    bad_key = httpx.request(
        "DELETE",
        f"{base}/object/{bucket}",
        headers={"Authorization": "Bearer not-a-jwt"},
        json={"prefixes": ["f.txt"]},
    )
    assert bad_key.json() == {
        "statusCode": "403",
        "error": "Unauthorized",
        "message": "Invalid Compact JWS",
        "code": "InvalidJWT",
    }
    assert client.get(f"/object/{bucket}/f.txt").content == b"x"


def test_signed_get_without_a_token_is_a_querystring_violation(
    api: tuple[httpx.Client, str], storage_server: Any
) -> None:
    client, bucket = api
    put(client, bucket, "f.txt")
    response = httpx.get(f"{storage_server.url}/storage/v1/object/sign/{bucket}/f.txt")
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": "400",
        "error": "Error",
        "message": "querystring must have required property 'token'",
    }


def test_schema_violations_through_the_official_client(
    api: tuple[httpx.Client, str], storage_server: Any
) -> None:
    """storage3 raises StorageApiError with .status = body statusCode, .code = body error."""
    from storage3.exceptions import StorageApiError
    from supabase import ClientOptions, create_client

    client, bucket = api
    put(client, bucket, "f.txt")
    with httpx.Client(timeout=30) as http:
        files = create_client(
            storage_server.url, storage_server.service_role_key, ClientOptions(httpx_client=http)
        ).storage.from_(bucket)
        calls = [
            (lambda: files.create_signed_url("f.txt", 0), "body/expiresIn must be >= 1"),
            (lambda: files.create_signed_urls([], 60), "body/paths must NOT have fewer than 1 items"),
            (
                lambda: files.create_signed_urls([f"p{i}" for i in range(1001)], 60),
                "body/paths must NOT have more than 1000 items",
            ),
            (lambda: files.remove([]), "body/prefixes must NOT have fewer than 1 items"),
            (lambda: files.list("", {"limit": 0}), "body/limit must be >= 1"),  # type: ignore[typeddict-item]
        ]
        for call, message in calls:
            with pytest.raises(StorageApiError) as info:
                call()
            assert (info.value.status, info.value.code, info.value.message) == ("400", "Error", message)
    assert client.get(f"/object/{bucket}/f.txt").content == b"x"


def test_list_v2_pages_with_a_cursor(api: tuple[httpx.Client, str]) -> None:
    client, bucket = api
    names = [f"p/{i:02d}.txt" for i in range(5)]
    for name in names:
        put(client, bucket, name)
    seen: list[str] = []
    body: dict[str, Any] = {"prefix": "p/", "limit": 2}
    while True:
        page = client.post(f"/object/list-v2/{bucket}", json=body).json()
        seen += [o["name"] for o in page["objects"]]
        if not page["hasNext"]:
            break
        body["cursor"] = page["nextCursor"]
    assert seen == names
    folders = client.post(f"/object/list/{bucket}", json={"prefix": ""}).json()
    assert folders == [
        {
            "name": "p",
            "id": None,
            "updated_at": None,
            "created_at": None,
            "last_accessed_at": None,
            "metadata": None,
        }
    ]


def test_keys_are_generated_once_and_kept(tmp_path: Any) -> None:
    first = load_or_create_keys(tmp_path)
    assert load_or_create_keys(tmp_path) == first
    assert (
        jwt.decode(first.service_role_key, first.jwt_secret, algorithms=["HS256"])["role"] == "service_role"
    )
    assert jwt.decode(first.anon_key, first.jwt_secret, algorithms=["HS256"])["role"] == "anon"
    given = secrets.token_urlsafe(32)
    assert load_or_create_keys(tmp_path, given).jwt_secret == given
