"""The Whale harvester's source: walks the raw-sensor API down to the hours of one device.

``/devices/{id}/timeseries`` -> days -> ``/timeseries/{day}`` -> hours ->
``/timeseries/{day}/{hour}``, keeping only the hours the orchestrator asked for (which have
all ended: the hour still being filled is never stored). An hour body that is not what the
API promises is handed back as ``Rejected`` with its bytes, so it is quarantined and the
walk goes on; a listing that cannot be read, or a peer that does not answer, ends this
device's walk with ``HarvestError`` (the orchestrator audits it; other devices go on).
``last_record`` reads ``/devices/{id}/last`` for the Last Values ETL (seed 001, 4.2.4).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from stationflow.collect.harvest import HarvestError
from stationflow.collect.http_get import Fetcher, FetchError
from stationflow.collect.influxdb import EPOCH, parse_time_ns
from stationflow.collect.raw_store import RawHour, Rejected, day_hour, hour_start
from stationflow.connections import verify_setting
from stationflow.formats import whale

if TYPE_CHECKING:
    from stationflow.refine.records.samples import RawRecord

DEFAULT_BASE_PATH = "/sensors/v1"


def _day_start(day: int) -> datetime:
    return hour_start(day, 1)


class WhaleSource:
    def __init__(
        self,
        *,
        url: str,
        connection_id: str,
        devices: Literal["all"] | Sequence[int] = "all",
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        verify: bool | str = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.harvester = f"whale:{connection_id}"
        self._devices = devices
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.fetcher = Fetcher(
            headers=headers,
            timeout=(min(5.0, timeout), timeout),
            retries=retries,
            backoff=backoff,
            verify=verify,
            secrets=(token,) if token else (),
        )

    @classmethod
    def from_connection(
        cls, conn: Any, *, connection_id: str, devices: Literal["all"] | Sequence[int] = "all"
    ) -> WhaleSource:
        """Host, port and scheme from the Connection, the bearer token in its password,
        ``extra``: base_path (default /sensors/v1), timeout, retries, verify (a CA bundle)."""
        extra = conn.extra_dejson or {}
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        port = f":{conn.port}" if conn.port else ""
        base = str(extra.get("base_path", DEFAULT_BASE_PATH)).rstrip("/")
        return cls(
            url=f"{scheme}://{conn.host}{port}{base}",
            connection_id=connection_id,
            devices=devices,
            token=conn.password or None,
            timeout=float(extra.get("timeout", 30.0)),
            retries=int(extra.get("retries", 3)),
            verify=verify_setting(extra.get("verify", True)),  # "false" is not a CA path
        )

    def _get(self, path: str) -> bytes:
        try:
            return self.fetcher.get(f"{self.url}{path}")
        except FetchError as exc:
            raise HarvestError(str(exc)) from None

    def devices(self) -> list[int]:
        if self._devices != "all":
            return list(self._devices)
        try:
            return whale.device_ids(self._get("/devices"), f"{self.url}/devices")
        except whale.WhaleFormatError as exc:
            raise HarvestError(str(exc)) from None

    def last_record(self, device_id: int, now: datetime | None = None) -> RawRecord | None:
        """The device's newest sample as a one-sample Josene record of the hour it fell in
        (the API knows "now"; ``now`` is for sources that do not); None when it has none
        (404). A body that is not one sample raises ``HarvestError`` naming the device."""
        from stationflow.refine.records.samples import RawRecord  # numpy: not for harvests

        path = f"/devices/{device_id}/last"
        try:
            body = self.fetcher.get(f"{self.url}{path}")
        except FetchError as exc:
            if exc.status == 404:
                return None
            raise HarvestError(f"device {device_id}: {exc}") from None
        try:
            sample, at = _last_sample(body, device_id, f"{self.url}{path}")
        except whale.WhaleFormatError as exc:
            raise HarvestError(f"device {device_id}: {exc}") from None
        day, hour = day_hour(at)
        doc = {"id": str(device_id), "timeseries": [sample]}
        return RawRecord(device_id, day, hour, doc, device_type="jose")

    def fetch_device(
        self, device_id: int, since: datetime, until: datetime
    ) -> Iterator[RawHour | Rejected]:
        """Hours starting in [since, until), oldest first."""
        base = f"/devices/{device_id}/timeseries"
        try:
            listed = whale.days(self._get(base), f"{self.url}{base}")
            for day in sorted(d for d in set(listed) if self._overlaps(d, since, until)):
                path = f"{base}/{day}"
                for hour in sorted(set(whale.hours(self._get(path), f"{self.url}{path}"))):
                    if since <= hour_start(day, hour) < until:
                        yield self._hour(device_id, day, hour)
        except whale.WhaleFormatError as exc:
            raise HarvestError(str(exc)) from None

    @staticmethod
    def _overlaps(day: int, since: datetime, until: datetime) -> bool:
        start = _day_start(day)
        return start < until and start + timedelta(days=1) > since

    def _hour(self, device_id: int, day: int, hour: int) -> RawHour | Rejected:
        path = f"/devices/{device_id}/timeseries/{day}/{hour}"
        url = f"{self.url}{path}"
        body = self._get(path)
        try:
            doc = whale.hour_doc(body, device_id, day, hour, url)
        except whale.WhaleFormatError as exc:
            return Rejected(self.harvester, device_id, day, hour, url, str(exc), body)
        return RawHour(
            device_id,
            day,
            hour,
            body,
            sample_count=doc.sample_count,
            harvester=self.harvester,
            device_type="jose",
            lon=doc.lon,
            lat=doc.lat,
        )


def _last_sample(body: bytes, device_id: int, what: str) -> tuple[dict[str, Any], datetime]:
    """``/last``: one sample object of this device with an RFC 3339 ``time`` (UTC)."""
    doc = whale.loads(body, what)
    if not isinstance(doc, dict):
        raise whale.WhaleFormatError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    if "id" in doc and not _same_id(doc["id"], device_id):
        raise whale.WhaleFormatError(f"{what}: field 'id' is {doc['id']!r}, expected {device_id}")
    try:
        ns = parse_time_ns(doc["time"]) if isinstance(doc.get("time"), str) else None
    except ValueError:
        ns = None
    if ns is None:
        raise whale.WhaleFormatError(f"{what}: field 'time' is not an RFC 3339 time")
    return doc, EPOCH + timedelta(microseconds=ns // 1000)


def _same_id(value: Any, device_id: int) -> bool:
    try:
        return int(value) == device_id
    except (TypeError, ValueError):
        return False
