"""A local Supabase Storage server for development and tests (Starlette + uvicorn on 127.0.0.1).

It serves, under ``/storage/v1``, every call of ``reference/supabase-storage.md`` the way the real
server was measured to answer them through ``supabase==2.34.1``: buckets (create, get, list, update,
delete, empty), objects (upload, update, download, info, sign, sign many, signed GET with
``Range``/``ETag``/``If-None-Match``, list, list-v2, remove), the real error bodies (HTTP 400 with
the code as a *string* ``statusCode``; 413 for a JSON body over 1 MiB; a plain 404 with a numeric
``statusCode`` for an unknown route; a request-schema violation, checked before the key, as Fastify's
validator words it) and the auth rules: only ``Authorization: Bearer <HS256 JWT>``
counts, the ``role`` claim decides (``service_role`` sees everything; any other role sees nothing,
gets 404 on reads and 403 on writes), a non-JWT is 403 "Invalid Compact JWS", a wrong secret 403
"signature verification failed". Signed-URL tokens are HS256 JWTs
``{"url": "<bucket>/<path>", "scope": "download", "iat", "exp"}`` signed with the same secret.

Objects live on disk under ``<data-dir>/objects/`` (one file per object version); the server's own
bookkeeping (buckets, object names, sizes, ETags, times) is a SQLite file beside them. It is a dev
tool, not a stand-in for the project's PostgreSQL.

Run it alone::

    python -m lifecycle.devstack.storage_server --port 54321 --data-dir .lifecycle/storage \
        [--jwt-secret S] [--hard-limits]

Without ``--jwt-secret`` (or ``LIFECYCLE_STORAGE_JWT_SECRET``) it generates a secret on first start
and keeps it, with the service-role and anon keys minted from it, in ``<data-dir>/keys.json``.
``--hard-limits`` refuses more than 1000 keys in one remove, as hosted projects may.
``start_storage_server(data_dir)`` runs it in a subprocess and returns its URL and keys.

Fault injection (this local server only; service-role auth)::

    POST   /_devstack/faults  {"remove_error_rate": 0.5, "remove_delay_seconds": 0, "seed": 1}
    GET    /_devstack/faults  (the current settings)
    DELETE /_devstack/faults  (back to no faults)

Keys (all optional, rates in 0..1): ``remove_error_rate``, ``sign_error_rate``,
``upload_error_rate`` (that share of those requests answers HTTP 500 with a storage error body),
``remove_skip_rate`` (that share of existing keys in a remove is silently neither deleted nor
reported, as row-level security would), ``remove_delay_seconds`` (each remove waits first),
``upload_delay_seconds`` (each upload waits after receiving the bytes, before storing them: an
upload held in flight), ``sign_delay_seconds`` and ``list_delay_seconds`` (each sign / list waits first),
``hard_limits`` (bool, as ``--hard-limits``), ``seed`` (makes the random choices repeatable).

Not implemented: resumable (TUS) and signed uploads, image transformations, public buckets' public
URLs, move/copy, per-user row-level security policies (only the two roles), S3 protocol, object
versions beyond "the newest wins", and the database-backed rate limits of hosted projects.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email.utils
import hashlib
import json
import math
import os
import random
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PREFIX = "/storage/v1"
MAX_JSON_BODY = 1024 * 1024
MAX_UPLOAD = 50 * 1024 * 1024
BULK_LIMIT = 1000
KEYS_FILE = "keys.json"
SECRET_ENV = "LIFECYCLE_STORAGE_JWT_SECRET"  # noqa: S105 - a variable name, not a secret
SERVICE_ROLE = "service_role"
_MISSING_OBJECT = "Either the object does not exist or you do not have access to it"


# Keys ---------------------------------------------------------------------------------------------


def mint_key(jwt_secret: str, role: str, *, lifetime_seconds: int = 10 * 365 * 86_400) -> str:
    """An API key for ``role`` signed with ``jwt_secret``, as a Supabase project's keys are."""
    now = int(time.time())
    claims = {"iss": "lifecycle-devstack", "role": role, "iat": now, "exp": now + lifetime_seconds}
    return jwt.encode(claims, jwt_secret, algorithm="HS256")


@dataclass(frozen=True)
class ServerKeys:
    """The JWT secret and the two API keys signed with it."""

    jwt_secret: str = field(repr=False)
    service_role_key: str = field(repr=False)
    anon_key: str = field(repr=False)

    @classmethod
    def from_secret(cls, jwt_secret: str) -> ServerKeys:
        return cls(jwt_secret, mint_key(jwt_secret, SERVICE_ROLE), mint_key(jwt_secret, "anon"))


