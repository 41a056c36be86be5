"""The Whale raw-sensor API's JSON documents (REFERENCE section 3), checked for shape only.

An hour document is stored byte for byte; here it is only read enough to know it can be
(it is JSON, it is the hour and device that was asked for, its samples are objects) and to
count its samples and place the device. Whether a sample's values make sense is the
refiner's call, not the harvester's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson


class WhaleFormatError(ValueError):
    """A document that is not what the API promises; the message names the field."""


@dataclass(frozen=True)
class HourDoc:
    sample_count: int
    lon: float | None
    lat: float | None


def decode_gps(value: Any) -> float | None:
    """Josene nibble coordinate (seed 001, 4.3.3): n1 sign (8 = W/S), n2-n3 whole degrees,
    n4-n8 the fraction in millionths. 0 (no fix) or anything out of range: None."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    sign = -1.0 if value >> 28 else 1.0
    degrees = (value >> 20) & 0xFF
    fraction = value & 0xFFFFF
    if degrees > 180 or fraction > 999_999 or (value >> 28) not in (0, 8):
        return None
    return sign * (degrees + fraction / 1_000_000)


def loads(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WhaleFormatError(f"{what}: not JSON ({exc})") from None


def _obj(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise WhaleFormatError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _list(doc: dict[str, Any], key: str, what: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        got = "missing" if key not in doc else type(value).__name__
        raise WhaleFormatError(f"{what}: field {key!r} must be a list ({got})")
    return value


def _last_segment_int(url: Any, key: str, what: str, i: int) -> int:
    try:
        return int(str(url).rstrip("/").rsplit("/", 1)[-1])
    except ValueError:
        raise WhaleFormatError(f"{what}: {key}[{i}] = {url!r} does not end in a number") from None


def device_ids(body: bytes, what: str = "/devices") -> list[int]:
    """``{"devices": ["/sensors/v1/devices/23", ...]}`` -> [23, ...]."""
    items = _list(_obj(loads(body, what), what), "devices", what)
    return [_last_segment_int(u, "devices", what, i) for i, u in enumerate(items)]


def days(body: bytes, what: str) -> list[int]:
    """``{"days": [".../timeseries/20160108", ...]}`` -> [20160108, ...]."""
    items = _list(_obj(loads(body, what), what), "days", what)
    out = [_last_segment_int(u, "days", what, i) for i, u in enumerate(items)]
    for i, d in enumerate(out):
        if not 19700101 <= d <= 29991231:
            raise WhaleFormatError(f"{what}: days[{i}] = {d} is not a yyyymmdd date")
    return out


def hours(body: bytes, what: str) -> list[int]:
    """``{"hours": [20, 21, ...]}`` -> hours 1..24."""
    items = _list(_obj(loads(body, what), what), "hours", what)
    for i, h in enumerate(items):
        if not isinstance(h, int) or isinstance(h, bool) or not 1 <= h <= 24:
            raise WhaleFormatError(f"{what}: hours[{i}] = {h!r} is not an hour 1..24")
    return items


def _same_id(value: Any, device_id: int) -> bool:
    try:
        return int(value) == device_id
    except (TypeError, ValueError):
        return False


def hour_doc(body: bytes, device_id: int, day: int, hour: int, what: str) -> HourDoc:
    """Check an hour document (``/timeseries/{day}/{hour}``) and summarise it."""
    doc = _obj(loads(body, what), what)
    if "id" in doc and not _same_id(doc["id"], device_id):
        raise WhaleFormatError(f"{what}: field 'id' is {doc['id']!r}, expected {device_id}")
    if "hour" in doc and doc["hour"] != hour:
        raise WhaleFormatError(f"{what}: field 'hour' is {doc['hour']!r}, expected {hour}")
    if "date" in doc:
        digits = str(doc["date"]).replace("-", "").replace("/", "")
        if digits != str(day):
            raise WhaleFormatError(f"{what}: field 'date' is {doc['date']!r}, expected {day}")
    samples = _list(doc, "timeseries", what)
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise WhaleFormatError(
                f"{what}: timeseries[{i}] must be an object ({type(s).__name__})"
            )
    lon, lat = position(samples)
    return HourDoc(len(samples), lon, lat)


def position(samples: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """The median of the hour's GPS fixes (a fix: both coordinates decode)."""
    lons, lats = [], []
    for s in samples:
        lon, lat = decode_gps(s.get("s_longitude")), decode_gps(s.get("s_latitude"))
        if lon is not None and lat is not None:
            lons.append(lon)
            lats.append(lat)
    if not lons:
        return None, None
    return statistics.median(lons), statistics.median(lats)
