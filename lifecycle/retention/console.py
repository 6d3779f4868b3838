"""Terminal rendering for ``lifecycle cleanup`` / ``lifecycle reconcile``: a rich progress bar and tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lifecycle.retention.report import CleanupReport, DrainPlan, DrainReport, ReconcileReport

_LABELS = {"jobs": "deleting expired jobs", "objects": "removing objects"}


@contextmanager
def progress_bar(console: Console) -> Iterator[Any]:
    """A ``progress(phase, done, total)`` callback drawing one bar per phase (stderr, transient)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    bar = Progress(*columns, console=console, transient=False)
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int | None) -> None:
        if not tasks:
            bar.start()  # drawn on first progress: a run that fails at once prints its error line alone
        if phase not in tasks:
            tasks[phase] = bar.add_task(_LABELS.get(phase, phase), total=total)
        bar.update(tasks[phase], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def report_table(report: CleanupReport | DrainReport | ReconcileReport, title: str) -> Table:
    """Every scalar field of a report as a two-column table."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value", justify="right")
    if isinstance(report, CleanupReport):
        rows = report.summary_rows()
    else:
        rows = [(f.name, getattr(report, f.name)) for f in dataclasses.fields(report)]
    for name, value in rows:
        if isinstance(value, (list, dict)) or dataclasses.is_dataclass(value):
            continue
        table.add_row(name, _value(value))
    return table


def plan_table(report: CleanupReport) -> Table | None:
    """The dry-run plan of a cleanup report, or ``None``."""
    plan = report.plan
    if plan is None:
        return None
    table = Table(title="Dry run: what a real run would do", caption=plan.would_do)
    table.add_column("item")
    table.add_column("value", justify="right")
    for name, value in plan.rows():
        table.add_row(name, _value(value))
    for job_id in plan.sample_job_ids:
        table.add_row("sample job id", str(job_id))
    return table


def drain_plan_table(plan: DrainPlan) -> Table:
    """A drain's dry run: what is queued and what a drain would do now."""
    table = Table(title="Dry run: what a drain would do", caption=plan.would_do)
    table.add_column("item")
    table.add_column("value", justify="right")
    for name, value in plan.rows():
        table.add_row(name, _value(value))
    return table
