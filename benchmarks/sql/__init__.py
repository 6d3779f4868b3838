"""The benchmarks' own statements: named blocks in ``<area>.sql`` here, in the catalogue's format.

Loading data and the raw side's alternative shapes (a batched delete without tombstones, the probe
without ``ORDER BY``) live here; what the project sends, the raw side takes from the project's own
catalogue (``lifecycle.db.sql.query``). This module imports nothing of the project, so a raw worker
process (``bench_retention``) measures its peak memory without the project's imports.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Final, LiteralString, cast

_HERE: Final = Path(__file__).resolve().parent
_HEADER: Final = re.compile(r"^-- name: ([a-z0-9_]+)\s*$", re.MULTILINE)


@functools.cache
def _statements() -> dict[str, LiteralString]:
    statements: dict[str, LiteralString] = {}
    for path in sorted(_HERE.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        headers = list(_HEADER.finditer(text))
        for header, following in zip(headers, [*headers[1:], None], strict=True):
            body = text[header.end() : following.start() if following else len(text)]
            # Comment lines stay in the file (a "%" there would read as a placeholder to psycopg).
            sql = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
            statements[f"{path.stem}.{header.group(1)}"] = cast(LiteralString, sql.strip())
    return statements


def setup_sql(name: str) -> LiteralString:
    """The statement ``name`` (``"<area>.<name>"``, from ``benchmarks/sql/<area>.sql``)."""
    return _statements()[name]
