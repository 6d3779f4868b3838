"""The markdown a run page shows for each report (the ``report`` metadata entry of the ops' output).

Reports are plain data (``lifecycle.retention.report``, ``lifecycle.transitions``); this module is
their only markdown. Nothing here carries a secret: reports hold job ids, keys, counts and redacted
errors only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lifecycle.retention.report import CleanupReport, DrainPlan, DrainReport, ReconcileReport
from lifecycle.transitions import RescueReport, TransitionReport

#: Errors listed on a cleanup's page; the rest are in its ``errors`` metadata.
CLEANUP_ERRORS_SHOWN = 20


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    for name, value in rows:
        if isinstance(value, float):
            value = f"{value:.3f}"
        lines.append(f"| {name} | {'-' if value is None else value} |")
    return "\n".join(lines)


def cleanup_report(report: CleanupReport) -> str:
    """A cleanup or purge: its counts, the plan of a dry run, the work left, the first errors."""
    title = "### Retention cleanup (dry run)" if report.dry_run else "### Retention cleanup"
    parts = [title, "", _table(report.summary_rows())]
    if report.plan is not None:
        plan = report.plan
        parts += ["", "#### Plan", "", plan.would_do, ""]
        parts.append(_table(plan.rows()))
        if plan.sample_job_ids:
            parts += ["", "Sample job ids: " + ", ".join(f"`{j}`" for j in plan.sample_job_ids)]
    left = report.work_left()
    if left:
        parts += ["", f"**Work left:** {left}"]
    if report.errors:
        shown = report.errors[:CLEANUP_ERRORS_SHOWN]
        parts += ["", "Errors (redacted):", *(f"- `{e}`" for e in shown)]
    return "\n".join(parts)


def drain_plan(plan: DrainPlan) -> str:
    """A drain's dry run: what is queued and what a drain would do now."""
    return "\n".join(["### Outbox drain (dry run)", "", plan.would_do, "", _table(plan.rows())])


def drain_report(report: DrainReport) -> str:
    """A drain-only run: its counts, the work left, its errors."""
    rows = [(f.name, getattr(report, f.name)) for f in dataclasses.fields(report) if f.name != "errors"]
    text = "### Outbox drain\n\n" + _table(rows)
    left = report.work_left()
    if left:
        text += f"\n\n**Work left:** {left}"
    if report.errors:
        text += "\n\nErrors (redacted):\n" + "\n".join(f"- `{e}`" for e in report.errors)
    return text


def reconcile_report(report: ReconcileReport) -> str:
    """An orphan reconciliation: its counts, then the sampled orphans, unparseable and missing keys."""
    samples = {"orphan_sample", "unparseable_sample", "missing_sample"}
    rows = [(f.name, getattr(report, f.name)) for f in dataclasses.fields(report) if f.name not in samples]
    parts = ["### Orphan reconciliation" + (" (dry run)" if report.dry_run else ""), "", _table(rows)]
    if report.orphan_sample:
        parts += ["", "Orphans: " + ", ".join(f"`{k}`" for k in report.orphan_sample)]
    if report.unparseable_sample:
        parts += ["", "Unparseable: " + ", ".join(f"`{k}`" for k in report.unparseable_sample)]
    if report.missing_sample:
        parts += ["", "Missing objects: " + ", ".join(f"`{j}`: `{k}`" for j, k in report.missing_sample)]
    return "\n".join(parts)


def transition_report(report: TransitionReport) -> str:
    """A batch transition (or its dry run) as one table row."""
    verb = "would move" if report.dry_run else "moved"
    return (
        "| from | to | " + verb + " | batches |\n|---|---|---:|---:|\n"
        f"| {report.from_status} | {report.to_status} | {report.moved} | {report.batches} |\n"
    )


def rescue_report(report: RescueReport) -> str:
    """A stale-lease rescue as one table row."""
    return (
        "| requeued | failed (attempts used up) | max attempts |\n|---:|---:|---:|\n"
        f"| {report.requeued} | {report.failed} | {report.max_attempts} |\n"
    )
