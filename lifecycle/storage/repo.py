"""StorageRepo: the project's objects on Supabase Storage, through the official ``supabase`` client.

It knows keys and buckets, not jobs (``lifecycle.artifacts`` is the job-aware layer). Every request
is timed (``metrics.storage_timed``), retried with backoff on connection errors and 5xx only, and
every client error becomes ``errors.StorageError`` with the bucket, path, status and code, never a
key or token. The API answers ``[]`` rather than an error for what it did not delete, so ``remove``
checks every key it was not told about before it calls it absent; and since any key but the service
role's sees no object at all (its removes delete nothing, its checks find nothing), ``remove`` refuses
to run with any other key (``errors.ServiceRoleRequired``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import httpx
from storage3.exceptions import StorageApiError
from storage3.utils import StorageException

from lifecycle import errors
from lifecycle.logs import get_logger
from lifecycle.metrics import storage_timed
from lifecycle.redaction import redact, redact_known, register_secret
from lifecycle.storage.keys import BucketLayout, ObjectKind, normalize_job_id, parse_key

if TYPE_CHECKING:
    from storage3 import SyncStorageClient
    from storage3._sync.file_api import SyncBucketProxy

    from lifecycle.settings import Settings

T = TypeVar("T")

#: The most paths the API takes in one sign-many or remove call (hosted projects enforce it).
MAX_BATCH = 1000
#: The role that sees every object (Supabase Storage's row-level security lets it bypass policies).
SERVICE_ROLE = "service_role"
#: What the sign-many answer says of a path with no object. With the service role, "no access" cannot
#: be the reason, so it means the object does not exist; any other error leaves the question open.
_MISSING_OBJECT = "does not exist"

log = get_logger("lifecycle.storage")


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as the Storage API lists it."""

    key: str
    kind: ObjectKind
    bucket: str
    path: str
    #: ``None`` when the key is not one this project builds (a stray object).
    job_id: UUID | None
    size: int | None
    content_type: str | None
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class RemoveFailure:
    """A key whose removal failed or could not be confirmed; ``reason`` is redacted."""

    key: str
    reason: str
    status: str | None = None
    code: str | None = None


@dataclass(slots=True)
class RemoveResult:
    """What ``remove`` did with each key: gone now, already gone, or still there / unknown."""

    removed: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    failed: list[RemoveFailure] = field(default_factory=list)

    @property
    def gone(self) -> list[str]:
        """Keys confirmed not to exist any more (removed or absent)."""
        return self.removed + self.absent


@dataclass(frozen=True, slots=True)
class BucketReport:
    """What ``ensure_buckets`` found."""

    created: tuple[str, ...]
    existed: tuple[str, ...]


def key_role(key: str) -> str | None:
    """The role an API key acts as, read without verifying it (the server verifies); ``None`` if unknown.

    A legacy key is a JWT whose payload's ``role`` claim decides (``service_role``, ``anon``, ...).
    Supabase's newer API keys say their kind in their prefix: ``sb_secret_`` keys act as the service
    role, ``sb_publishable_`` keys as ``anon``.
    """
    if key.startswith("sb_secret_"):
        return SERVICE_ROLE
    if key.startswith("sb_publishable_"):
        return "anon"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    role = claims.get("role") if isinstance(claims, dict) else None
    return role if isinstance(role, str) and role else None


_httpx_filter_installed = False


class _RedactingFilter(logging.Filter):
    """Redact secrets from a log record's text (httpx logs every request URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_known(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


def install_log_redaction() -> None:
    """Make the HTTP client's own log lines safe: a signed URL carries its token in the query."""
    global _httpx_filter_installed
    if _httpx_filter_installed:
        return
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).addFilter(_RedactingFilter())
    _httpx_filter_installed = True


