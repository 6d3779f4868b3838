"""Redaction: the one place that knows what a secret looks like.

Used by every output the project writes: log processors, exception messages, CLI output, run
metadata and ``repr`` of settings and resources.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

# user:password@ in any URL (postgresql://user:pw@host/db, https://user:pw@host).
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]*)@")
# password=... in libpq keyword strings and URL query strings.
_KV_PASSWORD = re.compile(r"(?i)\b(?P<key>password|passwd|pwd)=(?P<pw>[^\s&;'\"]+)")
# A JSON Web Token: three base64url segments, the first one a JSON header ("eyJ").
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
# Signed-URL tokens and other token-ish query parameters.
_TOKEN_PARAM = re.compile(r"(?i)\b(?P<key>token|apikey|api_key|access_token)=(?P<val>[^\s&\"']+)")
# Bearer credentials in headers that ended up in text.
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9_\-.=]+")
# bcrypt hashes ($2a$, $2b$, $2y$).
_BCRYPT = re.compile(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}")
# The project's API keys: lk_<key_id>_<secret>; the key id is public, the secret is not.
_API_KEY = re.compile(r"\b(?P<prefix>lk_[A-Za-z0-9]+_)(?P<secret>[A-Za-z0-9_\-]{8,})")


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
    text = _JWT.sub(REDACTED, text)
    text = _TOKEN_PARAM.sub(lambda m: f"{m['key']}={REDACTED}", text)
    text = _BEARER.sub(f"Bearer {REDACTED}", text)
    text = _BCRYPT.sub(REDACTED, text)
    return _API_KEY.sub(lambda m: f"{m['prefix']}{REDACTED}", text)


_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a literal secret (a configured password or key) so ``redact_known`` removes it."""
    if value and len(value) >= 4:
        _registered.add(value)


def redact_known(text: str) -> str:
    """``redact`` with the secrets registered in this process."""
    return redact(text, _registered)
