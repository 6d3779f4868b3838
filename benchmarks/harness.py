"""The benchmark harness every ``bench_<area>.py`` module uses.

A module defines ``AREA`` (its section name), ``TITLE``, optionally ``add_arguments(parser)``, and
``run(bench) -> Report``. The harness gives it:

- a server: ``LIFECYCLE_BENCH_DATABASE_URL`` (an admin URL: databases are created and dropped on
  it), or the embedded ``pgserver`` under ``.lifecycle/bench``;
- ``bench.database()``: a fresh migrated database per scenario (a copy of a template migrated once);
- ``measure`` helpers: several rounds, medians, percentiles, ratios;
- ``write_section``: the area's section of ``BENCHMARKS.md`` (between markers), with machine facts;
- ``setup_sql(name)`` (from ``benchmarks.sql``): the benchmarks' own statements (loading data, the
  raw side's alternatives to the project's shapes). What the project sends, the raw side takes
  from the project's catalogue (``lifecycle.db.sql.query``), never from there.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import sql

from lifecycle.db import Database, migrate
from lifecycle.db.engine import libpq_url
from lifecycle.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
_HEADER = """# Benchmarks

Each section is written by `python -m benchmarks <area>` (`make bench` runs them all): the
project's code and raw psycopg 3 doing the same SQL, on the same database, in the same process run,
several rounds each (medians; p50/p99 where stated). The ratio is project / raw throughput (or raw /
project latency): 1.0 means no overhead, the targets come from the issues.
"""


# -- numbers ----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(func: Callable[[], Any]) -> float:
    """Seconds ``func()`` took."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


@dataclass
class Row:
    """One line of a comparison table."""

    scenario: str
    unit: str
    project: float
    raw: float | None = None
    #: True when higher is better (throughput); False for latencies.
    higher_is_better: bool = True
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.raw is None or self.raw == 0 or self.project == 0:
            return None
        return self.project / self.raw if self.higher_is_better else self.raw / self.project

    def cells(self) -> list[str]:
        ratio = self.ratio
        verdict = ""
        if ratio is not None and self.target is not None:
            verdict = f" (target >= {self.target:.2f}: {'met' if ratio >= self.target else 'MISSED'})"
        return [
            self.scenario,
            f"{_fmt(self.project)} {self.unit}",
            "-" if self.raw is None else f"{_fmt(self.raw)} {self.unit}",
            ("-" if ratio is None else f"{ratio:.2f}x") + verdict,
            self.note,
        ]


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass
class Report:
    """What a module hands back: tables of rows and free-form notes."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


def compare_rounds(
    project: Callable[[int], float],
    raw: Callable[[int], float],
    rounds: int,
) -> tuple[float, float, list[float], list[float]]:
    """Alternate ``project(round)`` and ``raw(round)`` (each returns a rate); their medians and samples."""
    p_values: list[float] = []
    r_values: list[float] = []
    for i in range(rounds):
        # Alternate which goes first so drift (cache warm-up, autovacuum) hits both alike.
        if i % 2:
            r_values.append(raw(i))
            p_values.append(project(i))
        else:
            p_values.append(project(i))
            r_values.append(raw(i))
    return statistics.median(p_values), statistics.median(r_values), p_values, r_values


# -- the server and databases -----------------------------------------------------------------------


class BenchServer:
    """Where benchmark databases are created: an admin URL, or the embedded server."""

    def __init__(self) -> None:
        self._embedded: Any = None
        url = os.environ.get("LIFECYCLE_BENCH_DATABASE_URL")
        if url:
            self.admin_url = libpq_url(url)
        else:
            from lifecycle.devstack.postgres import EmbeddedPostgres

            self._embedded = EmbeddedPostgres(ROOT / ".lifecycle" / "bench").start()
            self.admin_url = libpq_url(self._embedded.url("postgres"))
        self._template: str | None = None

    def url(self, database: str) -> str:
        return urlunsplit(urlsplit(self.admin_url)._replace(path="/" + database))

    def _admin(self, query: sql.Composable) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(query)

    def template(self) -> str:
        """A migrated template database (built once per process)."""
        if self._template is None:
            name = f"lifecycle_bench_tpl_{os.getpid()}"
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            migrate.upgrade(self.url(name))
            self._template = name
        return self._template

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh migrated database (dropped afterwards); yields its libpq URL."""
        name = f"lifecycle_bench_{uuid.uuid4().hex[:10]}"
        template = sql.Identifier(self.template())
        self._admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), template))
        try:
            yield self.url(name)
        finally:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        if self._template is not None:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            self._admin(drop.format(sql.Identifier(self._template)))
            self._template = None
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def server_version(self) -> str:
        with psycopg.connect(self.admin_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


@dataclass
class Bench:
    """What a benchmark module gets: the server, the options, and helpers."""

    server: BenchServer
    quick: bool
    options: Any

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh migrated database for one scenario (libpq URL)."""
        with self.server.database() as url:
            yield url

    def project_db(self, url: str, *, pool_size: int = 5, **settings_env: str) -> Database:
        """The project's ``Database`` on ``url`` with default settings (plus ``settings_env``)."""
        settings = Settings.load(env=settings_env)
        return Database.from_url(url, settings=settings, pool_size=pool_size)

    def raw_connect(self, url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A plain psycopg 3 connection with psycopg's defaults (the raw side of a comparison)."""
        return psycopg.connect(url, autocommit=autocommit)

    def log(self, message: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- BENCHMARKS.md ----------------------------------------------------------------------------------


def machine_facts(server: BenchServer) -> dict[str, str]:
    """Cores, RAM, PostgreSQL and Python versions, platform."""
    ram = "?"
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError, ValueError):
        pass
    return {
        "cores": str(os.cpu_count()),
        "RAM": ram,
        "PostgreSQL": server.server_version(),
        "Python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "psycopg_pool": psycopg_pool.__version__,
        "platform": platform.platform(),
    }


def render_section(area: str, title: str, report: Report, facts: dict[str, str], quick: bool) -> str:
    """The markdown of one area's section."""
    lines = [f"## {title}", ""]
    lines.append(
        f"Generated by `python -m benchmarks {area}{' --quick' if quick else ''}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: "
        + ", ".join(f"{k} {v}" for k, v in facts.items())
        + "."
    )
    if report.parameters:
        lines += ["", "Parameters: " + ", ".join(f"{k}={v}" for k, v in report.parameters.items()) + "."]
    lines += ["", "| scenario | project | raw psycopg | ratio | notes |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in report.rows]
    if report.notes:
        lines += [""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def write_section(area: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section of ``area`` in ``BENCHMARKS.md``; other sections stay."""
    start, end = f"<!-- bench:{area}:start -->", f"<!-- bench:{area}:end -->"
    block = f"{start}\n{markdown}{end}\n"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
