"""Retention: cleanup of expired jobs and their objects, purge, and orphan reconciliation.

The protocol (DESIGN.md, "Retention cleanup"): phase 1 deletes rows in short batches and queues
their object keys in the ``storage_deletions`` outbox in the same transaction; phase 2 drains the
outbox. See ``cleanup``, ``drain_outbox``, ``purge`` and ``reconcile_orphans``.
"""

from lifecycle.retention.cleanup import (
    Progress,
    cleanup,
    plan_cleanup,
    prune_tombstones,
    purge,
    vacuum_jobs,
)
from lifecycle.retention.limits import CleanupLimits
from lifecycle.retention.outbox import ObjectStore, drain_outbox, plan_drain, require_service_role
from lifecycle.retention.reconcile import reconcile_orphans
from lifecycle.retention.report import CleanupPlan, CleanupReport, DrainPlan, DrainReport, ReconcileReport

__all__ = [
    "CleanupLimits",
    "CleanupPlan",
    "CleanupReport",
    "DrainPlan",
    "DrainReport",
    "ObjectStore",
    "Progress",
    "ReconcileReport",
    "cleanup",
    "drain_outbox",
    "plan_cleanup",
    "plan_drain",
    "prune_tombstones",
    "purge",
    "reconcile_orphans",
    "require_service_role",
    "vacuum_jobs",
]
