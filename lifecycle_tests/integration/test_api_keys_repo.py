"""ApiKeysRepo: hashes only, uniform failures, constant work for unknown ids, the cache."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import bcrypt
import pytest

from lifecycle import errors
from lifecycle.db import Database
from lifecycle.db.api_keys import KEY_SHAPE, verify_cache
from lifecycle.settings import Settings
from lifecycle_tests.integration._jobs_helpers import snapshot


@pytest.fixture(autouse=True)
def _fresh_cache():
    verify_cache().clear()
    yield
    verify_cache().clear()


@pytest.fixture
def uncached_db(database_url):
    """A Database whose verify never uses the cache (every call goes to bcrypt)."""
    database = Database.from_url(
        database_url, settings=Settings.load(env={"BCRYPT_ROUNDS": "4", "API_KEY_CACHE_TTL_SECONDS": "0"})
    )
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def checkpw_calls(monkeypatch):
    """Every bcrypt check made, as (cost of the hash checked against)."""
    calls: list[int] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(int(hashed.split(b"$")[2]))
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


def test_create_stores_only_a_bcrypt_hash(db, raw):
    with db.transaction() as tx:
        key, plaintext = tx.api_keys.create("ci", scopes=("jobs:write", "jobs:read"))
    assert KEY_SHAPE.fullmatch(plaintext)
    assert len(plaintext.split("_", 2)[2]) < 72
    assert plaintext.split("_")[1] == key.key_id
    stored = raw.execute("SELECT name, key_id, key_hash, scopes FROM api_keys").fetchone()
    assert stored[0:2] == ("ci", key.key_id)
    assert stored[2].startswith("$2b$04$")
    assert stored[3] == ["jobs:write", "jobs:read"]
    secret = plaintext.split("_", 2)[2]
    dump = str(raw.execute("SELECT jsonb_agg(a) FROM api_keys a").fetchone()[0])
    assert plaintext not in dump
    assert secret not in dump
    assert plaintext not in repr(key)
    assert key.scopes == ("jobs:write", "jobs:read")


def test_verify_and_last_used_is_throttled(uncached_db, raw):
    db = uncached_db
    with db.transaction() as tx:
        key, plaintext = tx.api_keys.create("app")
    with db.transaction() as tx:
        verified = tx.api_keys.verify(plaintext)
    assert verified.id == key.id
    first_use = raw.execute("SELECT last_used_at FROM api_keys").fetchone()[0]
    assert first_use is not None
    assert verified.last_used_at == first_use
    with db.transaction() as tx:
        tx.api_keys.verify(plaintext)
    assert raw.execute("SELECT last_used_at FROM api_keys").fetchone()[0] == first_use
    raw.execute("UPDATE api_keys SET last_used_at = now() - interval '2 minutes'")
    with db.transaction() as tx:
        tx.api_keys.verify(plaintext)
    assert raw.execute("SELECT last_used_at > now() - interval '1 minute' FROM api_keys").fetchone()[0]


def test_wrong_secret_revoked_and_expired_fail_alike(uncached_db, raw):
    db = uncached_db
    with db.transaction() as tx:
        _, plaintext = tx.api_keys.create("good")
        revoked, revoked_plain = tx.api_keys.create("revoked")
        _, expired_plain = tx.api_keys.create("expired", expires_at=datetime.now(UTC) + timedelta(hours=1))
    raw.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE name = 'expired'")
    with db.transaction() as tx:
        tx.api_keys.revoke(revoked.id)
    wrong = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    messages = set()
    for attempt in (wrong, revoked_plain, expired_plain):
        with pytest.raises(errors.InvalidApiKey) as info, db.transaction() as tx:
            tx.api_keys.verify(attempt)
        messages.add(str(info.value))
        assert attempt not in str(info.value)
        assert attempt.split("_", 2)[2] not in repr(info.value.__dict__)
    assert messages == {"Invalid API key."}
    assert raw.execute("SELECT count(*) FROM api_keys WHERE last_used_at IS NOT NULL").fetchone()[0] == 0


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "lk_",
        "lk_0123456789abcdef",
        "lk_0123456789ABCDEF_" + "a" * 43,
        "xx_0123456789abcdef_" + "a" * 43,
        "lk_0123456789abcdef_" + "a" * 42,
        "lk_0123456789abcdef_" + "a" * 44,
        "lk_0123456789abcdef_" + "a" * 42 + "!",
        "lk_0123456789abcdef_" + "a" * 10_000,
        "k" * 10_240,
        "lk_' OR 1=1 --_" + "a" * 43,
        None,
        12345,
        b"lk_0123456789abcdef_" + b"a" * 43,
    ],
)
def test_malformed_keys_fail_without_touching_anything(db, raw, checkpw_calls, bad):
    with db.transaction() as tx:
        tx.api_keys.create("k")
    before = snapshot(raw)
    with pytest.raises(errors.InvalidApiKey), db.transaction() as tx:
        tx.api_keys.verify(bad)
    assert checkpw_calls == []
    assert snapshot(raw) == before


def test_unknown_key_id_costs_the_same_bcrypt_work(uncached_db, raw, checkpw_calls):
    db = uncached_db
    with db.transaction() as tx:
        _, plaintext = tx.api_keys.create("known")
    known_cost = int(raw.execute("SELECT key_hash FROM api_keys").fetchone()[0].split("$")[2])
    unknown = "lk_" + "0" * 16 + "_" + plaintext.split("_", 2)[2]
    with db.transaction() as tx:
        tx.api_keys.verify(plaintext)
    known_calls = list(checkpw_calls)
    checkpw_calls.clear()
    with pytest.raises(errors.InvalidApiKey), db.transaction() as tx:
        tx.api_keys.verify(unknown)
    assert known_calls == checkpw_calls == [known_cost]


def test_warm_verify_uses_the_cache_and_revoke_clears_it(db, raw, checkpw_calls):
    with db.transaction() as tx:
        key, plaintext = tx.api_keys.create("cached")
    for _ in range(3):
        with db.transaction() as tx:
            assert tx.api_keys.verify(plaintext).id == key.id
    assert len(checkpw_calls) == 1
    assert len(verify_cache()) == 1
    with db.transaction() as tx:
        revoked = tx.api_keys.revoke(key.id)
    assert revoked.revoked_at is not None
    assert len(verify_cache()) == 0
    with pytest.raises(errors.InvalidApiKey), db.transaction() as tx:
        tx.api_keys.verify(plaintext)
    # Cached by the SHA-256 of the plaintext, never the plaintext itself.
    assert plaintext not in repr(verify_cache()._entries)


def test_revoke_is_idempotent_and_unknown_ids_fail(db, raw):
    with db.transaction() as tx:
        key, _ = tx.api_keys.create("r")
        first = tx.api_keys.revoke(key.id)
    with db.transaction() as tx:
        second = tx.api_keys.revoke(str(key.id))
    assert first.revoked_at == second.revoked_at
    assert raw.execute("SELECT revoked_at FROM api_keys").fetchone()[0] == first.revoked_at
    before = snapshot(raw)
    with pytest.raises(errors.ApiKeyNotFound), db.transaction() as tx:
        tx.api_keys.revoke(uuid.uuid4())
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.api_keys.revoke("nope")
    assert snapshot(raw) == before


def test_list_and_get_never_return_hashes(db, raw):
    with db.transaction() as tx:
        a, _ = tx.api_keys.create("a")
        b, _ = tx.api_keys.create("b", scopes=["x"])
        tx.api_keys.revoke(b.id)
    with db.transaction() as tx:
        listed = tx.api_keys.list()
        active = tx.api_keys.list(include_inactive=False)
        got = tx.api_keys.get(a.id)
        with pytest.raises(errors.ApiKeyNotFound):
            tx.api_keys.get(uuid.uuid4())
    assert {k.id for k in listed} == {a.id, b.id}
    assert [k.id for k in active] == [a.id]
    assert got == a
    assert all(not hasattr(k, "key_hash") for k in listed)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": None},
        {"name": "n" * 201},
        {"name": "ok", "scopes": "jobs:read"},
        {"name": "ok", "scopes": [1]},
        {"name": "ok", "expires_at": datetime(2030, 1, 1)},
    ],
)
def test_create_bad_input_changes_nothing(db, raw, kwargs):
    before = snapshot(raw)
    with pytest.raises(errors.InvalidInput), db.transaction() as tx:
        tx.api_keys.create(**kwargs)
    assert snapshot(raw) == before
