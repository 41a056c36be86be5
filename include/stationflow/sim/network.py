"""The demo's station network: every remote peer of the inventory, simulated on loopback.

``stationflow sim up`` runs this as one background process: per station a LoggerNet folder
writer for each LoggerNet logger, a Modbus logger (Modbus/TCP, or RTU behind a serial
server) for each polled logger, an FTP server publishing .ghg half-hours for each SmartFlux
that is pulled, a station pushing its SmartFlux files to our FTP push server, a TCP device
for each health check and a relay that power-cycles them; per sensor network its Whale API
and influxd, and the publish targets: a real STA server (django-ogc-sensorthings, its own
venv, database ``sta`` of the project's PostgreSQL) and the SOS-T simulator.

Ports are fixed from a base (``STATIONFLOW_SIM_PORT_BASE``, default 15000) in inventory
order, so the Airflow Connections the demo creates stay valid across restarts. Accounts and
passwords are read from those Connections: the simulator knows nothing the project hides.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stationflow.config import (
    FtpPullCollect,
    FtpPushCollect,
    Inventory,
    LoggerNetCollect,
    ModbusCollect,
    Station,
)

log = logging.getLogger("stationflow.sim")
HOST = "127.0.0.1"
TICK_S = 10.0
LOGGERNET_EVERY = timedelta(minutes=5)  # LoggerNet's collection schedule: rows come in batches
# A fresh demo starts with yesterday (local) and today so far already logged, so the daily
# chain has a whole day to assemble and upload at once.
DEMO_FAULTS_PROGRAM_CHANGE = 5000  # rows: a program change (new column set) days from now


@dataclass(frozen=True)
class Endpoint:
    conn_id: str
    conn_type: str
    port: int
    login: str | None = None  # a password is generated once, kept in the Connection only
    schema: str | None = None
    role: str = ""
    extra: dict | None = None  # the Connection's extra (e.g. a service path)


@dataclass
class Plan:
    """Which simulated peer listens where, and the Connections that reach them."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    push_port: int = 0
    portal_port: int = 0  # the ICOS ETC upload endpoint, one for every station

    def add(self, ep: Endpoint) -> None:
        self.endpoints.setdefault(ep.conn_id, ep)


def port_base() -> int:
    return int(os.environ.get("STATIONFLOW_SIM_PORT_BASE", "15000"))


def plan(inv: Inventory, base: int | None = None) -> Plan:
    base = port_base() if base is None else base
    p = Plan(push_port=base + 21, portal_port=base + 20)
    nxt = iter(range(base + 22, base + 1000))
    for st in inv.stations:
        p.add(
            Endpoint(
                st.upload.connection_id,
                "http",
                p.portal_port,
                login=st.id,
                schema="http",
                role=f"ICOS ETC upload {st.id}",
            )
        )
        for lg in st.loggers:
            c = lg.collect
            if isinstance(c, ModbusCollect):
                p.add(
                    Endpoint(c.connection_id, "generic", next(nxt), role=f"modbus {st.id}/{lg.id}")
                )
            elif isinstance(c, FtpPullCollect):
                p.add(
                    Endpoint(
                        c.connection_id, "ftp", next(nxt), login=lg.id, role=f"ftp {st.id}/{lg.id}"
                    )
                )
            elif isinstance(c, FtpPushCollect):
                login = f"{st.id.lower()}"
                p.add(Endpoint(c.connection_id, "ftp", p.push_port, login=login, role="ftp push"))
            if lg.health_connection_id and lg.health_connection_id not in p.endpoints:
                # a polled logger is reached on its Modbus port; the others on their own
                same = isinstance(c, ModbusCollect)
                port = p.endpoints[c.connection_id].port if same else next(nxt)
                p.add(Endpoint(lg.health_connection_id, "generic", port, role=f"device {lg.id}"))
            if lg.relay is not None and lg.relay.connection_id not in p.endpoints:
                p.add(
                    Endpoint(lg.relay.connection_id, "http", next(nxt), login="relay", role="relay")
                )
    for net in inv.sensor_networks:
        for h in net.harvest:
            # the password is the Whale bearer token / the InfluxDB user's password
            role = f"{'Whale API' if h.kind == 'whale' else 'InfluxDB'} {net.id}"
            p.add(
                Endpoint(h.connection_id, "http", next(nxt), login=net.id, schema="http", role=role)
            )
        for t in net.publish:  # the STA server and the SOS simulator of the demo
            path = "/sensorthings/v1.1" if t.kind == "sta" else "/service"
            role = f"{'SensorThings API' if t.kind == 'sta' else 'SOS-T'} {net.id}"
            p.add(
                Endpoint(
                    t.connection_id, "http", next(nxt), schema="http", role=role,
                    extra={"path": path},
                )
            )  # fmt: skip
    return p


