"""Redaction: the one place that knows what a secret looks like.

Used by every output the project writes: log processors, exception messages, CLI output, run
metadata and ``repr`` of settings and resources.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote

REDACTED = "[redacted]"

# Every pattern below is linear in the length of the text, whatever the text (issue 10, item 9):
# a match may only start where its first token starts (a lookbehind rejects the middle of a run in
# one step), and a run is consumed possessively (``*+``, ``++``: Python 3.11), so a failed attempt
# is never retried from each character of the same run. The unanchored form (``[a-z][a-z0-9]*://``)
# rescanned a run of letters from every one of its characters: quadratic, minutes for 1 MB.

# user:password@ in any URL (postgresql://user:pw@host/db, https://user:pw@host). The scheme is the
# whole run of scheme characters before ``://`` (a leading digit or dot is kept in ``head``).
_URL_PASSWORD = re.compile(r"(?P<head>(?<![a-zA-Z0-9+.\-])[a-zA-Z0-9+.\-]++://[^/\s:@]*+:)(?P<pw>[^@\s/]*+)@")
# password=... in libpq keyword strings and URL query strings.
_KV_PASSWORD = re.compile(r"(?i)\b(?P<key>password|passwd|pwd)=(?P<pw>[^\s&;'\"]+)")
# A JSON Web Token: three base64url segments, the first one a JSON header ("eyJ"). The token may be
# glued to the text before it (``%22eyJ...``, ``\\neyJ...``): ``pre`` is the part of the run before
# the first "eyJ", kept; the atomic group commits to that first "eyJ" (a later one in the same run
# would end at the same dot, so it could not match either).
_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])(?>(?P<pre>[A-Za-z0-9_\-]*?)eyJ)[A-Za-z0-9_\-]++\.[A-Za-z0-9_\-]++\.[A-Za-z0-9_\-]*+"
)
# Signed-URL tokens and other token-ish query parameters.
_TOKEN_PARAM = re.compile(r"(?i)\b(?P<key>token|apikey|api_key|access_token)=(?P<val>[^\s&\"']+)")
# Bearer credentials in headers that ended up in text.
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9_\-.=]+")
# bcrypt hashes ($2a$, $2b$, $2y$).
_BCRYPT = re.compile(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}")
# The project's API keys: lk_<key_id>_<secret>; the key id is public, the secret is not.
_API_KEY = re.compile(r"\b(?P<prefix>lk_[A-Za-z0-9]+_)(?P<secret>[A-Za-z0-9_\-]{8,})")
# Supabase's newer opaque API keys (sb_secret_..., sb_publishable_... is public and left alone).
_SB_SECRET = re.compile(r"\bsb_secret_[A-Za-z0-9_\-]+")
# Field names whose values are secrets whatever they look like (structured log events, metadata).
SECRET_FIELDS = re.compile(
    r"(?i)^(password|passwd|pwd|secret|.*_secret|token|.*_token|authorization|apikey|api_key|"
    r"service_role_key|.*service_role_key|key_hash|plaintext|database_url|dsn|cookie)$"
)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``[redacted]``."""
    return _KV_PASSWORD.sub(
        lambda m: f"{m['key']}={REDACTED}",
        _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", url),
    )


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret shape and every literal in ``secrets`` redacted."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m['key']}={REDACTED}", text)
    text = _JWT.sub(lambda m: f"{m['pre']}{REDACTED}", text)
    text = _TOKEN_PARAM.sub(lambda m: f"{m['key']}={REDACTED}", text)
    text = _BEARER.sub(f"Bearer {REDACTED}", text)
    text = _BCRYPT.sub(REDACTED, text)
    text = _SB_SECRET.sub(REDACTED, text)
    return _API_KEY.sub(lambda m: f"{m['prefix']}{REDACTED}", text)


_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a literal secret (a configured password or key) so ``redact_known`` removes it.

    Its percent-encoded and decoded spellings too: a password sits encoded in a URL and decoded in
    a driver's view of it.
    """
    if not value or len(value) < 4:
        return
    for spelling in (value, unquote(value), quote(value, safe=""), quote_plus(value)):
        if len(spelling) >= 4:
            _registered.add(spelling)


def redact_known(text: str) -> str:
    """``redact`` with the secrets registered in this process."""
    # Longest first, so a secret that contains another is removed whole.
    return redact(text, sorted(_registered, key=len, reverse=True))


def redact_value(value: Any, *, _depth: int = 0) -> Any:
    """``value`` with secrets redacted: strings, and recursively mappings, lists, tuples, sets.

    A mapping entry whose key names a secret (``password``, ``token``, ``key_hash`` ...) becomes
    ``[redacted]`` whatever its value; exceptions become their redacted ``str``; bytes are decoded
    leniently. Other values (numbers, UUIDs, datetimes, None) pass unchanged.
    """
    if isinstance(value, str):
        return redact_known(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if _depth > 8:
        return redact_known(repr(value))
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if isinstance(k, str) and SECRET_FIELDS.match(k) and v is not None
            else redact_value(v, _depth=_depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(v, _depth=_depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, bytes | bytearray):
        return redact_known(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, BaseException):
        return redact_exception(value)
    text = str(value)
    cleaned = redact_known(text)
    return value if cleaned == text else cleaned


def redact_exception(exc: BaseException) -> str:
    """``ClassName: message`` of ``exc``, redacted (for logs and metadata)."""
    return redact_known(f"{type(exc).__name__}: {exc}")


def contains_known_secret(text: str) -> bool:
    """Whether ``text`` holds a registered secret literally (used by the leak tests)."""
    return any(secret in text for secret in _registered)
