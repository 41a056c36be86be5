"""The Smart Emission "Whale" raw-sensor HTTP API (REFERENCE section 3), on loopback.

``WhaleSim`` is a real HTTP server (a ``ThreadingHTTPServer`` in a thread) serving the
API's six GET endpoints under ``base_path`` (default ``/sensors/v1``), answering with
compact JSON shaped like the real samples shipped in ``sim/data/``:

* ``/devices``, ``/devices/{id}`` (metadata: ``whale-device.json`` with the id and urls),
  ``/devices/{id}/timeseries`` (the UTC days with data, oldest first),
  ``/devices/{id}/timeseries/{yyyymmdd}`` (the hours 1..24 with data; hour h covers
  (h-1):00-(h-1):59 UTC), ``/devices/{id}/timeseries/{yyyymmdd}/{h}`` (the samples),
  ``/devices/{id}/last`` (the newest sample, ``"id"`` a string as in the real API);
* every hour of every device is the real hour in ``whale-hour.json`` (198 samples of
  device 23) re-timed, given its own ``_id``s, serial number and GPS position (Josene
  nibble format) and values varied deterministically per (device, hour): the same
  (device, hour, clock) always gives the same bytes, and devices and hours differ;
* time is ``clock()``: history covers the hours from ``floor_hour(now - history_hours)``
  through the current hour, which is listed while it fills (samples with ``time > now``
  are not there yet - a harvester must skip or re-fetch it);
* late data: in every hour with ``(device + hours since epoch) % late_every == 0`` the last
  ``late_fraction`` of the samples only arrive at ``hour end + late_delay``, so an hour
  fetched soon after it ended changes later (the original harvester lost these);
* errors are JSON ``{"error": ...}``: 404 for an unknown device, a day or hour outside
  history or without samples, an unknown path; 400 for a malformed id, day or hour; 405
  for anything but GET/HEAD; 401 with ``WWW-Authenticate: Bearer`` when ``token`` is set
  and the request does not carry ``Authorization: Bearer <token>`` (checked first).

Simulator-only additions for tests: a flaky device (every ``flaky_every``-th request for
its paths answers 503), fault hooks (``fail_device``, ``bad_json``, ``wrong_shape``,
``override`` serves given bytes for one hour; transport faults: ``delay`` holds answers
past a client's timeout, ``cut_next`` closes the connection partway through an hour's body,
``pause_after`` holds every request after the next n hour documents until ``resume``;
``clear_faults``), ``hour_body`` (the bytes served now), a request log without
credentials, and ``set_clock``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import socket
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from itertools import chain
from typing import Any
from urllib.parse import unquote, urlsplit

from stationflow.sim.http_server import AnsweringHandler, LoopbackHttpServer

log = logging.getLogger("stationflow.sim.whale")

HOUR_SAMPLE = "whale-hour.json"  # device 23, 2016-01-08 hour 23 (22:00-22:59 UTC), compact
DEVICE_SAMPLE = "whale-device.json"  # device 23's metadata, compact
TEMPLATE_HOUR = datetime(2016, 1, 8, 22, tzinfo=UTC)  # start of the template's hour
JSON_TYPE = "application/json"

_COMPACT = (",", ":")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_HOUR = 3_600_000_000
_MICRO = timedelta(microseconds=1)
_TEMPLATE_HOUR_INDEX = int(TEMPLATE_HOUR.timestamp()) // 3600
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:(\d\d):(\d\d)(?:\.(\d+))?Z", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,9}", re.ASCII)
_DAY = re.compile(r"[0-9]{8}", re.ASCII)
# which device a request is for, and whether it asks for an hour document
_DEVICE_PATH = re.compile(r"/devices/([0-9]{1,9})(/timeseries/[^/]+/[^/]+/?)?(?:/.*)?\Z", re.ASCII)
# the fields a generated sample does not copy from its template sample
_TEMPERATURES = ("s_temperatureambient", "s_temperatureunit")
_SCALED = ("s_coresistance", "s_no2resistance", "s_o3resistance", "s_co2")
_VARIABLE = frozenset(
    {"_id", "id", "p_unitserialnumber", "s_longitude", "s_latitude", "time", "s_barometer"}
    | {"s_humidity", "s_secondofday", *_TEMPERATURES, *_SCALED}
)


class NotFound(LookupError):
    """What the API answers 404 for (unknown device, no such hour, no samples yet)."""


# ------------------------------------------------------------------ the template


class _Template:
    """The real hour and device metadata, pre-rendered so an hour costs ~1-2 ms.

    ``json.dumps`` of a whole hour takes ~6 ms; instead every template sample's compact
    JSON is kept as constant texts between the fields that vary, joined per hour."""

    def __init__(self, hour: dict[str, Any], device: dict[str, Any]):
        self.samples: list[dict[str, Any]] = hour["timeseries"]
        self.offsets_us: list[int] = []
        self.clock_suffixes: list[str] = []  # 'MM:SS.mmmZ"' after the hour's 'YYYY-MM-DDTHH:'
        for s in self.samples:
            m = _TIME.fullmatch(s["time"])
            if m is None or not s["time"].startswith(f"{TEMPLATE_HOUR:%Y-%m-%dT%H:}"):
                raise ValueError(f"unexpected template sample time {s['time']!r}")
            ms = round(float(f"0.{m[3] or 0}") * 1000)
            minute, second = int(m[1]), int(m[2])
            self.offsets_us.append(((minute * 60 + second) * 1000 + ms) * 1000)
            self.clock_suffixes.append(f'{minute:02d}:{second:02d}.{ms:03d}Z"')
        if self.offsets_us != sorted(self.offsets_us):
            raise ValueError("template samples are not in time order")
        self.layouts = [self._layout(s) for s in self.samples]
        self.outputs = device["outputs"]

    @staticmethod
    def _layout(sample: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], str]:
        """(constant texts, varying keys, closing text) of the sample's compact JSON: the
        JSON is ``texts[0] + value(keys[0]) + texts[1] + ... + value(keys[-1]) + closing``."""
        texts: list[str] = []
        keys: list[str] = []
        pending = "{"
        for i, (key, value) in enumerate(sample.items()):
            pending += ("," if i else "") + json.dumps(key) + ":"
            if key in _VARIABLE:
                texts.append(pending)
                keys.append(key)
                pending = ""
            else:
                pending += json.dumps(value, separators=_COMPACT)
        return tuple(texts), tuple(keys), pending + "}"


_TEMPLATE: _Template | None = None
_TEMPLATE_LOCK = threading.Lock()


def _template() -> _Template:
    global _TEMPLATE
    with _TEMPLATE_LOCK:
        if _TEMPLATE is None:
            data = resources.files("stationflow.sim").joinpath("data")
            hour = json.loads(data.joinpath(HOUR_SAMPLE).read_bytes())
            device = json.loads(data.joinpath(DEVICE_SAMPLE).read_bytes())
            _TEMPLATE = _Template(hour, device)
        return _TEMPLATE


def template_samples() -> list[dict[str, Any]]:
    """Copies of the 198 real samples every simulated hour is made from."""
    return [dict(s) for s in _template().samples]


# ------------------------------------------------------------------ per-device values


def josene_coordinate(degrees: float) -> int:
    """The Josene GPS encoding: sign nibble (8: West/South) << 28 | whole degrees << 20 |
    millionths of a degree (5.671223 -> 0x005A3DF7)."""
    micro = round(abs(degrees) * 1_000_000)
    whole, fraction = divmod(micro, 1_000_000)
    if whole > 0xFF:
        raise ValueError(f"{degrees}: more degrees than the format holds")
    return (0x8 << 28 if degrees < 0 else 0) | whole << 20 | fraction


def _unit(salt: str, *numbers: int) -> float:
    """A deterministic pseudo-random number in [-1, 1) (Python's hash() is salted)."""
    key = ":".join([salt, *map(str, numbers)]).encode()
    raw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return raw / 2**63 - 1


@lru_cache(maxsize=4096)
def device_position(device: int) -> tuple[float, float]:
    """(lon, lat) of the device: near Nijmegen (5.80-5.90 E, 51.80-51.90 N), 1e-6 steps."""
    lon = 5_800_000 + round((_unit("lon", device) + 1) * 49_999)
    lat = 51_800_000 + round((_unit("lat", device) + 1) * 49_999)
    return lon / 1_000_000, lat / 1_000_000


@lru_cache(maxsize=4096)
def _device_constants(device: int) -> dict[str, Any]:
    lon, lat = device_position(device)
    return {
        "fixed": {
            "id": str(device),
            "p_unitserialnumber": str(device),
            "s_longitude": str(josene_coordinate(lon)),
            "s_latitude": str(josene_coordinate(lat)),
        },
        "temperature_mk": 3000 * _unit("temperature", device),  # a device's spot: +-3 K
        "humidity": 5000 * _unit("humidity", device),
        "barometer_pa": 150 * _unit("barometer", device),
    }


@dataclass(frozen=True)
class _Rendered:
    """All samples of one device-hour: compact JSON joined by commas; ``ends[i]`` is the
    offset just past sample i, so the first n samples are ``blob[:ends[n-1]]``."""

    blob: bytes
    ends: tuple[int, ...]

    def sample(self, i: int) -> bytes:
        return self.blob[(self.ends[i - 1] + 1 if i else 0) : self.ends[i]]


def _render_hour(device: int, hour_index: int) -> _Rendered:
    """Every template sample moved to the hour, with this device's identity and values."""
    tpl = _template()
    dc = _device_constants(device)
    start_s = hour_index * 3600
    prefix = f'"{datetime.fromtimestamp(start_s, UTC):%Y-%m-%dT%H:}'
    # weather: a slow pressure swing (77 h period) and a daily temperature cycle
    baro = dc["barometer_pa"] + 250 * math.sin(2 * math.pi * hour_index / 77)
    factors = {k: 1 + 0.2 * _unit(k, device, hour_index) for k in _SCALED}
    sod_shift = (hour_index - _TEMPLATE_HOUR_INDEX) % 24 * 3600
    dev_t, dev_h = dc["temperature_mk"], dc["humidity"]
    fixed = dc["fixed"]
    texts = []
    ends = []
    end = -1
    for i, (consts, keys, closing) in enumerate(tpl.layouts):
        s = tpl.samples[i]
        at_ms = start_s * 1000 + tpl.offsets_us[i] // 1000
        day_phase = 2 * math.pi * ((at_ms / 3_600_000) % 24 - 14) / 24  # warmest 14:00 UTC
        cycle = math.cos(day_phase)
        digest = hashlib.blake2b(b"%d:%d" % (device, at_ms), digest_size=8).hexdigest()
        values = dict(fixed)
        values["_id"] = f'"{at_ms // 1000:08x}{digest}"'  # an ObjectId: seconds + 8 bytes
        values["time"] = prefix + tpl.clock_suffixes[i]
        delta_t = dev_t + 4000 * cycle
        for k in _TEMPERATURES:
            if k in s:
                values[k] = str(round(s[k] + delta_t))
        if "s_humidity" in s:
            humidity = round(s["s_humidity"] + dev_h - 8000 * cycle)
            values["s_humidity"] = str(min(100_000, max(20_000, humidity)))
        if "s_barometer" in s:
            values["s_barometer"] = str(round(s["s_barometer"] + baro))
        for k in _SCALED:
            if k in s:
                values[k] = str(round(s[k] * factors[k]))
        if "s_secondofday" in s:
            values["s_secondofday"] = str((s["s_secondofday"] + sod_shift) % 86400)
        fields = map(values.__getitem__, keys)
        text = "".join(chain.from_iterable(zip(consts, fields, strict=True))) + closing
        texts.append(text)
        end += len(text) + 1
        ends.append(end)
    return _Rendered(",".join(texts).encode("ascii"), tuple(ends))


# ------------------------------------------------------------------ hour arithmetic


def _hour_index(t: datetime) -> int:
    """Hours since the epoch of the hour holding ``t`` (an aware datetime)."""
    return (t - _EPOCH) // timedelta(hours=1)


def _day_int(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


def _day_of(hour_index: int) -> date:
    return (_EPOCH + timedelta(hours=hour_index)).date()


def _parse_day(text: str) -> date | None:
    if not _DAY.fullmatch(text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _error(message: str) -> bytes:
    return json.dumps({"error": message}, separators=_COMPACT).encode()


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ the server


class WhaleSim(LoopbackHttpServer):
    """The Whale raw-sensor API for ``devices`` in a thread. ``port=0``: a free port.

    ``clock``: aware datetimes, the API's "now" (injectable so tests can move time).
    ``cache_hours``: rendered device-hours kept (LRU; ~330 KB each, so the default that
    holds 100 devices x 24 hours takes ~800 MB when full); 0 renders every request."""

    def __init__(
        self,
        devices: Sequence[int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        history_hours: int = 72,
        base_path: str = "/sensors/v1",
        late_every: int = 5,
        late_fraction: float = 0.2,
        late_delay: timedelta = timedelta(minutes=90),
        flaky_device: int | None = None,
        flaky_every: int = 3,
        cache_hours: int = 2400,
    ):
        if any(d < 0 for d in devices):
            raise ValueError("device ids are not negative")
        if history_hours < 0 or late_every < 0 or flaky_every < 1 or cache_hours < 0:
            raise ValueError("history_hours, late_every, cache_hours >= 0; flaky_every >= 1")
        if not 0 <= late_fraction <= 1:
            raise ValueError(f"late_fraction={late_fraction}: a fraction, 0..1")
        self.host = host
        self._port = port
        self.devices = tuple(dict.fromkeys(int(d) for d in devices))
        self._known = frozenset(self.devices)
        self._token = token
        self._clock = clock
        self.history_hours = history_hours
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.late_every = late_every
        self.late_delay = late_delay
        self.flaky_device = flaky_device
        self.flaky_every = flaky_every
        n = len(_template().samples)
        self.samples_per_hour = n
        self.late_samples = round(n * late_fraction) if late_every else 0
        self._late_delay_us = late_delay // _MICRO
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple[int, int], _Rendered] = OrderedDict()
        self._cache_hours = cache_hours
        self._requests: list[dict[str, Any]] = []
        self._device_requests: dict[int, int] = {}
        self._failing: dict[int, list[int]] = {}  # device -> [status, times left or -1]
        # (device, day, hour) -> [kind, times left or -1, body (override)]
        self._body_faults: dict[tuple[int, int, int], list[Any]] = {}
        self._delays: list[list[Any]] = []  # [seconds, device or None, skip, times or -1]
        self._cuts: list[list[Any]] = []  # [device or None, fraction kept, times left]
        self._pause_left: int | None = None  # hour documents still served before pausing
        self._resumed = threading.Event()
        self._resumed.set()
        self._paused = threading.Event()  # set once a request waits in the pause
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle, clock

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base_path}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    def set_clock(self, clock: Callable[[], datetime]) -> None:
        with self._lock:
            self._clock = clock

    def _now_us(self) -> int:
        with self._lock:
            now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must give aware datetimes (UTC)")
        return (now - _EPOCH) // _MICRO

    # ------------------------------------------------------------ faults, log

    def fail_device(self, device: int, status: int = 500, times: int | None = None) -> None:
        """Every request for the device's paths answers ``status`` (a JSON error) until
        ``clear_faults()``, or only the next ``times`` ones."""
        if not 400 <= status <= 599:
            raise ValueError(f"not an HTTP error status: {status}")
        with self._lock:
            self._failing[device] = [status, -1 if times is None else times]

    def bad_json(self, device: int, day: int, hour: int, times: int | None = None) -> None:
        """That hour answers 200 with its body cut in half (invalid JSON)."""
        self._body_fault(device, day, hour, "bad_json", times)

    def wrong_shape(self, device: int, day: int, hour: int, times: int | None = None) -> None:
        """That hour answers 200 with valid JSON whose ``timeseries`` is a string."""
        self._body_fault(device, day, hour, "wrong_shape", times)

    def override(
        self, device: int, day: int, hour: int, body: bytes, times: int | None = None
    ) -> None:
        """That hour answers 200 with exactly ``body`` (any bytes: a peer gone wrong), while
        the hour has samples (else 404, as always); listings are unchanged."""
        self._body_fault(device, day, hour, "override", times, bytes(body))

    def _body_fault(
        self, device: int, day: int, hour: int, kind: str, times: int | None, body: bytes = b""
    ) -> None:
        with self._lock:
            self._body_faults[(device, day, hour)] = [kind, -1 if times is None else times, body]

    def delay(
        self,
        seconds: float,
        *,
        device: int | None = None,
        skip: int = 0,
        times: int | None = None,
    ) -> None:
        """Hold answers ``seconds`` before sending them (a slow or hung peer): the requests
        for ``device``'s paths (or every request), after the first ``skip`` of them, the
        next ``times`` ones (or all until ``clear_faults()``). A client whose read timeout
        is shorter gives up; the answer then goes to a closed connection."""
        if seconds < 0 or skip < 0 or (times is not None and times < 1):
            raise ValueError("seconds and skip >= 0, times >= 1")
        with self._lock:
            self._delays.append([seconds, device, skip, -1 if times is None else times])

    def cut_next(self, n: int = 1, *, device: int | None = None, keep: float = 0.5) -> None:
        """The next ``n`` hour documents (of ``device``, or any) are sent with their full
        ``Content-Length`` but only the first ``keep`` of the body, then the server closes
        the connection: dropped mid-transfer."""
        if n < 1 or not 0 <= keep < 1:
            raise ValueError("n >= 1 and 0 <= keep < 1")
        with self._lock:
            self._cuts.append([device, keep, n])

    def pause_after(self, n: int) -> None:
        """Serve ``n`` more hour documents, then hold every request (unanswered) until
        ``resume()``: a harvest frozen at a known point of its walk. ``wait_paused()``
        says when a request is being held."""
        if n < 0:
            raise ValueError("n >= 0")
        with self._lock:
            self._pause_left = n
            self._paused.clear()
            self._resumed.clear()

    def wait_paused(self, timeout: float | None = None) -> bool:
        """True once a request is held by ``pause_after`` (False after ``timeout``)."""
        return self._paused.wait(timeout)

    def resume(self) -> None:
        """Let the held requests (and all later ones) through."""
        with self._lock:
            self._pause_left = None
            self._resumed.set()

    def clear_faults(self) -> None:
        with self._lock:
            self._failing.clear()
            self._body_faults.clear()
            self._delays.clear()
            self._cuts.clear()
        self.resume()

    def stop(self) -> None:
        self.resume()  # held handler threads end
        super().stop()

    # ------------------------------------------------------------ transport faults

    @staticmethod
    def _target(path: str) -> tuple[int | None, bool]:
        """(device, is an hour document) of a request path."""
        m = _DEVICE_PATH.search(urlsplit(path).path)
        if m is None:
            return None, False
        return int(m[1]), m[2] is not None

    def _hold_for(self, device: int | None) -> float:
        """Seconds to hold this request (``delay``); counts it."""
        with self._lock:
            for d in self._delays:
                seconds, wanted, skip, times = d
                if wanted is not None and wanted != device:
                    continue
                if skip > 0:
                    d[2] -= 1
                    continue
                if times > 0:
                    d[3] -= 1
                    if d[3] == 0:
                        self._delays.remove(d)
                return seconds
        return 0.0

    def _wait_if_paused(self, is_hour: bool) -> None:
        with self._lock:
            left = self._pause_left
            if left is None:
                return
            if left > 0:
                if is_hour:
                    self._pause_left = left - 1
                return
            self._paused.set()
        self._resumed.wait()

    def _cut_for(self, device: int | None) -> float | None:
        """The fraction of this hour document to send before closing (``cut_next``)."""
        with self._lock:
            for c in self._cuts:
                if c[0] is None or c[0] == device:
                    c[2] -= 1
                    if c[2] == 0:
                        self._cuts.remove(c)
                    return c[1]
        return None

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request: method, path, status, at (the clock's time); no credentials."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------ the data

    def is_late_hour(self, device: int, hour_start: datetime) -> bool:
        """Whether the last ``late_fraction`` of this device-hour arrives late."""
        return bool(self.late_samples) and (device + _hour_index(hour_start)) % self.late_every == 0

    def _first_hour(self, now_us: int) -> int:
        return (now_us - self.history_hours * _US_PER_HOUR) // _US_PER_HOUR

    def _visible(self, device: int, hour_index: int, now_us: int) -> int:
        """How many of the hour's samples have arrived at ``now_us``."""
        if not self._first_hour(now_us) <= hour_index <= now_us // _US_PER_HOUR:
            return 0
        start_us = hour_index * _US_PER_HOUR
        n = bisect_right(_template().offsets_us, now_us - start_us)
        arrival = start_us + _US_PER_HOUR + self._late_delay_us
        if now_us < arrival and (device + hour_index) % max(self.late_every, 1) == 0:
            n = min(n, self.samples_per_hour - self.late_samples)
        return n

    def visible_count(self, device: int, day: int, hour: int) -> int:
        """How many samples ``/timeseries/{day}/{hour}`` holds now (0: it answers 404)."""
        parsed = _parse_day(f"{day:08d}")
        if device not in self._known or parsed is None or not 1 <= hour <= 24:
            return 0
        index = _hour_index(datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC))
        return self._visible(device, index + hour - 1, self._now_us())

    def _rendered(self, device: int, hour_index: int) -> _Rendered:
        key = (device, hour_index)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        rendered = _render_hour(device, hour_index)  # outside the lock: other threads go on
        with self._lock:
            if self._cache_hours:
                self._cache[key] = rendered
                while len(self._cache) > self._cache_hours:
                    self._cache.popitem(last=False)
        return rendered

    def _hour_doc(self, device: int, day: date, hour: int, count: int) -> bytes:
        head = b'{"id":"%d","date":"%s","hour":%d,"timeseries":' % (
            device,
            day.isoformat().encode(),
            hour,
        )
        rendered = self._rendered(device, _hour_index(_day_start(day)) + hour - 1)
        return head + b"[" + rendered.blob[: rendered.ends[count - 1]] + b"]}"

    def _faulted(self, device: int, day: date, hour: int, body: bytes, consume: bool) -> bytes:
        key = (device, _day_int(day), hour)
        with self._lock:
            fault = self._body_faults.get(key)
            if fault is None:
                return body
            if consume and fault[1] > 0:
                fault[1] -= 1
                if fault[1] == 0:
                    del self._body_faults[key]
        if fault[0] == "override":
            return fault[2]
        if fault[0] == "bad_json":
            return body[: len(body) // 2]
        doc = {"id": str(device), "date": day.isoformat(), "hour": hour}
        doc["timeseries"] = "timeseries temporarily unavailable"
        return json.dumps(doc, separators=_COMPACT).encode()

    def hour_body(self, device: int, day: int, hour: int) -> bytes:
        """The exact bytes ``GET .../timeseries/{day}/{hour}`` answers now with 200
        (``bad_json``/``wrong_shape``/``override`` included); NotFound where it answers 404."""
        parsed = _parse_day(f"{day:08d}")
        count = self.visible_count(device, day, hour)
        if parsed is None or count == 0:
            raise NotFound(f"device {device} has no samples in {day} hour {hour}")
        body = self._hour_doc(device, parsed, hour, count)
        return self._faulted(device, parsed, hour, body, consume=False)

    # ------------------------------------------------------------ endpoints

    def _json(self, doc: Any) -> _Answer:
        return _Answer(200, json.dumps(doc, separators=_COMPACT).encode())

    def _device_url(self, device: int) -> str:
        return f"{self.base_path}/devices/{device}"

    def _metadata(self, device: int) -> _Answer:
        url = self._device_url(device)
        doc = {
            "id": str(device),
            "timeseries": f"{url}/timeseries",
            "last": f"{url}/last",
            "outputs": _template().outputs,
        }
        return self._json(doc)

    def _hours_with_data(self, device: int, day: date, now_us: int) -> list[int]:
        first = _hour_index(_day_start(day))
        return [h for h in range(1, 25) if self._visible(device, first + h - 1, now_us)]

    def _days(self, device: int, now_us: int) -> _Answer:
        day = _day_of(self._first_hour(now_us))
        today = _day_of(now_us // _US_PER_HOUR)
        days = []
        while day <= today:
            if self._hours_with_data(device, day, now_us):
                days.append(f"{self._device_url(device)}/timeseries/{day:%Y%m%d}")
            day += timedelta(days=1)
        return self._json({"id": str(device), "days": days})

    def _hours(self, device: int, day: date, now_us: int) -> _Answer:
        hours = self._hours_with_data(device, day, now_us)
        if not hours:
            return _Answer(404, _error(f"no data for device {device} on {day:%Y%m%d}"))
        return self._json({"id": str(device), "date": day.isoformat(), "hours": hours})

    def _hour(self, device: int, day: date, hour: int, now_us: int, consume: bool) -> _Answer:
        count = self._visible(device, _hour_index(_day_start(day)) + hour - 1, now_us)
        if not count:
            msg = f"no data for device {device} on {day:%Y%m%d} hour {hour}"
            return _Answer(404, _error(msg))
        body = self._hour_doc(device, day, hour, count)
        return _Answer(200, self._faulted(device, day, hour, body, consume))

    def _last(self, device: int, now_us: int) -> _Answer:
        index = now_us // _US_PER_HOUR
        while index >= self._first_hour(now_us):
            count = self._visible(device, index, now_us)
            if count:
                sample = json.loads(self._rendered(device, index).sample(count - 1))
                doc = {"id": str(device)}
                doc.update((k, v) for k, v in sample.items() if k not in ("_id", "id"))
                return self._json(doc)
            index -= 1
        return _Answer(404, _error(f"no data for device {device}"))

    def _device_fault(self, device: int) -> _Answer | None:
        """Counts the request; a ``fail_device`` status, or the flaky device's 503."""
        with self._lock:
            count = self._device_requests.get(device, 0) + 1
            self._device_requests[device] = count
            failing = self._failing.get(device)
            if failing is not None:
                status = failing[0]
                if failing[1] > 0:
                    failing[1] -= 1
                    if failing[1] == 0:
                        del self._failing[device]
                return _Answer(status, _error(f"simulated failure of device {device}"))
        if device == self.flaky_device and count % self.flaky_every == 0:
            return _Answer(503, _error("service temporarily unavailable"))
        return None

    def _route(self, method: str, path: str, now_us: int) -> _Answer:
        base = self.base_path
        if path != base and not path.startswith(base + "/"):
            return _Answer(404, _error("not found"))
        segments = [unquote(s) for s in path[len(base) :].strip("/").split("/")]
        if segments == ["devices"]:
            return self._json({"devices": [self._device_url(d) for d in self.devices]})
        if len(segments) < 2 or segments[0] != "devices":
            return _Answer(404, _error("not found"))
        if not _DIGITS.fullmatch(segments[1]):
            return _Answer(400, _error(f"malformed device id {segments[1]!r}"))
        device = int(segments[1])
        if device not in self._known:
            return _Answer(404, _error(f"unknown device {device}"))
        fault = self._device_fault(device)
        if fault is not None:
            return fault
        rest = segments[2:]
        if not rest:
            return self._metadata(device)
        if rest == ["last"]:
            return self._last(device, now_us)
        if rest[0] != "timeseries" or len(rest) > 3:
            return _Answer(404, _error("not found"))
        if len(rest) == 1:
            return self._days(device, now_us)
        day = _parse_day(rest[1])
        if day is None:
            return _Answer(400, _error(f"malformed day {rest[1]!r}, expected yyyymmdd"))
        if len(rest) == 2:
            return self._hours(device, day, now_us)
        if not _DIGITS.fullmatch(rest[2]):
            return _Answer(400, _error(f"malformed hour {rest[2]!r}, expected 1..24"))
        hour = int(rest[2])
        if not 1 <= hour <= 24:
            return _Answer(404, _error(f"hour {hour} is outside 1..24"))
        return self._hour(device, day, hour, now_us, consume=method == "GET")

    def _authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self._token.encode())

    def _handle(self, method: str, raw_path: str, auth: str | None) -> _Answer:
        path = urlsplit(raw_path).path
        now_us = self._now_us()
        if not self._authorized(auth):
            answer = _Answer(
                401, _error("missing or invalid bearer token"), {"WWW-Authenticate": "Bearer"}
            )
        elif method not in ("GET", "HEAD"):
            answer = _Answer(405, _error(f"method {method} not allowed"), {"Allow": "GET, HEAD"})
        else:
            answer = self._route(method, path, now_us)
        at = _EPOCH + timedelta(microseconds=now_us)
        with self._lock:
            self._requests.append(
                {"method": method, "path": path, "status": answer.status, "at": at}
            )
        log.debug("%s %s -> %d", method, path, answer.status)
        return answer


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _handler(sim: WhaleSim) -> type[BaseHTTPRequestHandler]:
    class Handler(AnsweringHandler):
        server_version = "WhaleSim/1"
        protocol_version = "HTTP/1.1"

        def _answer(self, method: str) -> None:
            try:  # a body (POST, PUT) is read and dropped, so the connection stays usable
                length = int(self.headers.get("Content-Length") or 0)
                if length > 0:
                    self.rfile.read(length)
            except (ValueError, OSError):
                self.close_connection = True
                return
            device, is_hour = sim._target(self.path)
            hold = sim._hold_for(device)
            if hold:
                time.sleep(hold)
            sim._wait_if_paused(is_hour)
            answer = sim._handle(method, self.path, self.headers.get("Authorization"))
            headers = {**answer.headers, "Content-Type": JSON_TYPE}
            keep = None
            if is_hour and method == "GET" and answer.status == 200:
                keep = sim._cut_for(device)
            try:
                if keep is None:
                    self.reply(method, answer.status, headers, answer.body)
                else:
                    self._reply_cut(answer.status, headers, answer.body, keep)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

        def _reply_cut(self, status: int, headers: dict[str, str], body: bytes, keep: float):
            """Headers promising the whole body, part of it, then the connection closes."""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: int(len(body) * keep)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


__all__ = [
    "TEMPLATE_HOUR",
    "NotFound",
    "WhaleSim",
    "device_position",
    "josene_coordinate",
    "template_samples",
]
