"""The ``lifecycle`` command.

Every command reads settings from the environment (and ``.env``); with no ``DATABASE_URL`` it uses
the embedded PostgreSQL under ``.lifecycle/``. Errors print one redacted line and exit non-zero.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lifecycle import errors
from lifecycle.redaction import redact_known

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
            current = migrations.current_revision(db.engine)
            if current != head:
                click.echo(f"database is at {current}, head is {head}: run `lifecycle migrate`", err=True)
                sys.exit(1)
            drift = migrations.drift(db.engine)
            if drift:
                click.echo(f"schema drift: {len(drift)} difference(s)", err=True)
                for diff in drift:
                    click.echo(f"  {diff}", err=True)
                sys.exit(1)
            click.echo(f"database is at head ({head}); no drift")
            return
        before = migrations.current_revision(db.engine)
        after = migrations.upgrade(db.engine)
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
            from lifecycle.storage import StorageRepo

            storage = StorageRepo.from_settings(settings)
        summary = seeding.seed(
            db, n_jobs=n_jobs, expired_fraction=expired_fraction, seed=random_seed, storage=storage
        )
    finally:
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
