"""``ApiKeysRepo``: API keys stored as bcrypt hashes, verified with a short in-process cache.

A key reads ``lk_<key_id>_<secret>``: ``key_id`` (16 hex characters) is public and indexed, the
secret (43 URL-safe characters, well under bcrypt's 72-byte limit) is only ever stored as a bcrypt
hash of cost ``BCRYPT_ROUNDS``. ``verify`` finds the row by ``key_id`` and checks one hash; for an
unknown ``key_id`` it checks the secret against a dummy hash of the same cost, so the time taken
does not tell which ids exist.

bcrypt at cost 12 takes a few hundred milliseconds, too slow for every request: a successful
verification is cached in this process for ``API_KEY_CACHE_TTL_SECONDS`` (keyed by the SHA-256 of
the plaintext, never the plaintext). ``revoke`` clears this process's entry at once; another
process honours a revoke within the TTL.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

import bcrypt
from psycopg.rows import RowMaker

from lifecycle import errors
from lifecycle.db._common import Operation, as_uuid, check_datetime, check_text
from lifecycle.records import ApiKey

if TYPE_CHECKING:
    import psycopg

    from lifecycle.db._executor import Executor
    from lifecycle.settings import Settings

PREFIX: Final = "lk"
KEY_SHAPE: Final = re.compile(r"lk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
#: ``last_used_at`` is written at most once per this interval per key (not on every request).
LAST_USED_RESOLUTION: Final = timedelta(seconds=60)
#: Entries the verification cache holds at most (oldest dropped first).
CACHE_MAX_ENTRIES: Final = 10_000


def _api_key(values: Sequence[Any]) -> ApiKey:
    """An ``ApiKey`` (never its hash) from a row in ``api_keys.columns`` order."""
    return ApiKey(
        id=values[0],
        name=values[1],
        key_id=values[2],
        scopes=tuple(values[3]),
        created_at=values[4],
        last_used_at=values[5],
        expires_at=values[6],
        revoked_at=values[7],
    )


def api_key_row(cursor: psycopg.Cursor[Any]) -> RowMaker[ApiKey]:
    """psycopg row factory: rows selected with ``api_keys.columns`` become ``ApiKey`` records."""
    return _api_key


class VerifyCache:
    """Successful verifications of this process: SHA-256 of the plaintext -> (deadline, key)."""

    def __init__(self, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, ApiKey]] = {}

    def get(self, digest: str) -> ApiKey | None:
        """The cached key for ``digest`` if its entry has not run out."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, digest: str, key: ApiKey, ttl_seconds: float) -> None:
        """Remember ``key`` for ``ttl_seconds``."""
        with self._lock:
            if len(self._entries) >= self.max_entries:
                # dicts keep insertion order: drop the oldest entry.
                self._entries.pop(next(iter(self._entries)))
            self._entries[digest] = (time.monotonic() + ttl_seconds, key)

    def discard(self, api_key_id: UUID) -> None:
        """Forget every entry of the key ``api_key_id`` (after a revoke)."""
        with self._lock:
            for digest in [d for d, (_, k) in self._entries.items() if k.id == api_key_id]:
                del self._entries[digest]

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_cache: VerifyCache | None = None
_dummy_hashes: dict[int, bytes] = {}
_module_lock = threading.Lock()


def verify_cache() -> VerifyCache:
    """The process's verification cache (created on first use)."""
    global _cache
    with _module_lock:
        if _cache is None:
            _cache = VerifyCache()
        return _cache


def _dummy_hash(rounds: int) -> bytes:
    """A bcrypt hash of cost ``rounds`` that no secret matches (for unknown key ids)."""
    with _module_lock:
        if rounds not in _dummy_hashes:
            _dummy_hashes[rounds] = bcrypt.hashpw(secrets.token_bytes(32), bcrypt.gensalt(rounds))
        return _dummy_hashes[rounds]


def _digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


