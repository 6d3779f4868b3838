"""The CLI finds the local Storage server of the embedded stack (issue 10, item 11).

Every command runs as a real subprocess in a fresh ``LIFECYCLE_HOME`` with neither ``DATABASE_URL``
nor ``SUPABASE_URL``, exactly as after ``make run``: the embedded PostgreSQL of that home (held open
by this module, so the commands join it) and the local Storage server, either the one
``lifecycle dev`` recorded in ``<home>/storage/server.json`` or, with none running, one the command
starts for its own duration. Checks go over independent paths: psycopg on the embedded database, and
the bucket listing over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from lifecycle.devstack import stack
from lifecycle.devstack.postgres import APP_DATABASE, EmbeddedPostgres
from lifecycle.devstack.storage_server import start_storage_server
from lifecycle.settings import Settings
from lifecycle.storage import ObjectKind, StorageRepo

LIFECYCLE = Path(sys.executable).parent / "lifecycle"


def _env(home: Path) -> dict[str, str]:
    """This process's environment without any connection setting, with ``home`` as LIFECYCLE_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SUPABASE_", "LIFECYCLE_"))}
    env["LIFECYCLE_HOME"] = str(home)
    return env


def _cli(home: Path, *args: str, python_prelude: str | None = None) -> subprocess.CompletedProcess[str]:
    """``lifecycle <args>`` in ``home`` (its cwd too, so no repository ``.env`` is read)."""
    command: list[str] = [str(LIFECYCLE), *args]
    if python_prelude is not None:
        code = f"{python_prelude}\nfrom lifecycle.cli import main\nmain(prog_name='lifecycle')"
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(
        command, cwd=home, env=_env(home), capture_output=True, text=True, timeout=300, check=False
    )


def _keys_in_storage(url: str, service_role_key: str) -> set[str]:
    """Every object key in the default buckets, listed over HTTP."""
    settings = Settings.load(env={"SUPABASE_URL": url, "SUPABASE_SERVICE_ROLE_KEY": service_role_key})
    with StorageRepo.from_settings(settings) as repo:
        return {obj.key for kind in ObjectKind for obj in repo.iter_keys(kind)}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh lifecycle home whose embedded PostgreSQL stays up for the module; migrated."""
    path = tmp_path_factory.mktemp("home")
    server = EmbeddedPostgres(path).start()
    try:
        migrated = _cli(path, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        yield path
    finally:
        server.stop()


@pytest.fixture
def app_db(home: Path) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An independent connection to the home's application database."""
    server = EmbeddedPostgres(home).start()
    with psycopg.connect(server.url(APP_DATABASE), autocommit=True) as conn:
        yield conn


def test_with_no_server_running_a_command_starts_one_for_its_duration(home: Path) -> None:
    """``bootstrap`` failed with "SUPABASE_URL is not set" under the embedded stack."""
    result = _cli(home, "bootstrap")
    assert result.returncode == 0, result.stderr
    assert "created bucket sources" in result.stdout
    assert "created bucket results" in result.stdout
    [line] = [x for x in result.stderr.splitlines() if "started the local Storage server" in x]
    url = line.rsplit(" ", 1)[-1]
    # Stopped when the command ended, and never recorded for other commands to rely on.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/storage/v1/status", timeout=2)
    assert not (stack.storage_data_dir(home) / stack.STORAGE_STATE_FILE).exists()
    # The buckets are in the home's storage data, seen by a server of our own on it.
    server = start_storage_server(stack.storage_data_dir(home))
    try:
        response = httpx.get(
            f"{server.url}/storage/v1/bucket",
            headers={"Authorization": f"Bearer {server.service_role_key}"},
            timeout=10,
        )
        assert {b["name"] for b in response.json()} >= {"sources", "results"}
    finally:
        server.stop()


