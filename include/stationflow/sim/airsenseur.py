"""AirSensEUR boxes writing their samples into a real InfluxDB over its HTTP ``/write`` API.

An ASE box posts every sample of every sensor channel as its own point, into a
measurement named after the box (``ASE_NL_01``...). The fields are those of the AirSensEUR
host's InfluxDB persister (``SampleDataSerie``: name, channel, sampleRawVal,
sampleEvaluatedVal, boardTimeStamp, gpsTimestamp, latitude, longitude, altitude); ``name``,
the sensor, is a tag so each channel is its own series. The channels are those of the
2018 Dutch ASE deployment that Smart Emission refined (``airsenseurdefs.py``): Alphasense
COA4, NOB4, NO2B43F and OX_A431 (16-bit ADC counts), and the SHT31/BMP280 Tempe, Humid and
Press.

Values are deterministic: a function of the box, the channel and the sample time (a daily
cycle plus a hash-derived jitter), so a test can recompute what a point held; every 20th
minute a box has no GPS fix and reports 0/0 as ASE boxes do. A gas channel's ADC reading is
what the box's linear model (LINEAR_MODELS, the original's per-box parameters) gives for the
true concentration (``truth``) at the box's temperature and humidity, so refining with the
same model must give that concentration back.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests

from stationflow.collect.influxdb import quote_ident

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH_LINES = 5000


@dataclass(frozen=True)
class Channel:
    name: str
    number: int
    kind: str  # "gas" (ADC counts), "temperature", "humidity", "pressure"
    base: float  # typical value (a gas: its concentration in ug/m3)
    swing: float  # amplitude of the daily cycle
    gas: str | None = None  # co, no, no2, o3


CHANNELS: tuple[Channel, ...] = (
    Channel("COA4", 0, "gas", 380.0, 120.0, "co"),
    Channel("NOB4", 1, "gas", 14.0, 8.0, "no"),
    Channel("NO2B43F", 2, "gas", 30.0, 12.0, "no2"),
    Channel("OX_A431", 3, "gas", 48.0, -18.0, "o3"),
    Channel("Tempe", 4, "temperature", 14.0, 5.0),
    Channel("Humid", 5, "humidity", 72.0, 15.0),
    Channel("Press", 6, "pressure", 1012.0, 4.0),
)
# The boxes' linear gas models (as in config/stations.yaml, after the original's
# airsenseurparms): a gas channel reports the ADC reading Rs the model predicts for the
# true concentration, so a refiner using the same model gets that concentration back.
# Boxes without their own model use ASE_NL_01's.
LINEAR_MODELS: dict[str, dict[str, dict[str, float]]] = {
    "ASE_NL_01": {
        "co": {"a0": 3106.838, "a1": 0.2112824, "a2": 0.2448138},
        "no": {"a0": 2384.5561239, "a1": 0.4851297, "a2": -1.573699, "a3": 0.1028684},
        "no2": {"a0": 6141.5933846, "a1": -0.1479105, "a2": -0.1959212},
        "o3": {"a0": 6134.694, "a1": -0.2636486, "a2": -0.2597192, "a3": 0.1249437},
    },
    "ASE_NL_02": {
        "co": {"a0": 3123.947, "a1": 0.2330306, "a2": 0.1435263},
        "no": {"a0": 2381.920, "a1": 0.4505375, "a2": -1.038786, "a3": 0.08234221},
        "no2": {"a0": 6146.235, "a1": -0.1408712, "a2": -0.05854314},
        "o3": {"a0": 6139.573, "a1": -0.2221841, "a2": -0.2195846, "a3": -0.03732094},
    },
}
# Nijmegen, where Smart Emission ran; boxes are spread ~1 km apart from here.
BASE_POSITION = (5.8604, 51.8447, 12.0)  # lon, lat, altitude (m)


def ns_of(when: datetime) -> int:
    """Nanoseconds since the epoch, exact (no float on the way)."""
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return (when.astimezone(UTC) - EPOCH) // timedelta(microseconds=1) * 1000


def escape_key(text: str) -> str:
    """Line protocol measurement, tag key or tag value: comma, equals and space escaped."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def field_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _jitter(*key: object) -> float:
    """A deterministic value in [-1, 1) from the key."""
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def _level(measurement: str, ch: Channel, ns: int) -> float:
    """A channel's level at ``ns``: its daily cycle plus a small deterministic jitter."""
    day_phase = math.sin(2 * math.pi * ((ns // 1_000_000_000 % 86400) / 86400 - 0.375))
    return ch.base + ch.swing * day_phase + 0.05 * ch.swing * _jitter(measurement, ch.name, ns)


class AirSensEURSim:
    """ASE boxes (measurement -> device id) writing into ``database`` at ``url``."""

    def __init__(
        self,
        url: str,
        database: str,
        boxes: Mapping[str, int],
        *,
        username: str | None = None,
        password: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        channels: Sequence[Channel] = CHANNELS,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.boxes = dict(boxes)
        self.clock = clock
        self.channels = tuple(channels)
        self.timeout = timeout
        self._auth = (username, password or "") if username else None
        self._session = session or requests.Session()
        self.points_written = 0

    # -- what a box reports ---------------------------------------------------------------

    def position(self, measurement: str) -> tuple[float, float, float]:
        """Where the box stands (lon, lat, altitude): fixed per box, ~1 km apart."""
        i = sorted(self.boxes).index(measurement) if measurement in self.boxes else 0
        lon, lat, alt = BASE_POSITION
        return round(lon + 0.012 * i, 6), round(lat + 0.007 * i, 6), alt + i

    def sample(self, measurement: str, channel: Channel | str, when: datetime) -> dict[str, object]:
        """The tags and fields of one sample, as the box reports it at ``when``."""
        ch = channel if isinstance(channel, Channel) else self._channel(channel)
        ns = ns_of(when)
        seconds = ns // 1_000_000_000
        evaluated = _level(measurement, ch, ns)
        if ch.kind == "gas":
            raw = max(0, min(65535, round(self.gas_reading(measurement, ch, evaluated, when))))
            evaluated = float(raw)
        elif ch.kind == "temperature":  # SHT31: T = -45 + 175 * raw / 65535
            raw = round((evaluated + 45) * 65535 / 175)
            evaluated = round(-45 + 175 * raw / 65535, 4)
        elif ch.kind == "humidity":  # SHT31: RH = 100 * raw / 65535
            raw = round(evaluated * 65535 / 100)
            evaluated = round(100 * raw / 65535, 4)
        else:  # BMP280 compensated pressure in Pa, reported as hPa
            raw = round(evaluated * 100)
            evaluated = raw / 100
        lon, lat, alt = self.position(measurement)
        fix = (seconds // 60) % 20 != 0
        return {
            "name": ch.name,
            "channel": ch.number,
            "sampleRawVal": int(raw),
            "sampleEvaluatedVal": float(evaluated),
            # the shield's tick counter (seconds since its power-up, 16 bits)
            "boardTimeStamp": int((seconds - 1_500_000_000 + 977 * ch.number) % 65536),
            "gpsTimestamp": float(seconds) if fix else 0.0,
            "latitude": float(lat + 0.00002 * _jitter("lat", measurement, seconds)) if fix else 0.0,
            "longitude": float(lon + 0.00002 * _jitter("lon", measurement, seconds))
            if fix
            else 0.0,
            "altitude": float(alt) if fix else 0.0,
        }

    def truth(self, measurement: str, channel: str, when: datetime) -> float:
        """What a channel measures at ``when``: a gas's true concentration (ug/m3), or
        the value a meteo channel reports."""
        ch = self._channel(channel)
        if ch.kind != "gas":
            return float(self.sample(measurement, ch, when)["sampleEvaluatedVal"])
        return _level(measurement, ch, ns_of(when))

    def gas_reading(self, measurement: str, ch: Channel, c: float, when: datetime) -> float:
        """The raw reading Rs of the box's linear model for concentration ``c``."""
        a = LINEAR_MODELS.get(measurement, LINEAR_MODELS["ASE_NL_01"])[ch.gas or ""]
        t = self._meteo(measurement, "Tempe", when)
        if ch.gas == "co":
            return a["a0"] + a["a1"] * c + a["a2"] * self._meteo(measurement, "Humid", when)
        if ch.gas == "no":
            return a["a0"] + a["a1"] * c + a["a2"] * t + a["a3"] * t * t
        if ch.gas == "no2":
            return a["a0"] + a["a1"] * c + a["a2"] * t
        no2 = self.truth(measurement, "NO2B43F", when)
        return a["a0"] + a["a1"] * c + a["a2"] * no2 + a["a3"] * t

    def _meteo(self, measurement: str, name: str, when: datetime) -> float:
        return float(self.sample(measurement, name, when)["sampleEvaluatedVal"])

    def line(self, measurement: str, channel: Channel | str, when: datetime) -> str:
        """One point in line protocol, ``name`` as tag, the rest as typed fields."""
        s = self.sample(measurement, channel, when)
        name = s.pop("name")
        fields = ",".join(f"{escape_key(k)}={field_value(v)}" for k, v in s.items())
        return f"{escape_key(measurement)},name={escape_key(str(name))} {fields} {ns_of(when)}"

    # -- writing ----------------------------------------------------------------------------

    def ensure_database(self) -> None:
        """CREATE DATABASE (a no-op when it exists), as a POST: it changes the server."""
        q = f"CREATE DATABASE {quote_ident(self.database)}"
        r = self._session.post(
            f"{self.url}/query", data={"q": q}, auth=self._auth, timeout=self.timeout
        )
        if r.status_code != 200 or '"error"' in r.text:
            raise RuntimeError(f"CREATE DATABASE failed: HTTP {r.status_code} {r.text[:200]}")

    def write_hours(
        self,
        start: datetime,
        end: datetime,
        every: timedelta = timedelta(minutes=1),
        *,
        boxes: Iterable[str] | None = None,
    ) -> int:
        """Every box, every channel, one sample per ``every`` in [start, end); the count."""
        return self._write(self._lines(start, end, every, boxes))

    def write_late(
        self,
        start: datetime,
        end: datetime,
        *,
        every: timedelta = timedelta(minutes=1),
        offset: timedelta = timedelta(seconds=30),
        boxes: Iterable[str] | None = None,
    ) -> int:
        """Samples that reach the server late: between the regular ones (``offset`` after
        each ``every`` step), so they add to hours that may already be harvested."""
        return self._write(self._lines(start + offset, end, every, boxes))

    def write_point(self, measurement: str, when: datetime, channel: str = "NO2B43F") -> int:
        """One sample of one channel at an exact time (e.g. on an hour boundary)."""
        return self._write([self.line(measurement, channel, when)])

    def write_recent(self, hours: int = 2, every: timedelta = timedelta(minutes=1)) -> int:
        """The last ``hours`` whole hours by ``clock`` plus the current one so far."""
        now = self.clock().astimezone(UTC)
        top = now.replace(minute=0, second=0, microsecond=0)
        return self.write_hours(top - timedelta(hours=hours), now, every)

    def _channel(self, name: str) -> Channel:
        for ch in self.channels:
            if ch.name == name:
                return ch
        for ch in CHANNELS:
            if ch.name == name:
                return ch
        raise KeyError(f"no ASE channel {name!r}")

    def _lines(
        self, start: datetime, end: datetime, every: timedelta, boxes: Iterable[str] | None
    ) -> Iterable[str]:
        if every <= timedelta(0):
            raise ValueError("every must be positive")
        names = list(self.boxes) if boxes is None else list(boxes)
        for measurement in names:
            when = start
            while when < end:
                for ch in self.channels:
                    yield self.line(measurement, ch, when)
                when += every

    def _write(self, lines: Iterable[str]) -> int:
        count = 0
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= BATCH_LINES:
                count += self._post(batch)
                batch = []
        if batch:
            count += self._post(batch)
        self.points_written += count
        return count

    def _post(self, batch: list[str]) -> int:
        r = self._session.post(
            f"{self.url}/write",
            params={"db": self.database, "precision": "ns"},
            data="\n".join(batch).encode("utf-8"),
            auth=self._auth,
            timeout=self.timeout,
        )
        if r.status_code != 204:
            raise RuntimeError(f"/write failed: HTTP {r.status_code} {r.text[:200]}")
        return len(batch)
