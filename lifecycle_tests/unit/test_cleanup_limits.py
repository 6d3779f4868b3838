"""CleanupLimits: one value of a cleanup run's limits, from the settings and a run's overrides, each
checked with the error cleanup has always raised for it (naming the setting or the argument)."""

from __future__ import annotations

import dataclasses

import pytest

from lifecycle import errors
from lifecycle.retention import CleanupLimits
from lifecycle.retention.limits import MAX_BATCH_SIZE, MAX_JOBS_PER_RUN
from lifecycle.settings import Settings


def test_from_settings_takes_every_configured_limit() -> None:
    settings = Settings.load(
        env={
            "CLEANUP_BATCH_SIZE": "250",
            "CLEANUP_MIN_BATCH_SIZE": "7",
            "CLEANUP_MAX_JOBS_PER_SECOND": "40",
            "CLEANUP_MAX_OBJECTS_PER_SECOND": "90.5",
            "CLEANUP_MAX_JOBS": "1000",
            "CLEANUP_MAX_RUNTIME_SECONDS": "60",
            "CLEANUP_STATEMENT_TIMEOUT_MS": "1234",
            "CLEANUP_LOCK_TIMEOUT_MS": "321",
        }
    )
    assert CleanupLimits.from_settings(settings) == CleanupLimits(
        batch_size=250,
        min_batch_size=7,
        max_jobs_per_second=40.0,
        max_objects_per_second=90.5,
        max_jobs=1000,
        max_runtime_seconds=60.0,
        statement_timeout_ms=1234,
        lock_timeout_ms=321,
    )


def test_defaults_have_no_rate_cap_or_deadline() -> None:
    limits = CleanupLimits.from_settings(Settings.load(env={}))
    assert (limits.batch_size, limits.max_jobs, limits.max_runtime_seconds) == (1000, None, None)
    assert (limits.max_jobs_per_second, limits.max_objects_per_second) == (None, None)


@pytest.mark.parametrize(
    "variable",
    ["CLEANUP_MAX_JOBS_PER_SECOND", "CLEANUP_MAX_OBJECTS_PER_SECOND", "CLEANUP_MAX_RUNTIME_SECONDS"],
)
def test_a_setting_no_run_can_use_is_refused_by_its_name(variable: str) -> None:
    settings = Settings.load(env={variable: "inf"})  # within the setting's own bound (> 0)
    with pytest.raises(errors.InvalidInput) as info:
        CleanupLimits.from_settings(settings)
    assert info.value.field == variable


def test_overrides_replace_what_they_give_and_keep_the_rest() -> None:
    base = CleanupLimits.from_settings(Settings.load(env={"CLEANUP_MAX_JOBS": "500"}))
    run = base.with_overrides(batch_size=10, max_runtime_seconds=2.5)
    assert run == dataclasses.replace(base, batch_size=10, max_runtime_seconds=2.5)
    assert run.max_jobs == 500  # None keeps the configured value
    assert base.batch_size == 1000  # the original is unchanged (frozen)
    assert base.with_overrides() == base
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.batch_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "value"),
    [
        ("batch_size", 0),
        ("batch_size", MAX_BATCH_SIZE + 1),
        ("batch_size", True),
        ("batch_size", 2.0),
        ("max_jobs", 0),
        ("max_jobs", MAX_JOBS_PER_RUN + 1),
        ("max_jobs_per_second", 0),
        ("max_jobs_per_second", float("inf")),
        ("max_objects_per_second", -1.0),
        ("max_objects_per_second", float("nan")),
        ("max_runtime_seconds", 0),
        ("max_runtime_seconds", "60"),
    ],
)
def test_a_bad_override_is_refused_by_its_argument_name(override: str, value: object) -> None:
    base = CleanupLimits.from_settings(Settings.load(env={}))
    with pytest.raises(errors.InvalidInput) as info:
        base.with_overrides(**{override: value})  # type: ignore[arg-type]
    assert info.value.field == override
