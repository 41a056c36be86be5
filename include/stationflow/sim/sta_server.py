"""A real OGC SensorThings API v1.1 server for the tests and the demo.

django-ogc-sensorthings 1.2.0 (see docs/sta-server.md) pins its own Django and pydantic, so it
runs from a virtualenv of its own (``.venv-sta``, pinned by requirements-sta.txt) and is
served by uvicorn on loopback. Its Django project is the package data folder ``sta_project/``
(not a Python package of stationflow); it stores into a PostgreSQL database of its own.

    with StaServer(pg_url("sta")) as sta:
        requests.post(f"{sta.url}/Things", json={...})   # sta.url = http://H:P/sensorthings/v1.1

``StaServer.start()`` builds the venv on first use (``ensure_venv``), creates the database if
missing, applies the Django migrations and waits until the service root answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import psycopg
import requests
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stationflow.settings import PROJECT_ROOT, load_settings
from stationflow.state.db import ensure_database

#: The pins of the server's own virtualenv.
STA_REQUIREMENTS = PROJECT_ROOT / "requirements-sta.txt"
#: The Django project (settings.py, urls.py, asgi.py, manage.py); the server's working directory.
STA_PROJECT = Path(__file__).resolve().with_name("sta_project")
#: Inside the venv: the sha256 of the requirements file it was built from, written last.
STAMP_NAME = ".requirements-sta.sha256"
#: Inside the venv: held with flock while the venv is (re)built.
LOCK_NAME = ".build.lock"
#: Inside the venv: output of the last build.
BUILD_LOG_NAME = "build.log"
#: Every table of the Django backend's models starts with this (see clear()).
TABLE_PREFIX = "sensorthings_v1_1_django_backend_"
#: The path under which urls.py mounts the API; the version segment follows.
SERVICE_PATH = "/sensorthings"
API_VERSION = "v1.1"


class StaServerError(RuntimeError):
    """The STA venv could not be built, or the server could not be migrated or started."""


def sta_venv() -> Path:
    """Where the server's virtualenv lives: ``STATIONFLOW_STA_VENV`` or ``<project>/.venv-sta``."""
    env = os.environ.get("STATIONFLOW_STA_VENV")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / ".venv-sta"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def requirements_digest(requirements: Path = STA_REQUIREMENTS) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def needs_build(venv: Path | None = None, requirements: Path = STA_REQUIREMENTS) -> bool:
    """True unless ``venv`` has a python and a stamp equal to the sha256 of ``requirements``."""
    venv = venv or sta_venv()
    if not venv_python(venv).is_file():
        return True
    try:
        stamp = (venv / STAMP_NAME).read_text().strip()
    except OSError:
        return True
    return stamp != requirements_digest(requirements)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _clear_venv(venv: Path) -> None:
    """Empty ``venv`` except for the lock file (it is held) and the build log."""
    for child in venv.iterdir():
        if child.name in (LOCK_NAME, BUILD_LOG_NAME):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def ensure_venv(
    venv: Path | None = None,
    *,
    requirements: Path = STA_REQUIREMENTS,
    timeout: float = 1800.0,
) -> Path:
    """The python of the STA venv, (re)built first when missing or ``requirements`` changed.

    A rebuild starts from an empty folder (``python -m venv`` + ``pip install -r``); the stamp
    is written only after the install and an import check succeeded. An exclusive flock on a
    file inside the venv folder keeps two processes from building at the same time: the second
    one waits, then finds the stamp up to date.
    """
    venv = Path(venv) if venv is not None else sta_venv()
    python = venv_python(venv)
    if not needs_build(venv, requirements):
        return python
    venv.mkdir(parents=True, exist_ok=True)
    with (venv / LOCK_NAME).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if needs_build(venv, requirements):  # someone else may have built it meanwhile
                _build(venv, requirements, timeout)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python


