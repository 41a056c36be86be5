"""A LI-COR SmartFlux on the station network: an FTP server whose folder fills with .ghg files.

Every half-hour file is built from the real sample shipped in ``sim/data/`` (an LI-7200 +
Gill HS-50 SmartFlux archive): its header lines, its ``.metadata`` member and its rows
(played forwards then backwards, so the values never jump), re-timed to the period. The
``Seconds``/``Nanoseconds`` columns are Unix time (UTC) as SmartFlux writes them; the
``Date``/``Time`` columns, the ``Timestamp:`` header line, the member names and the file
name ``YYYY-MM-DDTHHMMSS_<logger>.ghg`` use the SmartFlux clock (``utc_offset_hours``,
default UTC) and name the START of the period. A file is written under a hidden temporary
name and renamed when complete, with the period's end as its modification time.

The FTP server (pyftpdlib, read-only account, loopback by default) runs in a thread;
``commands`` and ``transfers`` record what clients did, for tests. ``push_to`` plays the
other side: a station pushing a file to the lab's receiving server.
"""

from __future__ import annotations

import ftplib
import io
import os
import posixpath
import re
import threading
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from stationflow.collect.ftp_push import ServerThread
from stationflow.collect.landing import safe_name

SAMPLE = "2016-12-11T200000_AIU-1359.ghg"
PERIOD = timedelta(minutes=30)
_HEADER_LINES = 7  # Model .. Timezone, then DATAH


def _timezone_name(utc_offset_hours: float) -> str:
    if utc_offset_hours == 0:
        return "UTC"
    if utc_offset_hours == int(utc_offset_hours):
        return f"Etc/GMT{-int(utc_offset_hours):+d}"  # POSIX: Etc/GMT-1 is UTC+1
    sign = "+" if utc_offset_hours > 0 else "-"
    minutes = round(abs(utc_offset_hours) * 60)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


class _Template:
    """The sample archive, split into what a new file reuses."""

    def __init__(self, blob: bytes):
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            names = zf.namelist()
            data = zf.read(next(n for n in names if n.endswith(".data"))).decode("utf-8")
            self.metadata = zf.read(next(n for n in names if n.endswith(".metadata"))).decode(
                "utf-8"
            )
        lines = data.split("\n")
        self.info = [line.split(":", 1)[0] for line in lines[:_HEADER_LINES]]
        self.info_values = [line.split(":", 1)[1] for line in lines[:_HEADER_LINES]]
        self.datah = lines[_HEADER_LINES]
        fields = self.datah.split("\t")
        i_date, i_time = fields.index("Date"), fields.index("Time")
        if fields[1:4] != ["Seconds", "Nanoseconds", "Sequence Number"] or i_time != i_date + 1:
            raise ValueError("unexpected DATAH layout in the SmartFlux sample")
        # per row: the values between Sequence Number and Date, and those after Time
        self.rows = []
        for line in lines[_HEADER_LINES + 1 :]:
            if line.startswith("DATA\t"):
                v = line.split("\t")
                self.rows.append(("\t".join(v[4:i_date]), "\t".join(v[i_time + 1 :])))
        self.first_sequence = int(lines[_HEADER_LINES + 1].split("\t")[3])


_TEMPLATE: _Template | None = None
_TEMPLATE_LOCK = threading.Lock()


def _template() -> _Template:
    global _TEMPLATE
    with _TEMPLATE_LOCK:
        if _TEMPLATE is None:
            blob = resources.files("stationflow.sim").joinpath("data", SAMPLE).read_bytes()
            _TEMPLATE = _Template(blob)
        return _TEMPLATE


def ghg_name(period_start_utc: datetime, logger_name: str, utc_offset_hours: float = 0) -> str:
    """``YYYY-MM-DDTHHMMSS_<logger>.ghg`` of the period starting at ``period_start_utc``."""
    local = _as_utc(period_start_utc) + timedelta(hours=utc_offset_hours)
    return f"{local:%Y-%m-%dT%H%M%S}_{logger_name}.ghg"


def _as_utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"{t!r}: give an aware datetime (UTC)")
    return t.astimezone(UTC)


def build_ghg(
    period_start_utc: datetime,
    *,
    logger_name: str = "smartflux",
    hz: int = 10,
    utc_offset_hours: float = 0,
) -> tuple[str, bytes]:
    """(file name, bytes) of one complete half-hour .ghg file at ``hz`` samples a second."""
    if not 1 <= hz <= 100 or 1000 % hz:
        raise ValueError(f"hz={hz}: a whole number of milliseconds between samples, 1..100")
    start = _as_utc(period_start_utc)
    if start.timestamp() % PERIOD.total_seconds():
        raise ValueError(f"{period_start_utc}: not the start of a half-hour")
    tpl = _template()
    local_tz = timezone(timedelta(hours=utc_offset_hours))
    local = start.astimezone(local_tz)
    name = ghg_name(start, logger_name, utc_offset_hours)
    stem = name[: -len(".ghg")]

    values = dict(zip(tpl.info, tpl.info_values, strict=True))
    values.update(
        {
            "Instrument": f"\t{logger_name}",
            "Timestamp": f"\t{local:%H:%M:%S}",
            "Timezone": f"\t{_timezone_name(utc_offset_hours)}",
        }
    )
    head = [f"{k}:{v}" for k, v in values.items()] + [tpl.datah]

    step_ns = 1_000_000_000 // hz
    n_template = len(tpl.rows)
    sec0 = int(start.timestamp())
    rows = []
    i = 0
    for s in range(int(PERIOD.total_seconds())):
        t = local + timedelta(seconds=s)
        date, hms = f"{t:%Y-%m-%d}", f"{t:%H:%M:%S}"
        for k in range(hz):
            j = i % (2 * n_template)
            diag, rest = tpl.rows[j if j < n_template else 2 * n_template - 1 - j]
            ns = k * step_ns
            rows.append(
                f"DATA\t{sec0 + s}\t{ns}\t{tpl.first_sequence + i}\t{diag}\t{date}"
                f"\t{hms}:{ns // 1_000_000:03d}\t{rest}"
            )
            i += 1
    data = "\n".join(head + rows)  # SmartFlux writes no line end after the last row

    metadata = tpl.metadata
    for key, value in (
        ("acquisition_frequency", f"{float(hz)}"),
        ("file_duration", "30"),
        ("logger_id", logger_name),
    ):
        metadata = re.sub(rf"(?m)^{key}=.*$", f"{key}={value}", metadata)

    when = (local + PERIOD).replace(tzinfo=None).timetuple()[:6]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for member, text in ((f"{stem}.data", data), (f"{stem}.metadata", metadata)):
            info = zipfile.ZipInfo(member, date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text.encode("utf-8"), compresslevel=1)
    return name, buf.getvalue()