def load_or_create_keys(data_dir: Path, jwt_secret: str | None = None) -> ServerKeys:
    """The keys in ``data_dir`` (created on first use); a given ``jwt_secret`` replaces a stored one."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEYS_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        if jwt_secret is None or stored.get("jwt_secret") == jwt_secret:
            return ServerKeys(stored["jwt_secret"], stored["service_role_key"], stored["anon_key"])
    keys = ServerKeys.from_secret(jwt_secret or secrets.token_urlsafe(32))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(
            {
                "jwt_secret": keys.jwt_secret,
                "service_role_key": keys.service_role_key,
                "anon_key": keys.anon_key,
            },
            handle,
        )
    return keys


# Errors -------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer in the real server's shape."""

    def __init__(
        self, status: str, error: str, message: str, *, http_status: int = 400, code: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.http_status = http_status
        self.code = code

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"statusCode": self.status, "error": self.error, "message": self.message}
        if self.code:
            body["code"] = self.code
        return JSONResponse(body, status_code=self.http_status)


def _not_found(what: str = "Object") -> ApiError:
    return ApiError(
        "404", "not_found", f"{what} not found", code="NoSuchKey" if what == "Object" else "NoSuchBucket"
    )


def _bucket_not_found() -> ApiError:
    return ApiError("404", "Bucket not found", "Bucket not found", code="NoSuchBucket")


def _rls() -> ApiError:
    return ApiError("403", "Unauthorized", "new row violates row-level security policy", code="AccessDenied")


def _invalid(message: str, code: str = "InvalidRequest") -> ApiError:
    return ApiError("400", "Bad Request", message, code=code)


def _schema_violation(message: str) -> ApiError:
    """Fastify's answer to a request its schema refuses: ``error`` is the JS class name, no ``code``."""
    return ApiError("400", "Error", message)


def _injected(operation: str) -> ApiError:
    return ApiError("500", "internal", f"injected fault ({operation})", http_status=500, code="DatabaseError")


# Request schemas ----------------------------------------------------------------------------------
# The real server (Fastify, AJV with ``coerceTypes: "array"``) validates a request's params, body,
# querystring and headers, in that order, before it reads the JWT, and answers the first violation
# with HTTP 400 ``{"statusCode": "400", "error": "Error", "message": "<where> <AJV's words>"}``.
# These are the body schemas of the calls this project makes (supabase/storage ``src/http/routes``).

_EXPIRES_IN = {"type": "integer", "minimum": 1}
_SORT_COLUMNS = ["name", "updated_at", "created_at"]

SIGN_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["expiresIn"],
    "properties": {"expiresIn": _EXPIRES_IN, "transform": {"type": "object"}},
}
SIGN_MANY_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["expiresIn", "paths"],
    "properties": {
        "expiresIn": _EXPIRES_IN,
        "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": BULK_LIMIT},
    },
}
REMOVE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["prefixes"],
    "properties": {"prefixes": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
}


def _sort_by(columns: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["column"],
        "properties": {
            "column": {"type": "string", "enum": columns},
            "order": {"type": "string", "enum": ["asc", "desc"]},
        },
    }


LIST_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["prefix"],
    "properties": {
        "prefix": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1},
        "offset": {"type": "integer", "minimum": 0},
        "sortBy": _sort_by([*_SORT_COLUMNS, "last_accessed_at"]),
        "search": {"type": "string"},
    },
}
LIST_V2_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "prefix": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1},
        "cursor": {"type": "string"},
        "with_delimiter": {"type": "boolean"},
        "sortBy": _sort_by(_SORT_COLUMNS),
    },
}

