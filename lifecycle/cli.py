"""The ``lifecycle`` command.

Every command reads settings from the environment (and ``.env``); with no ``DATABASE_URL`` it uses
the embedded PostgreSQL under ``.lifecycle/``, and with neither ``DATABASE_URL`` nor ``SUPABASE_URL``
the local Storage server of the same home: the one ``lifecycle dev`` runs, or one started for the
command's duration (both need the ``dev`` extra). Errors print one redacted line and exit non-zero.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from lifecycle import errors
from lifecycle.redaction import redact_known
from lifecycle.settings import MAX_RECONCILE_GRACE_SECONDS

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from lifecycle.retention.report import CleanupReport, DrainPlan, DrainReport, ReconcileReport

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn a ``LifecycleError`` into one redacted line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except errors.LifecycleError as exc:
            click.echo(f"error: {redact_known(str(exc))}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def load_settings() -> Any:
    from lifecycle.settings import Settings

    return Settings.load()


def database_url(settings: Any) -> str:
    """``DATABASE_URL``, or the embedded server's application database."""
    if settings.database_url is not None:
        return str(settings.database_url.get_secret_value())
    from lifecycle.devstack.postgres import embedded_database_url

    return embedded_database_url(settings.lifecycle_home)


def open_database(settings: Any) -> Any:
    from lifecycle.db import Database

    return Database.from_url(database_url(settings), settings=settings)


def storage_settings(settings: Any) -> Any | None:
    """``settings`` with Storage: ``SUPABASE_URL``, else (embedded stack) the local Storage server.

    The local server is used only with the embedded database (no ``DATABASE_URL`` either): an empty
    local server paired with a real database would report that database's objects as absent.
    ``None`` when ``DATABASE_URL`` is set and ``SUPABASE_URL`` is not. A server started for this
    command stops when the command ends.
    """
    if settings.supabase_url is not None:
        return settings
    if settings.database_url is not None:
        return None
    from pydantic import SecretStr

    from lifecycle.devstack.stack import local_storage
    from lifecycle.redaction import register_secret

    local = local_storage(settings.lifecycle_home)
    register_secret(local.service_role_key)
    if local.stop is not None:
        click.get_current_context().call_on_close(local.stop)
        click.echo(f"no `lifecycle dev` running: started the local Storage server at {local.url}", err=True)
    return settings.model_copy(
        update={"supabase_url": local.url, "supabase_service_role_key": SecretStr(local.service_role_key)}
    )


def require_storage(settings: Any) -> Any:
    """A ``StorageRepo`` (``storage_settings``), or one line: SUPABASE_URL is not set."""
    from lifecycle.storage import StorageRepo

    configured = storage_settings(settings)
    if configured is None:
        raise errors.ConfigurationError("SUPABASE_URL is not set", variable="SUPABASE_URL")
    return StorageRepo.from_settings(configured)


@click.group()
@click.version_option(package_name="lifecycle")
def main() -> None:
    """Lifecycle of media-processing jobs on Supabase: schema, cleanup, storage, Dagster."""
    from lifecycle import logs

    # Logs go to stderr as JSON lines (or console), redacted, before any command runs. Invalid
    # settings are reported by the command itself (one redacted line), so fall back to defaults.
    try:
        logs.configure(load_settings())
    except errors.LifecycleError:
        logs.configure(None)


@main.command()
@click.option("--check", is_flag=True, help="Only check: fail if the database is not at head or drifts.")
@handle_errors
def migrate(check: bool) -> None:
    """Upgrade the database schema to the newest revision (Alembic)."""
    from lifecycle.db import migrate as migrations

    settings = load_settings()
    db = open_database(settings)
    try:
        head = migrations.head_revision()
        if check:
            current = migrations.current_revision(db.url)
            if current != head:
                at = current or "base (no schema)"
                click.echo(f"database is at {at}, head is {head}: run `lifecycle migrate`", err=True)
                sys.exit(1)
            drift = migrations.drift(db.url)
            if drift:
                click.echo(f"schema drift: {len(drift)} difference(s)", err=True)
                for diff in drift:
                    click.echo(f"  {diff}", err=True)
                sys.exit(1)
            click.echo(f"database is at head ({head}); no drift")
            return
        before = migrations.current_revision(db.url)
        after = migrations.upgrade(db.url)
        click.echo(f"migrated {before or 'base'} -> {after}" if before != after else f"already at {after}")
    finally:
        db.dispose()


@main.command()
@click.option("--jobs", "n_jobs", type=click.IntRange(min=0), default=200, show_default=True)
@click.option(
    "--expired-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.3,
    show_default=True,
    help="Share of jobs whose retention has already run out.",
)
@click.option("--seed", "random_seed", type=int, default=None, help="Random seed (repeatable data).")
@click.option("--objects/--no-objects", default=False, help="Also upload source and result objects.")
@handle_errors
def seed(n_jobs: int, expired_fraction: float, random_seed: int | None, objects: bool) -> None:
    """Create demo jobs in every status, with events; a share already expired."""
    from lifecycle import seeding

    settings = load_settings()
    db = open_database(settings)
    storage = None
    try:
        if objects:
            storage = require_storage(settings)
        summary = seeding.seed(
            db, n_jobs=n_jobs, expired_fraction=expired_fraction, seed=random_seed, storage=storage
        )
    finally:
        if storage is not None:
            storage.close()
        db.dispose()
    click.echo(seeding.format_summary(summary))


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="UI port.")
@handle_errors
def dev(port: int) -> None:
    """Start the development stack and the Dagster UI on http://127.0.0.1:3000 (Ctrl-C stops all)."""
    from lifecycle.devstack.stack import run_dev

    sys.exit(run_dev(load_settings(), port=port))


