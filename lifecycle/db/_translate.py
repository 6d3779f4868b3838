"""The one boundary where driver errors become ``lifecycle.errors``.

Matched by SQLSTATE and constraint name (stable thanks to the naming convention), never by message
text. The driver's message is not copied into ours: it can quote parameter values.
"""

from __future__ import annotations

from typing import Any

import psycopg

from lifecycle import errors

# Constraint name -> (error class, message).
_CONSTRAINTS: dict[str, tuple[type[errors.LifecycleError], str]] = {
    "ck_jobs_status": (errors.InvalidInput, "unknown job status"),
    "ck_job_events_from_status": (errors.InvalidInput, "unknown job status in event"),
    "ck_job_events_to_status": (errors.InvalidInput, "unknown job status in event"),
    "ck_jobs_attempts": (errors.InvalidInput, "attempts must not be negative"),
    "ck_jobs_version": (errors.InvalidInput, "version must be positive"),
    "ck_jobs_lease": (errors.InvalidInput, "only a processing job holds a lease"),
    "uq_api_keys_key_id": (errors.InvalidInput, "an API key with this key id exists"),
    "fk_jobs_api_key_id_api_keys": (errors.InvalidInput, "unknown API key"),
    "ck_jobs_keys_owner": (errors.InvalidInput, "a key that is not this job's own"),
}

_UNAVAILABLE_CLASSES = ("08", "28", "53", "57P", "3D")
_TIMEOUTS = ("57014", "55P03")


def translate(exc: BaseException, **context: Any) -> BaseException:
    """The ``LifecycleError`` for a driver error, or ``exc`` itself when it is not one."""
    if isinstance(exc, errors.LifecycleError):
        return exc
    if not isinstance(exc, psycopg.Error):
        return exc
    state = exc.sqlstate
    constraint = exc.diag.constraint_name
    job_id = context.get("job_id")

    if constraint == "ck_jobs_status_transition":
        return errors.InvalidTransition("status change rejected by the database", job_id=job_id)
    if constraint == "fk_job_events_job_id_jobs":
        return errors.JobNotFound(job_id or "?", "event for a job that does not exist")
    if constraint in _CONSTRAINTS:
        cls, message = _CONSTRAINTS[constraint]
        if cls is errors.InvalidInput:
            return errors.InvalidInput(message, constraint=constraint)
        return cls(message)
    if state in _TIMEOUTS:
        return errors.QueryTimeout("statement or lock timeout", sqlstate=state)
    if state == "22P02":
        return errors.InvalidInput("malformed value (for example an invalid UUID)", sqlstate=state)
    if state is not None and state.startswith("22"):
        return errors.InvalidInput("value rejected by the database", sqlstate=state)
    if state is not None and state.startswith("23"):
        return errors.InvalidInput("constraint violated", sqlstate=state, constraint=constraint)
    if state == "40001" or state == "40P01":
        return errors.VersionConflict(job_id or "?", message="serialization failure; retry")
    if (state is None and isinstance(exc, psycopg.OperationalError)) or (
        state is not None and state.startswith(_UNAVAILABLE_CLASSES)
    ):
        # No SQLSTATE and an OperationalError: the connection is gone (refused, closed under us,
        # lost mid-statement, or no pooled connection within the pool's timeout).
        return errors.DatabaseUnavailable(sqlstate=state)
    if state == "25006":  # a write in a read-only transaction (db.transaction(read_only=True))
        return errors.LifecycleError("write refused: the transaction is read only", sqlstate=state)
    if state in ("42P01", "42703", "42883"):  # undefined table, column, function: schema not at head
        return errors.LifecycleError("schema missing or behind: run `lifecycle migrate`", sqlstate=state)
    return errors.LifecycleError("database error", sqlstate=state)
