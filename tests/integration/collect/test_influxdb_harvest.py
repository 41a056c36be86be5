"""The InfluxDB (AirSensEUR) harvester source against a real influxd fed by the ASE simulator.

Malformed answers, retries, tokens and partial results come from a small local HTTP stub:
a real influxd does not produce them on demand.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import requests

from stationflow.collect.harvest import HarvestError
from stationflow.collect.influxdb import InfluxSource, quote_ident
from stationflow.collect.raw_store import RawHour, Rejected, day_hour, hour_start, write_batch
from stationflow.sim.airsenseur import CHANNELS, AirSensEURSim
from stationflow.sim.http_server import LoopbackHttpServer
from tests.influx_server import InfluxServer

BOXES = {"ASE_NL_01": 1181001, "ASE_NL_02": 1181002}
CONN = "ase_test"
T0 = datetime(2018, 8, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)


class CountingSession(requests.Session):
    """A real session that records every request (method, params)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict]] = []

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        self.calls.append((method, dict(kwargs.get("params") or {})))
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def sim(influxd: InfluxServer) -> AirSensEURSim:
    s = AirSensEURSim(influxd.url, f"ase_{uuid.uuid4().hex[:10]}", BOXES)
    s.ensure_database()
    return s


def source_for(sim: AirSensEURSim, **kw) -> InfluxSource:
    kw.setdefault("measurements", sim.boxes)
    return InfluxSource(url=sim.url, database=sim.database, connection_id=CONN, **kw)


def only_hours(items: list[RawHour | Rejected]) -> list[RawHour]:
    assert all(isinstance(i, RawHour) for i in items), items
    return items  # type: ignore[return-value]


def rows_of(hour: RawHour) -> list[dict]:
    doc = json.loads(hour.body)
    return [dict(zip(doc["columns"], v, strict=True)) for v in doc["values"]]


def test_simulated_hours_come_back_one_per_device_hour(sim: AirSensEURSim) -> None:
    assert sim.write_hours(T0, T0 + 3 * H) == 2 * 3 * 60 * len(CHANNELS)
    # a field only one later sample has (an ASE "calibrated" value) must not change how
    # the earlier hours read, whatever span they are asked in
    extra = "ASE_NL_01,name=NO2B43F calibrated=21.5 1533140400000000000"  # 2018-08-01T16:20Z
    r = requests.post(f"{sim.url}/write", params={"db": sim.database}, data=extra, timeout=10)
    assert r.status_code == 204
    src = source_for(sim)
    assert src.devices() == [1181001, 1181002]
    assert src.harvester == f"influxdb:{CONN}"
    positions = {}
    for measurement, device in BOXES.items():
        hours = only_hours(list(src.fetch_device(device, T0, T0 + 3 * H)))
        assert [(h.day, h.hour) for h in hours] == [(20180801, 13), (20180801, 14), (20180801, 15)]
        for h in hours:
            assert (h.device_id, h.device_type, h.harvester, h.complete) == (
                device,
                "ase",
                f"influxdb:{CONN}",
                True,
            )
            assert h.sample_count == 60 * len(CHANNELS)
            doc = json.loads(h.body)
            assert (doc["id"], doc["measurement"], doc["date"], doc["hour"]) == (
                str(device),
                measurement,
                "20180801",
                h.hour,
            )
            assert doc["columns"][0] == "time"
            assert len(doc["values"]) == h.sample_count
        # the values are the box's, unmodified (hour 14 = 13:00-13:59, its 13:07 NO2 sample)
        row = next(
            r
            for r in rows_of(hours[1])
            if r["time"] == "2018-08-01T13:07:00Z" and r["name"] == "NO2B43F"
        )
        expected = sim.sample(measurement, "NO2B43F", T0 + H + timedelta(minutes=7))
        assert row == {"time": "2018-08-01T13:07:00Z", **expected}
        lon, lat, _ = sim.position(measurement)
        assert hours[0].lon == pytest.approx(lon, abs=1e-4)
        assert hours[0].lat == pytest.approx(lat, abs=1e-4)
        positions[device] = (hours[0].lon, hours[0].lat)
        again = list(src.fetch_device(device, T0, T0 + 3 * H))
        assert [h.content_hash for h in again] == [h.content_hash for h in hours]
        assert [h.body for h in again] == [h.body for h in hours]
        whole_day = list(src.fetch_device(device, T0 - 12 * H, T0 + 12 * H))
        assert [h.body for h in whole_day[:3]] == [h.body for h in hours]
        assert "calibrated" not in json.loads(hours[2].body)["columns"]
        if device == 1181001:
            assert "calibrated" in json.loads(whole_day[3].body)["columns"]
    assert positions[1181001] != positions[1181002]


