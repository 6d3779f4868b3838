"""Shared check for the storage tests: no token, key or JWT in any message or log line."""

from __future__ import annotations

import re
from collections.abc import Iterable

_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}")
_TOKEN = re.compile(r"token=(?!\[redacted\])[^\s&\"']+")


def leaks(text: str, secrets: Iterable[str | None]) -> list[str]:
    """What in ``text`` looks like a secret: a literal secret, a JWT, or an unredacted token."""
    found = [f"literal secret #{i}" for i, s in enumerate(secrets) if s and s in text]
    found += [f"jwt {m.group()[:8]}..." for m in _JWT.finditer(text)]
    found += [f"token param {m.group()[:10]}..." for m in _TOKEN.finditer(text)]
    return found
