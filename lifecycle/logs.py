"""Structured logs (structlog) with ``jobId``/``runId`` bound through contextvars.

``configure(settings)`` sets up one pipeline for both structlog and standard-library logging
(libraries, Dagster, psycopg): contextvars merged, level and timestamp added, every value
redacted, then rendered as JSON lines or for the console (``LOG_FORMAT``). It is idempotent.
Nothing is configured at import time.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO
from uuid import UUID

import structlog

from lifecycle.redaction import REDACTED, SECRET_FIELDS, redact_known, redact_value

# Marks the handler ``configure`` installs, so a second call replaces it instead of adding one.
_HANDLER_MARK = "_lifecycle_handler"


def get_logger(name: str) -> Any:
    """A structlog logger named ``name``."""
    return structlog.get_logger(name)


@contextmanager
def bound(*, job_id: UUID | str | None = None, run_id: str | None = None, **extra: Any) -> Iterator[None]:
    """Bind ``jobId``/``runId`` (and ``extra``) to every log line written inside the block."""
    values: dict[str, Any] = dict(extra)
    if job_id is not None:
        values["jobId"] = str(job_id)
    if run_id is not None:
        values["runId"] = run_id
    with structlog.contextvars.bound_contextvars(**values):
        yield


def bind_job_id(job_id: UUID | str) -> Mapping[str, Any]:
    """Bind ``jobId`` like ``bound(job_id=...)``, without a context manager (hot paths).

    Hand the result to ``unbind`` when the job is done.
    """
    return structlog.contextvars.bind_contextvars(jobId=str(job_id))


def unbind(tokens: Mapping[str, Any]) -> None:
    """Undo a ``bind_job_id``: the previous values (or none) are bound again."""
    structlog.contextvars.reset_contextvars(**tokens)


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every value redacted; fields named like secrets dropped to ``[redacted]``."""
    for key, value in list(event_dict.items()):
        if key.startswith("_"):
            # structlog's own bookkeeping (``_record``, ``_from_structlog``) is not rendered.
            continue
        if SECRET_FIELDS.match(key) and value is not None:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(value)
    return event_dict


def _shared_processors() -> list[Any]:
    """The chain both structlog and foreign (standard-library) records go through."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        # Last before rendering: nothing added after it can reintroduce a secret.
        redact_event,
    ]


def _renderer(log_format: str) -> Any:
    if str(log_format) == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer(default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted.

    (Click's test runner and pytest swap ``sys.stderr``; a handler holding the old object would
    write to a closed stream.)
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class _RedactingRecordFactory:
    """Wraps the logging record factory: a record's message is redacted when it is made.

    Every handler (pytest's caplog, Dagster's captured logs, a library's own handler) then sees
    the redacted text, not only the handler ``configure`` installs.
    """

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.previous(*args, **kwargs)
        if isinstance(record.msg, str):
            try:
                message = record.getMessage()
            except Exception:  # a malformed %-format: keep the template, drop the arguments
                message = record.msg
            record.msg, record.args = redact_known(message), None
        elif isinstance(record.msg, dict):
            record.msg = redact_value(record.msg)
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact_known(logging.Formatter().formatException(record.exc_info))
        return record


def install_record_redaction() -> None:
    """Redact every standard-library log record at creation (idempotent)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingRecordFactory):
        logging.setLogRecordFactory(_RedactingRecordFactory(current))


_CHATTY_LIBRARIES = ("alembic", "httpx", "httpcore", "pgserver", "psycopg.pool")


def configure(settings: Any = None, *, stream: TextIO | None = None) -> None:
    """Route structlog and standard-library logging through one redacting pipeline.

    ``settings`` gives ``log_format`` (json/console) and ``log_level``; without it, JSON at INFO.
    Output goes to ``stream`` (default: stderr, so a command's stdout stays its result).
    Calling it again replaces the handler it installed (never a second one).
    """
    log_format = str(getattr(settings, "log_format", "json"))
    level = logging.getLevelName(str(getattr(settings, "log_level", "INFO")).upper())
    shared = _shared_processors()

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a later ``configure`` (or a test's capture) must reach existing loggers.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(log_format)],
    )
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that narrate every step at INFO (alembic's plugins, httpx's every request, pgserver's
    # process bookkeeping, psycopg_pool's every checkout) speak at WARNING unless DEBUG is asked for;
    # their records are still redacted.
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    install_record_redaction()
