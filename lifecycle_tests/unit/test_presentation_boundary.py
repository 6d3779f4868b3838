"""Presentation stays at the edges: reports are plain data.

Markdown for the Dagster run page lives in ``lifecycle/defs/``, the rich terminal tables in
``lifecycle/cli.py``. Any other module under ``lifecycle/`` that imports ``rich`` or defines a
``to_markdown`` (function or method) fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lifecycle"
#: Where presentation may live, relative to ``lifecycle/``.
PRESENTATION = ("defs/", "cli.py")


def presentation_in(source: str) -> list[str]:
    """The presentation in ``source``: ``import rich...``, ``from rich... import``, ``def to_markdown``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [(node.lineno, f"imports {n}") for n in names if n == "rich" or n.startswith("rich.")]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "to_markdown":
            found.append((node.lineno, "defines to_markdown"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def _core_modules() -> list[Path]:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20, "the package was not found where the test looks"
    return [p for p in modules if not p.relative_to(PACKAGE).as_posix().startswith(PRESENTATION)]


def test_the_check_sees_each_form() -> None:
    source = """
import rich
import os, rich.console as c
from rich.table import Table
from richer import x
from .rich import y
def f():
    from rich import progress
class Report:
    def to_markdown(self) -> str:
        return ""
    def as_dict(self) -> dict:
        return {}
"""
    assert presentation_in(source) == [
        "line 2: imports rich",
        "line 3: imports rich.console",
        "line 4: imports rich.table",
        "line 8: imports rich",
        "line 10: defines to_markdown",
    ]


def test_the_presentation_modules_are_exempt_and_still_present() -> None:
    # If the renderers moved or were renamed, the exemption above would silently cover nothing.
    assert presentation_in((PACKAGE / "cli.py").read_text())
    assert (PACKAGE / "defs" / "markdown.py").is_file()
    assert not (PACKAGE / "retention" / "console.py").exists()


@pytest.mark.parametrize("module", _core_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_core_module_has_no_presentation(module: Path) -> None:
    assert presentation_in(module.read_text()) == [], (
        f"{module.relative_to(PACKAGE)}: presentation belongs in defs/ or cli.py"
    )