def test_hour_boundaries_and_window_edges(sim: AirSensEURSim) -> None:
    box = "ASE_NL_01"
    start = datetime(2018, 8, 1, 9, tzinfo=UTC)
    for when in (
        start,  # first instant of the window: in
        start + timedelta(hours=1, minutes=59, seconds=59, microseconds=999000),
        start + 2 * H,  # 11:00:00
        start + 3 * H,  # 12:00:00 = until: out
    ):
        sim.write_point(box, when)
    hours = only_hours(list(source_for(sim).fetch_device(BOXES[box], start, start + 3 * H)))
    assert [(h.hour, h.sample_count) for h in hours] == [(10, 1), (11, 1), (12, 1)]
    assert [r["time"] for h in hours for r in rows_of(h)] == [
        "2018-08-01T09:00:00Z",
        "2018-08-01T10:59:59.999Z",
        "2018-08-01T11:00:00Z",
    ]
    # on every 20th minute the box has no GPS fix (0/0): that is no position, not (0, 0)
    no_fix = [(h.lon is None, h.lat is None) for h in hours]
    assert no_fix == [(True, True), (False, False), (True, True)]


def test_a_window_across_midnight_is_asked_day_by_day(sim: AirSensEURSim) -> None:
    sim.channels = CHANNELS[2:3]
    start = datetime(2018, 8, 1, 22, tzinfo=UTC)
    end = datetime(2018, 8, 3, 2, tzinfo=UTC)
    sim.write_hours(start - H, end + H, every=timedelta(minutes=10), boxes=["ASE_NL_02"])
    session = CountingSession()
    src = source_for(sim, session=session)
    hours = only_hours(list(src.fetch_device(1181002, start, end)))
    expected = [(20180801, 23), (20180801, 24)]
    expected += [(20180802, h) for h in range(1, 25)] + [(20180803, 1), (20180803, 2)]
    assert [(h.day, h.hour) for h in hours] == expected
    assert {h.sample_count for h in hours} == {6}
    assert [h.start for h in hours] == [start + i * H for i in range(28)]
    assert [p["q"].split(" WHERE ")[1] for _, p in session.calls] == [
        "time >= '2018-08-01T22:00:00Z' AND time < '2018-08-02T00:00:00Z'",
        "time >= '2018-08-02T00:00:00Z' AND time < '2018-08-03T00:00:00Z'",
        "time >= '2018-08-03T00:00:00Z' AND time < '2018-08-03T02:00:00Z'",
    ]


