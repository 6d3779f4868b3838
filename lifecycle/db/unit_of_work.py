"""The unit of work handed out by ``Database.transaction()``.

Repositories share its one connection through one executor and never commit: the ``with`` block
owns the transaction.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import psycopg

from lifecycle.db._executor import Executor
from lifecycle.db.api_keys import ApiKeysRepo
from lifecycle.db.events import JobEventsRepo
from lifecycle.db.jobs import JobsRepo

if TYPE_CHECKING:
    from lifecycle.db.outbox import OutboxRepo
    from lifecycle.db.retention import RetentionRepo
    from lifecycle.db.stats import StatsRepo
    from lifecycle.settings import Settings


class Transaction:
    """One connection inside one transaction, with the repositories bound to it."""

    def __init__(
        self, connection: psycopg.Connection[Any], settings: Settings, *, run_id: str | None = None
    ) -> None:
        #: The psycopg connection (for tests that check from inside the transaction).
        self.connection = connection
        self.settings = settings
        #: The Dagster run (or other actor) on whose behalf events are written.
        self.run_id = run_id
        self.executor = Executor(connection)
        self.events = JobEventsRepo(self.executor, run_id=run_id)
        self.jobs = JobsRepo(self.executor, settings, run_id=run_id)
        self.api_keys = ApiKeysRepo(self.executor, settings)

    # Built on first use: most transactions only touch jobs and events.

    @cached_property
    def retention(self) -> RetentionRepo:
        """Retention phase 1, its dry run, purge and tombstones."""
        from lifecycle.db.retention import RetentionRepo

        return RetentionRepo(self.executor, run_id=self.run_id)

    @cached_property
    def outbox(self) -> OutboxRepo:
        """The ``storage_deletions`` outbox: claims, results, its state, reconciliation."""
        from lifecycle.db.outbox import OutboxRepo

        return OutboxRepo(self.executor, run_id=self.run_id)

    @cached_property
    def stats(self) -> StatsRepo:
        """Read-only counts and the sensor's probes."""
        from lifecycle.db.stats import StatsRepo

        return StatsRepo(self.executor)
