"""The station inventory (``config/stations.yaml``) as typed, validated objects.

A wrong inventory is refused whole, with every problem listed as
``file:line: path.inside[0].the.file: what is wrong``, before any DAG runs on it.
Endpoints and secrets are Airflow Connection ids here; a secret itself is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stationflow.errors import PermanentError
from stationflow.settings import load_settings

STATION_ID = r"^[A-Z]{2}-[A-Za-z][A-Za-z0-9]{2}$"  # ICOS: FR-Lam, FR-Aur, FA-Lso
CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"
ETC_FILE_TYPES = ("EC", "BM", "ST", "SAHEAT", "PHEN")
HALF_HOURLY_TYPES = ("EC", "PHEN")  # one file per half-hour; the others one per day
ETC_EXTENSIONS = ("csv", "zip", "bin", "dat", "txt", "jpg")
_SECRET_KEYS = re.compile(r"pass(word|wd)?|secret|token|api_?key|credential", re.I)
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h|hz)\s*$", re.I)
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}

ConnId = Annotated[str, Field(pattern=CONN_ID)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


def parse_interval_ms(text: str | int | float) -> int:
    """'30min', '30s', '100ms', '20Hz' -> milliseconds (an integer number of them)."""
    m = _INTERVAL.match(str(text))
    if not m:
        raise ValueError(f"interval {text!r}: expected e.g. '30min', '30s', '100ms' or '20Hz'")
    value, unit = float(m.group(1)), m.group(2).lower()
    ms = 1000 / value if unit == "hz" and value > 0 else value * _UNIT_MS.get(unit, 0)
    if ms <= 0 or abs(ms - round(ms)) > 1e-9:
        raise ValueError(f"interval {text!r} is not a whole, positive number of milliseconds")
    return round(ms)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ---------------------------------------------------------------- ICOS file chain


class LoggerNetCollect(_Model):
    """Files LoggerNet writes on the lab PC; the folder is read, never modified.

    Files are matched to tables by their TOA5 header (its last field names the table), so
    backups, renamed fragments and new file names after a program change are all found.
    """

    method: Literal["loggernet"]
    folder: Path
    tables: list[Name] = Field(min_length=1)
    patterns: list[str] = Field(default_factory=lambda: ["*"])  # glob, relative to folder
    settle_seconds: float = Field(60, ge=0)  # unchanged for this long = LoggerNet is done


class ModbusRegister(_Model):
    """One Public variable: where it sits in the logger's register space and what it is."""

    name: Name
    address: int = Field(ge=0, le=65535)  # protocol address (0-based): Var(n) -> 2(n-1)
    type: Literal["holding", "input"] = "holding"
    data_type: Literal["float32", "int32", "uint32", "int16", "uint16"] = "float32"
    word_order: Literal["ABCD", "CDAB"] | None = None  # default: the logger's
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    @property
    def count(self) -> int:
        return 1 if self.data_type in ("int16", "uint16") else 2