def test_commands_use_the_server_lifecycle_dev_recorded(home: Path, app_db: psycopg.Connection[Any]) -> None:
    """``seed --objects``, ``reconcile`` and ``cleanup`` (phase 2) use the dev stack's server."""
    running = stack._Stack()
    try:
        # Exactly what `lifecycle dev` runs for Storage (the rest of the stack is not needed here).
        url, key = stack._storage(Settings.load(env={}), home.resolve(), running)
        assert (stack.storage_data_dir(home) / stack.STORAGE_STATE_FILE).exists()
        # `lifecycle dev` creates the buckets too (this test must not rely on another one's bootstrap).
        bootstrapped = _cli(home, "bootstrap")
        assert bootstrapped.returncode == 0, bootstrapped.stderr
        assert "started the local Storage server" not in bootstrapped.stderr

        seeded = _cli(home, "seed", "--jobs", "12", "--objects", "--seed", "5", "--expired-fraction", "0.5")
        assert seeded.returncode == 0, seeded.stderr
        assert "started the local Storage server" not in seeded.stderr
        recorded = {
            k
            for (keys,) in app_db.execute(
                "SELECT array_remove(source_key || result_keys, NULL) FROM jobs"
            ).fetchall()
            for k in keys
        }
        assert recorded
        assert _keys_in_storage(url, key) == recorded

        reconciled = _cli(home, "reconcile", "--grace-seconds", "0")
        assert reconciled.returncode == 0, reconciled.stderr
        assert "Orphan reconciliation" in reconciled.stdout

        expired = app_db.execute(
            "SELECT count(*) FROM jobs WHERE expires_at <= now() AND status <> 'processing'"
        ).fetchone()
        assert expired is not None
        assert expired[0] > 0
        cleaned = _cli(home, "cleanup")
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert "storage is not configured" not in cleaned.stderr
        # Phase 2 ran against the dev stack's server: the outbox is empty and only live keys remain.
        assert app_db.execute("SELECT count(*) FROM storage_deletions").fetchone() == (0,)
        live = {
            k
            for (keys,) in app_db.execute(
                "SELECT array_remove(source_key || result_keys, NULL) FROM jobs"
            ).fetchall()
            for k in keys
        }
        assert live < recorded
        assert _keys_in_storage(url, key) == live
    finally:
        running.stop()
    assert not (stack.storage_data_dir(home) / stack.STORAGE_STATE_FILE).exists()


# Blocks the modules of the dev extra, as in an install without it (find_spec answers None).
_NO_DEV_EXTRA = (
    "import sys; sys.modules.update(dict.fromkeys(['pgserver', 'starlette', 'uvicorn', 'multipart', 'jwt']))"
)


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["bootstrap"], "SUPABASE_URL"),
        (["migrate"], "DATABASE_URL"),
        (["seed", "--jobs", "1"], "DATABASE_URL"),
    ],
)
def test_without_the_dev_extra_the_embedded_stack_is_one_line_naming_what_to_set(
    tmp_path: Path, args: list[str], variable: str
) -> None:
    result = _cli(tmp_path, *args, python_prelude=_NO_DEV_EXTRA)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {variable} is not set")
    assert "lifecycle[dev]" in lines[0]


def test_lifecycle_dev_without_the_dev_extra_is_one_line_before_starting_anything(tmp_path: Path) -> None:
    """Printed "starting embedded PostgreSQL" first, then an error; with DATABASE_URL set, the error
    said "DATABASE_URL is not set" (Dagster's own storage wanted the embedded server)."""
    for extra in ({}, {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres"}):
        env = {**_env(tmp_path), **extra}
        code = f"{_NO_DEV_EXTRA}\nfrom lifecycle.cli import main\nmain(prog_name='lifecycle')"
        result = subprocess.run(
            [sys.executable, "-c", code, "dev"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: lifecycle dev needs the dev extra"), line
        assert "lifecycle[dev]" in line
        assert "DATABASE_URL is not set" not in line
        assert not (tmp_path / "pgdata").exists()


def test_lifecycle_dev_outside_a_checkout_is_one_line_before_starting_anything(tmp_path: Path) -> None:
    """An installed wheel has no dagster.yaml beside the package: FileNotFoundError traceback after
    the schema and the buckets were already set up."""
    prelude = f"import lifecycle.devstack.stack as s, pathlib; s.ROOT = pathlib.Path({str(tmp_path)!r})"
    result = _cli(tmp_path, "dev", python_prelude=prelude)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "checkout" in line, line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pgdata").exists()
