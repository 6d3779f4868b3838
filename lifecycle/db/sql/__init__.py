"""The SQL catalogue: every statement the package sends, by name, read once from the ``.sql`` files here.

Each file holds one repository's (or domain's) statements. A statement starts at a header line
``-- name: <name>`` and runs to the next header; the comment lines under the header say what it does
and why it is shaped that way. It is found as ``"<file>.<name>"`` (``"jobs.transition_known_from"``).
A header ``-- fragment: <name>`` holds a piece shared by several statements (a column list, the
eligibility rule); a statement includes it as ``{{<file>.<name>}}``, expanded once, at load time.
Nothing is assembled at call time: every value is a bound parameter, in psycopg's ``%(name)s`` style.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from typing import Final, LiteralString

_HEADER: Final = re.compile(r"^-- (name|fragment): ([a-z0-9_]+)\s*$", re.MULTILINE)
_INCLUDE: Final = re.compile(r"\{\{([a-z0-9_]+\.[a-z0-9_]+)\}\}")


class CatalogueError(Exception):
    """A ``.sql`` file of the catalogue is malformed (a bug in this package, found at load time)."""


def parse(domain: str, text: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(statements, fragments)`` of one file's ``text``, keyed ``"<domain>.<name>"``, unexpanded."""
    statements: dict[str, str] = {}
    fragments: dict[str, str] = {}
    headers = list(_HEADER.finditer(text))
    preamble = text[: headers[0].start()] if headers else text
    if any(line.strip() and not line.lstrip().startswith("--") for line in preamble.splitlines()):
        # Only comment lines (the file's own introduction) may come before the first header.
        raise CatalogueError(f"{domain}.sql: SQL before the first '-- name:' header")
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        kind, name = header.group(1), header.group(2)
        body = text[header.end() : following.start() if following else len(text)].strip()
        key = f"{domain}.{name}"
        if key in statements or key in fragments:
            raise CatalogueError(f"{key} is defined twice")
        if not _strip_comments(body):
            raise CatalogueError(f"{key} has no SQL")
        (statements if kind == "name" else fragments)[key] = body
    return statements, fragments


def _strip_comments(body: str) -> str:
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--")).strip()


def _expand(key: str, body: str, fragments: dict[str, str], seen: tuple[str, ...] = ()) -> str:
    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in fragments:
            raise CatalogueError(f"{key} includes {name}, which is not a fragment")
        if name in seen:
            raise CatalogueError(f"{key}: fragment {name} includes itself")
        return _expand(name, _strip_comments(fragments[name]), fragments, (*seen, name))

    return _INCLUDE.sub(include, body)


@functools.cache
def catalogue() -> dict[str, LiteralString]:
    """Every named statement of the package's ``.sql`` files, fragments expanded (read once)."""
    statements: dict[str, str] = {}
    fragments: dict[str, str] = {}
    for entry in sorted(importlib.resources.files(__name__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        found, shared = parse(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        statements |= found
        fragments |= shared
    # The files are part of the package, not input: their text is as literal as a string in the
    # source, hence LiteralString (mypy reads LiteralString as str; a stricter checker would want a
    # cast here). Comment lines stay in the files: the server gets the SQL alone (a "%" in a comment
    # would read as a placeholder to psycopg).
    return {key: _expand(key, _strip_comments(body), fragments) for key, body in statements.items()}


def query(name: str) -> LiteralString:
    """The statement ``name`` (``"<file>.<name>"``); a ``KeyError`` names a statement that does not exist."""
    return catalogue()[name]