class ModbusCollect(_Model):
    """Direct polling over Modbus/TCP, or RTU frames through a serial server's TCP port."""

    method: Literal["modbus"]
    connection_id: ConnId
    transport: Literal["tcp", "rtu_over_tcp"] = "tcp"
    unit_id: int = Field(1, ge=0, le=247)
    word_order: Literal["ABCD", "CDAB"] = "CDAB"
    table: Name = "Modbus"
    poll_interval: str = "1min"
    timeout_s: float = Field(3, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    registers: list[ModbusRegister] = Field(min_length=1)

    @field_validator("poll_interval")
    @classmethod
    def _interval(cls, v: str) -> str:
        parse_interval_ms(v)
        return v

    @property
    def poll_interval_ms(self) -> int:
        return parse_interval_ms(self.poll_interval)


class FtpPullCollect(_Model):
    """Files fetched from a station's FTP server (SmartFlux, cameras)."""

    method: Literal["ftp_pull"]
    connection_id: ConnId
    remote_dir: str = "/"
    pattern: str = "*"
    table: Name | None = None  # landing sub-folder; default: from the file kind (ghg, jpg)
    settle_seconds: float = Field(60, ge=0)  # a remote file this recent may still be written


class FtpPushCollect(_Model):
    """Files the station pushes to our receiving FTP server (account from a Connection)."""

    method: Literal["ftp_push"]
    connection_id: ConnId
    table: Name | None = None


Collect = Annotated[
    LoggerNetCollect | ModbusCollect | FtpPullCollect | FtpPushCollect,
    Field(discriminator="method"),
]


class Relay(_Model):
    """The station's network relay that power-cycles a device (a hard reset)."""

    connection_id: ConnId  # host, port and credentials of the relay's HTTP interface
    url: str = Field(pattern=r"^/")  # path template: {channel}, {device}, {station}
    method: Literal["GET", "POST"] = "GET"
    channel: int = Field(1, ge=0, le=64)
    after_failures: int = Field(3, ge=1, le=100)  # consecutive failed checks before a reset
    wait_seconds: float = Field(60, ge=0, le=3600)  # the device's boot time


class Logger(_Model):
    id: Name
    kind: Literal["campbell", "smartflux", "camera"]
    model: str | None = None
    collect: Collect
    health_connection_id: ConnId | None = None  # TCP reachability check (host, port)
    relay: Relay | None = None


class EtcFile(_Model):
    """One file stream the station delivers to the ICOS ETC: (type, logger no., file no.)."""

    type: Literal["EC", "BM", "ST", "SAHEAT", "PHEN"]
    logger: Name  # id of a logger above
    table: Name | None = None  # logger table feeding it (Campbell)
    logger_number: int = Field(ge=1, le=99)
    file_number: int = Field(ge=1, le=99)
    extension: Literal["csv", "zip", "bin", "dat", "txt", "jpg"] = "csv"
    interval: str | None = None  # declared sampling interval, cross-checked with the data
    missing_value: float | None = None  # default: the inventory's
    layout: Literal["toa5", "etc"] = "toa5"  # keep the logger layout, or ICOS variable names
    columns: dict[str, str] | None = None  # etc layout: logger column -> ICOS variable name

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: str | None) -> str | None:
        if v is not None:
            parse_interval_ms(v)
        return v

    @property
    def interval_ms(self) -> int | None:
        return parse_interval_ms(self.interval) if self.interval else None

    @property
    def half_hourly(self) -> bool:
        return self.type in HALF_HOURLY_TYPES


class EtcUpload(_Model):
    """Where and when the station's files go to the ICOS ETC (REFERENCE section 1)."""

    connection_id: ConnId  # ICOS ETC endpoint; login = station id, password in the Connection
    daily_at: str = Field("00:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")  # local standard time
    deadline_hours: float = Field(6, gt=0, le=72)  # after a period ends: accepted by then


class Station(_Model):
    id: Annotated[str, Field(pattern=STATION_ID)]
    name: str | None = None
    icos_class: Literal[1, 2, 3, "associated"] | None = None
    utc_offset_hours: float = Field(ge=-12, le=14)  # fixed: local STANDARD time, no DST
    link_slots: int = Field(2, ge=1, le=16)  # transfers at once over the station's 4G link
    upload: EtcUpload
    loggers: list[Logger] = Field(min_length=1)
    files: list[EtcFile] = Field(min_length=1)

    @field_validator("utc_offset_hours")
    @classmethod
    def _quarter_hours(cls, v: float) -> float:
        if (v * 4) != int(v * 4):
            raise ValueError("a UTC offset is a whole number of quarter hours")
        return v

    @property
    def tz(self) -> timezone:
        """The station's fixed-offset standard time (no daylight saving, as ICOS asks)."""
        return timezone(timedelta(hours=self.utc_offset_hours), name=f"{self.id} LST")

    def logger(self, logger_id: str) -> Logger:
        return next(lg for lg in self.loggers if lg.id == logger_id)


# ------------------------------------------------------- Smart Emission record chain


class LinearModel(_Model):
    """An AirSensEUR gas model of the original: Rs = a0 + a1*C + a2*x [+ a3*y]."""

    a0: float
    a1: float
    a2: float
    a3: float | None = None

    @field_validator("a1")
    @classmethod
    def _slope(cls, v: float) -> float:
        if v == 0:
            raise ValueError("a1 must not be 0 (the model is solved for the concentration)")
        return v


class Device(_Model):
    id: int = Field(ge=0)
    type: Literal["josene", "ase"] = "josene"
    name: str | None = None
    # AirSensEUR: the box's linear gas models (co, no, no2, o3), fitted per box.
    calibration: dict[Literal["co", "no", "no2", "o3"], LinearModel] = Field(default_factory=dict)


