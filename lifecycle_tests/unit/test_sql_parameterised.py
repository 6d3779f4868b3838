"""Parameterised queries only: no SQL text built with string formatting anywhere in the package.

ruff's S608 catches f-strings that look like SQL; this test is stricter and independent of the
keywords: the SQL argument of every ``text()``, ``execute()``, ``exec_driver_sql()`` and
``sql.SQL()`` call in ``lifecycle/`` (and ``migrations/``) must not be an f-string, a ``%`` or
``+`` expression, or a ``.format()`` call. Values go in as bind parameters; identifiers, where
needed, through ``psycopg.sql.Identifier`` / SQLAlchemy constructs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SQL_CALLS = {"text", "execute", "exec_driver_sql", "SQL", "executemany", "literal_column"}


class _Scope:
    """What a file binds: module-level constants, and per function the lists of fixed fragments."""

    def __init__(self, tree: ast.Module) -> None:
        self.constants: set[str] = set()
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                # Module-level names are bound at import, when no user input exists yet.
                if isinstance(target, ast.Name) and target.id.lstrip("_").isupper():
                    self.constants.add(target.id)

    @staticmethod
    def fragment_lists(function: ast.AST) -> set[str]:
        """Local names bound only to program text: lists of literals (``sets.append("b = :b")``)
        and fixed expressions (``marks = ",".join("?" * len(chunk))``)."""
        candidates: dict[str, bool] = {}
        for node in ast.walk(function):
            target: ast.expr | None = None
            value: ast.expr | None = None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign):
                target, value = node.target, node.value
            if isinstance(target, ast.Name):
                literal = (isinstance(value, ast.List) and all(_is_literal(e) for e in value.elts)) or (
                    value is not None and _fixed(value, set(), set())
                )
                candidates[target.id] = candidates.get(target.id, True) and literal
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("append", "extend", "insert")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in candidates
            ):
                args = node.args[1:] if node.func.attr == "insert" else node.args
                if node.func.attr == "extend":
                    ok = all(
                        isinstance(a, ast.List | ast.Tuple) and all(map(_is_literal, a.elts)) for a in args
                    )
                else:
                    ok = all(_is_literal(a) for a in args)
                candidates[node.func.value.id] = candidates[node.func.value.id] and ok
        return {name for name, ok in candidates.items() if ok}


def _is_literal(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _fixed(node: ast.expr, constants: set[str], fragments: set[str]) -> bool:
    """Whether ``node`` can only ever be program text (never a runtime value)."""
    if _is_literal(node):
        return True
    if isinstance(node, ast.Name):
        return node.id in constants or node.id in fragments
    if isinstance(node, ast.JoinedStr):
        return all(
            _fixed(v.value, constants, fragments) for v in node.values if isinstance(v, ast.FormattedValue)
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _fixed(node.left, constants, fragments) and _fixed(node.right, constants, fragments)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and _is_literal(node.func.value)
        and len(node.args) == 1
    ):
        arg = node.args[0]
        if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mult):
            # "?" * n: placeholders, never values.
            return _is_literal(arg.left) or _is_literal(arg.right)
        return (isinstance(arg, ast.Name) and (arg.id in fragments or arg.id in constants)) or (
            isinstance(arg, ast.List | ast.Tuple) and all(_fixed(e, constants, fragments) for e in arg.elts)
        )
    return False


def _built_with_formatting(
    node: ast.expr, constants: set[str] | None = None, fragments: set[str] | None = None
) -> bool:
    """An f-string, ``%``/``+`` or ``str.format`` that may splice a runtime value into SQL."""
    if isinstance(node, ast.JoinedStr | ast.BinOp):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return True
        return not _fixed(node, constants or set(), fragments or set())
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        # str.format on a literal; psycopg's sql.SQL(...).format(...) composes safely and is allowed.
        return isinstance(node.func.value, ast.Constant)
    return False


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants = _Scope(tree).constants
    found: list[str] = []

    def visit(node: ast.AST, fragments: set[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            fragments = fragments | _Scope.fragment_lists(node)
        if (
            isinstance(node, ast.Call)
            and _call_name(node) in _SQL_CALLS
            and node.args
            and _built_with_formatting(node.args[0], constants, fragments)
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        for child in ast.iter_child_nodes(node):
            visit(child, fragments)

    visit(tree, set())
    return found


def _sources() -> list[Path]:
    files = sorted((ROOT / "lifecycle").rglob("*.py")) + sorted((ROOT / "migrations").rglob("*.py"))
    return [f for f in files if ".lifecycle" not in f.parts]


def test_no_sql_is_built_with_string_formatting() -> None:
    offences = [o for path in _sources() for o in _offences(path)]
    assert offences == [], "SQL built by string formatting (use bind parameters): " + ", ".join(offences)


@pytest.mark.parametrize(
    "source",
    [
        "conn.execute(sa.text(f\"SELECT * FROM jobs WHERE id = '{job_id}'\"))",
        'conn.execute("DELETE FROM jobs WHERE id = %s" % job_id)',
        'conn.exec_driver_sql("SELECT " + column)',
        'cur.execute("SELECT {}".format(name))',
    ],
)
def test_the_check_catches_formatting(tmp_path: Path, source: str) -> None:
    # A check that passes whatever the code does proves nothing: feed it the shapes it must find.
    tree = ast.parse(source)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) in _SQL_CALLS and n.args]
    assert any(_built_with_formatting(c.args[0]) for c in calls)


def test_composed_identifiers_and_bind_parameters_pass() -> None:
    for source in (
        'conn.execute(sa.text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id})',
        'conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))',
        "conn.execute(QUERY, params)",
    ):
        calls = [
            n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and _call_name(n) in _SQL_CALLS
        ]
        assert not any(c.args and _built_with_formatting(c.args[0]) for c in calls), source


def test_ruff_s608_is_enabled() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lint = config["tool"]["ruff"]["lint"]
    assert "S" in lint["select"] or "S608" in lint["select"]
    assert "S608" not in lint.get("ignore", [])


def test_fragments_tainted_by_a_value_are_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = (
        "import sqlalchemy as sa\n"
        "_COLUMNS = 'id, status'\n"
        "def ok(conn, flag):\n"
        "    sets: list[str] = []\n"
        "    if flag:\n"
        "        sets.append('a = :a')\n"
        "    conn.execute(sa.text(f\"UPDATE jobs SET {', '.join(sets)} RETURNING {_COLUMNS}\"))\n"
        "def bad(conn, column):\n"
        "    sets = []\n"
        "    sets.append(column)\n"
        "    conn.execute(sa.text(f\"UPDATE jobs SET {', '.join(sets)}\"))\n"
        "def worse(conn, name):\n"
        "    where = 'name = ' + name\n"
        "    conn.execute(sa.text(f'SELECT 1 FROM jobs WHERE {where}'))\n"
    )
    path = tmp_path / "sample.py"
    path.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _offences(path) == ["sample.py:11", "sample.py:14"]
