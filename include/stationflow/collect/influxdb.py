"""InfluxDB harvester source: AirSensEUR (ASE) device-hours over the InfluxQL HTTP API.

ASE boxes write their samples into one InfluxDB measurement per box (seed 001, 4.2.3). This
source reads a measurement hour by hour and hands back one ``RawHour`` per device-hour that
has points, for ``raw_store.write_batch``; batching, progress and isolating a failing
device are the orchestrator's.

What follows the original ``HarvesterInfluxDbInput`` (smartemission/docker-se-stetl,
``smartem/harvester/harvestinfluxdb.py``): one record per device-hour, only for hours that
have points and have ended; a ``meas_name_to_device_id`` mapping from measurement to device
id; the query ``SELECT * FROM <measurement> WHERE time >= .. AND time < ..``; RFC3339 time
strings (its InfluxDB client's default); device_type ``ase``; and a JSON blob of
``{"id", "date", "hour", <the points unaltered>}``. What differs, and why:

* The points are kept as the InfluxDB series they came in (``columns`` + ``values``) rather
  than a list of dicts: that is the server's own shape, compact (no key per value) and
  still self-describing; ``measurement`` is added so a record names its source.
* The bytes are made deterministic, so ``content_hash`` only moves when the points do
  (late data is then re-stored, which the original never did): compact JSON; ``time``
  first and the other columns sorted by name, dropping a column only when it is null in
  every row of the hour (InfluxDB nulls mean "no such field", and which columns a response
  carries depends on the other hours in the same query); rows sorted by time (to the
  nanosecond), then by content. Values are never changed.
* One query per UTC day (not per hour), so a long backlog costs a few requests without
  building one huge response; a response InfluxDB marks ``partial`` is split and asked
  again, never stored cut short.
* ``epoch`` is not sent, so times come back as RFC3339 strings: unlike ``epoch=ms`` they
  keep InfluxDB's nanosecond precision (two samples in the same millisecond stay distinct),
  they read as times in the stored record, and they are what the original stored.

Document layout (one line, UTF-8)::

    {"id": "<device>", "measurement": "<name>", "date": "yyyymmdd", "hour": h,
     "columns": ["time", ...], "values": [["2018-08-01T13:00:00Z", ...], ...]}

with ``h`` in 1..24 covering (h-1):00-(h-1):59 UTC, as the Whale API and ``day_hour``.

``last_record`` serves the Last Values ETL (seed 001, 4.2.4): the points of a box's last
ten minutes, in the same document (date and hour: those of its newest point).
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from stationflow.collect.harvest import HarvestError
from stationflow.collect.http_get import Fetcher, FetchError
from stationflow.collect.raw_store import RawHour, Rejected, day_hour
from stationflow.connections import verify_setting

if TYPE_CHECKING:
    from stationflow.refine.records.samples import RawRecord

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
_NS_PER_HOUR = 3_600_000_000_000
_US = timedelta(microseconds=1)
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)\Z"
)


class _BadShape(Exception):
    """The response is JSON but not what /query answers."""


class InfluxSource:
    """Device-hours of AirSensEUR boxes, one InfluxDB measurement per device."""

    device_type = "ase"
    device_version = "1"
    chunk = timedelta(days=1)  # one query per UTC day at most
    last_window = timedelta(minutes=10)  # last_record: the points up to the newest one
    last_lookback = timedelta(days=1)  # ... written at most this long before "now"

    def __init__(
        self,
        *,
        url: str,
        database: str,
        measurements: Mapping[str, int],
        connection_id: str,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        verify: bool | str = True,
        session: requests.Session | None = None,
    ) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http(s)://host[:port][/path]")
        if parts.username is not None:  # credentials in the URL: move them out of it
            username = username or unquote(parts.username)
            password = password if password is not None else unquote(parts.password or "")
            netloc = parts.netloc.rsplit("@", 1)[1]
            parts = parts._replace(netloc=netloc)
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.database = database
        self.measurements = dict(measurements)
        self._measurement_of: dict[int, str] = {}
        for name, device in self.measurements.items():
            if int(device) in self._measurement_of:
                raise ValueError(f"device {device} is mapped from two measurements")
            self._measurement_of[int(device)] = name
        self.connection_id = connection_id
        self.harvester = f"influxdb:{connection_id}"
        headers = {"Accept": "application/json"}
        auth: tuple[str, str] | None = None
        if token:  # v1-compatible /query of InfluxDB 2.x/3.x
            headers["Authorization"] = f"Token {token}"
        elif username:
            auth = (username, password or "")
        self._secrets = [s for s in (password, token) if s]
        self.fetcher = Fetcher(
            headers=headers,
            auth=auth,
            timeout=timeout,
            retries=max(0, retries),
            verify=verify,
            secrets=tuple(self._secrets),
            session=session,
        )

    @classmethod
    def from_connection(
        cls, conn: Any, *, database: str, measurements: Mapping[str, int], connection_id: str
    ) -> InfluxSource:
        """From an Airflow Connection: host, port, schema http/https, login/password, and
        extra ``{"token": ..., "verify": true|false|"<CA bundle path>"}``."""
        host = (getattr(conn, "host", None) or "").strip()
        if not host:
            raise ValueError(f"connection {connection_id!r} has no host")
        extra = getattr(conn, "extra_dejson", None) or {}
        if "://" in host:  # a full URL in the host field
            parts = urlsplit(host)
            netloc = parts.netloc if parts.port or not conn.port else f"{parts.netloc}:{conn.port}"
            url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        else:
            scheme = (getattr(conn, "schema", None) or "http").strip().lower()
            if scheme not in ("http", "https"):
                raise ValueError(
                    f"connection {connection_id!r}: schema must be http or https, not {scheme!r}"
                )
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"  # IPv6 literal
            url = f"{scheme}://{host}:{getattr(conn, 'port', None) or 8086}"
        return cls(
            url=url,
            database=database,
            measurements=measurements,
            connection_id=connection_id,
            username=getattr(conn, "login", None) or None,
            password=getattr(conn, "password", None) or None,
            token=extra.get("token") or None,
            verify=verify_setting(extra.get("verify", True)),
        )

    def __repr__(self) -> str:  # no credentials
        return f"InfluxSource({self.url!r}, database={self.database!r}, {self.harvester!r})"

    def close(self) -> None:
        session = self.fetcher.session()
        if session is not self.fetcher._shared:
            session.close()

    def __enter__(self) -> InfluxSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def devices(self) -> list[int]:
        return sorted(self._measurement_of)

    def measurement_of(self, device_id: int) -> str:
        try:
            return self._measurement_of[device_id]
        except KeyError:
            raise KeyError(f"device {device_id} is not in the measurements mapping") from None

    def last_record(self, device_id: int, now: datetime | None = None) -> RawRecord | None:
        """The box's points of the ``last_window`` up to its newest point at or before
        ``now`` (a box whose clock runs ahead cannot pin the values in the future), as one
        ASE record shaped like a harvested hour; None when the box wrote nothing in the
        ``last_lookback`` before ``now``. Any failure raises ``HarvestError``."""
        from stationflow.refine.records.samples import RawRecord  # numpy: not for harvests

        measurement = self.measurement_of(device_id)
        end = _ns_of(now or datetime.now(UTC))
        start = end - self.last_lookback // _US * 1000
        m = quote_ident(measurement)
        q = f"SELECT * FROM {m} WHERE time > {start} AND time <= {end}"  # noqa: S608
        newest = self._points(device_id, measurement, f"{q} ORDER BY time DESC LIMIT 1")
        if not newest:
            return None
        end = max(ns for ns, _ in newest)
        start = end - self.last_window // _US * 1000
        q = f"SELECT * FROM {m} WHERE time > {start} AND time <= {end}"  # noqa: S608
        rows = self._points(device_id, measurement, q)
        if not rows:  # written over in between: the next refresh will see it
            return None
        at = EPOCH + (end // _NS_PER_HOUR) * HOUR
        raw = self._raw_hour(device_id, measurement, at, rows)
        return RawRecord(device_id, raw.day, raw.hour, raw.body, device_type=self.device_type)

    def _points(self, device_id: int, measurement: str, q: str) -> list[tuple[int, dict]]:
        """Every point one /query answers, as the hour documents read them."""
        body = self._get(device_id, measurement, q)
        where = f"device {device_id} (measurement {measurement!r}): {self.url}/query q={q}"
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise HarvestError(self._redact(f"{where}: not JSON ({e})")) from None
        try:
            result = _first_result(doc)
            error = result.get("error") or doc.get("error")
            if error is not None:
                raise _BadShape(f"InfluxDB error: {error}")
            series = result.get("series", [])
            if not isinstance(series, list):
                raise _BadShape("'series' is not a list")
            if result.get("partial") or any(
                isinstance(s, dict) and s.get("partial") for s in series
            ):
                raise _BadShape("a partial result; raise the server's [http] max-row-limit")
            hours, bad = _rows_by_hour(series, EPOCH, datetime.max.replace(tzinfo=UTC))
        except _BadShape as e:
            raise HarvestError(self._redact(f"{where}: {e}")) from None
        if bad:
            raise HarvestError(self._redact(f"{where}: {next(iter(bad.values()))}"))
        return [row for index in sorted(hours) for row in hours[index]]

    def fetch_device(
        self, device_id: int, since: datetime, until: datetime
    ) -> Iterator[RawHour | Rejected]:
        """Hours starting in [since, until), oldest first; arguments are checked at once.

        A ``Rejected`` (kept in quarantine with the original bytes) stands for an answer
        that is not /query JSON or carries an InfluxDB error; ``HarvestError`` means the
        server could not be read at all and nothing of this device should move."""
        measurement = self.measurement_of(device_id)
        since, until = _whole_hour(since, "since"), _whole_hour(until, "until")
        return self._fetch(device_id, measurement, since, until)

    def _fetch(
        self, device_id: int, measurement: str, since: datetime, until: datetime
    ) -> Iterator[RawHour | Rejected]:
        start = since
        while start < until:
            day_end = start - (start - EPOCH) % self.chunk + self.chunk
            end = min(day_end, until)
            yield from self._fetch_span(device_id, measurement, start, end)
            start = end

    def query_for(self, measurement: str, start: datetime, end: datetime) -> str:
        """The InfluxQL of one span; the name is a quoted identifier, the times literals."""
        return (
            f"SELECT * FROM {quote_ident(measurement)}"  # noqa: S608 (InfluxQL, quoted)
            f" WHERE time >= '{_rfc3339(start)}' AND time < '{_rfc3339(end)}'"
        )

    def _fetch_span(
        self, device_id: int, measurement: str, start: datetime, end: datetime
    ) -> Iterator[RawHour | Rejected]:
        q = self.query_for(measurement, start, end)
        body = self._get(device_id, measurement, q)
        source = f"{self.url}/query?db={self.database}&q={q}"
        span = f"{_rfc3339(start)}..{_rfc3339(end)}"

        def rejected(at: datetime, error: str) -> Rejected:
            day, hour = day_hour(at)
            return Rejected(self.harvester, device_id, day, hour, source, error, body)

        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            yield rejected(start, f"measurement {measurement!r}, hours {span}: not JSON ({e})")
            return
        try:
            result = _first_result(doc)
            if result.get("error") is not None or doc.get("error") is not None:
                error = result.get("error") or doc.get("error")
                if str(error).startswith("database not found"):  # configuration, not data
                    raise HarvestError(
                        f"device {device_id} (measurement {measurement!r}): {self.url}/query:"
                        f" InfluxDB error: {error}"
                    )
                yield rejected(
                    start, f"measurement {measurement!r}, hours {span}: InfluxDB error: {error}"
                )
                return
            series = result.get("series", [])
            if not isinstance(series, list):
                raise _BadShape("'series' is not a list")
            if result.get("partial") or any(
                isinstance(s, dict) and s.get("partial") for s in series
            ):
                yield from self._split(device_id, measurement, start, end, q)
                return
            hours, bad_hours = _rows_by_hour(series, start, end)
        except _BadShape as e:
            yield rejected(start, f"measurement {measurement!r}, hours {span}: {e}")
            return
        for index in sorted(hours.keys() | bad_hours.keys()):
            at = EPOCH + index * HOUR
            if index in bad_hours:
                day, hour = day_hour(at)
                yield rejected(
                    at, f"measurement {measurement!r}, {day} hour {hour}: {bad_hours[index]}"
                )
            else:
                yield self._raw_hour(device_id, measurement, at, hours[index])

    def _split(
        self, device_id: int, measurement: str, start: datetime, end: datetime, q: str
    ) -> Iterator[RawHour | Rejected]:
        """InfluxDB cut the answer short (max-row-limit): ask for halves, down to one hour."""
        hours = (end - start) // HOUR
        if hours <= 1:
            raise HarvestError(
                f"device {device_id} (measurement {measurement!r}): {self.url}/query"
                f" q={q}: InfluxDB returned a partial result for a single hour;"
                " raise the server's [http] max-row-limit"
            )
        middle = start + (hours // 2) * HOUR
        log.info("device %s: partial result for %s, splitting at %s", device_id, q, middle)
        yield from self._fetch_span(device_id, measurement, start, middle)
        yield from self._fetch_span(device_id, measurement, middle, end)

    def _raw_hour(
        self, device_id: int, measurement: str, at: datetime, rows: list[tuple[int, dict]]
    ) -> RawHour:
        day, hour = day_hour(at)
        names = {k for _, row in rows for k, v in row.items() if v is not None and k != "time"}
        columns = ["time", *sorted(names)]
        values = [(ns, [row.get(c) for c in columns]) for ns, row in rows]
        values.sort(key=lambda item: (item[0], json.dumps(item[1], sort_keys=True)))
        document = {
            "id": str(device_id),
            "measurement": measurement,
            "date": f"{day}",
            "hour": hour,
            "columns": columns,
            "values": [v for _, v in values],
        }
        body = json.dumps(
            document, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
        lon, lat = _median_position([row for _, row in rows])
        return RawHour(
            device_id=device_id,
            day=day,
            hour=hour,
            body=body,
            sample_count=len(rows),
            harvester=self.harvester,
            device_type=self.device_type,
            device_version=self.device_version,
            lon=lon,
            lat=lat,
            complete=True,
        )

    def _get(self, device_id: int, measurement: str, q: str) -> bytes:
        """GET /query: transport failures, 5xx and 429 are retried with backoff; other 4xx
        (wrong credentials, a refused query) fail at once, asking again cannot help."""
        try:
            return self.fetcher.get(f"{self.url}/query", {"db": self.database, "q": q})
        except FetchError as exc:
            raise HarvestError(
                self._redact(
                    f"device {device_id} (measurement {measurement!r}) db={self.database}"
                    f" q={q}: {exc}"
                )
            ) from None

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier (backslash, quote and newline escaped)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC3339 time as InfluxDB writes it (up to 9 digits)."""
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC3339 time: {text!r}")
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    offset = timedelta(0)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    whole = datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss), tzinfo=UTC)
    try:
        seconds = (whole - offset - EPOCH) // timedelta(seconds=1)
    except OverflowError:  # 9999-12-31T23:30:00-01:00 is in year 10000
        raise ValueError(f"RFC3339 time out of range: {text!r}") from None
    return seconds * 1_000_000_000 + int((frac or "").ljust(9, "0"))