def test_stored_hours_late_points_and_progress(sim: AirSensEURSim, state_db: str) -> None:
    sim.channels = CHANNELS[:3]
    sim.write_hours(T0, T0 + 2 * H)
    src = source_for(sim)
    first = only_hours(list(src.fetch_device(1181001, T0, T0 + 2 * H)))
    with psycopg.connect(state_db) as conn:
        assert (write_batch(conn, first).inserted, len(first)) == (2, 2)
        stored = conn.execute(
            "SELECT unique_id, device_type, harvester, sample_count, complete, data::text,"
            " content_hash, lon IS NOT NULL AND lat IS NOT NULL"
            " FROM smartem_raw.timeseries ORDER BY hour_start"
        ).fetchall()
        assert stored == [
            (
                h.unique_id,
                "ase",
                f"influxdb:{CONN}",
                180,
                True,
                h.body.decode(),
                h.content_hash,
                True,
            )
            for h in first
        ]
        assert first[0].unique_id == "1181001-20180801-13"
        progress_sql = (
            "SELECT last_day, last_hour, last_start, hours_stored, hours_changed"
            " FROM smartem_raw.harvester_progress WHERE harvester = %s AND device_id = %s"
        )
        assert conn.execute(progress_sql, (src.harvester, 1181001)).fetchone() == (
            20180801,
            14,
            hour_start(20180801, 14),
            2,
            0,
        )
        same = list(src.fetch_device(1181001, T0, T0 + 2 * H))
        assert write_batch(conn, same).unchanged == 2

        # samples of 12:00-12:59 arrive after it was harvested
        assert sim.write_late(T0, T0 + H, boxes=["ASE_NL_01"]) == 60 * 3
        late = only_hours(list(src.fetch_device(1181001, T0, T0 + 2 * H)))
        assert [h.sample_count for h in late] == [360, 180]
        assert late[0].content_hash != first[0].content_hash
        assert late[1].content_hash == first[1].content_hash
        result = write_batch(conn, late)
        assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)
        assert conn.execute(
            "SELECT hour, revision, sample_count FROM smartem_raw.timeseries ORDER BY hour"
        ).fetchall() == [(13, 2, 360), (14, 1, 180)]
        assert conn.execute(progress_sql, (src.harvester, 1181001)).fetchone()[3:] == (2, 1)

        # a later hour advances the progress
        sim.write_hours(T0 + 2 * H, T0 + 3 * H, boxes=["ASE_NL_01"])
        write_batch(conn, list(src.fetch_device(1181001, T0 + 2 * H, T0 + 3 * H)))
        assert conn.execute(progress_sql, (src.harvester, 1181001)).fetchone()[:3] == (
            20180801,
            15,
            hour_start(20180801, 15),
        )


