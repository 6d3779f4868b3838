"""The schema, declared once. Alembic migrations create it; ``alembic check`` finds no drift."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from lifecycle.states import JobStatus

#: Stable constraint names: the data layer maps driver errors by constraint name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

_STATUS_LIST = ", ".join(f"'{s.value}'" for s in JobStatus)
_NOW = sa.text("now()")

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("key_hash", sa.Text, nullable=False),
    sa.Column("scopes", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("key_id"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")),
    sa.Column("status", sa.Text, nullable=False, server_default=JobStatus.QUEUED.value),
    sa.Column("params", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("source_key", sa.Text),
    sa.Column("result_keys", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("retention_hold", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("api_key_id", pg.UUID(as_uuid=True), sa.ForeignKey("api_keys.id", ondelete="SET NULL")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(f"status IN ({_STATUS_LIST})", name="status"),
    sa.CheckConstraint("attempts >= 0", name="attempts"),
    sa.CheckConstraint("version >= 1", name="version"),
    sa.CheckConstraint("status = 'processing' OR lease_expires_at IS NULL", name="lease"),
    # A row records only its own objects' keys (functions created by migration 0002), so no client
    # can point one job at another's object, a path outside the layout or a wildcard.
    sa.CheckConstraint("lifecycle_owns_keys(id, source_key, result_keys)", name="keys_owner"),
    sa.Index("idx_jobs_status_created_at", "status", "created_at", "id"),
    sa.Index("idx_jobs_expires_at", "expires_at"),
    sa.Index("idx_jobs_api_key_id", "api_key_id"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column(
        "job_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("jobs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # clock_timestamp(), not now(): now() is the transaction's start, so a writer that waited for
    # another's row lock would get an earlier ts than the event it follows, and replaying events by
    # (ts, id) would put them out of order.
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("from_status", sa.Text),
    sa.Column("to_status", sa.Text),
    sa.Column("data", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("run_id", sa.Text),
    sa.CheckConstraint(f"from_status IS NULL OR from_status IN ({_STATUS_LIST})", name="from_status"),
    sa.CheckConstraint(f"to_status IS NULL OR to_status IN ({_STATUS_LIST})", name="to_status"),
    sa.Index("idx_job_events_job_id_ts", "job_id", "ts"),
)

storage_deletions = sa.Table(
    "storage_deletions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    #: One key (queued by the jobs repository when a key is replaced, or by reconciliation) ...
    sa.Column("object_key", sa.Text),
    #: ... or a chunk of keys (phase 1 of retention: one row per bucket and 1000 keys of a batch,
    #: not one row per key, which made the outbox the most expensive part of a batch). Stored
    #: uncompressed (``SET STORAGE EXTERNAL`` in the migration): short-lived, and pglz was slow.
    sa.Column("object_keys", pg.ARRAY(sa.Text)),
    sa.Column("job_id", pg.UUID(as_uuid=True)),
    sa.Column("run_id", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    #: The advisory-lock token of the drain that claimed the row; the claim is alive only while that
    #: session holds ``pg_advisory_lock(CLAIM_LOCK_CLASS, claimed_by)`` (``lifecycle_claim_alive``;
    #: the class is ``lifecycle.db.outbox.CLAIM_LOCK_CLASS``).
    sa.Column("claimed_by", sa.Integer),
    sa.UniqueConstraint("object_key"),
    sa.CheckConstraint(
        "num_nonnulls(object_key, object_keys) = 1 AND coalesce(cardinality(object_keys), 1) > 0",
        name="key_form",
    ),
    sa.Index("idx_storage_deletions_next_attempt_at", "next_attempt_at"),
    sa.Index(
        "idx_storage_deletions_claimed_by", "claimed_by", postgresql_where=sa.text("claimed_by IS NOT NULL")
    ),
)

job_deletions = sa.Table(
    "job_deletions",
    metadata,
    sa.Column("job_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("final_status", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
    sa.Column("object_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("events_deleted", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("reason", sa.Text, nullable=False, server_default="retention"),
    sa.Column("run_id", sa.Text),
    # BRIN: tombstones are appended in deleted_at order, so a block-range index serves pruning
    # at almost no cost per insert (a btree here was a measurable share of every phase-1 batch).
    sa.Index("idx_job_deletions_deleted_at", "deleted_at", postgresql_using="brin"),
)

#: Every table the project owns (RLS is enabled on each).
ALL_TABLES = (api_keys, jobs, job_events, storage_deletions, job_deletions)
