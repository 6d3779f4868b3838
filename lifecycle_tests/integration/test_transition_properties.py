"""Property: for any sequence of requested status changes, the events tell the job's story.

Replaying the transition events gives the current status; ``version`` counts the changes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lifecycle import errors
from lifecycle.states import TRANSITIONS, JobStatus
from lifecycle_tests.integration._jobs_helpers import events, row

steps = st.lists(
    st.tuples(st.sampled_from(list(JobStatus)), st.booleans(), st.booleans()), min_size=1, max_size=12
)


@hsettings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=steps)
def test_replaying_events_gives_the_current_status(db, raw, sequence):
    with db.transaction() as tx:
        job = tx.jobs.create(params={"p": 1})
    expected_status, changes, edits = JobStatus.QUEUED, 0, 0
    for target, use_expected_from, also_edit in sequence:
        allowed = target in TRANSITIONS[expected_status]
        try:
            with db.transaction() as tx:
                tx.jobs.transition(
                    job.id, target, expected_from=expected_status if use_expected_from else None
                )
                if also_edit:
                    current = tx.jobs.get(job.id)
                    tx.jobs.update(job.id, expected_version=current.version, params={"edit": edits})
        except errors.InvalidTransition as exc:
            rejected_from = exc.from_status
            assert not allowed
            assert rejected_from == expected_status.value
            continue
        assert allowed
        expected_status = target
        changes += 1
        edits += also_edit

    stored = row(raw, job.id)
    evs = events(raw, job.id)
    replayed = None
    for event in evs:
        if event["to_status"] is not None:
            assert event["from_status"] == replayed
            replayed = event["to_status"]
    assert replayed == stored["status"] == expected_status.value
    assert len([e for e in evs if e["type"] == "transition"]) == changes
    assert stored["version"] == 1 + changes + edits
    assert (stored["lease_expires_at"] is not None) == (stored["status"] == "processing")
