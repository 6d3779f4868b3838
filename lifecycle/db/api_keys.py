"""ApiKeysRepo (placeholder until the repositories issue lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from lifecycle.settings import Settings


class ApiKeysRepo:
    """API keys."""

    def __init__(self, connection: sa.Connection, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
