"""Redaction: every secret shape the project knows is removed, and nothing else is touched."""

from __future__ import annotations

import logging
import uuid

import bcrypt
import pytest

from lifecycle import redaction
from lifecycle.redaction import (
    REDACTED,
    redact,
    redact_exception,
    redact_known,
    redact_url,
    redact_value,
    register_secret,
)
from lifecycle.settings import Settings

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJyb2xlIjoic2VydmljZV9yb2xlIiwiaXNzIjoic3VwYWJhc2UifQ"
    ".c2lnbmF0dXJlLXNlY3JldC12YWx1ZS0xMjM0NTY"
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s3cr3t-pw@db.example:5432/app", "postgresql://app:[redacted]@db.example:5432/app"),
        ("postgresql+psycopg://app:p%40ss%2Fw@h/db", "postgresql+psycopg://app:[redacted]@h/db"),
        ("postgresql://app@h/db", "postgresql://app@h/db"),
        (
            "postgresql://h/db?password=s3cr3t&sslmode=require",
            "postgresql://h/db?password=[redacted]&sslmode=require",
        ),
        ("host=h dbname=app user=app password=s3cr3t", "host=h dbname=app user=app password=[redacted]"),
    ],
)
def test_database_urls_lose_their_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact(url) == expected


def test_jwt_and_bearer_become_redacted() -> None:
    text = f"apikey: {JWT}; Authorization: Bearer {JWT}"
    out = redact(text)
    assert JWT not in out
    assert "signature-secret" not in out
    assert REDACTED in out


def test_signed_url_token_is_cut() -> None:
    url = f"http://127.0.0.1:54321/storage/v1/object/sign/results/{uuid.uuid4()}/clip.mp4?token={JWT}"
    out = redact(url)
    assert JWT not in out
    assert out.endswith("?token=" + REDACTED)
    # The path stays: it is an identifier, not a secret.
    assert "/object/sign/results/" in out
    opaque = "http://h/x?token=abcDEF123456&download=1"
    assert redact(opaque) == "http://h/x?token=[redacted]&download=1"


def test_api_key_secret_and_bcrypt_hash_never_appear() -> None:
    secret = "Zx9_k2Lq8Rt5vW3yPa7bN4cM"
    plaintext = f"lk_ab12cd34_{secret}"
    digest = bcrypt.hashpw(plaintext.encode(), bcrypt.gensalt(rounds=4)).decode()
    out = redact(f"key {plaintext} hash {digest}")
    assert secret not in out
    assert digest not in out
    assert digest[7:] not in out
    # The key id is public (it is how an operator finds the key).
    assert "lk_ab12cd34_" in out


def test_supabase_opaque_secret_key() -> None:
    assert "abcdefgh" not in redact("key=sb_secret_abcdefghijkl")
    assert redact("sb_publishable_abcdef") == "sb_publishable_abcdef"


def test_ordinary_text_is_unchanged() -> None:
    job_id = uuid.uuid4()
    text = f"job {job_id} moved queued -> processing (key sources/{job_id}/source.mp4, attempts=2)"
    assert redact(text) == text
    assert redact_known(text) == text


def test_registered_secrets_in_every_spelling() -> None:
    register_secret("pa ss/wörd!42")
    assert "pa ss/wörd!42" not in redact_known("raw pa ss/wörd!42")
    assert "pa%20ss%2Fw%C3%B6rd%2142" not in redact_known("encoded pa%20ss%2Fw%C3%B6rd%2142")
    # Too short to be told apart from ordinary text: not registered.
    register_secret("abc")
    assert redact_known("abc") == "abc"
    register_secret(None)


def test_settings_register_and_hide_their_secrets() -> None:
    settings = Settings.load(
        env={
            "DATABASE_URL": "postgresql://app:Settings-Pw-123@h/db",
            "SUPABASE_SERVICE_ROLE_KEY": "opaque-service-role-key-value",
        }
    )
    for text in (repr(settings), str(settings)):
        assert "Settings-Pw-123" not in text
        assert "opaque-service-role-key-value" not in text
    assert "Settings-Pw-123" not in redact_known("failed for password Settings-Pw-123")
    assert "opaque-service-role-key-value" not in redact_known("key opaque-service-role-key-value")


