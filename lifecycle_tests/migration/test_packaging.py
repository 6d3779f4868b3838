"""The wheel carries the migrations (issue 10, item 12): ``pip install .`` into a fresh venv could
not migrate ("Path doesn't exist: .../site-packages/migrations"). CI installs that wheel without the
dev extra and migrates with it (``.ci/run``); this test checks what the wheel contains."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.db import migrate

ROOT = Path(__file__).resolve().parents[2]
#: What the wheel is built from (a copy: a build/ directory in the checkout could ship stale files).
SOURCES = ("lifecycle", "migrations", "pyproject.toml", "setup.cfg", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    work = tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, work / "src" / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(work / "dist"),
            str(work / "src"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [path] = (work / "dist").glob("lifecycle-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.mark.slow
def test_the_wheel_ships_the_migrations_as_lifecycle_migrations(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "lifecycle/migrations/env.py" in names
    assert "lifecycle/migrations/script.py.mako" in names
    revisions = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert any("_0002_" in name for name in revisions)
    assert {f"lifecycle/migrations/versions/{name}" for name in revisions} <= names


@pytest.mark.slow
def test_the_wheel_has_every_module_of_the_package(wheel: zipfile.ZipFile) -> None:
    """pyproject lists the packages by name (a find cannot map migrations/): none may be missing."""
    names = set(wheel.namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lifecycle").rglob("*.py")}
    assert modules - names == set()
    assert "lifecycle/py.typed" in names
    # The SQL catalogue is package data: without it every statement is a KeyError at run time.
    catalogue = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lifecycle" / "db" / "sql").glob("*.sql")}
    assert catalogue
    assert catalogue - names == set()
    assert not any(name.startswith("lifecycle_tests/") for name in names)


@pytest.mark.slow
def test_the_dev_stack_is_only_in_the_dev_extra(wheel: zipfile.ZipFile) -> None:
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    for package in ("pgserver", "starlette", "uvicorn", "python-multipart", "pyjwt"):
        [requirement] = [r for r in requires if r.lower().startswith(package)]
        assert requirement.endswith('extra == "dev"'), requirement


def test_migrate_finds_the_migrations_through_the_package() -> None:
    """The editable install maps ``lifecycle.migrations`` to the top-level ``migrations/``."""
    assert migrate.migrations_dir().resolve() == (ROOT / "migrations").resolve()
    assert migrate.head_revision() is not None
