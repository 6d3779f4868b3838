"""One data layer: SQL only in ``lifecycle/db/sql/``, SQLAlchemy only where migrations need it, and
the data layer's insides (``lifecycle.db._*``, a transaction's raw connection) used only inside it.

Each rule is checked on the source with ``ast`` (nothing is imported), and each checker is also fed a
sample it must flag: a check that passes whatever the code does proves nothing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]

_STATEMENT: Final = re.compile(r"(SELECT|INSERT|UPDATE|DELETE|WITH)\s")
#: What follows the keyword in a statement, not in a sentence ("With one allowed source ...",
#: f"delete {n} job(s)", "Select and report only"): read on the upper-cased text.
_STATEMENT_SHAPE: Final = re.compile(
    r"""
    SELECT\s+(DISTINCT\s+)?(\*|\d|\(|EXISTS\b|[\w.]+\s*(\(|,|$|\s+AS\s|\s+FROM\s))
    | INSERT\s+(OR\s+\w+\s+)?INTO\s
    | UPDATE\s+(ONLY\s+)?[\w.]+(\s+(AS\s+)?\w+)?\s+SET\s
    | DELETE\s+FROM\s
    | WITH\s+(RECURSIVE\s+)?\w+\s*(\([^)]*\)\s*)?AS\s*(NOT\s+)?(MATERIALIZED\s*)?\(
    """,
    re.VERBOSE,
)
#: Keyword arguments whose strings are prose for people (``--dry-run`` help: "Select and report
#: only"), never sent to a database.
_PROSE_KEYWORDS: Final = frozenset({"help", "description", "doc"})
#: Files allowed to hold SQL, and why.
_SQL_ALLOWED: Final = {
    # The local Storage stand-in keeps its own bookkeeping in SQLite (a dev tool, not the lifecycle
    # database, and not psycopg's placeholder style): its statements do not belong in the catalogue.
    "lifecycle/devstack/storage_server.py",
}
#: The only run-time modules that may import SQLAlchemy (the schema and Alembic); ``migrations/``
#: is not scanned.
_SQLALCHEMY_ALLOWED: Final = {"lifecycle/db/tables.py", "lifecycle/db/migrate.py"}


def _python_files(*roots: str, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, ast.Module]]:
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if ".lifecycle" in path.parts or relative.startswith(skip):
                continue
            yield relative, ast.parse(path.read_text(encoding="utf-8"), filename=relative)


# -- SQL statements ----------------------------------------------------------------------------------


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _prose_arguments(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in _PROSE_KEYWORDS:
                    found.update(id(n) for n in ast.walk(keyword.value))
    return found


def _text(node: ast.AST) -> str | None:
    """A string constant's text; an f-string's, each replacement field read as a word."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else " x " for v in node.values)
    return None


def _is_statement(text: str) -> bool:
    upper = text.strip().upper()
    return bool(_STATEMENT.match(upper) and _STATEMENT_SHAPE.match(upper))


def sql_statements(tree: ast.AST) -> list[int]:
    """Lines of string constants and f-strings (whole, and each literal part) that start like an SQL
    statement."""
    skip = _docstrings(tree) | _prose_arguments(tree)
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if id(node) not in skip and (text := _text(node)) is not None and _is_statement(text)
        }
    )


def test_no_sql_statement_outside_the_catalogue() -> None:
    offences = [
        f"{path}:{line}"
        for path, tree in _python_files("lifecycle", "benchmarks", skip=("lifecycle/db/sql/",))
        if path not in _SQL_ALLOWED
        for line in sql_statements(tree)
    ]
    assert offences == [], (
        "SQL statements outside lifecycle/db/sql/ (give each a named block in a .sql file):\n  "
        + "\n  ".join(offences)
    )


