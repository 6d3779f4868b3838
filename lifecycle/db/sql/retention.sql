-- Retention: what may be deleted, phase 1 (rows), the dry run, purge and tombstones
-- (lifecycle.db.retention.RetentionRepo).
--
-- Every statement takes %(now)s: NULL means the database clock; a test may pass a time instead.

-- fragment: eligible
-- The one rule for "eligible for deletion": expired, not being processed, not on hold. Used by the
-- selection, the dry run, the count, the sensor's probe and the attach guard, on the database clock.
expires_at <= coalesce(CAST(%(now)s AS timestamptz), now())
AND status <> 'processing'
AND NOT retention_hold
