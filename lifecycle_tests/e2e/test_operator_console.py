"""`make run` as an operator's console, driven in headless Debian Chromium (``make e2e``).

Starts ``lifecycle dev`` in a subprocess (fresh ``LIFECYCLE_HOME``, a free port, nothing from the
environment's ``DATABASE_URL``/``SUPABASE_URL``), launches runs from the Launchpad and checks them in
the UI. Screenshots go to ``.lifecycle/e2e/``.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".lifecycle" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Variables that would point the stack somewhere else than its own embedded services.
_FOREIGN = ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_STORAGE_BUCKET")
_FOREIGN += ("DAGSTER_HOME", "DAGSTER_PG_URL", "LIFECYCLE_HOME")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


@dataclass
class Stack:
    url: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("lifecycle-home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    env["LIFECYCLE_HOME"] = str(home)
    log = home / "dev.log"
    executable = Path(sys.executable).parent / "lifecycle"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(executable), "dev", "--port", str(port)],
            cwd=home,  # no .env from the checkout
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"lifecycle dev did not serve {url}:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield Stack(url, home, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def app_db(stack: Stack) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """The stack's application database (joining its embedded server)."""
    from lifecycle.devstack.postgres import APP_DATABASE, EmbeddedPostgres

    server = EmbeddedPostgres(stack.home).start()
    try:
        with psycopg.connect(server.url(APP_DATABASE), autocommit=True) as conn:
            yield conn
    finally:
        server.stop()


def _launch(page: Any, url: str, job: str, config: str, tags: dict[str, str] | None = None) -> str:
    """Fill the Launchpad of ``job`` with ``config`` (YAML), add ``tags``, launch; the run id."""
    page.goto(f"{url}/locations/lifecycle/jobs/{job}/playground")
    editor = page.locator(".CodeMirror").first
    editor.click()
    page.keyboard.press("Control+A")
    # insert_text: no key events, so the editor adds no indentation or closing brackets.
    page.keyboard.insert_text(config)
    for key, value in (tags or {}).items():
        page.get_by_text("Edit tags").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_placeholder("Tag Key").last.fill(key)
        dialog.get_by_placeholder("Tag Value").last.fill(value)
        dialog.get_by_role("button", name=re.compile("Apply|Save")).click()
    page.screenshot(path=str(SHOTS / f"{job}-launchpad.png"))
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"))
    match = re.search(r"/runs/([0-9a-f-]{36})", page.url)
    assert match is not None
    return match.group(1)


def _wait_for_success(page: Any, job: str) -> None:
    page.get_by_text("RUN_SUCCESS").first.wait_for(timeout=120_000)
    page.screenshot(path=str(SHOTS / f"{job}-run.png"), full_page=True)


def test_retention_cleanup_dry_run_from_the_launchpad_shows_its_report(
    stack: Stack, browser: Any, app_db: psycopg.Connection[tuple[Any, ...]]
) -> None:
    # The sensor has usually cleaned the demo backlog by now. Five expired jobs on retention hold give
    # the plan something certain to show: cleanup (and the sensor's probe) never touch held jobs.
    held = app_db.execute(
        "UPDATE jobs SET expires_at = now() - interval '1 hour', retention_hold = true WHERE id IN ("
        " SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled')"
        " AND expires_at > now() ORDER BY created_at LIMIT 5)"
    ).rowcount
    assert held == 5
    page = browser.new_page()
    page.goto(stack.url)
    page.screenshot(path=str(SHOTS / "overview.png"))
    config = "ops:\n  retention_cleanup_op:\n    config:\n      dry_run: true\n"
    run_id = _launch(page, stack.url, "retention_cleanup", config)
    _wait_for_success(page, "retention_cleanup")
    body = page.inner_text("body")
    assert "dry run:" in body
    page.get_by_text("[Show Markdown]").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Retention cleanup (dry run)").wait_for()
    report = dialog.inner_text()
    page.screenshot(path=str(SHOTS / "retention_cleanup-report.png"))
    assert "Retention cleanup (dry run)" in report
    assert run_id in report
    assert "eligible jobs" in report
    assert re.search(r"expired but on hold \(kept\)\s+5\b", report), report


def test_purge_job_for_a_demo_job_is_found_by_its_tag(
    stack: Stack, browser: Any, app_db: psycopg.Connection[tuple[Any, ...]]
) -> None:
    row = app_db.execute(
        "SELECT id FROM jobs WHERE status <> 'processing' AND expires_at > now() ORDER BY created_at LIMIT 1"
    ).fetchone()
    assert row is not None, "the demo data has live jobs"
    job_id = str(row[0])
    page = browser.new_page()
    config = f"ops:\n  purge_job_op:\n    config:\n      job_id: {job_id}\n"
    run_id = _launch(page, stack.url, "purge_job", config, tags={"lifecycle/job_id": job_id})
    _wait_for_success(page, "purge_job")
    assert f"jobId={job_id}" in page.inner_text("body")

    page.goto(f"{stack.url}/runs?q%5B0%5D=tag%3Alifecycle%2Fjob_id%3D{job_id}")
    page.get_by_text(run_id[:8]).first.wait_for()
    page.screenshot(path=str(SHOTS / "purge_job-runs-by-tag.png"))
    assert app_db.execute("SELECT count(*) FROM jobs WHERE id = %s", (job_id,)).fetchone() == (0,)
    tombstone = app_db.execute("SELECT run_id FROM job_deletions WHERE job_id = %s", (job_id,)).fetchone()
    assert tombstone == (run_id,)


def test_the_sensor_launched_a_cleanup_and_ctrl_c_stops_everything(stack: Stack, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{stack.url}/runs?q%5B0%5D=tag%3Alifecycle%2Ftrigger%3Dexpired_jobs_sensor")
    page.get_by_text("retention_cleanup").first.wait_for(timeout=90_000)
    page.screenshot(path=str(SHOTS / "sensor-runs.png"))

    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=60) == 0
    assert not _answers(stack.url)
    log = stack.log.read_text()
    assert "Dagster UI: http://127.0.0.1:" in log
    assert "stopping" in log
