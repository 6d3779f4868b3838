"""Metrics (prometheus-client) in the project's own registry, created on first use.

``timed(repo, operation)`` wraps one repository operation: it observes the duration with the
outcome, and counts errors by class. Labels are bounded: never a job id, key, URL or message.

Three ways out: ``exposition()`` (the text ``lifecycle metrics`` prints), ``push_to_gateway``
(a batch run pushes when ``PROMETHEUS_PUSHGATEWAY_URL`` is set) and ``snapshot()``/``since()``
(plain numbers for Dagster run metadata).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from lifecycle.redaction import register_secret
from lifecycle.states import JobStatus

_log = logging.getLogger(__name__)


@dataclass
class Metrics:
    """Every metric the project exports, in one registry."""

    registry: CollectorRegistry
    repo_operation_seconds: Histogram
    repo_errors_total: Counter
    storage_request_seconds: Histogram
    retention_deleted_total: Counter
    jobs: Gauge
    expired_backlog: Gauge
    outbox_size: Gauge
    oldest_expired_age_seconds: Gauge
    #: Histogram children by (repo, operation, outcome): ``labels()`` takes a lock and builds a key
    #: on every call, which the hot repository paths should not pay.
    _operation_children: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    def observe_operation(
        self, repo: str, operation: str, seconds: float, error: BaseException | None
    ) -> None:
        """Record one repository operation (what ``timed`` records), without a generator or lookups."""
        outcome = "ok" if error is None else "error"
        key = (repo, operation, outcome)
        child = self._operation_children.get(key)
        if child is None:
            child = self._operation_children[key] = self.repo_operation_seconds.labels(*key)
        if error is not None:
            self.repo_errors_total.labels(repo, operation, type(error).__name__).inc()
        child.observe(seconds)

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
            jobs=Gauge(
                "lifecycle_jobs",
                "Jobs per status (from the last status count)",
                ["status"],
                registry=registry,
            ),
            expired_backlog=Gauge(
                "lifecycle_expired_backlog",
                "Jobs whose retention ran out and that cleanup may delete",
                registry=registry,
            ),
            outbox_size=Gauge(
                "lifecycle_storage_deletions_outbox",
                "Object keys waiting in the storage_deletions outbox",
                registry=registry,
            ),
            oldest_expired_age_seconds=Gauge(
                "lifecycle_oldest_expired_age_seconds",
                "Seconds since the oldest deletable job expired (0 when none)",
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


# Status gauges ---------------------------------------------------------------------------------


def _field(counts: Any, *names: str) -> Any:
    """The first of ``names`` present on ``counts`` (a mapping or an object), else None."""
    for name in names:
        if isinstance(counts, Mapping):
            if name in counts:
                return counts[name]
        elif hasattr(counts, name):
            return getattr(counts, name)
    return None


def set_status_gauges(counts: Any, *, now: datetime | None = None) -> None:
    """Set the status gauges from a status count (a mapping or an object with these fields).

    Read: ``by_status`` (status -> count; statuses may also be top-level fields),
    ``expired_backlog``, ``outbox_size``, and ``oldest_expired_age_seconds`` or
    ``oldest_expired_at`` (a datetime; its age is taken against ``now``). Missing statuses are 0.
    """
    m = metrics()
    by_status = _field(counts, "by_status", "per_status", "statuses") or {}
    for status in JobStatus:
        value = by_status.get(status, by_status.get(str(status))) if isinstance(by_status, Mapping) else None
        if value is None:
            value = _field(counts, str(status))
        m.jobs.labels(str(status)).set(float(value or 0))
    m.expired_backlog.set(float(_field(counts, "expired_backlog", "expired") or 0))
    m.outbox_size.set(float(_field(counts, "outbox_size", "outbox", "storage_deletions") or 0))
    age = _field(counts, "oldest_expired_age_seconds", "oldest_expired_age")
    if isinstance(age, timedelta):
        age = age.total_seconds()
    if age is None:
        oldest = _field(counts, "oldest_expired_at", "oldest_expired")
        if isinstance(oldest, datetime):
            reference = now or datetime.now(oldest.tzinfo)
            age = max((reference - oldest).total_seconds(), 0.0)
    m.oldest_expired_age_seconds.set(float(age or 0))


# Outputs ---------------------------------------------------------------------------------------


def exposition() -> str:
    """The registry in the Prometheus text exposition format."""
    return generate_latest(metrics().registry).decode("utf-8")


def push_to_gateway(settings: Any, *, job: str, grouping_key: Mapping[str, str] | None = None) -> bool:
    """Push the registry to ``settings.prometheus_pushgateway_url``; False if unset or it failed.

    A batch run must not fail because its metrics could not be pushed, so errors are logged (class
    only: the URL may carry credentials) and swallowed. Credentials in the URL become basic auth.
    """
    from prometheus_client import exposition as prom

    url = getattr(settings, "prometheus_pushgateway_url", None)
    if not url:
        return False
    parts = urlsplit(url)
    handler: Any = prom.default_handler
    if parts.username is not None or parts.password is not None:
        username, password = unquote(parts.username or ""), unquote(parts.password or "")
        register_secret(password)
        url = urlunsplit(
            parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
        )

        def handler(
            url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
        ) -> Any:
            return prom.basic_auth_handler(url, method, timeout, headers, data, username, password)

    try:
        prom.push_to_gateway(
            url,
            job=job,
            registry=metrics().registry,
            grouping_key=dict(grouping_key or {}),
            timeout=10,
            handler=handler,
        )
    except Exception as exc:
        _log.warning("metrics push to the Pushgateway failed: %s", type(exc).__name__)
        return False
    return True


def snapshot() -> dict[str, float]:
    """Durations and counts as plain numbers, keyed ``<metric>[<label>=<value>,...]``.

    Histograms give ``..._count`` and ``..._sum`` (seconds); counters give ``..._total``; gauges
    their value. Meant for Dagster run metadata: take one before the work and pass it to ``since``.
    """
    values: dict[str, float] = {}
    for family in metrics().registry.collect():
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            key = f"{sample.name}[{labels}]" if labels else sample.name
            values[key] = float(sample.value)
    return values


def since(before: Mapping[str, float]) -> dict[str, float]:
    """What changed since ``before`` (a ``snapshot()``): counter and histogram deltas, gauges now.

    Entries that did not change are left out, so run metadata shows only what the run did.
    """
    gauges = {"lifecycle_jobs", "lifecycle_expired_backlog", "lifecycle_storage_deletions_outbox"}
    gauges.add("lifecycle_oldest_expired_age_seconds")
    result: dict[str, float] = {}
    for key, value in snapshot().items():
        name = key.split("[", 1)[0]
        if name in gauges:
            if value != before.get(key, 0.0):
                result[key] = value
            continue
        delta = value - before.get(key, 0.0)
        if delta:
            result[key] = delta
    return result


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0.0 when it was never observed)."""
    value = metrics().registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


_run_baseline: dict[str, float] | None = None


def mark_run_start() -> None:
    """Remember the current values as the start of a run (a Dagster resource calls this in setup)."""
    global _run_baseline
    _run_baseline = snapshot()


def run_metadata() -> dict[str, float]:
    """What changed since ``mark_run_start`` (everything, if it was never called), as plain numbers."""
    return since(_run_baseline or {})
