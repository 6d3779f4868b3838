"""Structured logs (structlog) with ``jobId``/``runId`` bound through contextvars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import structlog


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
