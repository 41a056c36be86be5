"""A real InfluxDB 1.x (``influxd``, Debian package ``influxdb``) run from a folder of ours:
the AirSensEUR boxes' database in the demo network and in the harvester tests.

Everything lives in the given folder (meta, data, WAL, log); both ports are loopback-only.
With credentials, the admin user is created through ``/query`` before anything else, which
influxd allows only while no user exists, so basic auth is exercised for real.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import requests

from stationflow.collect.influxdb import quote_ident

MISSING = "influxd not installed (apt-get install influxdb)"

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth}
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


class InfluxdMissing(RuntimeError):
    pass


def influxd_binary() -> str:
    path = shutil.which("influxd")
    if path is None:
        raise InfluxdMissing(MISSING)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InfluxServer:
    """``influxd -config <file>`` as a subprocess; a context manager (start, then stop)."""

    def __init__(
        self,
        root: Path,
        *,
        credentials: tuple[str, str] | None = None,
        http_port: int = 0,
        start_timeout: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.credentials = credentials  # (admin user, password); None: no auth
        self.start_timeout = start_timeout
        self.http_port = http_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "influxd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def auth(self) -> bool:
        return self.credentials is not None

    def start(self) -> InfluxServer:
        binary = influxd_binary()
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port = self.http_port or free_port()
        rpc_port = free_port()
        while rpc_port == self.http_port:
            rpc_port = free_port()
        config = self.root / "influxdb.conf"
        config.write_text(
            _CONFIG.format(
                root=self.root.as_posix(),
                rpc_port=rpc_port,
                http_port=self.http_port,
                auth="true" if self.auth else "false",
            )
        )
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_ready()
            if self.auth:
                self._create_admin()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"influxd exited with {self.proc.returncode} before answering /ping:\n"
                    + self.log_tail()
                )
            try:
                if requests.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"influxd did not answer {self.url}/ping within {self.start_timeout:.0f} s:\n"
                    + self.log_tail()
                )
            time.sleep(0.05)

    def _create_admin(self) -> None:
        assert self.credentials is not None
        user, password = self.credentials
        probe = requests.get(f"{self.url}/query", params={"q": "SHOW USERS"}, timeout=10)
        if probe.status_code == 401:
            return  # a restart: the admin exists since the first start
        quoted = password.replace("\\", "\\\\").replace("'", "\\'")
        q = f"CREATE USER {quote_ident(user)} WITH PASSWORD '{quoted}' WITH ALL PRIVILEGES"
        r = requests.post(f"{self.url}/query", data={"q": q}, timeout=10)
        if r.status_code != 200 or '"error"' in r.text:
            raise RuntimeError(f"could not create the influxd admin user: {r.status_code}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> InfluxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