class CalibrationSetup(_Model):
    """Josene gas calibration: ANNs trained against a reference station's hourly values."""

    # A CSV of hourly reference values (time, station, component, value, unit); a bare
    # file name is looked up in the package's reference data.
    reference: str = "reference-nijmegen.csv"
    devices: list[int] = Field(min_length=1)  # the sensors co-located with the station
    gases: list[Literal["co", "no2", "o3"]] = Field(default=["co", "no2", "o3"], min_length=1)
    training_days: int = Field(28, ge=1, le=3660)  # the window the weekly run trains on
    min_score: float = Field(0.5, le=1.0)  # held-out R^2 a model needs to be used


class _HarvestBase(_Model):
    connection_id: ConnId
    # Hours fetched again on every run, so late data is stored (the original lost it).
    lookback_hours: int = Field(48, ge=1, le=24 * 31)
    concurrency: int = Field(4, ge=1, le=32)  # devices fetched at once

    @property
    def harvester(self) -> str:
        """The name progress and raw rows are kept under."""
        return f"{self.kind}:{self.connection_id}"


class WhaleHarvest(_HarvestBase):
    kind: Literal["whale"]
    devices: Literal["all"] | list[int] = "all"


class InfluxHarvest(_HarvestBase):
    kind: Literal["influxdb"]
    database: str
    measurements: dict[str, int] = Field(min_length=1)  # measurement -> device id


Harvest = Annotated[WhaleHarvest | InfluxHarvest, Field(discriminator="kind")]


class PublishTarget(_Model):
    kind: Literal["sta", "sos"]
    connection_id: ConnId


class SensorNetwork(_Model):
    id: Name
    name: str | None = None
    harvest: list[Harvest] = Field(min_length=1)
    devices: list[Device] = Field(default_factory=list)
    indicators: list[Name] = Field(min_length=1)
    calibration: CalibrationSetup | None = None
    publish: list[PublishTarget] = Field(default_factory=list)


# ----------------------------------------------------------------------- inventory


class Alerts(_Model):
    """Who hears about a failed upload or a file missing at its deadline."""

    email: list[str] = Field(default_factory=list)  # recipients; empty: no mail
    smtp_connection_id: ConnId = "smtp_default"
    webhook_connection_id: ConnId | None = None  # a generic JSON webhook (chat, pager)


class Defaults(_Model):
    missing_value: float = -9999
    alerts: Alerts = Alerts()


class Inventory(_Model):
    version: Literal[1] = 1
    defaults: Defaults = Defaults()
    stations: list[Station] = Field(default_factory=list)
    sensor_networks: list[SensorNetwork] = Field(default_factory=list)

    def station(self, station_id: str) -> Station:
        for s in self.stations:
            if s.id == station_id:
                return s
        raise KeyError(f"no station {station_id!r} in the inventory")

    def network(self, network_id: str) -> SensorNetwork:
        for n in self.sensor_networks:
            if n.id == network_id:
                return n
        raise KeyError(f"no sensor network {network_id!r} in the inventory")

    def missing_value(self, f: EtcFile) -> float:
        return self.defaults.missing_value if f.missing_value is None else f.missing_value


# ------------------------------------------------------------------------ loading


@dataclass(frozen=True)
class Problem:
    path: str  # stations[0].files[1].file_number
    line: int | None
    message: str


class ConfigError(PermanentError, ValueError):
    """The inventory is wrong; ``problems`` lists every place, with line numbers."""

    title = "invalid station inventory"

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = [f"{source}:{p.line or '?'}: {p.path or '(top)'}: {p.message}" for p in problems]
        super().__init__(f"{self.title}\n" + "\n".join(lines))


