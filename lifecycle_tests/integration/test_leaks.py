"""The leak test: known secret values never reach any output.

Secrets: a database password (a real role with a password on the test server, used through the
URL), the service-role JWT of the Storage server and its signing secret, a second (wrong) service
key, an API key's plaintext and bcrypt hash, and a signed URL's token. Then every CLI command and
every Dagster job and asset run in process, on the success path and on two failure paths (a
database that refuses the password, a Storage server that refuses the key), and everything is
collected: stdout, stderr, every log record (caplog, which also receives structlog's events),
exceptions (``str``, ``repr``, the whole chain of causes, the formatted traceback), the Dagster
event log and run records, and the ``repr`` of settings, databases, storage and resources.

The test registers no secret itself (``lifecycle.redaction``'s registry starts empty): whatever is
redacted, the product code found and registered on its own.
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import dagster as dg
import jwt
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from lifecycle import errors, redaction
from lifecycle.cli import main
from lifecycle.db import Database
from lifecycle.settings import Settings
from lifecycle.states import JobStatus

# -- a PostgreSQL server that refuses every password ------------------------------------------------


class RefusingPostgres:
    """Speaks just enough of the PostgreSQL protocol to ask for a password and refuse it (28P01).

    The embedded test server trusts local connections, so a real refusal needs a server of its
    own; libpq sends the password exactly as it would to Supabase.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.passwords_received = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        return data

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:  # SSL / GSS encryption requests, then the startup message
                    (length,) = struct.unpack("!I", self._read(conn, 4))
                    body = self._read(conn, length - 4)
                    code = struct.unpack("!I", body[:4])[0]
                    if code in (80877103, 80877104):
                        conn.sendall(b"N")
                        continue
                    break
                conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
                kind = self._read(conn, 1)
                (length,) = struct.unpack("!I", self._read(conn, 4))
                self._read(conn, length - 4)
                if kind == b"p":
                    self.passwords_received += 1
                fields = b"".join(
                    tag + value.encode() + b"\0"
                    for tag, value in (
                        (b"S", "FATAL"),
                        (b"V", "FATAL"),
                        (b"C", "28P01"),
                        (b"M", 'password authentication failed for user "leak"'),
                    )
                )
                payload = fields + b"\0"
                conn.sendall(b"E" + struct.pack("!I", len(payload) + 4) + payload)
            except (ConnectionError, OSError):
                pass

    def url(self, user: str, password: str) -> str:
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/app?sslmode=disable"

    def close(self) -> None:
        self._stop = True
        self.sock.close()


# -- the secrets and what was seen ------------------------------------------------------------------


@dataclass
class Secrets:
    db_password: str
    db_url: str
    refusing_db_url: str
    storage_url: str
    bucket: str
    service_role_key: str
    jwt_secret: str | None
    wrong_key: str
    api_key: str = ""
    api_key_hash: str = ""
    signed_url_token: str = ""

    def needles(self) -> dict[str, str]:
        """Every literal that must never appear, by name (a JWT's signature alone counts too)."""
        values = {
            "database password": self.db_password,
            "database password (URL-encoded)": quote(self.db_password, safe=""),
            "service-role key": self.service_role_key,
            "service-role key signature": self.service_role_key.rsplit(".", 1)[-1],
            "wrong service key": self.wrong_key,
            "wrong service key signature": self.wrong_key.rsplit(".", 1)[-1],
            "API key": self.api_key,
            "API key secret": self.api_key.rsplit("_", 1)[-1] if self.api_key else "",
            "API key hash": self.api_key_hash,
            "API key hash (salt+digest)": self.api_key_hash[7:],
            "signed URL token": self.signed_url_token,
        }
        if self.jwt_secret:
            values["JWT signing secret"] = self.jwt_secret
        return {name: value for name, value in values.items() if value and len(value) >= 8}