def test_the_sql_check_flags_statements_and_not_prose() -> None:
    source = (
        '"""Select the jobs (a docstring is prose)."""\n'
        "import click\n"
        "A = 'SELECT id FROM jobs'\n"
        "B = '''\n    with sel AS (SELECT 1) DELETE FROM jobs'''\n"
        "def f(conn, table, ids):\n"
        "    conn.execute(f'UPDATE {table} SET x = 1')\n"
        "    conn.execute(f\"{table}\" 'insert into t VALUES (1)')\n"
        "    conn.execute(f'DELETE FROM {table} WHERE id = ANY(%s)', ids)\n"
        "    conn.execute('select 1')\n"
        "@click.option('--dry-run', help='Select and report only.')\n"
        "def g(n):\n"
        "    '''Delete expired jobs.'''\n"
        "    return 'Selection', 'DELETED 3 jobs', 'with_hold', f'delete {n} job(s)'\n"
        "H = ('With one allowed source status the UPDATE is guarded', 'Select and report only')\n"
    )
    assert sql_statements(ast.parse(source)) == [3, 4, 7, 8, 9, 10]


# -- SQLAlchemy, the data layer's private modules, a transaction's raw connection --------------------


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import, ``from a import b`` counted as ``a`` and ``a.b``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def sqlalchemy_imports(tree: ast.AST) -> list[int]:
    """Lines that import ``sqlalchemy`` or one of its modules."""
    return sorted(
        {
            line
            for line, module in _imports(tree)
            if module == "sqlalchemy" or module.startswith("sqlalchemy.")
        }
    )


def private_data_layer_imports(tree: ast.AST) -> list[int]:
    """Lines that import a private module of the data layer (``lifecycle.db._executor``, ...)."""
    return sorted({line for line, module in _imports(tree) if module.startswith("lifecycle.db._")})


def raw_connection_uses(tree: ast.AST) -> list[int]:
    """Lines that reach for a transaction's psycopg connection (``tx.connection``)."""
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "connection"
            and isinstance(node.value, ast.Name)
            and node.value.id == "tx"
        }
    )


def test_sqlalchemy_only_in_the_schema_and_migrations() -> None:
    offences = [
        f"{path}:{line}"
        for path, tree in _python_files("lifecycle")
        if path not in _SQLALCHEMY_ALLOWED
        for line in sqlalchemy_imports(tree)
    ]
    assert offences == [], (
        "sqlalchemy imported at run time (psycopg only; see lifecycle/db):\n  " + "\n  ".join(offences)
    )


def test_the_data_layer_insides_stay_inside() -> None:
    offences = [
        f"{path}:{line} {what}"
        for path, tree in _python_files("lifecycle", "benchmarks", skip=("lifecycle/db/",))
        for what, lines in (
            ("imports lifecycle.db._*", private_data_layer_imports(tree)),
            ("uses tx.connection", raw_connection_uses(tree)),
        )
        for line in lines
    ]
    assert offences == [], "outside lifecycle/db/ (use a repository of the transaction):\n  " + "\n  ".join(
        offences
    )


@pytest.mark.parametrize(
    ("source", "sqlalchemy", "private", "connection"),
    [
        ("import sqlalchemy as sa", [1], [], []),
        ("import sqlalchemy.exc", [1], [], []),
        ("from sqlalchemy import text", [1], [], []),
        ("from sqlalchemy.engine import Engine", [1], [], []),
        ("import sqlalchemy_utils", [], [], []),
        ("from lifecycle.db._translate import translate", [], [1], []),
        ("from lifecycle.db import _common", [], [1], []),
        ("import lifecycle.db._executor", [], [1], []),
        ("from lifecycle.db import Database", [], [], []),
        ("with db.transaction() as tx:\n    conn = tx.connection", [], [], [2]),
        ("with db.connection() as conn:\n    conn.execute(Q)", [], [], []),
    ],
)
def test_the_import_and_connection_checks_flag_samples(
    source: str, sqlalchemy: list[int], private: list[int], connection: list[int]
) -> None:
    tree = ast.parse(source)
    assert sqlalchemy_imports(tree) == sqlalchemy
    assert private_data_layer_imports(tree) == private
    assert raw_connection_uses(tree) == connection


def test_ruff_s608_is_enabled() -> None:
    # A second guard, on every file (tests too): ruff flags an f-string or "%"/"+" that builds SQL.
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lint = config["tool"]["ruff"]["lint"]
    assert "S" in lint["select"] or "S608" in lint["select"]
    assert "S608" not in lint.get("ignore", [])