def _locate(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[str, int | None]:
    """``loc`` as text (``stations[0].files[1].logger``) and its 1-based line in the YAML.

    Parts absent from the document are union tags pydantic adds (dropped) or, at the
    end, the missing key itself (kept, on its parent's line).
    """
    node, parts = root, []
    for i, part in enumerate(loc):
        nxt = None
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            nxt = node.value[part] if 0 <= part < len(node.value) else None
        if nxt is not None or i == len(loc) - 1:
            parts.append(part)
        if nxt is not None:
            node = nxt
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text, (node.start_mark.line + 1 if node is not None else None)


def _secret_problems(data: Any, loc: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    found = []
    if isinstance(data, dict):
        for k, v in data.items():
            if _SECRET_KEYS.search(str(k)):
                found.append(
                    ((*loc, k), "secrets live in Airflow Connections, never in stations.yaml")
                )
            found += _secret_problems(v, (*loc, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _secret_problems(v, (*loc, i))
    return found


def _duplicates(items: list[Any], key: str, loc: tuple[Any, ...], what: str):
    seen = Counter(getattr(x, key) for x in items)
    return [
        ((*loc, i, key), f"duplicate {what} {getattr(x, key)!r}")
        for i, x in enumerate(items)
        if seen[getattr(x, key)] > 1
    ]


def _cross_checks(inv: Inventory) -> list[tuple[tuple[Any, ...], str]]:
    """What one field cannot know: references and uniqueness across the inventory."""
    out = _duplicates(inv.stations, "id", ("stations",), "station id")
    out += _duplicates(inv.sensor_networks, "id", ("sensor_networks",), "network id")
    for si, st in enumerate(inv.stations):
        out += _duplicates(st.loggers, "id", ("stations", si, "loggers"), "logger id")
        logger_ids = {lg.id for lg in st.loggers}
        streams: Counter = Counter((f.type, f.logger_number, f.file_number) for f in st.files)
        for fi, f in enumerate(st.files):
            at = ("stations", si, "files", fi)
            if f.logger not in logger_ids:
                out.append(((*at, "logger"), f"no logger {f.logger!r} in this station"))
            if streams[(f.type, f.logger_number, f.file_number)] > 1:
                out.append((at, f"{f.type} L{f.logger_number:02d}_F{f.file_number:02d} twice"))
    for ni, net in enumerate(inv.sensor_networks):
        out += _network_checks(net, ("sensor_networks", ni))
    return out


def _network_checks(net: SensorNetwork, at: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], str]]:
    from stationflow.refine.records.converters import ASE_COEFFICIENTS
    from stationflow.refine.records.definitions import all_defs

    out = _duplicates(net.devices, "id", (*at, "devices"), "device id")
    defined = {i for d in all_defs().values() for i in d.indicators}
    for i, name in enumerate(net.indicators):
        if name not in defined:
            out.append(((*at, "indicators", i), f"no device type defines indicator {name!r}"))
    for di, dev in enumerate(net.devices):
        for gas, model in dev.calibration.items():
            if dev.type != "ase":
                out.append(
                    (
                        (*at, "devices", di, "calibration"),
                        "linear gas models are for AirSensEUR (type ase) devices",
                    )
                )
            elif "a3" in ASE_COEFFICIENTS[gas] and model.a3 is None:
                out.append(((*at, "devices", di, "calibration", gas), f"{gas} needs a3"))
    return out


def parse_inventory(text: str, source: str = "<stations.yaml>") -> Inventory:
    """Parse and validate inventory YAML text; raises ConfigError naming every problem."""
    try:
        data = yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - a safe loader (libyaml's)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
        what = " ".join(p for p in parts if p)
        raise ConfigError(source, [Problem("", line, f"not valid YAML: {what or exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", 1, "expected a mapping at the top level")])

    problems = _secret_problems(data)
    if not problems:
        try:
            inv = Inventory.model_validate(data)
        except ValidationError as exc:
            problems = [(tuple(e["loc"]), e["msg"]) for e in exc.errors()]
        else:
            problems = _cross_checks(inv)
            if not problems:
                return inv
    root = yaml.compose(text, Loader=yaml.SafeLoader)  # only now: the nodes know their lines
    raise ConfigError(source, [Problem(*_locate(root, loc), msg) for loc, msg in problems])


# libyaml when PyYAML has it: parsing a 100-station inventory drops from ~0.37 s to a tenth
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CACHE: dict[tuple[str, str], Inventory] = {}  # (path, sha256 of the text) -> inventory


def load_inventory(path: Path | str | None = None) -> Inventory:
    """Read the inventory from ``path`` (default: STATIONFLOW_CONFIG or config/stations.yaml).

    Parsed once per process and content (a task process parses its DAG file, then the task
    asks again); a changed file is parsed anew, whatever its timestamps say."""
    path = Path(path) if path else load_settings().config_path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", None, f"cannot read: {exc.strerror}")]) from exc
    key = (str(path), hashlib.sha256(text.encode()).hexdigest())
    if key not in _CACHE:
        _CACHE.clear()  # one inventory at a time is what a process uses
        _CACHE[key] = parse_inventory(text, str(path))
    return _CACHE[key]
