"""JobsRepo (placeholder until the repositories issue lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from lifecycle.db.events import JobEventsRepo
    from lifecycle.settings import Settings


class JobsRepo:
    """Jobs."""

    def __init__(
        self,
        connection: sa.Connection,
        settings: Settings,
        events: JobEventsRepo,
        *,
        run_id: str | None = None,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.events = events
        self.run_id = run_id
