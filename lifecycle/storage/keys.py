"""Object keys: the only place that builds or reads them.

A key is ``sources/{jobId}/source.<ext>`` or ``results/{jobId}/clip.<ext>``. Job ids are UUIDs and
``ext`` is 1-16 of ``[a-z0-9]`` (upper case folded); anything else is ``errors.InvalidInput`` before
any I/O. Where a key lives depends on the layout: two buckets ``sources`` and ``results`` (the path
inside the bucket is ``{jobId}/...``), or one bucket (``SUPABASE_STORAGE_BUCKET``) holding the key
as it is, prefixes included.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from uuid import UUID

from lifecycle import errors

_EXT = re.compile(r"[a-z0-9]{1,16}")
# The canonical text of a UUID (what str(UUID) gives): parse_key accepts only that, so one object
# has exactly one key.
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class ObjectKind(enum.StrEnum):
    """What an object is to its job; the value is the key prefix (and the default bucket)."""

    SOURCE = "sources"
    RESULT = "results"


#: The file name (without extension) of each kind inside the job's folder.
_STEM = {ObjectKind.SOURCE: "source", ObjectKind.RESULT: "clip"}


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """The parts of a key."""

    kind: ObjectKind
    job_id: UUID
    ext: str

    @property
    def key(self) -> str:
        """The key these parts make."""
        return f"{self.kind.value}/{self.job_id}/{_STEM[self.kind]}.{self.ext}"


def normalize_job_id(job_id: UUID | str) -> UUID:
    """``job_id`` as a UUID; anything that is not a UUID is ``InvalidInput``."""
    if isinstance(job_id, UUID):
        return job_id
    if not isinstance(job_id, str) or not job_id.isascii():
        raise errors.InvalidInput("job id must be a UUID", field="job_id")
    try:
        return UUID(job_id.strip())
    except ValueError:
        raise errors.InvalidInput("job id must be a UUID", field="job_id") from None


def normalize_ext(ext: str) -> str:
    """``ext`` folded to lower case; it must be 1-16 of ``[a-z0-9]`` (no dot, slash or non-ASCII)."""
    if not isinstance(ext, str) or not ext.isascii():
        raise errors.InvalidInput("extension must be 1-16 ASCII letters or digits", field="ext")
    folded = ext.lower()
    if not _EXT.fullmatch(folded):
        raise errors.InvalidInput("extension must be 1-16 ASCII letters or digits", field="ext")
    return folded


def object_key(kind: ObjectKind, job_id: UUID | str, ext: str) -> str:
    """The key of the ``kind`` object of ``job_id`` with extension ``ext``."""
    return ParsedKey(ObjectKind(kind), normalize_job_id(job_id), normalize_ext(ext)).key


def source_key(job_id: UUID | str, ext: str) -> str:
    """``sources/{jobId}/source.<ext>``."""
    return object_key(ObjectKind.SOURCE, job_id, ext)


def result_key(job_id: UUID | str, ext: str) -> str:
    """``results/{jobId}/clip.<ext>``."""
    return object_key(ObjectKind.RESULT, job_id, ext)


def job_prefix(kind: ObjectKind, job_id: UUID | str) -> str:
    """The folder of the ``kind`` objects of ``job_id`` (``results/{jobId}/``)."""
    return f"{ObjectKind(kind).value}/{normalize_job_id(job_id)}/"


def parse_key(key: str) -> ParsedKey:
    """The kind, job id and extension of ``key``; a key this module would not build is ``InvalidInput``."""
    if not isinstance(key, str) or not key.isascii():
        raise errors.InvalidInput("not an object key", field="key")
    parts = key.split("/")
    if len(parts) != 3:
        raise errors.InvalidInput("not an object key", field="key")
    prefix, job_text, name = parts
    try:
        kind = ObjectKind(prefix)
    except ValueError:
        raise errors.InvalidInput("not an object key", field="key") from None
    stem, dot, ext = name.partition(".")
    if not _UUID_TEXT.fullmatch(job_text) or stem != _STEM[kind] or not dot or not _EXT.fullmatch(ext):
        raise errors.InvalidInput("not an object key", field="key")
    return ParsedKey(kind, UUID(job_text), ext)


def parse_own_key(key: str, kind: ObjectKind, job_id: UUID) -> ParsedKey:
    """``key`` parsed, if it is ``job_id``'s own ``kind`` key; anything else is ``InvalidInput``.

    What the jobs repository records: ``sources/{job_id}/source.<ext>`` as a source,
    ``results/{job_id}/clip.<ext>`` as a result, never another job's key, a path or a wildcard.
    """
    parsed = parse_key(key)
    if parsed.kind is not ObjectKind(kind) or parsed.job_id != job_id:
        raise errors.InvalidInput(f"not this job's own {ObjectKind(kind).name.lower()} key", field="key")
    return parsed


@dataclass(frozen=True, slots=True)
class BucketLayout:
    """Where keys live: one bucket per kind, or one bucket with the kind as a prefix."""

    sources: str = ObjectKind.SOURCE.value
    results: str = ObjectKind.RESULT.value
    single_bucket: str | None = None

    @classmethod
    def single(cls, bucket: str) -> BucketLayout:
        """Every key in ``bucket``, prefixes included."""
        return cls(single_bucket=bucket)

    @property
    def buckets(self) -> tuple[str, ...]:
        """Every bucket the layout uses."""
        if self.single_bucket is not None:
            return (self.single_bucket,)
        return (self.sources, self.results)

    def bucket_of(self, kind: ObjectKind) -> str:
        """The bucket holding ``kind`` objects."""
        if self.single_bucket is not None:
            return self.single_bucket
        return self.sources if kind is ObjectKind.SOURCE else self.results

    def prefix_of(self, kind: ObjectKind) -> str:
        """The path prefix of ``kind`` objects inside their bucket ("" or ``"results/"``)."""
        return f"{kind.value}/" if self.single_bucket is not None else ""

    def locate(self, key: str) -> tuple[str, str]:
        """``(bucket, path inside the bucket)`` of a valid key."""
        parsed = parse_key(key)
        return self.bucket_of(parsed.kind), self.path_of(parsed.kind, key)

    def path_of(self, kind: ObjectKind, key: str) -> str:
        """The path of ``key`` inside its bucket."""
        if self.single_bucket is not None:
            return key
        return key.removeprefix(f"{kind.value}/")

    def key_of(self, kind: ObjectKind, path: str) -> str:
        """The key of the object at ``path`` in the ``kind`` bucket (the inverse of ``path_of``)."""
        if self.single_bucket is not None:
            return path
        return f"{kind.value}/{path}"