def _build(venv: Path, requirements: Path, timeout: float) -> None:
    digest = requirements_digest(requirements)
    _clear_venv(venv)
    python = venv_python(venv)
    log_path = venv / BUILD_LOG_NAME
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(var, None)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
        [str(python), "-c", "import django, psycopg, sensorthings, uvicorn"],
    ]
    with log_path.open("w") as log:
        for cmd in steps:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            try:
                result = subprocess.run(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                log.flush()
                raise StaServerError(
                    f"building the STA venv {venv} timed out after {timeout:.0f} s "
                    f"in {cmd[1:4]}; see {log_path}:\n{_tail(log_path)}"
                ) from None
            if result.returncode != 0:
                log.flush()
                raise StaServerError(
                    f"building the STA venv {venv} failed (exit {result.returncode}) "
                    f"in {' '.join(cmd)}; see {log_path}:\n{_tail(log_path)}"
                )
    stamp = venv / STAMP_NAME
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(digest + "\n")
    tmp.replace(stamp)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def admin_conninfo(database_url: str) -> str:
    """``database_url`` with the database swapped for ``postgres`` (to CREATE DATABASE)."""
    return make_conninfo(database_url, dbname="postgres")


def database_name(database_url: str) -> str:
    name = conninfo_to_dict(database_url).get("dbname")
    if not name:
        raise ValueError(f"no database name in {database_url!r}")
    return str(name)


class StaServer:
    """``uvicorn asgi:application`` from .venv-sta on ``host:port``; a context manager.

    ``start()`` and ``stop()`` are idempotent and may alternate: the port chosen at the first
    start is kept, so ``url`` stays valid, and the data stays in the database.
    """

    def __init__(
        self,
        database_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        venv: Path | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.database_url = database_url
        self.database = database_name(database_url)
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path else load_settings().log_dir / "sta-server.log"
        self.venv = Path(venv) if venv is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://H:P/sensorthings``: STA_SERVICE_URL, the base of every link it returns."""
        # a wildcard listen address is reached through loopback
        wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104
        host = wildcard.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{SERVICE_PATH}"

    @property
    def url(self) -> str:
        """The service root, ``http://H:P/sensorthings/v1.1`` (no trailing slash)."""
        return f"{self.base_url}/{API_VERSION}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE")
        }
        env.update(
            STA_DATABASE_URL=self.database_url,
            STA_SERVICE_URL=self.base_url,
            STA_SECRET_KEY=secrets.token_urlsafe(50),
            DJANGO_SETTINGS_MODULE="settings",
            PYTHONDONTWRITEBYTECODE="1",  # keep the package folder free of __pycache__
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> StaServer:
        if self.running:
            return self
        self.proc = None
        python = ensure_venv(self.venv)
        ensure_database(admin_conninfo(self.database_url), self.database)
        self.port = self.port or free_port(self.host or "127.0.0.1")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self._env()
        with self.log_path.open("ab") as log:
            log.write(f"--- migrate, then serve {self.url}\n".encode())
            log.flush()
            started = time.monotonic()
            try:
                migrate = subprocess.run(
                    [str(python), "manage.py", "migrate", "--noinput"],
                    cwd=STA_PROJECT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=300,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise StaServerError(
                    f"STA migrate timed out; see {self.log_path}:\n{self.log_tail()}"
                ) from None
            if migrate.returncode != 0:
                raise StaServerError(
                    f"STA migrate failed (exit {migrate.returncode}); see {self.log_path}:\n"
                    + self.log_tail()
                )
            log.write(f"--- migrated in {time.monotonic() - started:.1f} s\n".encode())
            log.flush()
            started = time.monotonic()
            log_offset = log.tell()
            self.proc = subprocess.Popen(
                [
                    str(python),
                    "-m",
                    "uvicorn",
                    "asgi:application",
                    "--app-dir",
                    str(STA_PROJECT),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--lifespan",
                    "off",
                    "--no-access-log",
                ],
                cwd=STA_PROJECT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_ready(log_offset)
        except BaseException:
            self.stop()
            raise
        with self.log_path.open("ab") as log:
            log.write(
                f"--- answered 200 {time.monotonic() - started:.1f} s after launch\n".encode()
            )
        return self

    def _wait_ready(self, log_offset: int) -> None:
        """Until uvicorn has logged its bind and the service root answers 200.

        The log line makes sure the answer comes from this process, not from another server
        already listening on the port (our uvicorn would then exit: address already in use).
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        bound = f"Uvicorn running on http://{host}:{self.port}".encode()
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise StaServerError(
                    f"the STA server exited with {self.proc.returncode} before answering "
                    f"{self.url}; see {self.log_path}:\n{self.log_tail()}"
                )
            if self._log_since(log_offset).find(bound) >= 0:
                try:
                    if requests.get(self.url, timeout=2).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                raise StaServerError(
                    f"the STA server did not answer {self.url} within {self.start_timeout:.0f} s;"
                    f" see {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _log_since(self, offset: int) -> bytes:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after ``stop_timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the pid

    def clear(self) -> list[str]:
        """Empty every table of the STA models (for test isolation); the names truncated."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables"
                    " WHERE schemaname = current_schema() AND starts_with(tablename, %s)"
                    " ORDER BY tablename",
                    (TABLE_PREFIX,),
                )
            ]
            if tables:
                conn.execute(
                    sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                        sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                    )
                )
        return tables

    def __enter__(self) -> StaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