def _first_result(doc: object) -> dict:
    if not isinstance(doc, dict):
        raise _BadShape("the response is not a JSON object")
    results = doc.get("results")
    if results is None and doc.get("error") is not None:
        return {}
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise _BadShape("no 'results' list with a result object")
    return results[0]


def _rows_by_hour(
    series: list, start: datetime, end: datetime
) -> tuple[dict[int, list[tuple[int, dict]]], dict[int, str]]:
    """Rows of every series as dicts (tags merged), keyed by hour index since the epoch.

    A row whose time cannot be read makes the whole span unusable (any hour may miss it),
    so it raises; other row problems reject just that row's hour."""
    lo, hi = (start - EPOCH) // HOUR, (end - EPOCH) // HOUR
    hours: dict[int, list[tuple[int, dict]]] = {}
    bad: dict[int, str] = {}
    for s in series:
        if not isinstance(s, dict):
            raise _BadShape("a series is not an object")
        columns, values, tags = s.get("columns"), s.get("values", []), s.get("tags") or {}
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise _BadShape("a series has no list of column names")
        if "time" not in columns:
            raise _BadShape("a series has no 'time' column")
        if not isinstance(values, list) or not isinstance(tags, dict):
            raise _BadShape("a series' 'values' is not a list or its 'tags' not an object")
        t = columns.index("time")
        for row in values:
            if not isinstance(row, list) or len(row) <= t or not isinstance(row[t], str):
                raise _BadShape(f"row {json.dumps(row)[:120]} has no time string")
            try:
                ns = parse_time_ns(row[t])
            except ValueError as e:
                raise _BadShape(f"column 'time': {e}") from None
            index = ns // _NS_PER_HOUR
            if not lo <= index < hi:
                continue  # not asked for: its own query will bring it
            if len(row) != len(columns):
                bad.setdefault(
                    index,
                    f"row at {row[t]} has {len(row)} values for {len(columns)} columns",
                )
                continue
            hours.setdefault(index, []).append(
                (ns, {**tags, **dict(zip(columns, row, strict=True))})
            )
    for index in bad:
        hours.pop(index, None)
    return hours, bad


def _median_position(rows: list[dict]) -> tuple[float | None, float | None]:
    """Median lon/lat of the GPS fixes in the rows; 0/0 (no fix) and nonsense are ignored."""
    lons, lats = [], []
    for row in rows:
        lat, lon = row.get("latitude"), row.get("longitude")
        if not (_number(lat) and _number(lon)):
            continue
        if lat == 0 or lon == 0 or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            continue
        lats.append(float(lat))
        lons.append(float(lon))
    if not lats:
        return None, None
    return statistics.median(lons), statistics.median(lats)


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _whole_hour(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC)")
    value = value.astimezone(UTC)
    if value != value.replace(minute=0, second=0, microsecond=0):
        raise ValueError(f"{name} must be a whole UTC hour, not {value.isoformat()}")
    return value


def _ns_of(value: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime, exact."""
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return (value - EPOCH) // _US * 1000


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