def test_unknown_measurement_yields_nothing_and_names_are_quoted(sim: AirSensEURSim) -> None:
    odd = 'ASE "Quoted", box'
    sim.boxes[odd] = 1181009
    sim.channels = CHANNELS[:1]
    sim.write_hours(T0, T0 + H, boxes=[odd])
    src = source_for(sim, measurements={"ASE_NOPE": 1181099, odd: 1181009})
    assert list(src.fetch_device(1181099, T0 - 24 * H, T0 + 24 * H)) == []
    hours = only_hours(list(src.fetch_device(1181009, T0, T0 + H)))
    assert [(h.hour, h.sample_count) for h in hours] == [(13, 60)]
    assert json.loads(hours[0].body)["measurement"] == odd
    assert quote_ident('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(KeyError, match="1181077"):
        src.fetch_device(1181077, T0, T0 + H)
    with pytest.raises(ValueError, match="whole UTC hour"):
        src.fetch_device(1181009, T0 + timedelta(minutes=5), T0 + H)


# -- authentication -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def influxd_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    with InfluxServer(tmp_path_factory.mktemp("influxd-auth"), auth=True) as server:
        yield server


def test_basic_auth_against_influxd_with_auth(influxd_auth: InfluxServer) -> None:
    user, password = influxd_auth.credentials or ("", "")
    sim = AirSensEURSim(
        influxd_auth.url, "ase_auth", BOXES, username=user, password=password, channels=CHANNELS[:2]
    )
    sim.ensure_database()
    sim.write_hours(T0, T0 + H)

    wrong = "Wr0ng-pa55word-XYZ"
    session = CountingSession()
    bad = source_for(sim, username=user, password=wrong, session=session)
    with pytest.raises(HarvestError) as caught:
        list(bad.fetch_device(1181001, T0, T0 + H))
    message = str(caught.value)
    assert "401" in message and "1181001" in message and influxd_auth.url in message
    assert wrong not in message and wrong not in repr(bad)
    assert len(session.calls) == 1  # an auth failure is not retried
    with pytest.raises(HarvestError, match="401"):
        list(source_for(sim).fetch_device(1181001, T0, T0 + H))

    good = source_for(sim, username=user, password=password)
    assert [h.sample_count for h in only_hours(list(good.fetch_device(1181001, T0, T0 + H)))] == [
        120
    ]
    conn = SimpleNamespace(
        host="127.0.0.1",
        port=influxd_auth.http_port,
        schema="http",
        login=user,
        password=password,
        extra_dejson={},
    )
    from_conn = InfluxSource.from_connection(
        conn, database="ase_auth", measurements=BOXES, connection_id=CONN
    )
    assert from_conn.url == influxd_auth.url and from_conn.harvester == f"influxdb:{CONN}"
    assert len(list(from_conn.fetch_device(1181002, T0, T0 + H))) == 1


def test_from_connection_settings() -> None:
    conn = SimpleNamespace(
        host="influx.example.org",
        port=None,
        schema="https",
        login=None,
        password=None,
        extra_dejson={"token": "tok-1", "verify": "false"},
    )
    src = InfluxSource.from_connection(conn, database="d", measurements=BOXES, connection_id="c")
    # certificate checks are never turned off (the project's rule): "verify": false is ignored
    assert (src.url, src.fetcher.verify) == ("https://influx.example.org:8086", True)
    conn.extra_dejson = {"verify": "/etc/ssl/our-ca.pem"}  # a CA bundle is honoured
    src = InfluxSource.from_connection(conn, database="d", measurements=BOXES, connection_id="c")
    assert src.fetcher.verify == "/etc/ssl/our-ca.pem"
    conn.schema = "ftp"
    with pytest.raises(ValueError, match="http or https"):
        InfluxSource.from_connection(conn, database="d", measurements=BOXES, connection_id="c")


# -- answers a real influxd does not give on demand: a local stub ---------------------------


class StubInflux(LoopbackHttpServer):
    """Answers GET /query with ``respond(params) -> (status, body)``; records the requests."""

    host = "127.0.0.1"

    def __init__(self, respond: Callable[[dict[str, str]], tuple[int, bytes]]) -> None:
        self._port = 0
        self.respond = respond
        self.requests: list[tuple[dict[str, str], str | None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                stub.requests.append((params, self.headers.get("Authorization")))
                status, body = stub.respond(params)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def stub() -> Iterator[Callable[..., StubInflux]]:
    servers: list[StubInflux] = []

    def start(respond: Callable[[dict[str, str]], tuple[int, bytes]]) -> StubInflux:
        servers.append(StubInflux(respond).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def series(*rows: list) -> bytes:
    doc = {
        "results": [
            {
                "statement_id": 0,
                "series": [{"name": "ASE_NL_01", "columns": ["time", "x"], "values": list(rows)}],
            }
        ]
    }
    return json.dumps(doc).encode()


def test_a_missing_database_is_a_configuration_error_not_data(
    stub: Callable[..., StubInflux],
) -> None:
    body = b'{"results":[{"statement_id":0,"error":"database not found: ase"}]}'
    server = stub(lambda params: (200, body))
    src = InfluxSource(url=server.url, database="ase", measurements=BOXES, connection_id=CONN)
    with pytest.raises(HarvestError, match="database not found: ase"):
        list(src.fetch_device(1181001, T0, T0 + 2 * H))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
        (b'{"results": "nope"}', "no 'results' list"),
        (b'{"results":[{"statement_id":0,"error":"error parsing query"}]}', "InfluxDB error"),
        (series(["2018-08-01T12:00:00Z", 1], ["noon", 2]), "column 'time'"),
        (b'{"results":[{"statement_id":0,"series":[{"name":"m","values":[]}]}]}', "column names"),
    ],
)
def test_a_malformed_response_is_rejected_with_its_bytes(
    stub: Callable[..., StubInflux], body: bytes, problem: str
) -> None:
    server = stub(lambda params: (200, body))
    src = InfluxSource(url=server.url, database="ase", measurements=BOXES, connection_id=CONN)
    items = list(src.fetch_device(1181001, T0, T0 + 2 * H))
    assert len(items) == 1 and isinstance(items[0], Rejected)
    r = items[0]
    assert (r.harvester, r.device_id, r.day, r.hour, r.body) == (
        f"influxdb:{CONN}",
        1181001,
        20180801,
        13,
        body,
    )
    assert problem in r.error and "'ASE_NL_01'" in r.error
    assert "2018-08-01T12:00:00Z..2018-08-01T14:00:00Z" in r.error
    assert 'FROM "ASE_NL_01"' in r.source


def test_one_bad_row_rejects_only_its_hour(stub: Callable[..., StubInflux]) -> None:
    body = series(
        ["2018-08-01T12:30:00Z", 1],
        ["2018-08-01T13:30:00Z", 2, "extra"],
        ["2018-08-01T14:00:00Z", 3],  # not asked for (a server ignoring the WHERE): left out
    )
    server = stub(lambda params: (200, body))
    src = InfluxSource(url=server.url, database="ase", measurements=BOXES, connection_id=CONN)
    good, bad = list(src.fetch_device(1181001, T0, T0 + 2 * H))
    assert isinstance(good, RawHour) and (good.hour, good.sample_count) == (13, 1)
    assert isinstance(bad, Rejected) and (bad.day, bad.hour, bad.body) == (20180801, 14, body)
    assert "'ASE_NL_01', 20180801 hour 14" in bad.error and "3 values for 2 columns" in bad.error


def test_the_bytes_do_not_depend_on_the_servers_row_and_column_order(
    stub: Callable[..., StubInflux],
) -> None:
    rows = [
        ["2018-08-01T12:00:01.5Z", "NOB4", 2, None],
        ["2018-08-01T12:00:01Z", "NOB4", 1, None],
        ["2018-08-01T12:00:01Z", "COA4", 3, 0.5],
    ]
    a = {"name": "m", "columns": ["time", "name", "sampleRawVal", "z"], "values": rows}
    b = {  # the same points, columns and rows in another order
        "name": "m",
        "columns": ["z", "time", "sampleRawVal", "name"],
        "values": [[r[3], r[0], r[2], r[1]] for r in reversed(rows)],
    }
    bodies = []
    for s in (a, b):
        body = json.dumps({"results": [{"statement_id": 0, "series": [s]}]}).encode()
        server = stub(lambda params, body=body: (200, body))
        src = InfluxSource(url=server.url, database="d", measurements=BOXES, connection_id=CONN)
        bodies.append(only_hours(list(src.fetch_device(1181001, T0, T0 + H)))[0].body)
    assert bodies[0] == bodies[1]
    assert json.loads(bodies[0])["values"] == [
        ["2018-08-01T12:00:01Z", "COA4", 3, 0.5],
        ["2018-08-01T12:00:01Z", "NOB4", 1, None],
        ["2018-08-01T12:00:01.5Z", "NOB4", 2, None],
    ]


def test_token_retries_and_partial_results(stub: Callable[..., StubInflux]) -> None:
    answers = [(503, b'{"error":"overloaded"}')]

    def respond(params: dict[str, str]) -> tuple[int, bytes]:
        if answers:
            return answers.pop()
        if "T14:00:00Z'" in params["q"] and "T12:00:00Z'" in params["q"]:  # the 2-hour span
            doc = json.loads(series(["2018-08-01T12:00:00Z", 1]))
            doc["results"][0]["series"][0]["partial"] = True
            return 200, json.dumps(doc).encode()
        first = "time >= '2018-08-01T12:00:00Z'" in params["q"]
        return 200, series(["2018-08-01T12:00:00Z" if first else "2018-08-01T13:00:00Z", 1])

    server = stub(respond)
    src = InfluxSource(
        url=server.url, database="ase", measurements=BOXES, connection_id=CONN, token="tok-123"
    )
    src.fetcher.backoff = 0.01
    hours = only_hours(list(src.fetch_device(1181001, T0, T0 + 2 * H)))
    assert [(h.hour, h.sample_count) for h in hours] == [(13, 1), (14, 1)]
    assert len(server.requests) == 4  # 503, the partial 2 hours, then hour by hour
    assert {auth for _, auth in server.requests} == {"Token tok-123"}
    assert {p["db"] for p, _ in server.requests} == {"ase"}
    assert all("epoch" not in p for p, _ in server.requests)


def test_influxd_stopped_is_a_harvest_error_after_bounded_retries(tmp_path: Path) -> None:
    with InfluxServer(tmp_path / "influxd") as server:
        sim = AirSensEURSim(server.url, "ase", BOXES, channels=CHANNELS[:1])
        sim.ensure_database()
        sim.write_hours(T0, T0 + H)
        session = CountingSession()
        src = source_for(sim, retries=2, session=session)
        assert len(list(src.fetch_device(1181001, T0, T0 + H))) == 1
    session.calls.clear()
    src.fetcher.backoff = 0.05
    began = time.monotonic()
    with pytest.raises(HarvestError) as caught:
        list(src.fetch_device(1181001, T0, T0 + H))
    assert time.monotonic() - began < 5
    assert len(session.calls) == 3  # the first attempt and 2 retries
    message = str(caught.value)
    assert "1181001" in message and server.url in message and "ASE_NL_01" in message
    assert "failed after 3 attempts" in message and "ConnectionError" in message


def test_a_token_echoed_by_the_server_is_not_in_the_error(stub: Callable[..., StubInflux]) -> None:
    server = stub(lambda params: (401, b'{"error":"token tok-SECRET-9 has expired"}'))
    src = InfluxSource(
        url=server.url, database="d", measurements=BOXES, connection_id=CONN, token="tok-SECRET-9"
    )
    with pytest.raises(HarvestError) as caught:
        list(src.fetch_device(1181001, T0, T0 + H))
    assert "401" in str(caught.value) and "has expired" in str(caught.value)
    assert "tok-SECRET-9" not in str(caught.value) and "tok-SECRET-9" not in repr(src)


# ------------------------------------------------- the orchestrated harvest, influxd to PG


def _stored(db: str) -> dict[tuple[int, int, int], tuple[str, int]]:
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT device_id, day, hour, content_hash, revision FROM smartem_raw.timeseries"
            " WHERE device_type = 'ase'"
        )
        return {(d, day, h): (ch, rev) for d, day, h, ch, rev in rows}


def test_harvest_from_influxd_resumes_after_a_crash_and_isolates_a_device(
    sim: AirSensEURSim, state_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stationflow.collect import raw_store
    from stationflow.collect.harvest import harvest

    sim.channels = CHANNELS[:2]
    sim.write_hours(T0, T0 + 6 * H)
    mapping = {**sim.boxes, "ASE_NL_99": 1181099}  # a box whose measurement is unreadable
    src = source_for(sim, measurements=mapping)
    real_get = src._get

    def refuse_99(device_id, measurement, q):
        if device_id == 1181099:
            raise HarvestError(f"device {device_id}: HTTP 503 from the test")
        return real_get(device_id, measurement, q)

    monkeypatch.setattr(src, "_get", refuse_99)
    writes = [0]
    original = raw_store.write_batch

    def crash_on_second(conn, hours, rejected=()):
        writes[0] += 1
        if writes[0] == 2:
            original(conn, hours, rejected)  # merged, then the process "dies" before commit
            raise KeyboardInterrupt
        return original(conn, hours, rejected)

    monkeypatch.setattr(raw_store, "write_batch", crash_on_second)
    now = T0 + 6 * H + timedelta(minutes=5)
    with psycopg.connect(state_db, autocommit=True) as conn, pytest.raises(KeyboardInterrupt):
        harvest(conn, src, until=now, now=now, lookback=6 * H, workers=1, batch_hours=4)
    first = _stored(state_db)
    assert len(first) == 4  # the first batch only: the second rolled back with its progress
    monkeypatch.setattr(raw_store, "write_batch", original)
    with psycopg.connect(state_db, autocommit=True) as conn:
        report = harvest(conn, src, until=now, now=now, lookback=6 * H, workers=2, batch_hours=4)
        progress = raw_store.progress(conn, src.harvester)
    assert set(report.failures) == {1181099}
    after = _stored(state_db)
    assert sorted(after) == sorted(
        (d, *day_hour(T0 + i * H)) for d in (1181001, 1181002) for i in range(6)
    )
    assert all(rev == 1 for _, rev in after.values())  # nothing written twice
    assert (report.written.inserted, report.written.unchanged) == (8, 4)
    assert progress == {1181001: T0 + 5 * H, 1181002: T0 + 5 * H}
    # late points for hour 3 of box 2: the next run stores that hour again, nothing else
    sim.write_late(T0 + 2 * H, T0 + 3 * H, boxes=["ASE_NL_02"])
    with psycopg.connect(state_db, autocommit=True) as conn:
        late = harvest(conn, src, until=now, now=now, lookback=6 * H, workers=2)
    assert (late.written.updated, late.written.inserted) == (1, 0)
    changed = [k for k, v in _stored(state_db).items() if v[1] == 2]
    assert changed == [(1181002, *day_hour(T0 + 2 * H))]
