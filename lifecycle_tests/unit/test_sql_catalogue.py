"""The SQL catalogue (``lifecycle/db/sql``): every statement loads, once, whole, in psycopg's style.

Statements are sent by name only, so no SQL is assembled at call time; what is left to check is the
catalogue itself: the files parse, names are unique, fragments expand, and no statement keeps a
leftover include or a placeholder psycopg would not bind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

from lifecycle.db import sql
from lifecycle.db.sql import CatalogueError, catalogue, parse, query

SQL_DIR: Final = Path(sql.__file__).parent
_HEADER: Final = re.compile(r"^-- name: ([a-z0-9_]+)\s*$", re.MULTILINE)
#: ``:name`` as SQLAlchemy's ``text()`` wrote parameters; ``::type`` casts are not placeholders.
_COLON_PLACEHOLDER: Final = re.compile(r"(?<![:\w]):[A-Za-z_]\w*")
_PSYCOPG_PLACEHOLDER: Final = re.compile(r"%\([a-z_][a-z0-9_]*\)s")


def _files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


def test_every_statement_of_every_file_loads_under_its_own_name() -> None:
    expected = {
        f"{path.stem}.{name}"
        for path in _files()
        for name in _HEADER.findall(path.read_text(encoding="utf-8"))
    }
    assert expected, "no '-- name:' header found: is the catalogue where this test looks?"
    assert set(catalogue()) == expected
    for name in expected:
        assert query(name).strip()


def test_a_statement_that_does_not_exist_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        query("stats.no_such_statement")


def problems(statement: str) -> list[str]:
    """What would keep ``statement`` from reaching the server as written (empty: nothing)."""
    found = []
    if "{{" in statement or "}}" in statement:
        found.append("an include left unexpanded")
    if _COLON_PLACEHOLDER.search(statement):
        found.append("a :name placeholder (psycopg binds %(name)s)")
    if re.search(r"^\s*--", statement, re.MULTILINE):
        found.append("a comment line sent to the server")
    if _PSYCOPG_PLACEHOLDER.search(statement):
        # With parameters psycopg reads every "%": a literal one must be written "%%".
        if "%" in _PSYCOPG_PLACEHOLDER.sub("", statement).replace("%%", ""):
            found.append("a lone % (write %% for a literal)")
    elif "%" in statement:
        # Without, it may be sent as is (params None): "%%" would reach the server doubled.
        found.append("a % in a statement without parameters")
    return found


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_each_statement_is_plain_sql_for_psycopg(name: str) -> None:
    assert problems(query(name)) == []


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("SELECT {{jobs.columns}} FROM jobs", "include"),
        ("SELECT id FROM jobs WHERE id = :id", ":name"),
        ("-- why\nSELECT 1", "comment"),
        ("SELECT id FROM jobs WHERE params->>'name' LIKE 'a%' AND id = %(id)s", "lone %"),
        ("SELECT id FROM jobs WHERE params->>'name' LIKE 'a%%'", "without parameters"),
    ],
)
def test_the_statement_check_finds_each_problem(statement: str, problem: str) -> None:
    assert problem in " ".join(problems(statement))
    assert problems("SELECT '{}'::jsonb, x[1:2] FROM t WHERE a = %(a)s AND b LIKE 'c%%'") == []


def test_the_eligibility_fragment_is_expanded_where_it_is_used() -> None:
    rule = "expires_at <= coalesce(CAST(%(now)s AS timestamptz), now())"
    for name in ("stats.oldest_eligible_job", "stats.expired_backlog"):
        statement = query(name)
        assert rule in statement
        assert "status <> 'processing'" in statement
        assert "NOT retention_hold" in statement


def test_parse_splits_statements_and_fragments_and_keeps_their_comments() -> None:
    statements, fragments = parse(
        "demo",
        "-- The file's introduction.\n\n"
        "-- fragment: cols\nid, status\n\n"
        "-- name: one\n-- Why it is shaped so.\nSELECT {{demo.cols}} FROM jobs\n\n"
        "-- name: two\nSELECT 1\n",
    )
    assert statements == {
        "demo.one": "-- Why it is shaped so.\nSELECT {{demo.cols}} FROM jobs",
        "demo.two": "SELECT 1",
    }
    assert fragments == {"demo.cols": "id, status"}


def test_fragments_expand_and_nest() -> None:
    fragments = {"d.cols": "id, {{d.more}}", "d.more": "-- a comment\nstatus"}
    assert sql._expand("d.q", "SELECT {{d.cols}} FROM jobs", fragments) == "SELECT id, status FROM jobs"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", "demo.a is defined twice"),
        ("-- fragment: a\nid\n-- name: a\nSELECT 2\n", "demo.a is defined twice"),
        ("SELECT 1\n-- name: a\nSELECT 2\n", "SQL before the first"),
        ("-- intro\nDELETE FROM jobs\n", "SQL before the first"),
        ("-- name: a\n-- only a comment\n-- name: b\nSELECT 1\n", "demo.a has no SQL"),
    ],
)
def test_parse_refuses_a_malformed_file(text: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse("demo", text)


def test_an_unknown_or_recursive_include_is_refused() -> None:
    with pytest.raises(CatalogueError, match=r"d\.q includes d\.nope, which is not a fragment"):
        sql._expand("d.q", "SELECT {{d.nope}}", {})
    with pytest.raises(CatalogueError, match="includes itself"):
        sql._expand("d.q", "SELECT {{d.loop}}", {"d.loop": "{{d.loop}}"})
