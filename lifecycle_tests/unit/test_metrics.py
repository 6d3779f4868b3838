"""Metrics: counters, histograms and gauges, their outputs, and bounded labels."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from lifecycle import errors, metrics
from lifecycle.metrics import sample


def test_registry_is_created_on_first_use_and_is_private() -> None:
    from prometheus_client import REGISTRY

    m = metrics.metrics()
    assert m is metrics.metrics()
    assert m.registry is not REGISTRY
    assert REGISTRY.get_sample_value("lifecycle_repo_errors_total", {}) is None


def test_timed_counts_outcome_and_error_class() -> None:
    labels = {"repo": "unit", "operation": "probe"}
    ok_before = sample("lifecycle_repo_operation_seconds_count", **labels, outcome="ok")
    err_before = sample("lifecycle_repo_operation_seconds_count", **labels, outcome="error")
    cls_before = sample("lifecycle_repo_errors_total", **labels, error="JobNotFound")

    for _ in range(3):
        with metrics.timed("unit", "probe"):
            pass
    with pytest.raises(errors.JobNotFound), metrics.timed("unit", "probe"):
        raise errors.JobNotFound("00000000-0000-0000-0000-000000000000")

    assert sample("lifecycle_repo_operation_seconds_count", **labels, outcome="ok") == ok_before + 3
    assert sample("lifecycle_repo_operation_seconds_count", **labels, outcome="error") == err_before + 1
    assert sample("lifecycle_repo_errors_total", **labels, error="JobNotFound") == cls_before + 1
    assert sample("lifecycle_repo_operation_seconds_sum", **labels, outcome="ok") >= 0


def test_storage_timed_and_count_deleted() -> None:
    before_ok = sample("lifecycle_storage_request_seconds_count", operation="unit_upload", outcome="ok")
    before_err = sample("lifecycle_storage_request_seconds_count", operation="unit_upload", outcome="error")
    with metrics.storage_timed("unit_upload"):
        pass
    with pytest.raises(errors.StorageError), metrics.storage_timed("unit_upload"):
        raise errors.StorageError("refused", status=403)
    assert (
        sample("lifecycle_storage_request_seconds_count", operation="unit_upload", outcome="ok")
        == before_ok + 1
    )
    assert (
        sample("lifecycle_storage_request_seconds_count", operation="unit_upload", outcome="error")
        == before_err + 1
    )

    deleted = sample("lifecycle_retention_deleted_total", kind="unit_jobs")
    metrics.count_deleted("unit_jobs", 4)
    metrics.count_deleted("unit_jobs", 0)
    assert sample("lifecycle_retention_deleted_total", kind="unit_jobs") == deleted + 4


def test_status_gauges_from_a_mapping() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    metrics.set_status_gauges(
        {
            "by_status": {"queued": 5, "succeeded": 2},
            "expired_backlog": 7,
            "outbox_size": 11,
            "oldest_expired_at": now - timedelta(seconds=90),
        },
        now=now,
    )
    assert sample("lifecycle_jobs", status="queued") == 5
    assert sample("lifecycle_jobs", status="succeeded") == 2
    assert sample("lifecycle_jobs", status="failed") == 0  # missing statuses are reset to 0
    assert sample("lifecycle_expired_backlog") == 7
    assert sample("lifecycle_storage_deletions_outbox") == 11
    assert sample("lifecycle_oldest_expired_age_seconds") == 90


def test_status_gauges_from_an_object() -> None:
    class Counts:
        by_status: dict[str, int] = {"processing": 3}
        expired_backlog = 0
        outbox_size = 1
        oldest_expired_age_seconds = None
        oldest_expired_at = None

    metrics.set_status_gauges(Counts())
    assert sample("lifecycle_jobs", status="processing") == 3
    assert sample("lifecycle_jobs", status="queued") == 0
    assert sample("lifecycle_expired_backlog") == 0
    assert sample("lifecycle_storage_deletions_outbox") == 1
    assert sample("lifecycle_oldest_expired_age_seconds") == 0


def test_exposition_names_every_family() -> None:
    with metrics.timed("unit", "exposition"):
        pass
    text = metrics.exposition()
    for name in (
        "lifecycle_repo_operation_seconds_bucket",
        "lifecycle_repo_errors_total",
        "lifecycle_storage_request_seconds",
        "lifecycle_retention_deleted_total",
        "lifecycle_jobs",
        "lifecycle_expired_backlog",
        "lifecycle_storage_deletions_outbox",
        "lifecycle_oldest_expired_age_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text or name in text
    assert 'lifecycle_repo_operation_seconds_count{operation="exposition",outcome="ok",repo="unit"}' in text


def test_snapshot_and_since_are_plain_numbers() -> None:
    before = metrics.snapshot()
    assert all(isinstance(v, float) for v in before.values())
    with metrics.timed("unit", "since"):
        pass
    metrics.count_deleted("unit_objects", 2)
    delta = metrics.since(before)
    assert delta["lifecycle_repo_operation_seconds_count[operation=since,outcome=ok,repo=unit]"] == 1
    assert delta["lifecycle_retention_deleted_total[kind=unit_objects]"] == 2
    # Nothing that did not change is reported.
    assert all(v != 0 for v in delta.values())
    assert not any(k.startswith("lifecycle_repo_operation_seconds_count[operation=probe") for k in delta)


class _Gateway(BaseHTTPRequestHandler):
    received: list[tuple[str, str, str | None, bytes]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(("PUT", self.path, self.headers.get("Authorization"), body))
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Any:
    _Gateway.received = []
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class _Settings:
    def __init__(self, url: str | None) -> None:
        self.prometheus_pushgateway_url = url


def test_push_to_gateway(gateway: HTTPServer) -> None:
    port = gateway.server_address[1]
    with metrics.timed("unit", "push"):
        pass
    assert metrics.push_to_gateway(_Settings(f"http://127.0.0.1:{port}"), job="retention_cleanup")
    _, path, auth, body = _Gateway.received[-1]
    assert path == "/metrics/job/retention_cleanup"
    assert auth is None
    assert b"lifecycle_repo_operation_seconds" in body


def test_push_to_gateway_with_credentials_uses_basic_auth(gateway: HTTPServer) -> None:
    port = gateway.server_address[1]
    assert metrics.push_to_gateway(_Settings(f"http://pusher:Gw-Secret-9@127.0.0.1:{port}"), job="j")
    _, _, auth, _ = _Gateway.received[-1]
    assert auth is not None
    assert auth.startswith("Basic ")


def test_push_to_gateway_unset_or_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    assert not metrics.push_to_gateway(_Settings(None), job="j")
    # A closed port: the run goes on, and the warning names the error class, not the URL.
    assert not metrics.push_to_gateway(_Settings("http://pusher:Gw-Secret-7@127.0.0.1:9"), job="j")
    assert "Gw-Secret-7" not in caplog.text
    assert "pushgateway" in caplog.text.lower()
