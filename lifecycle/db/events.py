"""JobEventsRepo (placeholder until the repositories issue lands)."""

from __future__ import annotations

import sqlalchemy as sa


class JobEventsRepo:
    """Events of jobs."""

    def __init__(self, connection: sa.Connection, *, run_id: str | None = None) -> None:
        self.connection = connection
        self.run_id = run_id
