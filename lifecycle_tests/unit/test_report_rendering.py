"""What a report looks like on the Dagster run page (``lifecycle.defs.markdown``) and in the terminal
(``lifecycle.cli``'s rich tables). The expected text is what the reports rendered before the
renderers left them; an operator's eye (and the UI test) relies on it."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from uuid import UUID

from rich.console import Console

from lifecycle import cli
from lifecycle.defs import markdown
from lifecycle.retention.report import CleanupPlan, CleanupReport, DrainPlan, DrainReport, ReconcileReport
from lifecycle.transitions import RescueReport, TransitionReport

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
IDS = [UUID(int=i) for i in (1, 2)]


def _dry_run() -> CleanupReport:
    plan = CleanupPlan(
        eligible_jobs=3,
        jobs_by_status={"succeeded": 2, "canceled": 1},
        oldest_expiry=WHEN,
        newest_expiry=WHEN,
        events=5,
        objects=4,
        sample_job_ids=IDS,
        skipped_processing=1,
        batches=1,
        min_duration_seconds=0.25,
        would_do="delete 3 job(s)",
    )
    return CleanupReport(dry_run=True, plan=plan, outbox_pending=7)


def test_cleanup_dry_run_page() -> None:
    assert markdown.cleanup_report(_dry_run()) == "\n".join(
        [
            "### Retention cleanup (dry run)",
            "",
            "| | |",
            "|---|---|",
            "| dry_run | True |",
            "| batches | 0 |",
            "| duration_seconds | 0.000 |",
            "| longest_batch_seconds | 0.000 |",
            "| stopped_by | - |",
            "| timeouts | 0 |",
            "| final_batch_size | 0 |",
            "| outbox_pending | 7 |",
            "| run_id | - |",
            "",
            "#### Plan",
            "",
            "delete 3 job(s)",
            "",
            "| | |",
            "|---|---|",
            "| eligible jobs | 3 |",
            "| status canceled | 1 |",
            "| status succeeded | 2 |",
            "| oldest expiry | 2024-01-02 03:04:05+00:00 |",
            "| newest expiry | 2024-01-02 03:04:05+00:00 |",
            "| events | 5 |",
            "| objects | 4 |",
            "| expired but processing (kept) | 1 |",
            "| expired but on hold (kept) | 0 |",
            "| tombstones to prune | 0 |",
            "| outbox pending | 0 |",
            "| batches | 1 |",
            "| minimum duration s (rate limits) | 0.250 |",
            "",
            "Sample job ids: `00000000-0000-0000-0000-000000000001`, `00000000-0000-0000-0000-000000000002`",
        ]
    )


def test_cleanup_page_says_the_work_left_and_lists_twenty_errors() -> None:
    report = CleanupReport(
        jobs_deleted=3,
        stopped_by="max_jobs",
        expired_jobs_left=10_000,
        outbox_pending=2,
        outbox_claimed=1,
        outbox_failed=1,
        errors=[f"err {i}" for i in range(25)],
    )
    page = markdown.cleanup_report(report)
    assert page.startswith(
        "### Retention cleanup\n\n| | |\n|---|---|\n| dry_run | False |\n| jobs_deleted | 3 |\n"
    )
    work_left, errors = page.split("\n\n")[-2:]
    assert work_left == (
        "**Work left:** 10000+ expired job(s) not deleted; 2 object(s) still queued for removal "
        "(1 failed, 1 claimed by a live run); stopped by max_jobs"
    )
    assert errors.splitlines() == ["Errors (redacted):", *(f"- `err {i}`" for i in range(20))]


def test_drain_pages() -> None:
    drained = DrainReport(
        objects_removed=3, pending=2, pending_claimed=1, stopped_by="runtime", errors=["boom"]
    )
    assert markdown.drain_report(drained) == "\n".join(
        [
            "### Outbox drain",
            "",
            "| | |",
            "|---|---|",
            "| objects_removed | 3 |",
            "| objects_absent | 0 |",
            "| objects_failed | 0 |",
            "| requests | 0 |",
            "| duration_seconds | 0.000 |",
            "| stopped_by | runtime |",
            "| pending | 2 |",
            "| pending_claimed | 1 |",
            "| pending_failed | 0 |",
            "| connection_losses | 0 |",
            "",
            "**Work left:** 2 object(s) still queued for removal (1 claimed by a live run, 1 not yet tried); "
            "stopped by runtime",
            "",
            "Errors (redacted):",
            "- `boom`",
        ]
    )
    assert "Work left" not in markdown.drain_report(DrainReport())
    plan = DrainPlan(queued=3, due=2, oldest_age_seconds=12.5, would_do="remove 2 object(s)")
    page = markdown.drain_plan(plan)
    assert page.startswith("### Outbox drain (dry run)\n\nremove 2 object(s)\n\n| | |\n|---|---|\n")
    assert "| due now (a drain would take them) | 2 |\n" in page
    assert page.endswith("| oldest age s | 12.500 |\n| next retry at | - |")


def test_reconcile_page() -> None:
    report = ReconcileReport(
        objects_listed=9,
        orphans_found=2,
        orphan_sample=["sources/a", "results/b"],
        unparseable_sample=["x"],
        missing_sample=[("j1", "sources/j1/source.mp4")],
    )
    page = markdown.reconcile_report(report)
    assert page.startswith("### Orphan reconciliation (dry run)\n\n| | |\n|---|---|\n| dry_run | True |\n")
    assert page.endswith(
        "| run_id | - |\n\nOrphans: `sources/a`, `results/b`\n\nUnparseable: `x`\n\n"
        "Missing objects: `j1`: `sources/j1/source.mp4`"
    )
    assert markdown.reconcile_report(ReconcileReport(dry_run=False)).startswith("### Orphan reconciliation\n")


def test_transition_and_rescue_pages() -> None:
    moved = TransitionReport("failed", "queued", False, moved=3, batches=1, sample_ids=IDS)
    assert markdown.transition_report(moved) == (
        "| from | to | moved | batches |\n|---|---|---:|---:|\n| failed | queued | 3 | 1 |\n"
    )
    dry = TransitionReport("failed", "queued", True, moved=3, batches=1)
    assert markdown.transition_report(dry).startswith("| from | to | would move | batches |\n")
    rescued = RescueReport(max_attempts=3, requeued=2, failed=1, batches=1)
    assert markdown.rescue_report(rescued) == (
        "| requeued | failed (attempts used up) | max attempts |\n|---:|---:|---:|\n| 2 | 1 | 3 |\n"
    )


def _cells(renderable: object) -> list[list[str]]:
    """The body rows of a rendered rich table, cell texts stripped."""
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(renderable)
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.getvalue().splitlines() if "│" in line]


def test_terminal_tables() -> None:
    report = _dry_run()
    # A dry run deletes nothing: its zero deletion counts are left out, and so are the plan and errors.
    assert _cells(cli._report_table(report, "Retention cleanup (dry run)")) == [
        ["dry_run", "True"],
        ["batches", "0"],
        ["duration_seconds", "0.000"],
        ["longest_batch_seconds", "0.000"],
        ["stopped_by", "-"],
        ["timeouts", "0"],
        ["final_batch_size", "0"],
        ["outbox_pending", "7"],
        ["run_id", "-"],
    ]
    plan_rows = _cells(cli._plan_table(report))
    assert plan_rows[:3] == [["eligible jobs", "3"], ["status canceled", "1"], ["status succeeded", "2"]]
    assert plan_rows[-3:] == [
        ["minimum duration s (rate limits)", "0.250"],
        ["sample job id", str(IDS[0])],
        ["sample job id", str(IDS[1])],
    ]
    assert cli._plan_table(CleanupReport()) is None
    reconciled = _cells(
        cli._report_table(ReconcileReport(orphan_sample=["sources/a"]), "Orphan reconciliation")
    )
    assert [name for name, _ in reconciled][-2:] == ["duration_seconds", "run_id"]  # samples are not rows
    drain_plan = _cells(cli._drain_plan_table(DrainPlan(queued=3, next_due_at=WHEN, would_do="wait")))
    assert drain_plan[0] == ["objects queued", "3"]
    assert drain_plan[-1] == ["next retry at", "2024-01-02 03:04:05+00:00"]