@main.command()
@click.option(
    "--counts/--no-counts",
    default=True,
    show_default=True,
    help="First read the status gauges (jobs per status, expired backlog, outbox) from the database.",
)
@handle_errors
def metrics(counts: bool) -> None:
    """Print the metrics in the Prometheus text exposition format."""
    from lifecycle import metrics as lifecycle_metrics

    if counts:
        from lifecycle.status_counts import status_counts

        settings = load_settings()
        db = open_database(settings)
        try:
            lifecycle_metrics.set_status_gauges(status_counts(db))
        finally:
            db.dispose()
    click.echo(lifecycle_metrics.exposition(), nl=False)


def _open_storage(settings: Any) -> Any:
    """The StorageRepo of ``storage_settings``, or ``None`` when storage is not configured."""
    configured = storage_settings(settings)
    if configured is None:
        return None
    from lifecycle.storage import StorageRepo

    return StorageRepo.from_settings(configured)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse ``inf`` and ``nan`` (a range check lets both through)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter("must be a finite number")
    return value


_POSITIVE = click.FloatRange(min=0, min_open=True)


# -- terminal rendering (cleanup, reconcile): a rich progress bar and tables --------------------------

_PHASE_LABELS = {"jobs": "deleting expired jobs", "objects": "removing objects"}


