"""Logs: JSON lines that parse, ``jobId`` on every line written while a job is handled (library
lines included), the console renderer, and secrets redacted on the way out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import structlog

from lifecycle import logs
from lifecycle.db import Database
from lifecycle.db._executor import SQL_LOGGER
from lifecycle.redaction import register_secret
from lifecycle.settings import LogFormat, Settings
from lifecycle.states import JobStatus


class _Capture:
    """A configured pipeline writing into a buffer, read back line by line."""

    def __init__(self, fmt: LogFormat = LogFormat.JSON, level: str = "INFO") -> None:
        self.buffer = io.StringIO()
        logs.configure(Settings.load(env={"LOG_FORMAT": fmt.value, "LOG_LEVEL": level}), stream=self.buffer)

    def mark(self) -> int:
        return len(self.buffer.getvalue())

    def lines(self, start: int = 0, end: int | None = None) -> list[str]:
        return [line for line in self.buffer.getvalue()[start:end].splitlines() if line.strip()]

    def records(self, start: int = 0, end: int | None = None) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines(start, end)]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = {name: logging.getLogger(name).level for name in (SQL_LOGGER, "httpx")}
    factory = logging.getLogRecordFactory()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lvl in loggers.items():
            logging.getLogger(name).setLevel(lvl)
        logging.setLogRecordFactory(factory)
        structlog.reset_defaults()


@pytest.fixture
def capture(restore_logging: None) -> _Capture:
    return _Capture()


def test_every_line_while_handling_a_job_carries_its_job_id(
    db: Database, storage: Any, capture: _Capture
) -> None:
    from lifecycle import artifacts

    # Every line written inside the block: the data layer's statements and httpx's requests too.
    logging.getLogger(SQL_LOGGER).setLevel(logging.DEBUG)
    logging.getLogger("httpx").setLevel(logging.INFO)
    with db.transaction() as tx:
        job = tx.jobs.create(params={"source": "a.mp4"})
        other = tx.jobs.create(params={})

    start = capture.mark()
    artifacts.attach_source(db, storage, job.id, b"bytes", "mp4", "video/mp4", run_id="run-1")
    end = capture.mark()
    artifacts.attach_source(db, storage, other.id, b"other", "mp4", "video/mp4")
    after = capture.mark()

    handled = capture.records(start, end)
    loggers = {r.get("logger") for r in handled}
    assert {"lifecycle.artifacts", "httpx"} <= loggers, loggers
    assert any(r.get("logger") == SQL_LOGGER for r in handled)
    for record in handled:
        assert record.get("jobId") == str(job.id), record
        assert record.get("runId") == "run-1", record
    assert all(r.get("jobId") == str(other.id) for r in capture.records(end, after))
    # Nothing stays bound once the job is handled.
    logs.get_logger("t").info("between jobs")
    assert "jobId" not in capture.records(after)[-1]


def test_repository_operations_bind_the_job_id(db: Database, capture: _Capture) -> None:
    logging.getLogger(SQL_LOGGER).setLevel(logging.DEBUG)
    with db.transaction() as tx:
        job = tx.jobs.create(params={})
    start = capture.mark()
    with db.transaction() as tx:
        tx.jobs.transition(job.id, JobStatus.PROCESSING)
        tx.events.add(job.id, "note", data={"k": "param-marker-5521"})
    statements = [
        r
        for r in capture.records(start)
        if r.get("logger") == SQL_LOGGER
        and r.get("statement") in ("jobs.transition_known_from", "events.add")
    ]
    assert len(statements) >= 2
    assert all(r.get("jobId") == str(job.id) for r in statements), statements
    # Bound parameters are never logged.
    assert "param-marker-5521" not in capture.buffer.getvalue()


def test_every_line_is_one_json_object_with_level_logger_and_time(capture: _Capture) -> None:
    log = logs.get_logger("lifecycle.test")
    with logs.bound(job_id="3f1c2a4e-0000-4000-8000-000000000001", run_id="r"):
        log.info("structured", count=3, nested={"a": [1, 2]})
        logging.getLogger("some.library").warning("plain %s line", "stdlib")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    records = capture.records()
    assert [r["event"] for r in records] == ["structured", "plain stdlib line", "failed"]
    for record in records:
        assert {"level", "logger", "timestamp", "jobId", "runId"} <= set(record)
    assert records[0]["count"] == 3
    assert records[0]["nested"] == {"a": [1, 2]}
    assert "ValueError: boom" in records[2]["exception"]


def test_secrets_are_redacted_in_structured_and_library_lines(capture: _Capture) -> None:
    register_secret("Log-Secret-Pw-77")
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"
    log = logs.get_logger("lifecycle.test")
    log.info("connecting", url="postgresql://app:Log-Secret-Pw-77@db/app", headers={"apikey": jwt})
    log.info("key made", password="whatever", key_hash="$2b$04$" + "a" * 53)
    logging.getLogger("httpx").warning("GET http://h/object/sign/x?token=%s", jwt)
    try:
        raise RuntimeError("could not connect: password=Log-Secret-Pw-77")
    except RuntimeError:
        logging.getLogger("some.library").exception("library failure")
    text = capture.buffer.getvalue()
    for secret in ("Log-Secret-Pw-77", jwt, "whatever", "a" * 53):
        assert secret not in text
    assert len(capture.records()) == 4


def test_console_format_and_level(restore_logging: None) -> None:
    capture = _Capture(LogFormat.CONSOLE, level="WARNING")
    log = logs.get_logger("lifecycle.test")
    with logs.bound(job_id="3f1c2a4e-0000-4000-8000-000000000002"):
        log.info("hidden below the level")
        log.warning("shown")
    lines = capture.lines()
    assert len(lines) == 1
    assert "shown" in lines[0]
    assert "jobId=3f1c2a4e-0000-4000-8000-000000000002" in lines[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_configure_is_idempotent(restore_logging: None) -> None:
    root = logging.getLogger()
    others = [h for h in root.handlers if not getattr(h, "_lifecycle_handler", False)]
    logs.configure(None)
    logs.configure(None)
    logs.configure(Settings.load(env={"LOG_FORMAT": "console"}))
    ours = [h for h in root.handlers if getattr(h, "_lifecycle_handler", False)]
    assert len(ours) == 1
    assert [h for h in root.handlers if h not in ours] == others


def test_dagster_op_logs_are_redacted_in_the_event_log(restore_logging: None) -> None:
    """``context.log`` lines go through the same redaction once ``configure`` ran (as the resources do)."""
    logs.configure(None, stream=io.StringIO())
    register_secret("Op-Secret-Pw-991")

    @dg.op
    def talkative(context) -> None:  # type: ignore[no-untyped-def]  # (Dagster reads the annotation)
        context.log.info("connecting to postgresql://u:Op-Secret-Pw-991@h/db?token=abcdef123456")

    @dg.job
    def talk() -> None:
        talkative()

    with dg.DagsterInstance.ephemeral() as instance:
        result = talk.execute_in_process(instance=instance)
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    [line] = [m for m in messages if "connecting" in m]
    assert line == "connecting to postgresql://u:[redacted]@h/db?token=[redacted]"
