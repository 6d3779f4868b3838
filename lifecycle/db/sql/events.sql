-- Events of jobs (lifecycle.db.events.JobEventsRepo): append, and read in (ts, id) order along
-- idx_job_events_job_id_ts. Status changes write their own events (jobs.sql, same statement).

-- fragment: columns
id, job_id, ts, type, from_status, to_status, data, run_id

-- name: add
INSERT INTO job_events (job_id, type, data, run_id)
VALUES (%(job_id)s, %(type)s, CAST(%(data)s AS jsonb), %(run_id)s)
RETURNING {{events.columns}}

-- name: list_first
SELECT {{events.columns}} FROM job_events WHERE job_id = %(job_id)s
ORDER BY ts, id LIMIT %(limit)s

-- name: list_after
-- The next page after a keyset cursor (a separate statement, so each keeps its index plan).
SELECT {{events.columns}} FROM job_events
WHERE job_id = %(job_id)s AND (ts, id) > (%(after_ts)s, %(after_id)s)
ORDER BY ts, id LIMIT %(limit)s