@contextmanager
def _progress_bar(console: Console) -> Iterator[Callable[[str, int, int | None], None]]:
    """A ``progress(phase, done, total)`` callback drawing one bar per phase (on ``console``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=False)
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int | None) -> None:
        if not tasks:
            bar.start()  # drawn on first progress: a run that fails at once prints its error line alone
        if phase not in tasks:
            tasks[phase] = bar.add_task(_PHASE_LABELS.get(phase, phase), total=total)
        bar.update(tasks[phase], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _report_table(report: CleanupReport | DrainReport | ReconcileReport, title: str) -> Table:
    """Every scalar field of a report as a two-column table (a cleanup's: its summary rows)."""
    from rich.table import Table

    from lifecycle.retention.report import CleanupReport

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
        table.add_row(name, _cell(value))
    return table


def _plan_table(report: CleanupReport) -> Table | None:
    """The dry-run plan of a cleanup report, or ``None``."""
    from rich.table import Table

    plan = report.plan
    if plan is None:
        return None
    table = Table(title="Dry run: what a real run would do", caption=plan.would_do)
    table.add_column("item")
    table.add_column("value", justify="right")
    for name, value in plan.rows():
        table.add_row(name, _cell(value))
    for job_id in plan.sample_job_ids:
        table.add_row("sample job id", str(job_id))
    return table


def _drain_plan_table(plan: DrainPlan) -> Table:
    """A drain's dry run: what is queued and what a drain would do now."""
    from rich.table import Table

    table = Table(title="Dry run: what a drain would do", caption=plan.would_do)
    table.add_column("item")
    table.add_column("value", justify="right")
    for name, value in plan.rows():
        table.add_row(name, _cell(value))
    return table


@main.command()
@click.option("--dry-run", is_flag=True, help="Select and report only; write nothing.")
@click.option(
    "--drain-only",
    is_flag=True,
    help="Only remove the objects queued in the outbox (phase 2); with --dry-run, say what a drain would do.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Jobs per transaction, 1-10000.  [default: CLEANUP_BATCH_SIZE, 1000]",
)
@click.option(
    "--max-jobs-per-second",
    type=_POSITIVE,
    callback=_finite,
    default=None,
    help="Job deletion rate.  [default: CLEANUP_MAX_JOBS_PER_SECOND, unlimited]",
)
@click.option(
    "--max-objects-per-second",
    type=_POSITIVE,
    callback=_finite,
    default=None,
    help="Object removal rate.  [default: CLEANUP_MAX_OBJECTS_PER_SECOND, unlimited]",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(1, 10**12),
    default=None,
    help="Stop after this many jobs.  [default: CLEANUP_MAX_JOBS, unlimited]",
)
@click.option(
    "--max-runtime-seconds",
    type=_POSITIVE,
    callback=_finite,
    default=None,
    help="Stop after this long.  [default: CLEANUP_MAX_RUNTIME_SECONDS, unlimited]",
)
@click.option(
    "--vacuum/--no-vacuum",
    default=None,
    help="VACUUM (ANALYZE) jobs afterwards.  [default: after runs of 10000 jobs or more]",
)
@click.option(
    "--run-id", default=None, help="Recorded on tombstones and outbox rows (at most 200 characters)."
)
@handle_errors
def cleanup(
    dry_run: bool,
    drain_only: bool,
    batch_size: int | None,
    max_jobs_per_second: float | None,
    max_objects_per_second: float | None,
    max_jobs: int | None,
    max_runtime_seconds: float | None,
    vacuum: bool | None,
    run_id: str | None,
) -> None:
    """Delete expired jobs and their objects (retention), in batches, crash-safe.

    Removing objects needs the service-role key (SUPABASE_SERVICE_ROLE_KEY): with any other key the
    run is refused before anything is deleted.

    \b
    Exit status:
      0  all done: no expired job left behind, the outbox empty (a dry run: always 0)
      1  work left undone: expired jobs a limit left, objects still queued, failed
         (Storage down included) or claimed by another live run; one line on stderr
         says what
      2  error (bad option, wrong key, database unreachable): one line on stderr
    """
    from rich.console import Console

    from lifecycle import retention

    settings = load_settings()
    # One value for the run's limits: the configured ones with this command's options on top (a bad
    # option or setting is one line and exit 2, before anything is opened).
    limits = retention.CleanupLimits.from_settings(settings).with_overrides(
        batch_size=batch_size,
        max_jobs_per_second=max_jobs_per_second,
        max_objects_per_second=max_objects_per_second,
        max_jobs=max_jobs,
        max_runtime_seconds=max_runtime_seconds,
    )
    db = open_database(settings)
    out, err = Console(), Console(stderr=True)
    storage = None
    left: str | None = None
    try:
        if drain_only and dry_run:
            plan = retention.plan_drain(db)
            out.print(_drain_plan_table(plan))
            return
        storage = _open_storage(settings)
        if drain_only:
            if storage is None:
                raise errors.ConfigurationError("SUPABASE_URL is not set", variable="SUPABASE_URL")
            with _progress_bar(err) as progress:
                drained = retention.drain_outbox(db, storage, limits=limits, run_id=run_id, progress=progress)
            out.print(_report_table(drained, "Outbox drain"))
            left = _with_first_error(drained.work_left(), drained.errors)
        else:
            with _progress_bar(err) as progress:
                report = retention.cleanup(
                    db,
                    storage,
                    dry_run=dry_run,
                    limits=limits,
                    run_id=run_id,
                    progress=None if dry_run else progress,
                    vacuum=vacuum,
                )
            out.print(_report_table(report, "Retention cleanup" + (" (dry run)" if dry_run else "")))
            plan_table = _plan_table(report)
            if plan_table is not None:
                out.print(plan_table)
            left = _with_first_error(report.work_left(), report.errors)
            if storage is None and not dry_run:
                # Said after the run: a run that fails (unreachable database) says only that.
                err.print("storage is not configured (SUPABASE_URL): objects stay queued in the outbox")
    finally:
        if storage is not None:
            storage.close()
        db.dispose()
    if left:
        click.echo(f"work left: {redact_known(left)}", err=True)
        sys.exit(1)


def _with_first_error(left: str | None, run_errors: list[str]) -> str | None:
    """The work-left line with the run's first storage error: the cause (Storage down, a key it
    rejects) is otherwise only in the outbox's ``last_error``."""
    if left and run_errors:
        return f"{left}; first error: {' '.join(run_errors[0].split())}"
    return left


@main.command()
@click.option("--apply", "apply_", is_flag=True, help="Queue the orphans for removal (default: report only).")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0, MAX_RECONCILE_GRACE_SECONDS),
    default=3600,
    show_default=True,
    help="Leave objects younger than this alone (an upload may be in flight).",
)
@click.option("--run-id", default=None)
@handle_errors
def reconcile(apply_: bool, grace_seconds: int, run_id: str | None) -> None:
    """Find stored objects whose job row is gone (and rows whose objects are gone)."""
    from rich.console import Console

    from lifecycle import retention

    settings = load_settings()
    db = open_database(settings)
    storage = _open_storage(settings)
    try:
        if storage is None:
            raise errors.ConfigurationError("SUPABASE_URL is not set", variable="SUPABASE_URL")
        report = retention.reconcile_orphans(
            db, storage, dry_run=not apply_, grace_seconds=grace_seconds, run_id=run_id
        )
    finally:
        if storage is not None:
            storage.close()
        db.dispose()
    out = Console()
    out.print(_report_table(report, "Orphan reconciliation" + ("" if apply_ else " (dry run)")))
    for key in report.orphan_sample:
        out.print(f"orphan: {key}")
    for job_id, key in report.missing_sample:
        out.print(f"missing: job {job_id} {key}")
    if apply_ and report.orphans_queued:
        out.print(f"queued {report.orphans_queued}; `lifecycle cleanup --drain-only` removes them")


@main.command()
@handle_errors
def bootstrap() -> None:
    """Create the storage buckets that are missing (private); idempotent."""
    with require_storage(load_settings()) as storage:
        report = storage.ensure_buckets()
    for bucket in report.created:
        click.echo(f"created bucket {bucket}")
    for bucket in report.existed:
        click.echo(f"bucket {bucket} exists")