@dataclass
class Seen:
    """Every text an operator or a log pipeline could see, labelled by where it came from."""

    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, text: object) -> None:
        self.texts.append((label, text if isinstance(text, str) else repr(text)))

    def exception(self, label: str, exc: BaseException | None) -> None:
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            self.add(f"{label}: str({type(exc).__name__})", str(exc))
            self.add(f"{label}: repr({type(exc).__name__})", repr(exc))
            self.add(f"{label}: args", repr(exc.args))
            exc = exc.__cause__ or exc.__context__

    def traceback(self, label: str, exc: BaseException | None) -> None:
        if exc is not None:
            self.add(f"{label}: traceback", "".join(traceback.format_exception(exc)))
            self.exception(label, exc)

    def leaks(self, needles: dict[str, str]) -> list[str]:
        found = []
        for label, text in self.texts:
            for name, value in needles.items():
                if value in text:
                    at = text.index(value)
                    context = text[max(0, at - 80) : at + len(value) + 20]
                    found.append(f"{name} in {label}: ...{context}...")
        return found


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start with no registered secret: the product must find and register them itself."""
    monkeypatch.setattr(redaction, "_registered", set())


@pytest.fixture
def refusing_postgres() -> Iterator[RefusingPostgres]:
    server = RefusingPostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def leak_secrets(
    pg_server: Any,
    database_url: str,
    storage_server: Any,
    storage_settings: Settings,
    refusing_postgres: RefusingPostgres,
    fresh_registry: None,
) -> Iterator[Secrets]:
    role = f"leak_{uuid.uuid4().hex[:10]}"
    # '/' and '@' force the percent-encoded spelling into the URL: both spellings are looked for.
    password = f"Db-Pw/{secrets.token_urlsafe(18)}@x"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    url = urlunsplit(parts._replace(netloc=f"{role}:{quote(password, safe='')}@{host}"))
    wrong_key = jwt.encode(
        {"role": "service_role", "iss": "supabase", "exp": datetime.now(UTC) + timedelta(hours=1)},
        "not-the-signing-secret-" + secrets.token_urlsafe(16),
        algorithm="HS256",
    )
    assert storage_settings.supabase_storage_bucket is not None
    try:
        yield Secrets(
            db_password=password,
            db_url=url,
            refusing_db_url=refusing_postgres.url(role, password),
            storage_url=storage_server.url,
            bucket=storage_settings.supabase_storage_bucket,
            service_role_key=storage_server.service_role_key,
            jwt_secret=storage_server.jwt_secret,
            wrong_key=wrong_key,
        )
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}").format(
                    sql.Literal(role)
                )
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _env(s: Secrets, *, db_url: str | None = None, key: str | None = None) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url or s.db_url,
        "SUPABASE_URL": s.storage_url,
        "SUPABASE_SERVICE_ROLE_KEY": key or s.service_role_key,
        "SUPABASE_STORAGE_BUCKET": s.bucket,
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        "PROMETHEUS_PUSHGATEWAY_URL": "",
    }


# -- the test ---------------------------------------------------------------------------------------

_CLI_SUCCESS = [
    ["--help"],
    ["--version"],
    ["migrate"],
    ["migrate", "--check"],
    ["bootstrap"],
    ["seed", "--jobs", "8", "--seed", "3", "--objects", "--expired-fraction", "0.5"],
    ["metrics"],
    ["cleanup", "--dry-run"],
    ["cleanup"],
    ["cleanup", "--drain-only"],
    ["reconcile"],
    ["reconcile", "--apply", "--grace-seconds", "0"],
    ["dev", "--help"],
]
# Commands that touch the database / Storage: run again against a refusing server.
_CLI_DATABASE = [
    ["migrate"],
    ["migrate", "--check"],
    ["seed", "--jobs", "2"],
    ["metrics"],
    ["cleanup"],
    ["reconcile"],
]
_CLI_STORAGE = [
    ["bootstrap"],
    ["seed", "--jobs", "2", "--objects"],
    ["cleanup"],
    ["cleanup", "--drain-only"],
    ["reconcile"],
]


def _run_cli(seen: Seen, env: dict[str, str], args: list[str], label: str) -> int:
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=True)
    name = f"cli {label} `{' '.join(args)}` (exit {result.exit_code})"
    seen.add(f"{name} stdout", result.stdout)
    seen.add(f"{name} stderr", result.stderr)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        seen.traceback(name, result.exception)
    return result.exit_code


def _materialize_and_run_jobs(seen: Seen, resources: dict[str, Any], label: str, job_id: str) -> list[bool]:
    """Every asset and job of the code location, in process; what each run wrote is collected."""
    from lifecycle.defs import assets
    from lifecycle.defs.jobs import JOB_ID_TAG
    from lifecycle.defs.location import build_definitions

    defs = build_definitions(Settings.load(env={}))
    outcomes = []
    runs: list[tuple[str, Callable[[dg.DagsterInstance], Any]]] = [
        (
            "assets",
            lambda inst: dg.materialize(
                [assets.database_schema, assets.storage_buckets, assets.job_status_counts],
                resources=resources,
                instance=inst,
                raise_on_error=False,
            ),
        ),
    ]
    job_configs: list[tuple[str, dict[str, Any] | None, dict[str, str] | None]] = [
        ("retention_cleanup", {"dry_run": True}, None),
        ("retention_cleanup", {}, None),
        ("rescue_stale_jobs", {}, None),
        ("transition_batch", {"from_status": "failed", "to_status": "queued", "reason": "leak test"}, None),
        ("purge_job", {"job_id": job_id}, {JOB_ID_TAG: job_id}),
        ("reconcile_orphans", {"dry_run": False, "grace_seconds": 0}, None),
    ]
    for name, config, tags in job_configs:

        def run(inst: dg.DagsterInstance, name: str = name, config: Any = config, tags: Any = tags) -> Any:
            run_config = {"ops": {f"{name}_op": {"config": config}}} if config is not None else None
            return defs.resolve_job_def(name).execute_in_process(
                resources=resources, run_config=run_config, tags=tags, instance=inst, raise_on_error=False
            )

        runs.append((name, run))
    runs.append(
        (
            "job_status_counts_job",
            lambda inst: defs.resolve_job_def("job_status_counts_job").execute_in_process(
                resources=resources, instance=inst, raise_on_error=False
            ),
        )
    )
    from dagster._serdes import serialize_value

    with dg.DagsterInstance.ephemeral() as instance:
        for name, run in runs:
            try:
                result = run(instance)
            except Exception as exc:  # a crash outside the op is a finding too: look at it whole
                seen.traceback(f"dagster {label} {name} raised", exc)
                outcomes.append(False)
                continue
            outcomes.append(bool(result.success))
            for entry in instance.all_logs(result.run_id):
                seen.add(f"dagster {label} {name} event", serialize_value(entry))
                seen.add(f"dagster {label} {name} message", entry.user_message)
            record = instance.get_run_by_id(result.run_id)
            seen.add(f"dagster {label} {name} run", serialize_value(record))
        # Sensors: one evaluation each, with the same resources.
        from lifecycle.defs.sensors import ALL_SENSORS

        for sensor in ALL_SENSORS:
            try:
                with dg.build_sensor_context(instance=instance, resources=resources) as context:
                    seen.add(f"dagster {label} sensor {sensor.name}", repr(sensor(context)))
            except Exception as exc:
                seen.traceback(f"dagster {label} sensor {sensor.name}", exc)
    return outcomes


def _verify(db: Database, plaintext: str) -> None:
    with db.transaction() as tx:
        tx.api_keys.verify(plaintext)


def _get_job(url: str, settings: Settings, job_id: uuid.UUID) -> None:
    db = Database.from_url(url, settings=settings)
    try:
        with db.transaction() as tx:
            tx.jobs.get(job_id)
    finally:
        db.dispose()


def test_no_secret_leaks_anywhere(
    leak_secrets: Secrets,
    refusing_postgres: RefusingPostgres,
    database_url: str,
    storage_settings: Settings,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lifecycle import artifacts
    from lifecycle.defs.resources import DatabaseResource, StorageResource
    from lifecycle.storage import StorageRepo

    s = leak_secrets
    seen = Seen()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    logging.getLogger("httpcore").setLevel(logging.DEBUG)

    # 1. The library API with the password URL: an API key, a job with a result, a signed URL.
    settings = Settings.load(env=_env(s))
    seen.add("repr(settings)", repr(settings))
    seen.add("str(settings)", str(settings))
    db = Database.from_settings(settings)
    storage = StorageRepo.from_settings(settings)
    try:
        seen.add("repr(db)", repr(db))
        seen.add("repr(storage)", repr(storage))
        storage.ensure_buckets()
        with db.transaction() as tx:
            key, s.api_key = tx.api_keys.create("leak test", scopes=("read",))
            tx.api_keys.verify(s.api_key)
            job = tx.jobs.create(params={"source": "a.mp4"})
            tx.jobs.transition(job.id, JobStatus.PROCESSING)
        for bad in (s.api_key[:-3] + "xyz", s.api_key + "x", "lk_nothing"):
            with pytest.raises(errors.InvalidApiKey) as refused:
                _verify(db, bad)
            seen.traceback("verify a wrong key", refused.value)
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT key_hash FROM api_keys WHERE id = %s", (key.id,)).fetchone()
            assert row is not None
            s.api_key_hash = row[0]
        artifacts.attach_result(db, storage, job.id, b"clip", "mp4", "video/mp4")
        with db.transaction() as tx:
            tx.jobs.transition(job.id, JobStatus.SUCCEEDED)
        urls = artifacts.signed_result_urls(db, storage, job.id)
        [signed] = urls.values()
        s.signed_url_token = parse_qs(urlsplit(signed).query)["token"][0]
        # A signed URL of an object that was deleted: the token must not show in the warning.
        storage.remove(list(urls))
        artifacts.signed_result_urls(db, storage, job.id)
    finally:
        storage.close()
        db.dispose()

    # 2. Every CLI command: success, a database that refuses the password, a key that is refused.
    for args in _CLI_SUCCESS:
        code = _run_cli(seen, _env(s), args, "ok")
        assert code == 0, f"{args} failed: " + " | ".join(t for label, t in seen.texts[-2:])
    for args in _CLI_DATABASE:
        assert _run_cli(seen, _env(s, db_url=s.refusing_db_url), args, "refused password") != 0, args
    # Cleanup may finish with nothing to remove (exit 0) or with failures in its report: only the
    # outputs matter here, and bootstrap must fail.
    refused = {" ".join(a): _run_cli(seen, _env(s, key=s.wrong_key), a, "refused key") for a in _CLI_STORAGE}
    assert refused["bootstrap"] != 0, refused

    # 3. Every Dagster asset, job and sensor: success, then each failure.
    db = Database.from_url(s.db_url, settings=settings)
    try:
        with db.transaction() as tx:
            victim = tx.jobs.create(params={})
            failed = tx.jobs.create(params={})
            tx.jobs.transition(failed.id, JobStatus.PROCESSING)
            tx.jobs.transition(failed.id, JobStatus.FAILED, error="worker crashed")
    finally:
        db.dispose()

    def resources(db_url: str, key: str) -> dict[str, Any]:
        values = {
            "database": DatabaseResource(url=db_url, pool_size=2),
            "storage": StorageResource(url=s.storage_url, service_role_key=key, bucket=s.bucket),
        }
        for name, resource in values.items():
            seen.add(f"repr(resource {name})", repr(resource))
            seen.add(f"str(resource {name})", str(resource))
        return values

    ok = _materialize_and_run_jobs(seen, resources(s.db_url, s.service_role_key), "ok", str(victim.id))
    assert all(ok), ok
    refused_db = _materialize_and_run_jobs(
        seen, resources(s.refusing_db_url, s.service_role_key), "refused password", str(victim.id)
    )
    assert not any(refused_db), refused_db
    refused_key = _materialize_and_run_jobs(
        seen, resources(s.db_url, s.wrong_key), "refused key", str(uuid.uuid4())
    )
    assert not all(refused_key), refused_key

    # 4. The direct API on the failure paths: the exceptions, whole.
    with pytest.raises(errors.DatabaseUnavailable) as unavailable:
        _get_job(s.refusing_db_url, settings, victim.id)
    seen.traceback("refused password (API)", unavailable.value)
    bad_storage = StorageRepo.from_settings(Settings.load(env=_env(s, key=s.wrong_key)))
    try:
        with pytest.raises(errors.StorageError) as forbidden:
            bad_storage.upload(f"sources/{uuid.uuid4()}/source.mp4", b"x", "video/mp4")
        seen.traceback("refused key (API)", forbidden.value)
    finally:
        bad_storage.close()

    # 5. Everything that was logged or printed along the way.
    captured = capsys.readouterr()
    seen.add("captured stdout", captured.out)
    seen.add("captured stderr", captured.err)
    seen.add("caplog text", caplog.text)
    for record in caplog.records:
        seen.add(f"log record {record.name} msg", str(record.msg))
        seen.add(f"log record {record.name} args", repr(record.args))
        if record.exc_text:
            seen.add(f"log record {record.name} exc_text", record.exc_text)
        if record.exc_info and record.exc_info[1] is not None:
            seen.traceback(f"log record {record.name} exc_info", record.exc_info[1])

    # The test saw what it meant to see: the refusing server got the password, logs were written.
    assert leak_secrets.needles().keys() >= {
        "database password",
        "service-role key",
        "wrong service key",
        "API key",
        "API key hash",
        "signed URL token",
    }
    assert len(caplog.records) > 50
    assert refusing_postgres.passwords_received > 0
    leaks = seen.leaks(s.needles())
    assert leaks == [], f"{len(leaks)} leak(s):\n" + "\n".join(leaks[:40])


def test_the_collector_finds_a_planted_secret() -> None:
    """The search itself can fail: a planted value is found wherever it hides, encoded or not."""
    secrets_ = Secrets(
        db_password="Planted/Pw-123456",
        db_url="",
        refusing_db_url="",
        storage_url="",
        bucket="",
        service_role_key="eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlLXZhbHVl",
        jwt_secret=None,
        wrong_key="eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.b3RoZXItc2lnbmF0dXJl",
    )
    seen = Seen()
    seen.add("clean", "nothing here [redacted]")
    try:
        try:
            raise OSError("dsn postgresql://u:Planted%2FPw-123456@h/db")
        except OSError as exc:
            raise errors.DatabaseUnavailable() from exc
    except errors.DatabaseUnavailable as exc:
        seen.traceback("chained", exc)
    seen.add("signature only", "sig=c2lnbmF0dXJlLXZhbHVl")
    found = seen.leaks(secrets_.needles())
    assert any(f.startswith("database password (URL-encoded) in chained") for f in found), found
    assert any(f.startswith("service-role key signature in signature only") for f in found), found
    assert not any("clean" in f for f in found)