def ensure_connections(inv: Inventory, base: int | None = None) -> list[str]:
    """Create the Airflow Connections of the simulated network that do not exist yet.

    Needs Airflow's metadata database (run with the Airflow environment). Existing
    Connections are left alone: an operator's edits win; passwords are made here, once."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    created = []
    with create_session() as session:
        have = {c.conn_id for c in session.query(Connection).all()}
        for ep in plan(inv, base).endpoints.values():
            if ep.conn_id in have:
                continue
            session.add(
                Connection(
                    conn_id=ep.conn_id,
                    conn_type=ep.conn_type,
                    host=HOST,
                    port=ep.port,
                    login=ep.login,
                    schema=ep.schema,
                    password=secrets.token_urlsafe(18) if ep.login else None,
                    description=f"demo network: {ep.role}",
                    extra=json.dumps(ep.extra) if ep.extra else None,
                )
            )
            created.append(ep.conn_id)
    return created


class Network:
    """Every simulated peer of the inventory, started together; ``tick`` moves time on."""

    def __init__(
        self,
        inv: Inventory,
        home: Path,
        base: int | None = None,
        *,
        sta_database_url: str | None = None,
    ):
        """``sta_database_url``: where the STA server stores (none: no STA server)."""
        from stationflow.connections import get_connection

        self.inv, self.home, self.plan = inv, home, plan(inv, base)
        self.sta_database_url = sta_database_url
        self._conn = get_connection
        self.loggernet: list[tuple[Station, object]] = []
        self.servers: list[object] = []  # anything with start()/stop()
        self.smartflux: list[tuple[Station, object]] = []
        self.pushers: list[tuple[Station, object, object]] = []
        self.devices: dict[str, object] = {}  # health conn id -> device (power_cycle)
        self.ase: list = []  # AirSensEUR boxes writing into their influxd
        self._ase_until: datetime | None = None
        self.stopped = False

    def _secret(self, conn_id: str) -> tuple[str, str]:
        c = self._conn(conn_id)
        return c.login or "", c.password or ""

    def build(self, now: datetime) -> Network:
        from stationflow.sim.device import TcpDevice
        from stationflow.sim.loggernet import Faults, LoggerNetSim, TableSpec
        from stationflow.sim.modbus_logger import SimLogger
        from stationflow.sim.relay import RelaySim
        from stationflow.sim.smartflux import SmartFluxSim

        relays: dict[str, RelaySim] = {}
        for st in self.inv.stations:
            local = (now + timedelta(hours=st.utc_offset_hours)).replace(tzinfo=None)
            for lg in st.loggers:
                c = lg.collect
                device = None
                if isinstance(c, LoggerNetCollect):
                    folder = c.folder if c.folder.is_absolute() else self.home / c.folder
                    specs = [TableSpec(t, _interval_ms(st, lg.id, t)) for t in c.tables]
                    sim = LoggerNetSim(
                        folder,
                        station=st.id,
                        model=lg.model or "CR3000",
                        tables=specs,
                        start=_history_start(local),
                        faults=Faults(program_change_at=DEMO_FAULTS_PROGRAM_CHANGE),
                    )
                    self.loggernet.append((st, sim))
                elif isinstance(c, ModbusCollect):
                    ep = self.plan.endpoints[c.connection_id]
                    device = SimLogger.from_config(c, host=HOST, port=ep.port)
                    self.servers.append(device)
                    self._poll_history(st, lg, local, now)
                elif isinstance(c, FtpPullCollect):
                    ep = self.plan.endpoints[c.connection_id]
                    login, password = self._secret(c.connection_id)
                    sim = SmartFluxSim(
                        self.home / "sim" / "smartflux" / st.id,
                        login,
                        password,
                        logger_name=f"{st.id}-{lg.id}",
                        remote_dir=c.remote_dir,
                        utc_offset_hours=st.utc_offset_hours,
                        host=HOST,
                        port=ep.port,
                    )
                    self.servers.append(sim)
                    self.smartflux.append((st, sim))
                elif isinstance(c, FtpPushCollect) and lg.kind == "smartflux":
                    sim = SmartFluxSim(
                        self.home / "sim" / "smartflux-push" / st.id,
                        "local",
                        secrets.token_hex(8),
                        logger_name=f"{st.id}-{lg.id}",
                        utc_offset_hours=st.utc_offset_hours,
                    )  # files only: it pushes them to our server
                    self.pushers.append((st, sim, c))
                if lg.health_connection_id:
                    if device is None:
                        ep = self.plan.endpoints[lg.health_connection_id]
                        device = self.devices.get(lg.health_connection_id) or TcpDevice(
                            HOST, ep.port
                        )
                        if device not in self.servers:
                            self.servers.append(device)
                    self.devices[lg.health_connection_id] = device
                if lg.relay is not None and device is not None:
                    r = lg.relay
                    if r.connection_id not in relays:
                        login, password = self._secret(r.connection_id)
                        ep = self.plan.endpoints[r.connection_id]
                        relays[r.connection_id] = RelaySim(
                            login=login, password=password, host=HOST, port=ep.port
                        )
                    relays[r.connection_id].register(r.channel, _cycler(device, self))
        self.servers += list(relays.values())
        self._sensor_networks()
        from stationflow.sim.icos_etc import IcosEtcSim

        accounts = {st.id: self._secret(st.upload.connection_id)[1] for st in self.inv.stations}
        self.portal = IcosEtcSim(accounts, host=HOST, port=self.plan.portal_port)
        self.servers.append(self.portal)
        return self

    def _sensor_networks(self) -> None:
        """Per Whale harvester a Whale API serving the network's Josene devices (the last
        one flaky: the harvester's retries are part of the show); per InfluxDB harvester a
        real influxd (its admin account is the Connection's) fed by AirSensEUR boxes."""
        from stationflow.sim.airsenseur import AirSensEURSim
        from stationflow.sim.influxd import InfluxdMissing, InfluxServer, influxd_binary
        from stationflow.sim.whale import WhaleSim

        for net in self.inv.sensor_networks:
            for h in net.harvest:
                if h.kind == "influxdb":
                    try:
                        influxd_binary()
                    except InfluxdMissing as exc:
                        log.warning("%s: %s: its harvester will fail", h.connection_id, exc)
                        continue
                    creds = self._secret(h.connection_id)
                    server = InfluxServer(
                        self.home / "sim" / "influxd" / h.connection_id,
                        credentials=creds,
                        http_port=self.plan.endpoints[h.connection_id].port,
                    )
                    self.servers.append(server)
                    box = AirSensEURSim(
                        server.url,
                        h.database,
                        h.measurements,
                        username=creds[0],
                        password=creds[1],
                    )
                    self.ase.append(box)
                    continue
                josene = [d.id for d in net.devices if d.type == "josene"]
                devices = josene if h.devices == "all" else list(h.devices)
                ep = self.plan.endpoints[h.connection_id]
                self.servers.append(
                    WhaleSim(
                        devices,
                        token=self._secret(h.connection_id)[1],
                        host=HOST,
                        port=ep.port,
                        flaky_device=devices[-1] if len(devices) > 1 else None,
                    )
                )
            for t in net.publish:
                ep = self.plan.endpoints[t.connection_id]
                if t.kind == "sos":
                    from stationflow.sim.sos import SosSim

                    self.servers.append(SosSim(HOST, ep.port, path=ep.extra["path"]))
                elif self.sta_database_url:
                    from stationflow.sim.sta_server import StaServer

                    self.servers.append(
                        StaServer(
                            self.sta_database_url,
                            host=HOST,
                            port=ep.port,
                            log_path=self.home / "logs" / "sta-server.log",
                        )
                    )

    def _ghg_history(self, st: Station, sim, now: datetime) -> list[Path]:
        """Yesterday's half-hours (SmartFlux clock), written once. Only one day: a 20 Hz
        half-hour takes half a second of CPU and 3.5 MB, and the demo backfills the
        half-hourly chain for the last hours only."""
        from stationflow.sim.smartflux import ghg_name

        local = (now + timedelta(hours=st.utc_offset_hours)).replace(tzinfo=None)
        start = _history_start(local, days=1) + timedelta(minutes=10)  # yesterday 00:00
        written = []
        for k in range(48):
            t = (start + timedelta(minutes=30 * k) - timedelta(hours=st.utc_offset_hours)).replace(
                tzinfo=UTC
            )
            if not (sim.folder / ghg_name(t, sim.logger_name, st.utc_offset_hours)).exists():
                written.append(sim.publish(t))
        return written

    def _poll_history(self, st: Station, lg, local: datetime, now: datetime) -> None:
        """Polls as if icos_poll had run for the history days: the spool day files, written once
        whole (the format append_row writes, RECORD from 0 in each file)."""
        import numpy as np

        from stationflow.collect.modbus import format_value, spool_path, toa5_header
        from stationflow.formats.timestamps import format_toa5
        from stationflow.sim.modbus_logger import signal

        c = lg.collect
        spool, step = self.home / "spool", timedelta(milliseconds=c.poll_interval_ms)
        current = local - (local - datetime.min) % step  # icos_poll writes that slot itself
        slots = []
        slot = _history_start(local) + step
        while slot < current:
            slots.append(slot)
            slot += step
        epoch = datetime(1970, 1, 1)
        ns = np.array([(t - epoch) // timedelta(microseconds=1) * 1000 for t in slots], np.int64)
        files: dict[Path, list[bytes]] = {}
        for tick, (t, stamp) in enumerate(zip(slots, format_toa5(ns), strict=True)):
            utc_s = (t - timedelta(hours=st.utc_offset_hours) - epoch).total_seconds()
            path = spool_path(spool, st.id, lg.id, c.table, int(ns[tick]))
            rows = files.setdefault(path, [])
            values = [format_value(signal(r, utc_s, tick)) for r in c.registers]
            rows.append(b",".join([stamp, str(len(rows)).encode(), *values]) + b"\r\n")
        header = toa5_header(st.id, lg.model, c.table, c.registers)
        for path, rows in files.items():
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(header + b"".join(rows))
                os.replace(tmp, path)

    def start(self) -> None:
        """Start every peer; one that cannot start is logged and the others run (the
        tasks that need it fail and say so)."""
        for s in self.servers:
            try:
                s.start()
            except Exception:
                log.exception("could not start %r", s)
                continue
            log.info("started %r", s)

    def stop(self) -> None:
        self.stopped = True
        for s in reversed(self.servers):
            try:
                s.stop()
            except Exception:  # stop the others whatever one does
                log.exception("stopping %r", s)

    def tick(self, now: datetime) -> None:
        """Time passes: loggers log, SmartFlux systems close half-hours, stations push,
        AirSensEUR boxes report (the first time: the Whale's history, 72 hours)."""
        if self.ase:
            start = self._ase_until or now.replace(minute=0, second=0, microsecond=0) - timedelta(
                hours=72
            )
            end = now.replace(second=0, microsecond=0)
            for box in self.ase:
                if self._ase_until is None:
                    box.ensure_database()
                box.write_hours(start, end)
            self._ase_until = end
        for st, sim in self.loggernet:
            local = (now + timedelta(hours=st.utc_offset_hours)).replace(tzinfo=None)
            sim.write_until(local - (local - datetime.min) % LOGGERNET_EVERY)
        for st, sim in self.smartflux:
            self._ghg_history(st, sim, now)
            sim.publish_until(now)
        for st, sim, c in self.pushers:
            login, password = self._secret(c.connection_id)
            for path in self._ghg_history(st, sim, now) + sim.publish_until(now):
                try:
                    sim.push_to(HOST, self.plan.push_port, login, password, path)
                except OSError as exc:  # our server not up yet: pushed again next time
                    log.warning("%s: push of %s failed: %s", st.id, path.name, exc)
                    path.unlink(missing_ok=True)


HISTORY_DAYS = 2  # the loggers hold the last two ETC days: what the demo backfills


def _history_start(local_now: datetime, days: int = HISTORY_DAYS) -> datetime:
    """Ten minutes before the local midnight ``days`` ago: those days are whole ETC days."""
    today = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days, minutes=10)


def _interval_ms(st: Station, logger_id: str, table: str) -> int:
    for f in st.files:
        if f.logger == logger_id and f.table == table and f.interval_ms:
            return f.interval_ms
    return 60_000


BOOT_S = 5.0  # how long a power-cycled simulated device stays dark


def _cycler(device, network: Network):
    def boot() -> None:
        if not network.stopped:
            device.power_on()

    def cycle() -> None:
        device.power_off()
        timer = threading.Timer(BOOT_S, boot)
        timer.daemon = True
        timer.start()

    return cycle


def serve(inv: Inventory, home: Path, base: int | None = None) -> None:
    """Run the network until SIGTERM/SIGINT (the ``stationflow sim up`` process)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    from urllib.parse import urlsplit, urlunsplit

    from stationflow.state.db import state_db_url

    sta_db = urlunsplit(urlsplit(state_db_url())._replace(path="/sta"))
    net = Network(inv, home, base, sta_database_url=sta_db).build(datetime.now(UTC))
    net.start()
    try:
        while not stop.is_set():
            try:
                net.tick(datetime.now(UTC))
            except Exception:  # a simulator fault must not end the network
                log.exception("sim tick")
            stop.wait(TICK_S)
    finally:
        net.stop()