def test_redact_value_walks_structures() -> None:
    job_id = uuid.uuid4()
    value = {
        "jobId": job_id,
        "count": 3,
        "password": "anything at all",
        "key_hash": "$2b$04$abcdefghijklmnopqrstuv",
        "nested": [{"url": "postgresql://u:pw12345@h/db"}, ("Bearer abc.def",)],
        "raw": b"token=abcdef123",
    }
    out = redact_value(value)
    assert out["jobId"] == job_id
    assert out["count"] == 3
    assert out["password"] == REDACTED
    assert out["key_hash"] == REDACTED
    assert out["nested"][0]["url"] == "postgresql://u:[redacted]@h/db"
    assert out["nested"][1] == ("Bearer [redacted]",)
    assert out["raw"] == "token=[redacted]"


def test_redact_exception_includes_class_and_hides_secret() -> None:
    exc = RuntimeError(f"connect failed: postgresql://u:pw-xyz-987@h/db token={JWT}")
    out = redact_exception(exc)
    assert out.startswith("RuntimeError: connect failed")
    assert "pw-xyz-987" not in out
    assert JWT not in out


def test_log_records_are_redacted_for_every_handler(caplog: pytest.LogCaptureFixture) -> None:
    from lifecycle.logs import install_record_redaction

    previous = logging.getLogRecordFactory()
    try:
        install_record_redaction()
        install_record_redaction()  # idempotent: one wrapper only
        register_secret("Caplog-Secret-55")
        with caplog.at_level(logging.INFO):
            logging.getLogger("some.library").info("dsn=%s", "postgresql://u:Caplog-Secret-55@h/db")
        assert caplog.records
        for record in caplog.records:
            assert "Caplog-Secret-55" not in record.getMessage()
        assert "Caplog-Secret-55" not in caplog.text
    finally:
        logging.setLogRecordFactory(previous)


def test_contains_known_secret() -> None:
    register_secret("Leak-Probe-Value-1")
    assert redaction.contains_known_secret("x Leak-Probe-Value-1 y")
    assert not redaction.contains_known_secret(redact_known("x Leak-Probe-Value-1 y"))


# Adversarial inputs of 1 MB each: the shapes that made the patterns rescan a run from every one of
# its characters. The quadratic patterns took minutes on each (7.8 s for 80 kB of letters); linear
# ones take milliseconds, so a regression shows as a hang, not as a flaky timing.
_MB = 1 << 20
_ADVERSARIAL = {
    "letters": "a" * _MB,
    "letters_and_digits": "a1" * (_MB // 2),
    "colons": "a:" * (_MB // 2),
    "at_signs": "@" * _MB,
    "schemes": "postgresql://" * (_MB // 13),
    "scheme_then_colons": "a://" + "a:" * (_MB // 2),
    "jwt_like_dots": "eyJ" + "a." * (_MB // 2),
    "jwt_headers": "eyJ" * (_MB // 3),
    "jwt_headers_dotted": "eyJa." * (_MB // 5),
    "api_key_prefixes": " lk_" + "a" * _MB,
}


@pytest.mark.parametrize("name", sorted(_ADVERSARIAL))
def test_redaction_is_linear_on_adversarial_text_and_still_redacts(name: str) -> None:
    secrets_after = f" postgresql://app:Adv-Pw-{name}@db/x Bearer {JWT} token=tok-{name}"
    text = _ADVERSARIAL[name] + secrets_after
    out = redact(text)
    assert f"Adv-Pw-{name}" not in out
    assert JWT not in out
    assert f"tok-{name}" not in out
    assert out.endswith(" postgresql://app:[redacted]@db/x Bearer [redacted] token=[redacted]")


def test_secrets_glued_to_the_text_before_them_are_still_redacted() -> None:
    """A match starts only where its run starts; a secret inside a longer run is still found."""
    assert redact(f"%22{JWT}%22") == "%22[redacted]%22"
    assert redact(f"line\\n{JWT}") == "line\\n[redacted]"
    assert redact("x1.postgresql://u:pw-glued@h/db") == "x1.postgresql://u:[redacted]@h/db"
    assert redact("dsn=postgresql://u:pw-after-eq@h/db") == "dsn=postgresql://u:[redacted]@h/db"