class ApiKeysRepo:
    """API keys: create (plaintext returned once), verify, revoke, list."""

    def __init__(self, executor: Executor, settings: Settings) -> None:
        self.executor = executor
        self.settings = settings

    def create(
        self, name: str, scopes: Iterable[str] = (), expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """A new key: its record and its plaintext (shown once, never stored)."""
        with Operation("api_keys", "create"):
            check_text(name, "name", max_length=200)
            if isinstance(scopes, str):
                raise errors.InvalidInput("scopes must be a collection of strings", field="scopes")
            scope_list = [check_text(s, "scopes", max_length=200) for s in scopes]
            if expires_at is not None:
                check_datetime(expires_at, "expires_at")
            key_id = secrets.token_hex(8)
            secret = secrets.token_urlsafe(32)
            key_hash = bcrypt.hashpw(secret.encode(), bcrypt.gensalt(self.settings.bcrypt_rounds))
            key = self.executor.one(
                "api_keys.create",
                {
                    "name": name,
                    "key_id": key_id,
                    "key_hash": key_hash.decode("ascii"),
                    "scopes": scope_list,
                    "expires_at": expires_at,
                },
                row=api_key_row,
            )
            assert key is not None  # an INSERT ... RETURNING always returns its row
            return key, f"{PREFIX}_{key_id}_{secret}"

    def verify(self, plaintext: str) -> ApiKey:
        """The key ``plaintext`` belongs to; ``errors.InvalidApiKey`` for any failure.

        Malformed, unknown, wrong, revoked and expired keys all fail the same way, and a well-formed
        key costs one bcrypt check whether or not its id exists.
        """
        with Operation("api_keys", "verify"):
            match = KEY_SHAPE.fullmatch(plaintext) if isinstance(plaintext, str) else None
            if match is None:
                raise errors.InvalidApiKey()
            key_id, secret = match.group(1), match.group(2).encode()
            ttl = self.settings.api_key_cache_ttl_seconds
            digest = _digest(plaintext)
            cache = verify_cache()
            if ttl > 0:
                cached = cache.get(digest)
                if cached is not None and (
                    cached.expires_at is None or cached.expires_at > datetime.now(cached.expires_at.tzinfo)
                ):
                    return cached
            row = self.executor.one("api_keys.by_key_id", {"key_id": key_id})
            if row is None:
                bcrypt.checkpw(secret, _dummy_hash(self.settings.bcrypt_rounds))
                raise errors.InvalidApiKey()
            key = _api_key(row)
            key_hash, db_now = row[8], row[9]
            matches = bcrypt.checkpw(secret, key_hash.encode("ascii"))
            expired = key.expires_at is not None and key.expires_at <= db_now
            if not matches or key.revoked_at is not None or expired:
                raise errors.InvalidApiKey()
            touched = self.executor.scalar(
                "api_keys.touch", {"id": key.id, "resolution": LAST_USED_RESOLUTION}
            )
            if touched is not None:
                key = replace(key, last_used_at=touched)
            if ttl > 0:
                cache.put(digest, key, ttl)
            return key

    def revoke(self, api_key_id: UUID | str) -> ApiKey:
        """Revoke a key (idempotent: a second revoke keeps the first time); ``ApiKeyNotFound``."""
        key_uuid = as_uuid(api_key_id, "api_key_id")
        with Operation("api_keys", "revoke"):
            # Cleared before the write too: even a revoke that is rolled back only costs a re-check.
            verify_cache().discard(key_uuid)
            key = self.executor.one("api_keys.revoke", {"id": key_uuid}, row=api_key_row)
            if key is None:
                raise errors.ApiKeyNotFound(key_uuid)
            return key

    def get(self, api_key_id: UUID | str) -> ApiKey:
        """One key by its id (never its hash); ``ApiKeyNotFound``."""
        key_uuid = as_uuid(api_key_id, "api_key_id")
        with Operation("api_keys", "get"):
            key = self.executor.one("api_keys.get", {"id": key_uuid}, row=api_key_row)
            if key is None:
                raise errors.ApiKeyNotFound(key_uuid)
            return key

    def list(self, *, include_inactive: bool = True) -> builtins.list[ApiKey]:
        """Every key, oldest first (never a hash); ``include_inactive=False`` drops revoked/expired."""
        with Operation("api_keys", "list"):
            statement = "api_keys.list" if include_inactive else "api_keys.list_active"
            return self.executor.all(statement, row=api_key_row)
