"""The unit of work handed out by ``Database.transaction()``.

Repositories share its one connection and never commit: the ``with`` block owns the transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from lifecycle.db.api_keys import ApiKeysRepo
from lifecycle.db.events import JobEventsRepo
from lifecycle.db.jobs import JobsRepo

if TYPE_CHECKING:
    from lifecycle.settings import Settings


class Transaction:
    """One connection inside one transaction, with the repositories bound to it."""

    def __init__(self, connection: sa.Connection, settings: Settings, *, run_id: str | None = None) -> None:
        self.connection = connection
        self.settings = settings
        #: The Dagster run (or other actor) on whose behalf events are written.
        self.run_id = run_id
        self.events = JobEventsRepo(connection, run_id=run_id)
        self.jobs = JobsRepo(connection, settings, self.events, run_id=run_id)
        self.api_keys = ApiKeysRepo(connection, settings)
