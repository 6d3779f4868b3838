"""Storage: object keys and the StorageRepo over Supabase Storage."""

from lifecycle.storage.keys import (
    BucketLayout,
    ObjectKind,
    ParsedKey,
    job_prefix,
    parse_key,
    result_key,
    source_key,
)
from lifecycle.storage.repo import BucketReport, RemoveFailure, RemoveResult, StorageRepo, StoredObject

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