class SimHandler(FTPHandler):
    """Records every command and transfer on its simulator."""

    sim: SmartFluxSim  # set on the per-simulator subclass
    banner = "SmartFlux (stationflow simulator) FTP ready."
    auth_failed_timeout = 0.1  # pyftpdlib waits 3 s before refusing a login

    def pre_process_command(self, line, cmd, arg):
        if cmd != "PASS":
            with self.sim._lock:
                self.sim.commands.append((cmd, arg))
        super().pre_process_command(line, cmd, arg)

    def log_transfer(self, cmd, filename, receive, completed, elapsed, bytes):
        with self.sim._lock:
            self.sim.transfers.append(
                {"cmd": cmd, "path": filename, "bytes": bytes, "completed": completed}
            )
            if not receive:
                self.sim.bytes_sent += bytes
        super().log_transfer(cmd, filename, receive, completed, elapsed, bytes)


class SmartFluxSim:
    """A SmartFlux's FTP server: ``start()``, then ``publish`` half-hours into its folder."""

    handler_class: type[SimHandler] = SimHandler

    def __init__(
        self,
        root: Path,
        login: str,
        password: str,
        logger_name: str = "smartflux",
        hz: int = 10,
        *,
        remote_dir: str = "/",
        utc_offset_hours: float = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.root = Path(root)
        self.login = login
        self.password = password
        self.logger_name = logger_name
        self.hz = hz
        self.utc_offset_hours = utc_offset_hours
        self.remote_dir = posixpath.normpath("/" + remote_dir.strip("/"))
        self.folder = self.root / self.remote_dir.lstrip("/")
        self.host = host
        self._port = port
        self.commands: list[tuple[str, str]] = []  # (command, argument) as received
        self.transfers: list[dict] = []  # {cmd, path, bytes, completed}
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._server: FTPServer | None = None
        self._thread: ServerThread | None = None

    # --- the server

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return self._server.address[1]

    def start(self) -> SmartFluxSim:
        if self._server is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.login, self.password, str(self.root), perm="elr")
        handler = type(
            "SmartFluxHandler", (self.handler_class,), {"authorizer": authorizer, "sim": self}
        )
        self._server = FTPServer((self.host, self._port), handler, ioloop=IOLoop())
        self._thread = ServerThread(self._server)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
        self._server = self._thread = None

    def __enter__(self) -> SmartFluxSim:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def commands_of(self, cmd: str) -> list[str]:
        """Arguments of every ``cmd`` (e.g. "RETR", "REST") received so far."""
        with self._lock:
            return [a for c, a in self.commands if c == cmd]

    # --- the files

    def publish(self, period_start_utc: datetime) -> Path:
        """Write the half-hour file of ``period_start_utc`` (atomically); its path."""
        name, blob = build_ghg(
            period_start_utc,
            logger_name=self.logger_name,
            hz=self.hz,
            utc_offset_hours=self.utc_offset_hours,
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / name
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes(blob)
        end = (_as_utc(period_start_utc) + PERIOD).timestamp()
        os.utime(tmp, (end, end))
        os.replace(tmp, target)
        return target

    def publish_until(self, now: datetime) -> list[Path]:
        """Every complete half-hour of ``now``'s day (SmartFlux clock) not yet written."""
        now = _as_utc(now)
        offset = timedelta(hours=self.utc_offset_hours)
        local_midnight = (now + offset).replace(hour=0, minute=0, second=0, microsecond=0)
        start = local_midnight - offset  # in UTC
        written = []
        while start + PERIOD <= now:
            name = ghg_name(start, self.logger_name, self.utc_offset_hours)
            if not (self.folder / name).exists():
                written.append(self.publish(start))
            start += PERIOD
        return written

    # --- the station pushing

    @staticmethod
    def push_to(
        host: str,
        port: int,
        login: str,
        password: str,
        path: Path,
        *,
        remote_name: str | None = None,
        timeout: float = 30,
    ) -> str:
        """Upload ``path`` to an FTP server as a station does (binary, passive); the reply."""
        path = Path(path)
        with ftplib.FTP(timeout=timeout) as ftp:  # noqa: S321 - what a SmartFlux speaks
            ftp.connect(host, port)
            ftp.login(login, password)
            with path.open("rb") as f:
                reply = ftp.storbinary(f"STOR {remote_name or safe_name(path.name)}", f)
            ftp.quit()
        return reply
