"""The code location loads, and carries what the operators rely on."""

import dagster as dg

from lifecycle.defs.location import build_definitions
from lifecycle.settings import Settings

JOBS = {"retention_cleanup", "rescue_stale_jobs", "transition_batch", "purge_job", "reconcile_orphans"}


def test_the_lazy_code_location_loads() -> None:
    from lifecycle.definitions import defs

    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    repo = loaded.get_repository_def()
    assert {job.name for job in repo.get_all_jobs()} >= JOBS
    assert {"expired_jobs_sensor", "run_failure_logger"} <= {s.name for s in repo.sensor_defs}


def test_schedules_take_their_cron_from_settings_and_start_on() -> None:
    settings = Settings.load(env={"RETENTION_CRON": "15 2 * * *", "RESCUE_CRON": "*/7 * * * *"})
    repo = build_definitions(settings).get_repository_def()
    schedules = {s.name: s for s in repo.schedule_defs}
    assert schedules["retention_cleanup_schedule"].cron_schedule == "15 2 * * *"
    assert schedules["rescue_stale_jobs_schedule"].cron_schedule == "*/7 * * * *"
    assert schedules["job_status_counts_schedule"].cron_schedule == settings.status_counts_cron
    assert schedules["reconcile_orphans_schedule"].cron_schedule == settings.reconcile_cron
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules.values())
    sensor = repo.get_sensor_def("expired_jobs_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds is not None
    assert sensor.minimum_interval_seconds <= 30


def test_resources_read_secrets_from_the_environment_only_at_run_time() -> None:
    resources = build_definitions(Settings.load(env={})).resources
    assert resources is not None
    # EnvVar placeholders, not values: the UI shows the variable name, never the secret.
    assert isinstance(resources["database"].url, dg.EnvVar)  # type: ignore[union-attr]
    assert isinstance(resources["storage"].service_role_key, dg.EnvVar)  # type: ignore[union-attr]


def test_retention_runs_carry_the_concurrency_tag_of_dagster_yaml() -> None:
    from pathlib import Path

    import yaml

    repo = build_definitions(Settings.load(env={})).get_repository_def()
    tags = repo.get_job("retention_cleanup").tags
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": "lifecycle/concurrency", "value": tags["lifecycle/concurrency"], "limit": 1} in limits
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert config["nux"] == {"enabled": False}
    assert config["telemetry"] == {"enabled": False}
    assert config["run_monitoring"]["enabled"] is True


def test_dagster_storage_url_names_the_psycopg2_driver() -> None:
    from lifecycle.devstack.stack import dagster_pg_url

    socket_url = "postgresql://postgres:@/dagster?host=/tmp/pg-socket"
    assert dagster_pg_url(socket_url) == "postgresql+psycopg2://postgres:@/dagster?host=/tmp/pg-socket"


def test_resources_never_show_their_secrets() -> None:
    from lifecycle.defs.resources import DatabaseResource, StorageResource

    database = DatabaseResource(url="postgresql://app:s3cret-pw@db.example/app")
    storage = StorageResource(url="http://127.0.0.1:1", service_role_key="eyJhbGciOi.secret-key.sig")
    assert "s3cret-pw" not in repr(database)
    assert "secret-key" not in repr(storage)