class StorageRepo:
    """The project's buckets and objects, addressed by key."""

    def __init__(
        self,
        client: SyncStorageClient,
        *,
        layout: BucketLayout | None = None,
        default_ttl_seconds: int = 600,
        max_ttl_seconds: int = 7 * 86_400,
        retries: int = 3,
        backoff_seconds: float = 0.2,
        secrets: Sequence[str] = (),
        http_client: httpx.Client | None = None,
        role: str | None = None,
    ) -> None:
        self._client = client
        #: The API key's role (``key_role``); ``None`` when unknown.
        self.role = role
        self.layout = layout or BucketLayout()
        self.default_ttl_seconds = default_ttl_seconds
        self.max_ttl_seconds = max_ttl_seconds
        self.retries = max(1, retries)
        self.backoff_seconds = backoff_seconds
        self._secrets = tuple(s for s in secrets if s)
        self._http_client = http_client
        install_log_redaction()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        layout: BucketLayout | None = None,
        retries: int = 3,
        backoff_seconds: float = 0.2,
    ) -> StorageRepo:
        """A repo for ``SUPABASE_URL`` with ``SUPABASE_SERVICE_ROLE_KEY`` and the configured layout."""
        if not settings.supabase_url:
            raise errors.ConfigurationError("SUPABASE_URL is not set", variable="SUPABASE_URL")
        secret = settings.supabase_service_role_key
        if secret is None or not secret.get_secret_value():
            raise errors.ConfigurationError(
                "SUPABASE_SERVICE_ROLE_KEY is not set", variable="SUPABASE_SERVICE_ROLE_KEY"
            )
        key = secret.get_secret_value()
        register_secret(key)
        if layout is None:
            bucket = settings.supabase_storage_bucket
            layout = BucketLayout.single(bucket) if bucket else BucketLayout()
        return cls.connect(
            settings.supabase_url,
            key,
            layout=layout,
            default_ttl_seconds=settings.signed_url_ttl_seconds,
            max_ttl_seconds=settings.signed_url_max_ttl_seconds,
            retries=retries,
            backoff_seconds=backoff_seconds,
        )

    @classmethod
    def connect(
        cls, url: str, key: str, *, http_client: httpx.Client | None = None, **kwargs: Any
    ) -> StorageRepo:
        """A repo for the project at ``url`` with API key ``key`` (``kwargs`` as for the constructor).

        ``http_client`` replaces the default one (30 s timeout); the repo closes it on ``close()``.
        """
        from supabase import ClientOptions, create_client

        if http_client is None:
            http_client = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=True)
        try:
            supabase = create_client(url, key, options=ClientOptions(httpx_client=http_client))
            storage = supabase.storage
        except Exception as exc:
            http_client.close()
            raise errors.ConfigurationError(
                f"cannot create the Supabase client: {redact(str(exc), [key])}", variable="SUPABASE_URL"
            ) from None
        return cls(storage, secrets=(key,), http_client=http_client, role=key_role(key), **kwargs)

    @property
    def is_service_role(self) -> bool:
        """Whether the key sees every object: only then may ``remove`` run, and only then does
        "not found" mean "not there" (any other key sees nothing at all)."""
        return self.role == SERVICE_ROLE

    def require_service_role(self) -> None:
        """Raise ``errors.ServiceRoleRequired`` unless the key is the service role's (no request)."""
        if not self.is_service_role:
            raise errors.ServiceRoleRequired()

    def check_key_accepted(self) -> None:
        """One request (list the buckets): ``errors.ConfigurationError`` when the server refuses the
        key. A rotated, forged or other project's key reads as the service role offline; only the
        server can say. A server that cannot be reached (or answers 5xx) says nothing about the key:
        that is left for the removals themselves to find."""
        try:
            self._call("list_buckets", None, None, self._client.list_buckets)
        except errors.StorageError as exc:
            if exc.code == "connection_error" or (exc.status or "").startswith("5"):
                return
            raise errors.ConfigurationError(
                f"Storage refused the key (HTTP {exc.status}: {exc.message})",
                variable="SUPABASE_SERVICE_ROLE_KEY",
            ) from exc

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._http_client is not None:
            self._http_client.close()

    def __enter__(self) -> StorageRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StorageRepo(buckets={self.layout.buckets!r})"

    # Requests -----------------------------------------------------------------------------------

    def _bucket(self, bucket: str) -> SyncBucketProxy:
        return self._client.from_(bucket)

    def _call(self, operation: str, bucket: str | None, path: str | None, call: Callable[[], T]) -> T:
        """Run one API call with timing, retries (connection errors, 5xx) and error translation."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with storage_timed(operation):
                    return call()
            except StorageApiError as exc:
                status = str(exc.status)
                if status.startswith("5") and attempt < self.retries:
                    self._pause(operation, bucket, attempt, status=status, code=str(exc.code))
                    continue
                raise errors.StorageError(
                    self._redact(str(exc.message)),
                    operation=operation,
                    bucket=bucket,
                    path=path,
                    status=status,
                    code=str(exc.code),
                ) from exc
            except httpx.TransportError as exc:
                if attempt < self.retries:
                    self._pause(operation, bucket, attempt, status=None, code=type(exc).__name__)
                    continue
                raise errors.StorageError(
                    f"storage server unreachable ({type(exc).__name__})",
                    operation=operation,
                    bucket=bucket,
                    path=path,
                    code="connection_error",
                ) from None
            except (StorageException, httpx.HTTPError, ValueError) as exc:
                # A response the client could not read, or a path it refused: not retried.
                raise errors.StorageError(
                    self._redact(f"{type(exc).__name__}: {exc}"),
                    operation=operation,
                    bucket=bucket,
                    path=path,
                ) from None

    def _pause(
        self, operation: str, bucket: str | None, attempt: int, *, status: str | None, code: str
    ) -> None:
        jitter = 0.5 + random.random()  # noqa: S311 - spreading retries, not cryptography
        delay = self.backoff_seconds * (2 ** (attempt - 1)) * jitter
        log.warning(
            "storage request failed, retrying",
            operation=operation,
            bucket=bucket,
            status=status,
            code=code,
            attempt=attempt,
            delay_seconds=round(delay, 3),
        )
        time.sleep(delay)

    def _redact(self, text: str) -> str:
        return redact(redact_known(text), self._secrets)

    def check_ttl(self, ttl_seconds: int | None) -> int:
        """``ttl_seconds`` (default: the configured TTL) if within 1..max, else ``InvalidInput``."""
        ttl = self.default_ttl_seconds if ttl_seconds is None else ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= self.max_ttl_seconds:
            raise errors.InvalidInput(
                f"signed URL TTL must be an integer from 1 to {self.max_ttl_seconds} seconds",
                field="ttl_seconds",
            )
        return ttl

    # Objects ------------------------------------------------------------------------------------

    def upload(self, key: str, data: bytes, content_type: str, *, upsert: bool = False) -> str:
        """Store ``data`` at ``key``; an existing object is a ``StorageError`` (409) unless ``upsert``."""
        bucket, path = self.layout.locate(key)
        options: dict[str, str] = {"content-type": content_type, "upsert": "true" if upsert else "false"}
        self._call("upload", bucket, path, lambda: self._bucket(bucket).upload(path, data, options))  # type: ignore[arg-type]
        return key

    def download(self, key: str) -> bytes:
        """The bytes at ``key`` (authenticated; a missing object is a ``StorageError`` 404)."""
        bucket, path = self.layout.locate(key)
        return self._call("download", bucket, path, lambda: self._bucket(bucket).download(path))

    def sign(self, key: str, ttl_seconds: int | None = None) -> str:
        """A signed download URL of ``key``, valid ``ttl_seconds`` (default ``SIGNED_URL_TTL_SECONDS``)."""
        ttl = self.check_ttl(ttl_seconds)
        bucket, path = self.layout.locate(key)
        response = self._call("sign", bucket, path, lambda: self._bucket(bucket).create_signed_url(path, ttl))
        url = response.get("signedURL") or response.get("signedUrl")
        if not url:
            raise errors.StorageError(
                "the server returned no signed URL", operation="sign", bucket=bucket, path=path
            )
        return str(url)

    def sign_many(self, keys: Iterable[str], ttl_seconds: int | None = None) -> dict[str, str | None]:
        """Signed URLs of ``keys`` (batches of at most 1000); a missing object gives ``None``."""
        ttl = self.check_ttl(ttl_seconds)
        ordered = list(dict.fromkeys(keys))
        located = {key: self.layout.locate(key) for key in ordered}
        urls: dict[str, str | None] = dict.fromkeys(ordered)
        for bucket, chunk in self._chunks(located):
            for key, url in self._sign_chunk(bucket, chunk, ttl).items():
                urls[key] = url
        return urls

    def _sign_chunk(self, bucket: str, chunk: list[tuple[str, str]], ttl: int) -> dict[str, str | None]:
        paths = [path for _, path in chunk]
        items = self._call(
            "sign_many", bucket, None, lambda: self._bucket(bucket).create_signed_urls(paths, ttl)
        )
        by_path: dict[str, str | None] = {}
        for item in items:
            url = item.get("signedURL") or item.get("signedUrl")
            by_path[str(item.get("path"))] = str(url) if url and not item.get("error") else None
        return {key: by_path.get(path) for key, path in chunk}

    def remove(self, keys: Iterable[str]) -> RemoveResult:
        """Delete ``keys`` (batches of at most 1000); each ends up removed, absent or failed.

        Refused (``errors.ServiceRoleRequired``, before any request) unless the key is the service
        role's. A key is absent only when the service role's existence check says it does not exist;
        a failed check or an answer that does not say so clearly leaves it failed.
        """
        ordered = list(dict.fromkeys(keys))
        located = {key: self._locate_any(key) for key in ordered}
        self.require_service_role()
        result = RemoveResult()
        for bucket, chunk in self._chunks(located):
            self._remove_chunk(bucket, chunk, result)
        return result

    def _remove_chunk(self, bucket: str, chunk: list[tuple[str, str]], result: RemoveResult) -> None:
        paths = [path for _, path in chunk]
        try:
            rows = self._call("remove", bucket, None, lambda: self._bucket(bucket).remove(paths))
        except errors.StorageError as exc:
            reason = self._redact(exc.message)
            result.failed.extend(RemoveFailure(key, reason, exc.status, exc.code) for key, _ in chunk)
            return
        # Anything but a list of objects (``null``, a dict, a string: a proxy or a broken server
        # answering 200) reports nothing removed; the existence check below decides for every key.
        listed = rows if isinstance(rows, list) else []
        reported = {str(row.get("name")) for row in listed if isinstance(row, dict)}
        unreported: list[tuple[str, str]] = []
        for key, path in chunk:
            if path in reported:
                result.removed.append(key)
            else:
                unreported.append((key, path))
        if not unreported:
            return
        # "Not in the answer" may mean "did not exist" or "was not deleted" (a partial failure):
        # ask again before calling the key absent. Signing is the batch existence check the API
        # offers (the URLs are thrown away); only a clear "does not exist" for this very path counts.
        try:
            exists = self._exists_chunk(bucket, unreported)
        except errors.StorageError as exc:
            reason = "could not confirm removal: " + self._redact(exc.message)
            result.failed.extend(RemoveFailure(key, reason, exc.status, exc.code) for key, _ in unreported)
            return
        for key, _ in unreported:
            if exists[key] is False:
                result.absent.append(key)
            elif exists[key] is True:
                result.failed.append(RemoveFailure(key, "object still exists after remove"))
            else:
                result.failed.append(RemoveFailure(key, "could not confirm removal: unclear answer"))

    def _exists_chunk(self, bucket: str, chunk: list[tuple[str, str]]) -> dict[str, bool | None]:
        """For each key: ``True`` (signed: it exists), ``False`` (the server says it does not exist)
        or ``None`` (no clear answer for its path). Service role only: see ``_MISSING_OBJECT``."""
        paths = [path for _, path in chunk]
        items = self._call(
            "sign_many", bucket, None, lambda: self._bucket(bucket).create_signed_urls(paths, 60)
        )
        by_path: dict[str, bool | None] = {}
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                continue
            url = item.get("signedURL") or item.get("signedUrl")
            error = item.get("error")
            if url and not error:
                answer: bool | None = True
            elif not url and isinstance(error, str) and _MISSING_OBJECT in error:
                answer = False
            else:
                answer = None
            # Two answers for one path that disagree: no clear answer.
            path = item["path"]
            by_path[path] = answer if by_path.get(path, answer) == answer else None
        return {key: by_path.get(path) for key, path in chunk}

    def _locate_any(self, key: str) -> tuple[str, str]:
        """Bucket and path of any key under a kind prefix (stray objects too), for removal."""
        try:
            return self.layout.locate(key)
        except errors.InvalidInput:
            pass
        prefix, _, rest = key.partition("/") if isinstance(key, str) else ("", "", "")
        segments = rest.split("/")
        if (
            not key.isascii()
            or prefix not in {k.value for k in ObjectKind}
            or not rest
            or any(s in ("", ".", "..") for s in segments)
        ):
            raise errors.InvalidInput("not an object key", field="key")
        kind = ObjectKind(prefix)
        return self.layout.bucket_of(kind), self.layout.path_of(kind, key)

    @staticmethod
    def _chunks(located: dict[str, tuple[str, str]]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
        by_bucket: dict[str, list[tuple[str, str]]] = {}
        for key, (bucket, path) in located.items():
            by_bucket.setdefault(bucket, []).append((key, path))
        for bucket, items in by_bucket.items():
            for start in range(0, len(items), MAX_BATCH):
                yield bucket, items[start : start + MAX_BATCH]

    # Listing ------------------------------------------------------------------------------------

    def list_job_objects(self, job_id: UUID | str) -> list[StoredObject]:
        """Every object stored under ``job_id`` (sources first)."""
        job = normalize_job_id(job_id)
        found: list[StoredObject] = []
        for kind in ObjectKind:
            bucket = self.layout.bucket_of(kind)
            folder = f"{self.layout.prefix_of(kind)}{job}"
            offset = 0
            while True:
                options: dict[str, Any] = {"limit": MAX_BATCH, "offset": offset}
                entries = self._call(
                    "list",
                    bucket,
                    folder,
                    lambda: self._bucket(bucket).list(folder, options),  # type: ignore[arg-type]  # noqa: B023
                )
                for entry in entries:
                    if entry.get("id") is None:
                        continue  # a "folder": nothing of ours nests deeper
                    path = f"{folder}/{entry['name']}"
                    found.append(self._stored(kind, bucket, path, entry))
                if len(entries) < MAX_BATCH:
                    break
                offset += len(entries)
        return found

    def iter_keys(self, kind: ObjectKind | str, *, page_size: int = MAX_BATCH) -> Iterator[StoredObject]:
        """Every object of ``kind``, paged (``list_v2``), with its times (reconciliation's grace period)."""
        kind = ObjectKind(kind)
        bucket = self.layout.bucket_of(kind)
        prefix = self.layout.prefix_of(kind)
        cursor: str | None = None
        while True:
            options: dict[str, Any] = {"prefix": prefix, "limit": page_size, "with_delimiter": False}
            if cursor:
                options["cursor"] = cursor
            page = self._call(
                "list_v2",
                bucket,
                prefix or None,
                lambda: self._bucket(bucket).list_v2(options),  # type: ignore[arg-type]  # noqa: B023
            )
            for obj in page.objects:
                name = obj.key or obj.name
                path = name if name.startswith(prefix) else prefix + name
                yield self._stored(
                    kind,
                    bucket,
                    path,
                    {"metadata": obj.metadata, "created_at": obj.created_at, "updated_at": obj.updated_at},
                )
            if not page.hasNext or not page.nextCursor:
                return
            cursor = page.nextCursor

    def _stored(self, kind: ObjectKind, bucket: str, path: str, entry: dict[str, Any]) -> StoredObject:
        key = self.layout.key_of(kind, path)
        try:
            job_id: UUID | None = parse_key(key).job_id
        except errors.InvalidInput:
            job_id = None
        metadata = entry.get("metadata") or {}
        size = metadata.get("size", metadata.get("contentLength"))
        return StoredObject(
            key=key,
            kind=kind,
            bucket=bucket,
            path=path,
            job_id=job_id,
            size=int(size) if size is not None else None,
            content_type=metadata.get("mimetype"),
            created_at=_timestamp(entry.get("created_at")),
            updated_at=_timestamp(entry.get("updated_at")),
        )

    # Buckets ------------------------------------------------------------------------------------

    def ensure_buckets(self) -> BucketReport:
        """Create the layout's missing buckets (private); an existing bucket counts as success."""
        created: list[str] = []
        existed: list[str] = []
        for bucket in self.layout.buckets:
            try:
                self._call(
                    "create_bucket",
                    bucket,
                    None,
                    lambda: self._client.create_bucket(bucket, options={"public": False}),  # noqa: B023
                )
            except errors.StorageError as exc:
                if exc.status == "409" or exc.code == "Duplicate":
                    existed.append(bucket)
                    continue
                raise
            created.append(bucket)
        return BucketReport(created=tuple(created), existed=tuple(existed))


def _timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
