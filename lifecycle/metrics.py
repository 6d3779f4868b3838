"""Metrics (prometheus-client) in the project's own registry, created on first use.

``timed(repo, operation)`` wraps one repository operation: it observes the duration with the
outcome, and counts errors by class. Labels are bounded: never a job id, key, URL or message.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class Metrics:
    """Every metric the project exports, in one registry."""

    registry: CollectorRegistry
    repo_operation_seconds: Histogram
    repo_errors_total: Counter
    storage_request_seconds: Histogram
    retention_deleted_total: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            repo_operation_seconds=Histogram(
                "lifecycle_repo_operation_seconds",
                "Duration of repository operations",
                ["repo", "operation", "outcome"],
                registry=registry,
            ),
            repo_errors_total=Counter(
                "lifecycle_repo_errors_total",
                "Repository operations that raised, by error class",
                ["repo", "operation", "error"],
                registry=registry,
            ),
            storage_request_seconds=Histogram(
                "lifecycle_storage_request_seconds",
                "Duration of Storage API requests",
                ["operation", "outcome"],
                registry=registry,
            ),
            retention_deleted_total=Counter(
                "lifecycle_retention_deleted_total",
                "What retention cleanup deleted, by kind (jobs, events, objects)",
                ["kind"],
                registry=registry,
            ),
        )


_metrics: Metrics | None = None


def metrics() -> Metrics:
    """The process's metrics (created on first call, never at import)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics.create()
    return _metrics


@contextmanager
def timed(repo: str, operation: str) -> Iterator[None]:
    """Observe the duration and outcome of one repository operation."""
    m = metrics()
    start = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except BaseException as exc:
        outcome = "error"
        m.repo_errors_total.labels(repo, operation, type(exc).__name__).inc()
        raise
    finally:
        m.repo_operation_seconds.labels(repo, operation, outcome).observe(time.perf_counter() - start)


@contextmanager
def storage_timed(operation: str) -> Iterator[None]:
    """Observe the duration and outcome of one Storage API request."""
    m = metrics()
    start = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except BaseException:
        outcome = "error"
        raise
    finally:
        m.storage_request_seconds.labels(operation, outcome).observe(time.perf_counter() - start)


def count_deleted(kind: str, amount: int) -> None:
    """Add ``amount`` to ``lifecycle_retention_deleted_total{kind}`` (jobs, events, objects)."""
    if amount:
        metrics().retention_deleted_total.labels(kind).inc(amount)
