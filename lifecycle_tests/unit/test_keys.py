"""Keys: built only from a UUID and a safe extension; anything else is refused before any request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from lifecycle import errors
from lifecycle.storage import BucketLayout, ObjectKind, StorageRepo, parse_key, result_key, source_key
from lifecycle.storage.keys import parse_own_key

JOB = uuid.UUID("0ed9a8eb-ba72-48ac-b137-dda0afd7084b")

BAD_JOB_IDS = [
    "",
    "not-a-uuid",
    "../etc/passwd",
    "0ed9a8eb-ba72-48ac-b137",
    "0ed9a8eb/ba72-48ac-b137-dda0afd7084b",
    "0ed9a8eb-ba72-48ac-b137-dda0afd7084b/..",
    "\uff10ed9a8eb-ba72-48ac-b137-dda0afd7084b",  # full-width digit zero
    "0ed9a8eb-ba72-48ac-b137-dda0afd7084bé",
    None,
    12345,
]
BAD_EXTS = [
    "",
    ".",
    "..",
    ".mp4",
    "mp4.",
    "m.p4",
    "mp4/../x",
    "mp/4",
    "m p4",
    "mp-4",
    "mp_4",
    "a" * 17,
    "mp4\n",
    "ñ",
    "mp\uff14",  # full-width digit four
    None,
]
BAD_KEYS = [
    "",
    "sources",
    f"sources/{JOB}",
    f"sources/{JOB}/",
    f"sources/{JOB}/clip.mp4",  # a result's name under sources
    f"results/{JOB}/source.mp4",
    f"results/{JOB}/clip",
    f"results/{JOB}/clip.",
    f"results/{JOB}/clip.MP4",  # not canonical: keys are built lower-case
    f"results/{str(JOB).upper()}/clip.mp4",
    f"results/{JOB}/clip.mp4/extra",
    f"/results/{JOB}/clip.mp4",
    f"results/../{JOB}/clip.mp4",
    f"other/{JOB}/clip.mp4",
    f"results/{JOB}/clip.mp4 ",
    f"results/{JOB}/clip.mpé",
]


def test_keys_have_the_documented_shape() -> None:
    assert source_key(JOB, "mp4") == f"sources/{JOB}/source.mp4"
    assert result_key(str(JOB), "JPG") == f"results/{JOB}/clip.jpg"
    assert result_key(JOB, "a" * 16) == f"results/{JOB}/clip.{'a' * 16}"


def test_parse_key_inverts_the_builders() -> None:
    parsed = parse_key(result_key(JOB, "mp4"))
    assert (parsed.kind, parsed.job_id, parsed.ext) == (ObjectKind.RESULT, JOB, "mp4")
    assert parse_key(source_key(JOB, "mov")).kind is ObjectKind.SOURCE


@pytest.mark.parametrize("job_id", BAD_JOB_IDS)
def test_bad_job_ids_are_refused(job_id: object) -> None:
    for build in (source_key, result_key):
        with pytest.raises(errors.InvalidInput) as info:
            build(job_id, "mp4")  # type: ignore[arg-type]
        assert info.value.field == "job_id"


@pytest.mark.parametrize("ext", BAD_EXTS)
def test_bad_extensions_are_refused(ext: object) -> None:
    for build in (source_key, result_key):
        with pytest.raises(errors.InvalidInput) as info:
            build(JOB, ext)  # type: ignore[arg-type]
        assert info.value.field == "ext"


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_do_not_parse(key: str) -> None:
    with pytest.raises(errors.InvalidInput):
        parse_key(key)


def test_a_job_owns_only_its_own_keys_of_each_kind() -> None:
    """What the jobs repository records: this job's key of the right kind, nothing else."""
    other = uuid.uuid4()
    assert parse_own_key(source_key(JOB, "mp4"), ObjectKind.SOURCE, JOB).ext == "mp4"
    assert parse_own_key(result_key(JOB, "webm"), ObjectKind.RESULT, JOB).job_id == JOB
    for key, kind in [
        (source_key(other, "mp4"), ObjectKind.SOURCE),  # another job's
        (result_key(other, "mp4"), ObjectKind.RESULT),
        (result_key(JOB, "mp4"), ObjectKind.SOURCE),  # the wrong kind
        (source_key(JOB, "mp4"), ObjectKind.RESULT),
        ("../../etc/passwd", ObjectKind.SOURCE),
        ("results/*", ObjectKind.RESULT),
        (f"results/{JOB}/clip.MP4", ObjectKind.RESULT),
        *((bad, ObjectKind.RESULT) for bad in BAD_KEYS),
    ]:
        with pytest.raises(errors.InvalidInput) as info:
            parse_own_key(key, kind, JOB)
        assert info.value.field == "key", key
    with pytest.raises(errors.InvalidInput):
        parse_own_key(None, ObjectKind.SOURCE, JOB)  # type: ignore[arg-type]


def test_layouts_place_keys() -> None:
    key = result_key(JOB, "mp4")
    assert BucketLayout().locate(key) == ("results", f"{JOB}/clip.mp4")
    assert BucketLayout().locate(source_key(JOB, "mp4")) == ("sources", f"{JOB}/source.mp4")
    assert BucketLayout.single("media").locate(key) == ("media", key)
    layout = BucketLayout()
    assert layout.key_of(ObjectKind.RESULT, layout.path_of(ObjectKind.RESULT, key)) == key


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def offline_repo(sent: list[httpx.Request]) -> Iterator[StorageRepo]:
    """A repo whose transport records every request it is asked to send (and fails it)."""

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(599)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    repo = StorageRepo.connect("http://127.0.0.1:9", "not-a-real-key", http_client=client, retries=1)
    try:
        yield repo
    finally:
        repo.close()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_send_no_request(offline_repo: StorageRepo, sent: list[httpx.Request], key: str) -> None:
    good = result_key(JOB, "mp4")
    calls = [
        lambda: offline_repo.upload(key, b"x", "video/mp4"),
        lambda: offline_repo.download(key),
        lambda: offline_repo.sign(key),
        lambda: offline_repo.sign_many([good, key]),
    ]
    for call in calls:
        with pytest.raises(errors.InvalidInput):
            call()
    assert sent == []


@pytest.mark.parametrize("key", ["", "sources", f"other/{JOB}/clip.mp4", "results/../x", "results/é"])
def test_remove_refuses_keys_outside_the_layout(
    offline_repo: StorageRepo, sent: list[httpx.Request], key: str
) -> None:
    with pytest.raises(errors.InvalidInput):
        offline_repo.remove([result_key(JOB, "mp4"), key])
    assert sent == []


@pytest.mark.parametrize("ttl", [0, -1, 7 * 86_400 + 1, 1.5, True])
def test_bad_ttls_send_no_request(offline_repo: StorageRepo, sent: list[httpx.Request], ttl: object) -> None:
    with pytest.raises(errors.InvalidInput):
        offline_repo.sign(result_key(JOB, "mp4"), ttl)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidInput):
        offline_repo.sign_many([result_key(JOB, "mp4")], ttl)  # type: ignore[arg-type]
    assert sent == []


def test_the_recording_transport_does_see_requests(
    offline_repo: StorageRepo, sent: list[httpx.Request]
) -> None:
    """Guards the tests above: a valid call does reach the transport."""
    with pytest.raises(errors.StorageError):
        offline_repo.download(result_key(JOB, "mp4"))
    assert len(sent) == 1
