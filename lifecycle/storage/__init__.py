"""Storage: object keys and the StorageRepo over Supabase Storage.

The keys are plain Python and imported at once (the data layer checks keys with them); the
repository and its HTTP client stack (storage3, httpx) load on first use of one of their names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lifecycle.storage.keys import (
    BucketLayout,
    ObjectKind,
    ParsedKey,
    job_prefix,
    parse_key,
    result_key,
    source_key,
)

if TYPE_CHECKING:
    from lifecycle.storage.repo import BucketReport, RemoveFailure, RemoveResult, StorageRepo, StoredObject

_FROM_REPO = frozenset({"BucketReport", "RemoveFailure", "RemoveResult", "StorageRepo", "StoredObject"})


def __getattr__(name: str) -> Any:
    if name in _FROM_REPO:
        from lifecycle.storage import repo

        return getattr(repo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BucketLayout",
    "BucketReport",
    "ObjectKind",
    "ParsedKey",
    "RemoveFailure",
    "RemoveResult",
    "StorageRepo",
    "StoredObject",
    "job_prefix",
    "parse_key",
    "result_key",
    "source_key",
]
