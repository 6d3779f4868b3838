"""``lifecycle dev`` (``make run``): the whole stack on this machine, and the Dagster UI.

Embedded PostgreSQL (application and Dagster databases) unless ``DATABASE_URL`` is set, the local
Storage server unless ``SUPABASE_URL`` is set, migrations, buckets, demo data (once), then
``dagster dev`` (webserver and daemon) in its own process group. Ctrl-C or SIGTERM stops every
process started here: SIGINT to the group, a timeout, then SIGKILL.

The local Storage server's URL and PID are recorded in ``<home>/storage/server.json`` while it runs,
so that the other commands (``lifecycle seed --objects``, ``cleanup``, ``reconcile``, ``bootstrap``)
find it (``local_storage``); with none running, they start one for their own duration.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from lifecycle import errors
from lifecycle.redaction import redact_known
from lifecycle.settings import Settings

if TYPE_CHECKING:
    from lifecycle.devstack.storage_server import RunningStorageServer

#: The repository root: ``dagster.yaml`` and ``workspace.yaml`` live there (editable install).
ROOT = Path(__file__).resolve().parents[2]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
#: Demo data: enough jobs in every status, a third already expired, so the sensor has work.
DEMO_JOBS = 200
DEMO_EXPIRED_FRACTION = 0.3
STOP_TIMEOUT_SECONDS = 20.0
READY_TIMEOUT_SECONDS = 120.0
#: Beside the local Storage server's data: its URL and PID while ``lifecycle dev`` runs it.
STORAGE_STATE_FILE = "server.json"
#: The keys the local Storage server keeps beside its data (``storage_server.KEYS_FILE``), read
#: here without importing the server: its web stack is in the ``dev`` extra.
_STORAGE_KEYS_FILE = "keys.json"
#: What the local Storage server imports (the ``dev`` extra; some also come with Dagster).
_STORAGE_MODULES = ("starlette", "uvicorn", "multipart", "jwt")


def _say(message: str) -> None:
    print(f"[lifecycle dev] {redact_known(message)}", flush=True)


@dataclass
class _Stack:
    """What ``run_dev`` started, so that it can stop exactly that."""

    stoppers: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop in reverse order of start; one failure does not keep the others running."""
        while self.stoppers:
            stopper = self.stoppers.pop()
            try:
                stopper()
            except Exception as exc:  # keep stopping the rest
                _say(f"while stopping: {type(exc).__name__}: {exc}")


class _Stop(Exception):
    """Raised by the signal handler to leave the wait loop."""


def dagster_pg_url(url: str) -> str:
    """``url`` with the psycopg2 driver named, for Dagster's own storage (SQLAlchemy 2.1 trap)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


def run_dev(settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Start the stack and serve the Dagster UI until Ctrl-C/SIGTERM; 0 on a clean stop."""
    _check_runnable(settings)
    home = settings.lifecycle_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    stack = _Stack()
    with _stop_on_signals():
        try:
            env = _prepare(settings, home, stack)
            dagster = _start_dagster(env, home, host, port)
            stack.stoppers.append(lambda: _stop_process_group(dagster, "dagster"))
            url = f"http://{host}:{port}"
            _wait_ready(dagster, url)
            _say(f"Dagster UI: {url}  (the sensor and the schedules are on; Ctrl-C stops everything)")
            code = dagster.wait()
            _say(f"dagster exited with status {code}")
            return code or 1
        except _Stop:
            _say("stopping")
            return 0
        finally:
            stack.stop()


def _check_runnable(settings: Settings) -> None:
    """One line, before anything starts, when this install cannot run the stack.

    The embedded PostgreSQL is wanted unless both ``DATABASE_URL`` and ``DAGSTER_PG_URL`` are set
    (Dagster's own storage stays embedded otherwise), the local Storage server unless
    ``SUPABASE_URL`` is; ``dagster.yaml`` and ``workspace.yaml`` exist only in a checkout (a wheel
    does not ship them).
    """
    wanted: list[str] = []
    if settings.database_url is None or not os.environ.get("DAGSTER_PG_URL"):
        wanted.append("pgserver")
    if settings.supabase_url is None:
        wanted.extend(_STORAGE_MODULES)
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        raise errors.ConfigurationError(
            f"lifecycle dev needs the dev extra (pip install 'lifecycle[dev]'; missing: {', '.join(missing)})"
        )
    absent = [name for name in ("dagster.yaml", "workspace.yaml") if not (ROOT / name).is_file()]
    if absent:
        raise errors.ConfigurationError(
            f"lifecycle dev runs from a checkout of the repository ({', '.join(absent)} not found "
            f"in {ROOT}); a deployment runs its own Dagster against DAGSTER_HOME"
        )


