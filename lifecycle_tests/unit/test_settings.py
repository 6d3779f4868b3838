"""Settings: defaults, `.env`, clear errors naming the variable, and no secret in any message or repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle import errors
from lifecycle.settings import LogFormat, Settings
from lifecycle.states import JobStatus

PASSWORD = "hunter2-db-secret"
SERVICE_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXNlY3JldA"


def test_defaults() -> None:
    s = Settings.load(env={})
    assert s.database_url is None
    assert s.signed_url_ttl_seconds == 600
    assert s.bcrypt_rounds == 12
    assert s.log_format is LogFormat.JSON
    assert s.retention_for(JobStatus.SUCCEEDED).total_seconds() == 7 * 86400


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SIGNED_URL_TTL_SECONDS=42\nLOG_FORMAT=console\n")
    monkeypatch.delenv("SIGNED_URL_TTL_SECONDS", raising=False)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    s = Settings.load(env_file=env_file)
    assert s.signed_url_ttl_seconds == 42
    assert s.log_format is LogFormat.CONSOLE


def test_environment_beats_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SIGNED_URL_TTL_SECONDS=42\n")
    monkeypatch.setenv("SIGNED_URL_TTL_SECONDS", "77")
    assert Settings.load(env_file=env_file).signed_url_ttl_seconds == 77


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIGNED_URL_TTL_SECONDS", "-5"),
        ("SIGNED_URL_TTL_SECONDS", "ten minutes"),
        ("SUPABASE_URL", "localhost:8000"),
        ("SUPABASE_URL", "ftp://example.com"),
        ("DATABASE_URL", f"mysql://user:{PASSWORD}@localhost/db"),
        ("DATABASE_URL", f"user:{PASSWORD}@localhost/db"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("BCRYPT_ROUNDS", "2"),
        ("CLEANUP_BATCH_SIZE", "0"),
        ("CLEANUP_BATCH_SIZE", "1000000000000"),
        # A lease past timedelta's range raised OverflowError in the repository (issue 10, item 13).
        ("LEASE_SECONDS", "1000000000000000"),
        ("PROMETHEUS_PUSHGATEWAY_URL", "pushgateway:9091"),
        ("SUPABASE_STORAGE_BUCKET", "a/b"),
    ],
)
def test_bad_values_fail_with_the_variable_named_and_no_value(variable: str, value: str) -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        Settings.load(env={variable: value})
    message = str(info.value)
    assert variable in message
    assert info.value.variable == variable
    assert value not in message
    assert PASSWORD not in message
    assert PASSWORD not in repr(info.value)


def test_several_bad_values_are_all_named() -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        Settings.load(env={"SIGNED_URL_TTL_SECONDS": "-5", "LOG_FORMAT": "xml"})
    assert "SIGNED_URL_TTL_SECONDS" in str(info.value)
    assert "LOG_FORMAT" in str(info.value)


def test_repr_and_str_redact_secrets() -> None:
    s = Settings.load(
        env={
            "DATABASE_URL": f"postgresql://app:{PASSWORD}@db.example.com:5432/postgres",
            "SUPABASE_URL": "https://abc.supabase.co",
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        }
    )
    for text in (repr(s), str(s), f"{s}", str(s.model_dump())):
        assert PASSWORD not in text
        assert SERVICE_KEY not in text
    assert "db.example.com" in repr(s)
    assert s.database_password == PASSWORD
    assert s.supabase_service_role_key is not None
    assert s.supabase_service_role_key.get_secret_value() == SERVICE_KEY


def test_prepare_threshold_can_be_turned_off_for_the_transaction_pooler() -> None:
    assert Settings.load(env={"DATABASE_PREPARE_THRESHOLD": "none"}).database_prepare_threshold is None
    assert Settings.load(env={"DATABASE_PREPARE_THRESHOLD": "0"}).database_prepare_threshold == 0


def test_every_documented_variable_is_a_setting() -> None:
    """`.env.example` documents every setting, and only real ones."""
    example = Path(__file__).resolve().parents[2] / ".env.example"
    names = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in example.read_text().splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].strip().isupper()
    }
    fields = {name.upper() for name in Settings.model_fields}
    assert fields <= names, f"undocumented: {sorted(fields - names)}"
    assert names <= fields, f"documented but unknown: {sorted(names - fields)}"