# A JavaScript decimal number literal: what AJV turns from a string into a number.
_JS_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def conform(value: Any, schema: dict[str, Any], where: str) -> Any:
    """``value`` checked against ``schema`` (the JSON-schema subset above) and coerced as AJV does.

    The first violation raises the real server's answer; ``where`` is Fastify's name for the value
    (``body``, ``body/paths/0``).
    """
    kind = schema.get("type")
    if kind is not None:
        value = _coerce(value, kind, where)
    if "enum" in schema and value not in schema["enum"]:
        raise _schema_violation(f"{where} must be equal to one of the allowed values")
    if kind == "integer" and "minimum" in schema and value < schema["minimum"]:
        raise _schema_violation(f"{where} must be >= {schema['minimum']}")
    if kind == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise _schema_violation(f"{where} must NOT have more than {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise _schema_violation(f"{where} must NOT have fewer than {schema['minItems']} items")
        if "items" in schema:
            value = [conform(item, schema["items"], f"{where}/{i}") for i, item in enumerate(value)]
    if kind == "object":
        for name in schema.get("required", ()):
            if name not in value:
                raise _schema_violation(f"{where} must have required property '{name}'")
        value = dict(value)
        for name, subschema in schema.get("properties", {}).items():
            if name in value:
                value[name] = conform(value[name], subschema, f"{where}/{name}")
    return value


def _coerce(value: Any, kind: str, where: str) -> Any:
    """``value`` as JSON type ``kind``, converted the way AJV's ``coerceTypes: "array"`` converts it."""
    if kind != "array" and isinstance(value, list) and len(value) == 1:
        value = value[0]  # a one-item array stands for its item
    if kind == "object" and isinstance(value, dict):
        return value
    if kind == "array":
        if isinstance(value, list):
            return value
        if not isinstance(value, dict):
            return [value]
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))  # JavaScript writes 60.0 as "60"
        if isinstance(value, int | float):
            return json.dumps(value)
        if value is None:
            return ""
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if value in ("true", 1) or value in ("false", 0, None):
            return value in ("true", 1)
    if kind == "integer":
        if isinstance(value, bool) or value is None:
            return int(bool(value))
        if isinstance(value, str) and value.strip() and _JS_NUMBER.fullmatch(value):
            value = float(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
    raise _schema_violation(f"{where} must be {kind}")


# Bookkeeping --------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """Buckets and objects: metadata in SQLite, bytes in one file per object version."""

    def __init__(self, data_dir: Path) -> None:
        self.objects_dir = data_dir / "objects"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(data_dir / "storage.sqlite3", check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS buckets (
                id TEXT PRIMARY KEY, public INTEGER NOT NULL, file_size_limit INTEGER,
                allowed_mime_types TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS objects (
                bucket_id TEXT NOT NULL, name TEXT NOT NULL, id TEXT NOT NULL, size INTEGER NOT NULL,
                mimetype TEXT NOT NULL, cache_control TEXT NOT NULL, etag TEXT NOT NULL,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (bucket_id, name));
            """
        )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.db.execute(sql, params).fetchall()

    def bucket(self, bucket_id: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM buckets WHERE id = ?", (bucket_id,))
        return rows[0] if rows else None

    def object(self, bucket_id: str, name: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM objects WHERE bucket_id = ? AND name = ?", (bucket_id, name))
        return rows[0] if rows else None

    def under(self, bucket_id: str, prefix: str, after: str = "", limit: int = -1) -> list[sqlite3.Row]:
        return self.query(
            "SELECT * FROM objects WHERE bucket_id = ? AND substr(name, 1, ?) = ? AND name > ?"
            " ORDER BY name LIMIT ?",
            (bucket_id, len(prefix), prefix, after, limit),
        )

    def put(self, bucket_id: str, name: str, data: bytes, mimetype: str, cache_control: str) -> sqlite3.Row:
        object_id = str(uuid.uuid4())
        (self.objects_dir / object_id).write_bytes(data)
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        now = _now()
        with self._lock:
            old = self.db.execute(
                "SELECT id, created_at FROM objects WHERE bucket_id = ? AND name = ?", (bucket_id, name)
            ).fetchone()
            self.db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bucket_id,
                    name,
                    object_id,
                    len(data),
                    mimetype,
                    cache_control,
                    etag,
                    old["created_at"] if old else now,
                    now,
                ),
            )
            row = self.db.execute(
                "SELECT * FROM objects WHERE bucket_id = ? AND name = ?", (bucket_id, name)
            ).fetchone()
        if old:
            self._unlink(old["id"])
        return row  # type: ignore[no-any-return]

    def delete(self, bucket_id: str, names: list[str]) -> list[sqlite3.Row]:
        deleted: list[sqlite3.Row] = []
        with self._lock:
            self.db.execute("BEGIN")
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                marks = ",".join("?" * len(chunk))
                deleted += self.db.execute(
                    f"DELETE FROM objects WHERE bucket_id = ? AND name IN ({marks}) RETURNING *",  # noqa: S608
                    (bucket_id, *chunk),
                ).fetchall()
            self.db.execute("COMMIT")
        for row in deleted:
            self._unlink(row["id"])
        return deleted

    def read(self, row: sqlite3.Row) -> bytes:
        return (self.objects_dir / str(row["id"])).read_bytes()

    def _unlink(self, object_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.objects_dir / object_id).unlink()


def _bucket_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["id"],
        "owner": "",
        "public": bool(row["public"]),
        "type": "STANDARD",
        "file_size_limit": row["file_size_limit"],
        "allowed_mime_types": json.loads(row["allowed_mime_types"]) if row["allowed_mime_types"] else None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _metadata(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "eTag": row["etag"],
        "size": row["size"],
        "mimetype": row["mimetype"],
        "cacheControl": f"max-age={row['cache_control']}",
        "lastModified": row["updated_at"],
        "contentLength": row["size"],
        "httpStatusCode": 200,
    }


def _object_json(row: sqlite3.Row, name: str | None = None) -> dict[str, Any]:
    return {
        "name": row["name"] if name is None else name,
        "id": row["id"],
        "updated_at": row["updated_at"],
        "created_at": row["created_at"],
        "last_accessed_at": row["updated_at"],
        "metadata": _metadata(row),
    }


# The application ----------------------------------------------------------------------------------


@dataclass
class Faults:
    """What the fault-injection endpoint turned on."""

    remove_error_rate: float = 0.0
    remove_skip_rate: float = 0.0
    remove_delay_seconds: float = 0.0
    upload_delay_seconds: float = 0.0
    sign_delay_seconds: float = 0.0
    list_delay_seconds: float = 0.0
    sign_error_rate: float = 0.0
    upload_error_rate: float = 0.0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def hit(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def as_json(self) -> dict[str, Any]:
        return {
            "remove_error_rate": self.remove_error_rate,
            "remove_skip_rate": self.remove_skip_rate,
            "remove_delay_seconds": self.remove_delay_seconds,
            "upload_delay_seconds": self.upload_delay_seconds,
            "sign_delay_seconds": self.sign_delay_seconds,
            "list_delay_seconds": self.list_delay_seconds,
            "sign_error_rate": self.sign_error_rate,
            "upload_error_rate": self.upload_error_rate,
            "seed": self.seed,
        }


class StorageServer:
    """The request handlers over one ``Store``."""

    def __init__(self, data_dir: Path, jwt_secret: str, *, hard_limits: bool = False) -> None:
        self.store = Store(data_dir)
        self.jwt_secret = jwt_secret
        self.hard_limits = hard_limits
        self.faults = Faults()

    # Helpers ----------------------------------------------------------------------------------

    def role(self, request: Request) -> str:
        """The ``role`` claim of the bearer token; the ``apikey`` header is ignored, as by the real server."""
        header = request.headers.get("authorization")
        if header is None:
            raise _schema_violation("headers must have required property 'authorization'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError("403", "Unauthorized", "Invalid Compact JWS", code="InvalidJWT")
        try:
            claims = jwt.decode(
                token.strip(), self.jwt_secret, algorithms=["HS256"], options={"verify_aud": False}
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(
                "403", "Unauthorized", '"exp" claim timestamp check failed', code="InvalidJWT"
            ) from None
        except jwt.InvalidSignatureError:
            raise ApiError(
                "403", "Unauthorized", "signature verification failed", code="InvalidJWT"
            ) from None
        except jwt.PyJWTError:
            raise ApiError("403", "Unauthorized", "Invalid Compact JWS", code="InvalidJWT") from None
        return str(claims.get("role") or "anon")

    def is_service(self, request: Request) -> bool:
        return self.role(request) == SERVICE_ROLE

    @staticmethod
    async def json_body(request: Request) -> Any:
        body = await request.body()
        if len(body) > MAX_JSON_BODY:
            raise ApiError(
                "413",
                "Payload too large",
                "request/body is too large",
                http_status=413,
                code="EntityTooLarge",
            )
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise _invalid("Body is not valid JSON") from None

    async def valid_body(self, request: Request, schema: dict[str, Any]) -> dict[str, Any]:
        """The JSON body, checked against ``schema`` (before the key: call it before ``role``)."""
        body: dict[str, Any] = conform(await self.json_body(request), schema, "body")
        return body

    @staticmethod
    def check_key(name: str) -> str:
        name = name.lstrip("/")
        if not name or not name.isascii() or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise ApiError("400", "InvalidKey", f"Invalid key: {name!r}", code="InvalidKey")
        if any(seg in (".", "..") for seg in name.split("/")):
            raise ApiError("400", "InvalidKey", f"Invalid key: {name!r}", code="InvalidKey")
        return name

    def sign_token(self, bucket: str, name: str, expires_in: int) -> str:
        now = int(time.time())
        claims = {"url": f"{bucket}/{name}", "scope": "download", "iat": now, "exp": now + expires_in}
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def signed_path(self, bucket: str, name: str, expires_in: int) -> str:
        token = self.sign_token(bucket, name, expires_in)
        return f"/object/sign/{quote(bucket, safe='')}/{quote(name, safe='/')}?token={token}"

    # Buckets ----------------------------------------------------------------------------------

    async def create_bucket(self, request: Request) -> Response:
        service = self.is_service(request)
        body = await self.json_body(request)
        bucket_id = body.get("id") or body.get("name") if isinstance(body, dict) else None
        if (
            not isinstance(bucket_id, str)
            or not bucket_id
            or len(bucket_id) > 100
            or not bucket_id.isascii()
            or "/" in bucket_id
            or not bucket_id.isprintable()
        ):
            raise ApiError(
                "400",
                "Invalid Input",
                "The bucket name contains invalid characters",
                code="InvalidBucketName",
            )
        if not service:
            raise _rls()
        if self.store.bucket(bucket_id) is not None:
            raise ApiError("409", "Duplicate", "The resource already exists", code="BucketAlreadyExists")
        now = _now()
        mime = body.get("allowed_mime_types")
        self.store.query(
            "INSERT INTO buckets VALUES (?, ?, ?, ?, ?, ?)",
            (
                bucket_id,
                int(bool(body.get("public"))),
                body.get("file_size_limit"),
                json.dumps(mime) if mime else None,
                now,
                now,
            ),
        )
        return JSONResponse({"name": bucket_id})

    async def list_buckets(self, request: Request) -> Response:
        if not self.is_service(request):
            return JSONResponse([])
        return JSONResponse([_bucket_json(r) for r in self.store.query("SELECT * FROM buckets ORDER BY id")])

    def existing_bucket(self, request: Request, bucket_id: str) -> sqlite3.Row:
        row = self.store.bucket(bucket_id) if self.is_service(request) else None
        if row is None:
            raise _bucket_not_found()
        return row

    async def get_bucket(self, request: Request) -> Response:
        return JSONResponse(_bucket_json(self.existing_bucket(request, request.path_params["bucket"])))

    async def update_bucket(self, request: Request) -> Response:
        bucket_id = request.path_params["bucket"]
        self.existing_bucket(request, bucket_id)
        body = await self.json_body(request)
        mime = body.get("allowed_mime_types")
        self.store.query(
            "UPDATE buckets SET public = ?, file_size_limit = ?, allowed_mime_types = ?, updated_at = ?"
            " WHERE id = ?",
            (
                int(bool(body.get("public"))),
                body.get("file_size_limit"),
                json.dumps(mime) if mime else None,
                _now(),
                bucket_id,
            ),
        )
        return JSONResponse({"message": "Successfully updated"})

    async def delete_bucket(self, request: Request) -> Response:
        bucket_id = request.path_params["bucket"]
        self.existing_bucket(request, bucket_id)
        if self.store.under(bucket_id, "", limit=1):
            raise ApiError(
                "409",
                "ResourceNotEmpty",
                "The bucket you tried to delete is not empty",
                code="ResourceNotEmpty",
            )
        self.store.query("DELETE FROM buckets WHERE id = ?", (bucket_id,))
        return JSONResponse({"message": "Successfully deleted"})

    async def empty_bucket(self, request: Request) -> Response:
        bucket_id = request.path_params["bucket"]
        self.existing_bucket(request, bucket_id)
        names = [r["name"] for r in self.store.under(bucket_id, "")]
        self.store.delete(bucket_id, names)
        return JSONResponse({"message": "Successfully emptied"})

    # Objects ----------------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        return await self._write(request, upsert=request.headers.get("x-upsert", "false").lower() == "true")

    async def update(self, request: Request) -> Response:
        return await self._write(request, upsert=True)

    async def _write(self, request: Request, *, upsert: bool) -> Response:
        service = self.is_service(request)
        bucket_id = request.path_params["bucket"]
        name = self.check_key(request.path_params["path"])
        if self.faults.hit(self.faults.upload_error_rate):
            raise _injected("upload")
        bucket = self.store.bucket(bucket_id)
        if bucket is None:
            raise _bucket_not_found()
        if not service:
            raise _rls()
        data, mimetype, cache_control = await self._payload(request)
        if self.faults.upload_delay_seconds > 0:
            # The upload is in flight: received, not yet stored (races with cleanup are tested here).
            await asyncio.sleep(self.faults.upload_delay_seconds)
        limit = bucket["file_size_limit"] or MAX_UPLOAD
        if len(data) > limit:
            raise ApiError(
                "413",
                "Payload too large",
                "The object exceeded the maximum allowed size",
                code="EntityTooLarge",
            )
        allowed = json.loads(bucket["allowed_mime_types"]) if bucket["allowed_mime_types"] else None
        if allowed and not _mime_allowed(mimetype, allowed):
            raise ApiError(
                "415", "invalid_mime_type", f"mime type {mimetype} is not supported", code="InvalidMimeType"
            )
        if not upsert and self.store.object(bucket_id, name) is not None:
            raise ApiError("409", "Duplicate", "The resource already exists", code="KeyAlreadyExists")
        row = self.store.put(bucket_id, name, data, mimetype, cache_control)
        return JSONResponse({"Key": f"{bucket_id}/{name}", "Id": row["id"]})

    @staticmethod
    async def _payload(request: Request) -> tuple[bytes, str, str]:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=16)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise _invalid("No file in the request", "InvalidRequest")
            data = await upload.read()
            cache = str(form.get("cacheControl") or "3600")
            return data, upload.content_type or "application/octet-stream", cache
        data = await request.body()
        return data, content_type or "application/octet-stream", request.headers.get("cache-control", "3600")

    def readable(self, request: Request, bucket_id: str, name: str) -> sqlite3.Row:
        row = self.store.object(bucket_id, name) if self.is_service(request) else None
        if row is None:
            raise _not_found()
        return row

    async def download(self, request: Request) -> Response:
        row = self.readable(
            request, request.path_params["bucket"], self.check_key(request.path_params["path"])
        )
        return self._serve(request, row)

    async def info(self, request: Request) -> Response:
        row = self.readable(
            request, request.path_params["bucket"], self.check_key(request.path_params["path"])
        )
        return JSONResponse(
            {
                **_object_json(row),
                "bucket_id": row["bucket_id"],
                "size": row["size"],
                "content_type": row["mimetype"],
                "etag": row["etag"],
            }
        )

    async def sign(self, request: Request) -> Response:
        body = await self.valid_body(request, SIGN_BODY)
        bucket_id = request.path_params["bucket"]
        name = self.check_key(request.path_params["path"])
        service = self.is_service(request)
        expires_in = int(body["expiresIn"])
        if self.faults.sign_delay_seconds > 0:
            await asyncio.sleep(self.faults.sign_delay_seconds)
        if self.faults.hit(self.faults.sign_error_rate):
            raise _injected("sign")
        if not service or self.store.object(bucket_id, name) is None:
            raise _not_found()
        return JSONResponse({"signedURL": self.signed_path(bucket_id, name, expires_in)})

    async def sign_many(self, request: Request) -> Response:
        body = await self.valid_body(request, SIGN_MANY_BODY)
        bucket_id = request.path_params["bucket"]
        service = self.is_service(request)
        paths: list[str] = body["paths"]
        expires_in = int(body["expiresIn"])
        if self.faults.sign_delay_seconds > 0:
            await asyncio.sleep(self.faults.sign_delay_seconds)
        if self.faults.hit(self.faults.sign_error_rate):
            raise _injected("sign")
        out = []
        for name in paths:
            exists = service and self.store.object(bucket_id, name) is not None
            out.append(
                {"error": None, "path": name, "signedURL": self.signed_path(bucket_id, name, expires_in)}
                if exists
                else {"error": _MISSING_OBJECT, "path": name, "signedURL": None}
            )
        return JSONResponse(out)

    async def signed_get(self, request: Request) -> Response:
        bucket_id = request.path_params["bucket"]
        name = request.path_params["path"]
        token = request.query_params.get("token")
        if token is None:
            raise _schema_violation("querystring must have required property 'token'")
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"])
        except jwt.ExpiredSignatureError:
            raise ApiError("400", "InvalidJWT", "jwt expired", code="InvalidJWT") from None
        except jwt.PyJWTError:
            raise ApiError("400", "InvalidJWT", "invalid signature", code="InvalidJWT") from None
        if claims.get("url") != f"{bucket_id}/{name}":
            raise ApiError(
                "400", "InvalidSignature", "The url do not match the signature", code="InvalidSignature"
            )
        row = self.store.object(bucket_id, name)
        if row is None:
            raise _not_found()
        return self._serve(request, row)

    def _serve(self, request: Request, row: sqlite3.Row) -> Response:
        size = row["size"]
        headers = {
            "ETag": row["etag"],
            "Cache-Control": f"max-age={row['cache_control']}",
            "Last-Modified": email.utils.format_datetime(
                datetime.fromisoformat(row["updated_at"].replace("Z", "+00:00")), usegmt=True
            ),
            "Expires": email.utils.formatdate(time.time() + _int(row["cache_control"], 3600), usegmt=True),
            "Accept-Ranges": "bytes",
        }
        if _etag_matches(request.headers.get("if-none-match"), row["etag"]):
            return Response(status_code=304, headers=headers)
        data = self.store.read(row)
        byte_range = _parse_range(request.headers.get("range"), size)
        if isinstance(byte_range, str):
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if byte_range is not None:
            start, end = byte_range
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return Response(
                data[start : end + 1], status_code=206, media_type=row["mimetype"], headers=headers
            )
        return Response(data, media_type=row["mimetype"], headers=headers)

    async def list_objects(self, request: Request) -> Response:
        body = await self.valid_body(request, LIST_BODY)
        bucket_id = request.path_params["bucket"]
        service = self.is_service(request)
        if self.faults.list_delay_seconds > 0:
            await asyncio.sleep(self.faults.list_delay_seconds)
        if not service or self.store.bucket(bucket_id) is None:
            return JSONResponse([])
        prefix = str(body.get("prefix") or "").strip("/")
        prefix = prefix + "/" if prefix else ""
        search = str(body.get("search") or "")
        limit = _int(body.get("limit"), 100)
        offset = _int(body.get("offset"), 0)
        sort = body.get("sortBy") or {}
        column = sort.get("column", "name") if isinstance(sort, dict) else "name"
        descending = isinstance(sort, dict) and str(sort.get("order", "asc")).lower() == "desc"
        folders: dict[str, dict[str, Any]] = {}
        files: list[dict[str, Any]] = []
        for row in self.store.under(bucket_id, prefix):
            rest = row["name"][len(prefix) :]
            head, slash, _ = rest.partition("/")
            if not head.lower().startswith(search.lower()):
                continue
            if slash:
                folders.setdefault(
                    head,
                    {
                        "name": head,
                        "id": None,
                        "updated_at": None,
                        "created_at": None,
                        "last_accessed_at": None,
                        "metadata": None,
                    },
                )
            else:
                files.append(_object_json(row, name=rest))
        entries = list(folders.values()) + files
        key = column if column in ("name", "created_at", "updated_at", "last_accessed_at") else "name"
        entries.sort(key=lambda e: (e.get(key) or ""), reverse=descending)
        return JSONResponse(entries[offset : offset + limit])

    async def list_objects_v2(self, request: Request) -> Response:
        body = await self.valid_body(request, LIST_V2_BODY)
        bucket_id = request.path_params["bucket"]
        service = self.is_service(request)
        if self.faults.list_delay_seconds > 0:
            await asyncio.sleep(self.faults.list_delay_seconds)
        empty = {"hasNext": False, "folders": [], "objects": []}
        if not service or self.store.bucket(bucket_id) is None:
            return JSONResponse(empty)
        prefix = str(body.get("prefix") or "")
        limit = max(1, min(_int(body.get("limit"), 1000), 1000))
        after = ""
        if body.get("cursor"):
            try:
                after = base64.urlsafe_b64decode(str(body["cursor"]).encode()).decode()
            except ValueError:
                raise _invalid("Invalid cursor") from None
        if not body.get("with_delimiter"):
            rows = self.store.under(bucket_id, prefix, after, limit + 1)
            page = rows[:limit]
            objects = [{**_object_json(r), "key": r["name"]} for r in page]
            result: dict[str, Any] = {"hasNext": len(rows) > limit, "folders": [], "objects": objects}
            if len(rows) > limit:
                result["nextCursor"] = base64.urlsafe_b64encode(page[-1]["name"].encode()).decode()
            return JSONResponse(result)
        # One level: folders (common prefixes) and the objects directly under ``prefix``.
        folders: list[dict[str, Any]] = []
        objects = []
        seen: set[str] = set()
        last = after
        has_next = False
        for row in self.store.under(bucket_id, prefix, after):
            rest = row["name"][len(prefix) :]
            head, slash, _ = rest.partition("/")
            entry_key = prefix + head + ("/" if slash else "")
            if entry_key in seen:
                continue
            if len(folders) + len(objects) >= limit:
                has_next = True
                break
            seen.add(entry_key)
            if slash:
                folders.append({"key": entry_key, "name": head})
                last = prefix + head + "/\U0010ffff"
            else:
                objects.append({**_object_json(row, name=head), "key": row["name"]})
                last = row["name"]
        result = {"hasNext": has_next, "folders": folders, "objects": objects}
        if has_next:
            result["nextCursor"] = base64.urlsafe_b64encode(last.encode()).decode()
        return JSONResponse(result)

    async def remove(self, request: Request) -> Response:
        body = await self.valid_body(request, REMOVE_BODY)
        bucket_id = request.path_params["bucket"]
        service = self.is_service(request)
        prefixes: list[str] = body["prefixes"]
        if self.hard_limits and len(prefixes) > BULK_LIMIT:
            raise _invalid("Bulk object requests are limited to 1000 objects per request.", "InvalidRequest")
        if self.faults.remove_delay_seconds > 0:
            await asyncio.sleep(self.faults.remove_delay_seconds)
        if self.faults.hit(self.faults.remove_error_rate):
            raise _injected("remove")
        if not service or self.store.bucket(bucket_id) is None:
            return JSONResponse([])
        names = prefixes
        if self.faults.remove_skip_rate > 0:
            names = [n for n in names if not self.faults.hit(self.faults.remove_skip_rate)]
        deleted = self.store.delete(bucket_id, names)
        return JSONResponse(
            [{**_object_json(r), "bucket_id": bucket_id, "owner": "", "version": r["id"]} for r in deleted]
        )

    async def remove_one(self, request: Request) -> Response:
        bucket_id = request.path_params["bucket"]
        name = self.check_key(request.path_params["path"])
        self.readable(request, bucket_id, name)
        self.store.delete(bucket_id, [name])
        return JSONResponse({"message": "Successfully deleted"})

    async def status(self, request: Request) -> Response:
        return Response(status_code=200)

    # Fault injection (this server only) --------------------------------------------------------

    async def faults_endpoint(self, request: Request) -> Response:
        if not self.is_service(request):
            raise _rls()
        if request.method == "DELETE":
            self.faults = Faults()
            self.hard_limits = self.initial_hard_limits
        elif request.method == "POST":
            body = await self.json_body(request)
            faults = Faults()
            for name in (
                "remove_error_rate",
                "remove_skip_rate",
                "remove_delay_seconds",
                "upload_delay_seconds",
                "sign_delay_seconds",
                "list_delay_seconds",
                "sign_error_rate",
                "upload_error_rate",
            ):
                if name in body:
                    setattr(faults, name, float(body[name]))
            if body.get("seed") is not None:
                faults.seed = int(body["seed"])
                faults.rng = random.Random(faults.seed)  # noqa: S311 - repeatable fault choice
            if "hard_limits" in body:
                self.hard_limits = bool(body["hard_limits"])
            self.faults = faults
        return JSONResponse({**self.faults.as_json(), "hard_limits": self.hard_limits})

    initial_hard_limits = False


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _mime_allowed(mimetype: str, allowed: list[str]) -> bool:
    base = mimetype.split(";")[0].strip().lower()
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == base or (pattern.endswith("/*") and base.startswith(pattern[:-1])):
            return True
    return False


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` of a single ``bytes=`` range, ``"unsatisfiable"``, or ``None`` (whole body)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return "unsatisfiable"
            return max(0, size - length), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def create_app(data_dir: Path, jwt_secret: str, *, hard_limits: bool = False) -> Starlette:
    """The Starlette application serving ``data_dir``."""
    server = StorageServer(data_dir, jwt_secret, hard_limits=hard_limits)
    server.initial_hard_limits = hard_limits
    s = server

    def route(path: str, endpoint: Any, methods: list[str]) -> Route:
        async def handler(request: Request) -> Response:
            try:
                response: Response = await endpoint(request)
            except ApiError as exc:
                return exc.response()
            return response

        return Route(PREFIX + path if not path.startswith("/_") else path, handler, methods=methods)

    routes = [
        route("/status", s.status, ["GET"]),
        route("/_devstack/faults", s.faults_endpoint, ["GET", "POST", "DELETE"]),
        route("/bucket", s.create_bucket, ["POST"]),
        route("/bucket", s.list_buckets, ["GET"]),
        route("/bucket/{bucket}/empty", s.empty_bucket, ["POST"]),
        route("/bucket/{bucket}", s.get_bucket, ["GET"]),
        route("/bucket/{bucket}", s.update_bucket, ["PUT"]),
        route("/bucket/{bucket}", s.delete_bucket, ["DELETE"]),
        route("/object/list/{bucket}", s.list_objects, ["POST"]),
        route("/object/list-v2/{bucket}", s.list_objects_v2, ["POST"]),
        route("/object/sign/{bucket}", s.sign_many, ["POST"]),
        route("/object/sign/{bucket}/{path:path}", s.sign, ["POST"]),
        route("/object/sign/{bucket}/{path:path}", s.signed_get, ["GET"]),
        route("/object/info/{bucket}/{path:path}", s.info, ["GET"]),
        route("/object/authenticated/{bucket}/{path:path}", s.download, ["GET"]),
        route("/object/{bucket}", s.remove, ["DELETE"]),
        route("/object/{bucket}/{path:path}", s.upload, ["POST"]),
        route("/object/{bucket}/{path:path}", s.update, ["PUT"]),
        route("/object/{bucket}/{path:path}", s.download, ["GET"]),
        route("/object/{bucket}/{path:path}", s.remove_one, ["DELETE"]),
    ]

    async def unknown_route(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status in (404, 405):
            # Fastify's shape: a real 404 with a numeric statusCode.
            message = f"Route {request.method}:{request.url.path} not found"
            return JSONResponse(
                {"statusCode": 404, "error": "Not Found", "message": message}, status_code=404
            )
        return JSONResponse(
            {"statusCode": status, "error": "Error", "message": "request failed"}, status_code=status
        )

    return Starlette(routes=routes, exception_handlers={404: unknown_route, 405: unknown_route})


# Running it ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningStorageServer:
    """A server started by ``start_storage_server``; ``stop()`` ends it (by its PID)."""

    url: str
    service_role_key: str = field(repr=False)
    anon_key: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    data_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the subprocess (terminate, then kill after 5 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def set_faults(self, **faults: float | int | bool | None) -> dict[str, Any]:
        """Turn on fault injection (see the module docstring for the names)."""
        response = httpx.post(
            f"{self.url}/_devstack/faults",
            json=faults,
            headers={"Authorization": f"Bearer {self.service_role_key}"},
            timeout=10,
        )
        response.raise_for_status()
        return dict(response.json())

    def clear_faults(self) -> None:
        """Turn every injected fault off."""
        httpx.delete(
            f"{self.url}/_devstack/faults",
            headers={"Authorization": f"Bearer {self.service_role_key}"},
            timeout=10,
        ).raise_for_status()


def start_storage_server(
    data_dir: Path,
    port: int | None = None,
    *,
    jwt_secret: str | None = None,
    hard_limits: bool = False,
    timeout_seconds: float = 30.0,
) -> RunningStorageServer:
    """Run the server in a subprocess on 127.0.0.1 and wait until it answers."""
    data_dir = Path(data_dir).resolve()
    keys = load_or_create_keys(data_dir, jwt_secret)
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "lifecycle.devstack.storage_server",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    if hard_limits:
        command.append("--hard-limits")
    # The secret goes through the environment, not argv (argv is visible to every local user).
    env = {**os.environ, SECRET_ENV: keys.jwt_secret}
    process = subprocess.Popen(command, env=env)  # noqa: S603 - our own module, fixed arguments
    server = RunningStorageServer(
        url=f"http://127.0.0.1:{port}",
        service_role_key=keys.service_role_key,
        anon_key=keys.anon_key,
        jwt_secret=keys.jwt_secret,
        data_dir=data_dir,
        process=process,
    )
    deadline = time.monotonic() + timeout_seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the local Storage server exited with status {process.returncode}")
        try:
            if httpx.get(f"{server.url}{PREFIX}/status", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("the local Storage server did not start in time")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    """``python -m lifecycle.devstack.storage_server``: serve on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(description="Local Supabase Storage server (development only)")
    parser.add_argument("--port", type=int, default=54321)
    parser.add_argument("--data-dir", type=Path, default=Path(".lifecycle/storage"))
    parser.add_argument(
        "--jwt-secret", default=None, help=f"default: ${SECRET_ENV}, else kept in the data dir"
    )
    parser.add_argument("--hard-limits", action="store_true", help="refuse more than 1000 keys per remove")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    import uvicorn

    keys = load_or_create_keys(args.data_dir, args.jwt_secret or os.environ.get(SECRET_ENV) or None)
    app = create_app(args.data_dir, keys.jwt_secret, hard_limits=args.hard_limits)
    # No access log: signed-URL requests carry their token in the query string.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