def _prepare(settings: Settings, home: Path, stack: _Stack) -> dict[str, str]:
    """Databases, storage, schema, buckets and demo data; the environment for the children."""
    env = dict(os.environ)
    env["LIFECYCLE_HOME"] = str(home)

    app_url, dagster_url = _databases(settings, home, stack)
    env["DATABASE_URL"] = app_url
    env["DAGSTER_PG_URL"] = dagster_pg_url(dagster_url)

    storage_url, storage_key = _storage(settings, home, stack)
    env["SUPABASE_URL"] = storage_url
    env["SUPABASE_SERVICE_ROLE_KEY"] = storage_key

    app_settings = settings.model_copy(
        update={"supabase_url": storage_url, "supabase_service_role_key": _secret(storage_key)}
    )
    # Demo data only goes into the embedded database, never into a configured (real) project.
    _bootstrap(app_settings, app_url, demo=settings.database_url is None)

    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    # Copied each start so an edit of the repository's dagster.yaml takes effect.
    shutil.copyfile(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env["DAGSTER_HOME"] = str(dagster_home)
    return env


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def _databases(settings: Settings, home: Path, stack: _Stack) -> tuple[str, str]:
    """The application and Dagster database URLs (embedded unless configured)."""
    external_dagster = os.environ.get("DAGSTER_PG_URL")
    if settings.database_url is not None and external_dagster:
        _say("using DATABASE_URL and DAGSTER_PG_URL (no embedded PostgreSQL)")
        return settings.database_url.get_secret_value(), external_dagster

    from lifecycle.devstack.postgres import APP_DATABASE, DAGSTER_DATABASE, EmbeddedPostgres

    _say(f"starting embedded PostgreSQL (data in {home / 'pgdata'})")
    server = EmbeddedPostgres(home).start()
    stack.stoppers.append(server.stop)
    dagster_url = server.ensure_database(DAGSTER_DATABASE)
    if settings.database_url is not None:
        # Dagster's run history is local bookkeeping: it lives in the embedded server even when
        # the application database is remote (it must not share a database: both have `jobs`).
        _say("using DATABASE_URL for the application; Dagster's own storage stays embedded")
        return settings.database_url.get_secret_value(), dagster_url
    return server.ensure_database(APP_DATABASE), dagster_url


def _storage(settings: Settings, home: Path, stack: _Stack) -> tuple[str, str]:
    """The Storage URL and service-role key (the local server unless ``SUPABASE_URL`` is set)."""
    if settings.supabase_url is not None:
        if settings.supabase_service_role_key is None:
            raise errors.ConfigurationError(
                "SUPABASE_URL is set but SUPABASE_SERVICE_ROLE_KEY is not",
                variable="SUPABASE_SERVICE_ROLE_KEY",
            )
        _say(f"using Storage at {settings.supabase_url}")
        return settings.supabase_url, settings.supabase_service_role_key.get_secret_value()

    data_dir = storage_data_dir(home)
    _say(f"starting the local Storage server (data in {data_dir})")
    server = _start_storage_server(data_dir)
    stack.stoppers.append(server.stop)
    assert server.process is not None  # start_storage_server always runs a subprocess
    stack.stoppers.append(_record_storage_server(data_dir, server.url, server.process.pid))
    return server.url, server.service_role_key


# -- the local Storage server, for this stack and for the other commands ----------------------------


@dataclass(frozen=True)
class LocalStorage:
    """A local Storage server a command talks to; ``stop`` is set when it was started for that command."""

    url: str
    service_role_key: str = field(repr=False)
    stop: Callable[[], None] | None = field(default=None, repr=False)


def storage_data_dir(home: Path) -> Path:
    """Where the local Storage server of ``home`` keeps its objects, keys and state file."""
    return home.resolve() / "storage"


def local_storage(home: Path) -> LocalStorage:
    """The local Storage server of ``home``: the one ``lifecycle dev`` runs, else one started now.

    A server started here serves until ``stop()`` is called (the command's end); it is not recorded,
    so another command never comes to rely on it.
    """
    running = running_storage_server(home)
    if running is not None:
        return running
    server = _start_storage_server(storage_data_dir(home))
    return LocalStorage(server.url, server.service_role_key, stop=server.stop)


def running_storage_server(home: Path) -> LocalStorage | None:
    """The server recorded in ``<home>/storage/server.json``, if its process lives and it answers."""
    data_dir = storage_data_dir(home)
    try:
        state = json.loads((data_dir / STORAGE_STATE_FILE).read_text())
        keys = json.loads((data_dir / _STORAGE_KEYS_FILE).read_text())
        url, pid, key = str(state["url"]), int(state["pid"]), str(keys["service_role_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _process_alive(pid) or not _storage_answers(url):
        return None
    return LocalStorage(url, key)


def _start_storage_server(data_dir: Path) -> RunningStorageServer:
    """``storage_server.start_storage_server``, or one line naming the ``dev`` extra when it is missing."""
    missing = [name for name in _STORAGE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise errors.ConfigurationError(
            "SUPABASE_URL is not set, and the local Storage server needs the dev extra "
            f"(pip install 'lifecycle[dev]'; missing: {', '.join(missing)})",
            variable="SUPABASE_URL",
        )
    from lifecycle.devstack.storage_server import start_storage_server

    return start_storage_server(data_dir)


def _record_storage_server(data_dir: Path, url: str, pid: int) -> Callable[[], None]:
    """Write the state file (owner-only, atomically); return what removes it again."""
    path = data_dir / STORAGE_STATE_FILE
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "pid": pid}, handle)
    partial.replace(path)

    def forget() -> None:
        # Only our own record: a second `lifecycle dev` on the same home may have replaced it.
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if int(json.loads(path.read_text())["pid"]) == pid:
                path.unlink()

    return forget


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _storage_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/status", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _bootstrap(settings: Settings, app_url: str, *, demo: bool) -> None:
    """Migrations, buckets, and (``demo``) demo data once, when the jobs table is empty."""
    from lifecycle.db import Database, migrate

    db = Database.from_url(app_url, settings=settings)
    try:
        before = migrate.current_revision(db.url)
        after = migrate.upgrade(db.url)
        _say(f"schema {before or 'base'} -> {after}" if before != after else f"schema at {after}")
        from lifecycle import seeding
        from lifecycle.storage import StorageRepo

        storage = StorageRepo.from_settings(settings)
        try:
            buckets = storage.ensure_buckets()
            _say(f"buckets: created {list(buckets.created)}, existing {list(buckets.existed)}")
            from lifecycle.status_counts import status_counts

            marker = settings.lifecycle_home.resolve() / "demo-seeded"
            # Seeded once: the marker, or any job already there, means "leave the data alone".
            if not demo:
                _say("DATABASE_URL is set: no demo data")
            elif not marker.exists() and status_counts(db).total == 0:
                summary = seeding.seed(
                    db, n_jobs=DEMO_JOBS, expired_fraction=DEMO_EXPIRED_FRACTION, seed=1, storage=storage
                )
                marker.write_text("demo data seeded once by `lifecycle dev`; delete to seed again\n")
                _say("demo data: " + seeding.format_summary(summary).replace("\n", "; "))
            else:
                _say("demo data already seeded: nothing added")
        finally:
            storage.close()
    finally:
        db.dispose()


def _start_dagster(env: dict[str, str], home: Path, host: str, port: int) -> subprocess.Popen[bytes]:
    """``dagster dev`` (webserver + daemon + code server) in its own session / process group."""
    executable = Path(sys.executable).parent / "dagster"
    command = [
        str(executable) if executable.exists() else "dagster",
        "dev",
        "-w",
        str(ROOT / "workspace.yaml"),
        "-h",
        host,
        "-p",
        str(port),
    ]
    _say(f"starting Dagster on http://{host}:{port} (DAGSTER_HOME={env['DAGSTER_HOME']})")
    # Its own session: a terminal Ctrl-C reaches only us, and we stop the whole group (dagster dev
    # started from a script without its own group ignores SIGINT/SIGTERM).
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    """Poll ``/server_info`` until the webserver answers."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise errors.LifecycleError(f"dagster exited with status {process.returncode} before serving")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise errors.LifecycleError(f"the Dagster UI did not answer on {url} in {READY_TIMEOUT_SECONDS:.0f} s")


def _stop_process_group(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGINT to the group (dagster's graceful stop), then SIGKILL after a timeout."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        _say(f"{name} did not stop within {STOP_TIMEOUT_SECONDS:.0f} s: killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # Children that outlived the leader (code server, daemon) belong to the same group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``_Stop`` once; further signals are ignored while stopping."""

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stop

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
