"""The SensorThings v1.1 client: entity bodies, id parsing, and StaClient against a stub server
(paging, creation, error classification, batched Observations with their fallback)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from itertools import islice
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from stationflow.errors import PermanentError
from stationflow.publish.sta import (
    GEOJSON,
    OM_MEASUREMENT,
    Datastream,
    FeatureOfInterest,
    Location,
    Observation,
    ObservedProperty,
    Sensor,
    StaClient,
    StaError,
    StaRejected,
    StaUnavailable,
    Thing,
    Unit,
    id_from_link,
    id_literal,
    iso,
    string_literal,
)
from stationflow.sim.http_server import AnsweringHandler, LoopbackHttpServer

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
PASSWORD = "s3cret-pw"
EMPTY_GEOMETRY = {"type": "GeometryCollection", "geometries": []}


# ------------------------------------------------------------------------ the stub server


@dataclass
class Seen:
    """One request the stub received."""

    method: str
    target: str  # the raw request target, as sent on the wire
    path: str
    query: dict[str, list[str]]
    body: Any  # decoded JSON, or None
    authorization: str | None


Reply = tuple[int, dict[str, str], Any]  # status, headers, body (JSON-able, str or None)
Answer = Callable[[Seen], Reply]


def not_found(_: Seen) -> Reply:
    return 404, {}, {"message": "no route in the stub"}


class StaStub(LoopbackHttpServer):
    """A loopback server whose answers a test sets with ``answer``; it records every
    request in ``seen``."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self._port = 0
        self.answer: Answer = not_found
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1.1"

    def reset(self, answer: Answer = not_found) -> None:
        with self.lock:
            self.answer = answer
            self.seen.clear()

    def requests(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method) and (path is None or s.path == path)
            ]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(AnsweringHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length > 0 else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    method=method,
                    target=self.path,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    body=json.loads(raw) if raw else None,
                    authorization=self.headers.get("Authorization"),
                )
                with stub.lock:
                    stub.seen.append(seen)
                    answer = stub.answer
                status, headers, body = answer(seen)
                if body is None:
                    data, content_type = b"", "application/json"
                elif isinstance(body, str):
                    data, content_type = body.encode(), "text/plain; charset=utf-8"
                else:
                    data, content_type = json.dumps(body).encode(), "application/json"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test)

        return Handler


@pytest.fixture(scope="module")
def _server() -> Iterator[StaStub]:
    with StaStub() as server:
        yield server


@pytest.fixture
def stub(_server: StaStub) -> StaStub:
    _server.reset()
    return _server


@pytest.fixture
def client(stub: StaStub) -> StaClient:
    return StaClient(stub.url + "/", auth=("user", PASSWORD), timeout=5)


def obs(datastream_id: int | str, result: float, **kw: Any) -> Observation:
    args: dict[str, Any] = dict(
        datastream_id=datastream_id,
        feature_id=5,
        phenomenon_time=T0,
        result_time=T0 + timedelta(minutes=30),
        result=result,
    )
    args.update(kw)
    return Observation(**args)


# ------------------------------------------------------------------------ iso, literals, ids


def test_iso_is_utc_with_z_and_no_fraction_for_whole_seconds() -> None:
    assert iso(datetime(2026, 1, 5, 10, 0, 7, tzinfo=UTC)) == "2026-01-05T10:00:07Z"


def test_iso_keeps_microseconds_with_six_digits() -> None:
    assert iso(datetime(2026, 1, 5, 10, 0, 7, 123, tzinfo=UTC)) == "2026-01-05T10:00:07.000123Z"
    assert iso(datetime(2026, 1, 5, 10, 0, 7, 500000, tzinfo=UTC)) == "2026-01-05T10:00:07.500000Z"


def test_iso_converts_other_offsets_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert iso(datetime(2026, 1, 5, 12, 30, tzinfo=plus2)) == "2026-01-05T10:30:00Z"
    # across midnight, and a negative offset
    assert iso(datetime(2026, 1, 1, 0, 30, tzinfo=plus2)) == "2025-12-31T22:30:00Z"
    minus5 = timezone(timedelta(hours=-5, minutes=-30))
    assert iso(datetime(2026, 1, 5, 20, 0, 1, 42, tzinfo=minus5)) == "2026-01-06T01:30:01.000042Z"


def test_iso_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        iso(datetime(2026, 1, 5, 10, 0))


def test_iso_fraction_comes_from_the_utc_time() -> None:
    odd = timezone(timedelta(hours=1, microseconds=1))
    # 10:00:00.000000 at +01:00:00.000001 is 08:59:59.999999 UTC
    assert iso(datetime(2026, 1, 5, 10, 0, tzinfo=odd)) == "2026-01-05T08:59:59.999999Z"


def test_id_literal_quotes_strings_and_doubles_quotes_but_leaves_ints() -> None:
    assert id_literal(7) == "7"
    assert id_literal(-3) == "-3"
    assert id_literal("7") == "'7'"
    assert id_literal("a-b") == "'a-b'"
    assert id_literal("a'b") == "'a''b'"
    assert id_literal("''") == "''''''"


def test_string_literal_doubles_quotes() -> None:
    assert string_literal("O'Hare") == "'O''Hare'"
    assert string_literal("") == "''"
    assert string_literal("plain") == "'plain'"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("Things(7)", 7),
        ("http://h:8080/v1.1/Things(7)", 7),
        ("http://h/v1.1/Things(-2)", -2),
        ("Things('a''b')", "a'b"),
        ("http://h/v1.1/Things('a-b')", "a-b"),
        ("http://h/v1.1/Things('7')", "7"),
        ("http://h/v1.1/Things('')", ""),
        ("http://h/v1.1/Things('(1)')", "(1)"),
        ("http://h/v1.1/Things(42) ", 42),
        ("http://h/v1.1/Things('x')\r\n", "x"),
        ("http://h/v1.1/Datastreams(3)/Observations(5)", 5),
    ],
)
def test_id_from_link(link: str, expected: int | str) -> None:
    got = id_from_link(link)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    "link",
    ["http://h/v1.1/Things", "Things()", "Things(abc)", "Things('a'b')", "Things(7)/Locations", ""],
)
def test_id_from_link_without_an_id_is_a_sta_error(link: str) -> None:
    with pytest.raises(StaError, match="no entity id"):
        id_from_link(link)


# ------------------------------------------------------------------------ entity bodies


def test_location_body_with_a_position_and_things() -> None:
    loc = Location(
        "Site A",
        "the mast",
        lon=5.91,
        lat=51.84,
        properties=MappingProxyType({"elev": 12}),
        thing_ids=(1, "t'2"),
    )
    body = loc.to_json()
    assert body == {
        "name": "Site A",
        "description": "the mast",
        "encodingType": GEOJSON,
        "location": {"type": "Point", "coordinates": [5.91, 51.84]},  # lon first
        "properties": {"elev": 12},
        "Things": [{"@iot.id": 1}, {"@iot.id": "t'2"}],
    }
    assert type(body["properties"]) is dict
    json.dumps(body)  # serialisable as it is
    assert Location.SET == "Locations"


def test_location_body_without_things_has_no_things_key() -> None:
    body = Location("Site A", "d", lon=1.0, lat=2.0).to_json()
    assert "Things" not in body
    assert body["properties"] == {}


@pytest.mark.parametrize(("lon", "lat"), [(None, None), (5.0, None), (None, 51.0)])
def test_a_station_without_position_is_an_empty_geometry_collection(
    lon: float | None, lat: float | None
) -> None:
    assert Location("S", "d", lon=lon, lat=lat).to_json()["location"] == EMPTY_GEOMETRY
    feature = FeatureOfInterest("S", "d", lon=lon, lat=lat).to_json()
    assert feature["feature"] == EMPTY_GEOMETRY


def test_zero_coordinates_are_a_point_not_missing() -> None:
    assert Location("S", "d", lon=0.0, lat=0.0).to_json()["location"] == {
        "type": "Point",
        "coordinates": [0.0, 0.0],
    }


def test_thing_body_with_and_without_locations() -> None:
    thing = Thing("ASE01", "station", properties={"k": "v"}, location_ids=(3, "l-4"))
    assert thing.to_json() == {
        "name": "ASE01",
        "description": "station",
        "properties": {"k": "v"},
        "Locations": [{"@iot.id": 3}, {"@iot.id": "l-4"}],
    }
    assert Thing("ASE01", "station").to_json() == {
        "name": "ASE01",
        "description": "station",
        "properties": {},
    }
    assert Thing.SET == "Things"


def test_sensor_observed_property_and_feature_bodies() -> None:
    assert Sensor("CS215", "probe", "https://x/ds.pdf").to_json() == {
        "name": "CS215",
        "description": "probe",
        "encodingType": "text/html",
        "metadata": "https://x/ds.pdf",
        "properties": {},
    }
    sensor = Sensor("CS215", "probe", "https://x/ds.pdf", encoding_type="application/pdf")
    assert sensor.to_json()["encodingType"] == "application/pdf"
    assert ObservedProperty("T", "http://def/T", "air temperature", {"a": 1}).to_json() == {
        "name": "T",
        "definition": "http://def/T",
        "description": "air temperature",
        "properties": {"a": 1},
    }
    assert FeatureOfInterest("F", "d", lon=5.0, lat=51.0).to_json() == {
        "name": "F",
        "description": "d",
        "encodingType": GEOJSON,
        "feature": {"type": "Point", "coordinates": [5.0, 51.0]},
        "properties": {},
    }
    assert (Sensor.SET, ObservedProperty.SET, FeatureOfInterest.SET) == (
        "Sensors",
        "ObservedProperties",
        "FeaturesOfInterest",
    )


def test_datastream_body_refers_to_its_thing_sensor_and_property_by_id() -> None:
    unit = Unit("degree Celsius", "degC", "http://unit/degC")
    ds = Datastream("ASE01 T", "air T", unit, thing_id=1, sensor_id="s-2", observed_property_id=3)
    assert ds.to_json() == {
        "name": "ASE01 T",
        "description": "air T",
        "observationType": OM_MEASUREMENT,
        "unitOfMeasurement": {
            "name": "degree Celsius",
            "symbol": "degC",
            "definition": "http://unit/degC",
        },
        "properties": {},
        "Thing": {"@iot.id": 1},
        "Sensor": {"@iot.id": "s-2"},
        "ObservedProperty": {"@iot.id": 3},
    }
    assert Datastream.SET == "Datastreams"


def test_observation_body_and_row_in_components_order() -> None:
    plus1 = timezone(timedelta(hours=1))
    o = Observation(
        datastream_id=9,
        feature_id="f-1",
        phenomenon_time=datetime(2026, 1, 5, 11, 0, tzinfo=plus1),
        result_time=datetime(2026, 1, 5, 10, 30, 0, 250000, tzinfo=UTC),
        result=12.5,
        parameters=MappingProxyType({"qc": "ok"}),
    )
    assert o.to_json() == {
        "phenomenonTime": "2026-01-05T10:00:00Z",
        "resultTime": "2026-01-05T10:30:00.250000Z",
        "result": 12.5,
        "parameters": {"qc": "ok"},
        "Datastream": {"@iot.id": 9},
        "FeatureOfInterest": {"@iot.id": "f-1"},
    }
    assert Observation.COMPONENTS == (
        "phenomenonTime",
        "resultTime",
        "result",
        "FeatureOfInterest/id",
        "parameters",
    )
    row = o.row()
    assert row == [
        "2026-01-05T10:00:00Z",
        "2026-01-05T10:30:00.250000Z",
        12.5,
        "f-1",
        {"qc": "ok"},
    ]
    assert type(row[4]) is dict
    body = o.to_json()
    by_component = dict(zip(Observation.COMPONENTS, row, strict=True))
    assert by_component["FeatureOfInterest/id"] == body["FeatureOfInterest"]["@iot.id"]
    for name in ("phenomenonTime", "resultTime", "result", "parameters"):
        assert by_component[name] == body[name]


# ------------------------------------------------------------------------ collection paging


def test_collection_follows_next_links_across_pages(stub: StaStub, client: StaClient) -> None:
    def answer(seen: Seen) -> Reply:
        skip = int(seen.query.get("$skip", ["0"])[0])
        pages = {0: [1, 2], 2: [3, 4], 4: [5]}
        body: dict[str, Any] = {"value": [{"@iot.id": i} for i in pages[skip]]}
        if skip < 4:
            body["@iot.nextLink"] = f"{stub.url}/Things?$top=2&$skip={skip + 2}"
        return 200, {}, body

    stub.reset(answer)
    got = [e["@iot.id"] for e in client.collection("Things", {"$top": 2})]
    assert got == [1, 2, 3, 4, 5]
    gets = stub.requests("GET", "/v1.1/Things")
    assert len(gets) == 3
    assert gets[0].query == {"$top": ["2"]}
    assert [g.query["$skip"] for g in gets[1:]] == [["2"], ["4"]]


def test_collection_requotes_a_next_link_with_raw_spaces(stub: StaStub, client: StaClient) -> None:
    def answer(seen: Seen) -> Reply:
        if "$skip" not in seen.query:
            link = f"{stub.url}/Things?$filter=name eq 'x'&$skip=2"  # not encoded by the server
            return 200, {}, {"value": [{"@iot.id": 1}, {"@iot.id": 2}], "@iot.nextLink": link}
        return 200, {}, {"value": [{"@iot.id": 3}]}

    stub.reset(answer)
    got = [e["@iot.id"] for e in client.collection("Things", {"$filter": "name eq 'x'"})]
    assert got == [1, 2, 3]
    first, second = stub.requests("GET")
    assert first.query == {"$filter": ["name eq 'x'"]}
    assert " " not in second.target
    assert second.target == "/v1.1/Things?$filter=name%20eq%20'x'&$skip=2"
    assert second.query == {"$filter": ["name eq 'x'"], "$skip": ["2"]}


def test_collection_requotes_a_hash_in_a_next_link(stub: StaStub, client: StaClient) -> None:
    # unquoted, "#" would start a fragment: the rest of the query would never reach the server
    def answer(seen: Seen) -> Reply:
        if "$skip" not in seen.query:
            link = f"{stub.url}/Things?$filter=name eq 'ASE #1'&$skip=1"
            return 200, {}, {"value": [{"@iot.id": 1}], "@iot.nextLink": link}
        return 200, {}, {"value": [{"@iot.id": 2}]}

    stub.reset(answer)
    assert [e["@iot.id"] for e in client.collection("Things")] == [1, 2]
    second = stub.requests("GET")[1]
    assert second.target == "/v1.1/Things?$filter=name%20eq%20'ASE%20%231'&$skip=1"
    assert second.query == {"$filter": ["name eq 'ASE #1'"], "$skip": ["1"]}


def test_collection_never_follows_the_same_next_link_twice(
    stub: StaStub, client: StaClient
) -> None:
    # every page points to itself (with new entities each time, so only the link can stop it)
    counter = iter(range(1, 10_000))

    def answer(seen: Seen) -> Reply:
        n = next(counter)
        return 200, {}, {"value": [{"@iot.id": n}], "@iot.nextLink": f"{stub.url}/Things?$skip=0"}

    stub.reset(answer)
    got = [e["@iot.id"] for e in islice(client.collection("Things"), 50)]
    assert got == [1, 2]  # the first page, then the nextLink once
    assert len(stub.requests("GET")) == 2


def test_collection_stops_on_a_cycle_of_next_links(stub: StaStub, client: StaClient) -> None:
    counter = iter(range(1, 10_000))

    def answer(seen: Seen) -> Reply:
        page = seen.query.get("page", ["a"])[0]
        other = "b" if page == "a" else "a"
        link = f"{stub.url}/Things?page={other}"
        return 200, {}, {"value": [{"@iot.id": next(counter)}], "@iot.nextLink": link}

    stub.reset(answer)
    got = [e["@iot.id"] for e in islice(client.collection("Things"), 50)]
    # start, ?page=b, ?page=a; then ?page=b again is a link already followed
    assert got == [1, 2, 3]
    assert len(stub.requests("GET")) == 3


def test_collection_stops_on_an_empty_page_with_a_next_link(
    stub: StaStub, client: StaClient
) -> None:
    def answer(seen: Seen) -> Reply:
        skip = int(seen.query.get("$skip", ["0"])[0])
        values = {0: [{"@iot.id": 1}], 1: [], 2: [{"@iot.id": 99}]}[skip]
        return 200, {}, {"value": values, "@iot.nextLink": f"{stub.url}/Things?$skip={skip + 1}"}

    stub.reset(answer)
    assert [e["@iot.id"] for e in client.collection("Things")] == [1]
    assert len(stub.requests("GET")) == 2  # the empty page's nextLink is not followed


def test_collection_yields_an_id_seen_on_an_earlier_page_once(
    stub: StaStub, client: StaClient
) -> None:
    def answer(seen: Seen) -> Reply:
        if "$skip" not in seen.query:
            values = [{"@iot.id": 1, "v": "p1"}, {"@iot.id": "a", "v": "p1"}]
            return 200, {}, {"value": values, "@iot.nextLink": f"{stub.url}/Things?$skip=2"}
        values = [{"@iot.id": "a", "v": "p2"}, {"@iot.id": 2, "v": "p2"}, {"@iot.id": 1, "v": "p2"}]
        return 200, {}, {"value": values}

    stub.reset(answer)
    got = [(e["@iot.id"], e["v"]) for e in client.collection("Things")]
    assert got == [(1, "p1"), ("a", "p1"), (2, "p2")]


def test_collection_of_one_page_without_next_link(stub: StaStub, client: StaClient) -> None:
    stub.reset(lambda seen: (200, {}, {"value": [{"@iot.id": 1}]}))
    assert list(client.collection("Datastreams(3)/Observations")) == [{"@iot.id": 1}]
    (only,) = stub.requests("GET")
    assert only.path == "/v1.1/Datastreams(3)/Observations"


def test_find_filters_by_quoted_name_and_sorts_oldest_first(
    stub: StaStub, client: StaClient
) -> None:
    values = [{"@iot.id": 9}, {"@iot.id": "b"}, {"@iot.id": 3}, {"@iot.id": "a"}]
    stub.reset(lambda seen: (200, {}, {"value": values}))
    found = client.find("Things", "O'Hare", **{"$expand": "Locations"})
    assert [e["@iot.id"] for e in found] == [3, 9, "a", "b"]
    (seen,) = stub.requests("GET", "/v1.1/Things")
    assert seen.query == {"$filter": ["name eq 'O''Hare'"], "$expand": ["Locations"]}


# ------------------------------------------------------------------------ create, patch, delete


@pytest.mark.parametrize(
    ("location", "expected"),
    [("Things(7)", 7), ("Things('a''b')", "a'b"), ("Things(8) ", 8)],
)
def test_create_takes_the_id_from_the_location_header(
    stub: StaStub, client: StaClient, location: str, expected: int | str
) -> None:
    stub.reset(lambda seen: (201, {"Location": f"{stub.url}/{location}"}, None))
    thing = Thing("ASE01", "station", location_ids=(2,))
    assert client.create(thing) == expected
    (post,) = stub.requests("POST")
    assert post.path == "/v1.1/Things"
    assert post.body == thing.to_json()


@pytest.mark.parametrize("entity_id", [42, "uuid-1"])
def test_create_takes_the_id_from_the_body_without_a_location_header(
    stub: StaStub, client: StaClient, entity_id: int | str
) -> None:
    stub.reset(lambda seen: (201, {}, {"@iot.id": entity_id, "name": "S"}))
    got = client.create(Sensor("S", "d", "https://x"))
    assert got == entity_id
    assert type(got) is type(entity_id)
    assert stub.requests("POST")[0].path == "/v1.1/Sensors"


@pytest.mark.parametrize("body", [None, {"name": "S"}])
def test_create_without_location_or_body_id_is_a_sta_error(
    stub: StaStub, client: StaClient, body: Any
) -> None:
    stub.reset(lambda seen: (201, {}, body))
    with pytest.raises(StaError, match=r"POST Sensors: HTTP 201 without a Location or @iot.id"):
        client.create(Sensor("S", "d", "https://x"))


def test_patch_sends_the_body_to_the_entity_path(stub: StaStub, client: StaClient) -> None:
    stub.reset(lambda seen: (200, {}, None))
    client.patch("Things", "a'b", MappingProxyType({"description": "new"}))
    (patch,) = stub.requests("PATCH")
    assert patch.path == "/v1.1/Things('a''b')"
    assert patch.body == {"description": "new"}


@pytest.mark.parametrize(("status", "expected"), [(204, True), (200, True), (404, False)])
def test_delete(stub: StaStub, client: StaClient, status: int, expected: bool) -> None:
    stub.reset(lambda seen: (status, {}, None))
    assert client.delete("Things", 7) is expected
    assert stub.requests("DELETE")[0].path == "/v1.1/Things(7)"


def test_delete_raises_other_refusals(stub: StaStub, client: StaClient) -> None:
    stub.reset(lambda seen: (409, {}, "still referenced"))
    with pytest.raises(StaRejected) as info:
        client.delete("Things", "x")
    assert info.value.status == 409
    assert stub.requests("DELETE")[0].path == "/v1.1/Things('x')"


# ------------------------------------------------------------------------ error classification


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_retryable_statuses_are_unavailable(stub: StaStub, client: StaClient, status: int) -> None:
    stub.reset(lambda seen: (status, {}, "busy, try later"))
    with pytest.raises(StaUnavailable) as info:
        client.get("Things", {"$top": 1})
    exc = info.value
    assert not isinstance(exc, PermanentError)
    assert not isinstance(exc, StaRejected)
    assert exc.status == status
    assert str(exc) == f"GET /v1.1/Things: HTTP {status}: busy, try later"
    assert PASSWORD not in str(exc)
    # the password did go to the server (in the session's auth), so its absence means something
    sent = stub.requests("GET")[0].authorization
    assert sent == "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_rejected_and_permanent(
    stub: StaStub, client: StaClient, status: int
) -> None:
    stub.reset(lambda seen: (status, {}, {"message": "bad request"}))
    with pytest.raises(StaRejected) as info:
        client.create(Thing("T", "d"))
    exc = info.value
    assert isinstance(exc, PermanentError)
    assert isinstance(exc, StaError)
    assert not isinstance(exc, StaUnavailable)
    assert exc.status == status
    assert str(exc).startswith(f"POST /v1.1/Things: HTTP {status}: ")
    assert "bad request" in str(exc)
    assert PASSWORD not in str(exc)


def test_error_message_without_body_has_no_trailing_detail(
    stub: StaStub, client: StaClient
) -> None:
    stub.reset(lambda seen: (422, {}, None))
    with pytest.raises(StaRejected) as info:
        client.patch("Things", 7, {"name": "x"})
    assert str(info.value) == "PATCH /v1.1/Things(7): HTTP 422"


def test_error_detail_is_cut_to_500_characters(stub: StaStub, client: StaClient) -> None:
    stub.reset(lambda seen: (400, {}, "x" * 2000))
    with pytest.raises(StaRejected) as info:
        client.get("Things")
    assert str(info.value) == "GET /v1.1/Things: HTTP 400: " + "x" * 500


def test_connection_refused_is_unavailable_and_hides_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the port is closed now: nothing listens there
    client = StaClient(f"http://127.0.0.1:{port}/v1.1", auth=("user", PASSWORD), timeout=2)
    with pytest.raises(StaUnavailable) as info:
        client.get("Things")
    exc = info.value
    assert not isinstance(exc, PermanentError)
    assert exc.status is None
    assert str(exc).startswith("GET /v1.1/Things: ConnectionError")
    assert PASSWORD not in str(exc)
    assert PASSWORD not in repr(exc)


def test_timeout_is_unavailable(stub: StaStub) -> None:
    def slow(seen: Seen) -> Reply:
        time.sleep(0.4)
        return 200, {}, {"value": []}

    stub.reset(slow)
    client = StaClient(stub.url, auth=("user", PASSWORD), timeout=0.1)
    with pytest.raises(StaUnavailable) as info:
        client.get("Things")
    assert "Timeout" in str(info.value)
    assert str(info.value).startswith("GET /v1.1/Things: ")
    assert PASSWORD not in str(info.value)


# ------------------------------------------------------------------------ create_observations


def data_array_answer(error_results: tuple[float, ...] = ()) -> Answer:
    """CreateObservations answered the way a server does: one link per row, in body order;
    an observation's id is 100 + its result (so the test can tell which is which)."""

    def answer(seen: Seen) -> Reply:
        if seen.method == "POST" and seen.path == "/v1.1/CreateObservations":
            links = []
            for group in seen.body:
                result_at = group["components"].index("result")
                for row in group["dataArray"]:
                    result = row[result_at]
                    links.append(
                        "error"
                        if result in error_results
                        else f"http://h/v1.1/Observations({100 + int(result)})"
                    )
            return 201, {}, links
        return not_found(seen)

    return answer


def test_create_observations_sends_one_data_array_group_per_datastream(
    stub: StaStub, client: StaClient
) -> None:
    stub.reset(data_array_answer())
    observations = [obs(10, 0), obs(20, 1), obs(10, 2), obs("d'3", 3), obs(20, 4), obs(10, 5)]
    ids = client.create_observations(observations)
    assert ids == [100, 101, 102, 103, 104, 105]  # the caller's order, not the groups'
    posts = stub.requests("POST")
    assert [p.path for p in posts] == ["/v1.1/CreateObservations"]
    components = list(Observation.COMPONENTS)
    assert posts[0].body == [
        {
            "Datastream": {"@iot.id": 10},
            "components": components,
            "dataArray": [observations[i].row() for i in (0, 2, 5)],
        },
        {
            "Datastream": {"@iot.id": 20},
            "components": components,
            "dataArray": [observations[i].row() for i in (1, 4)],
        },
        {
            "Datastream": {"@iot.id": "d'3"},
            "components": components,
            "dataArray": [observations[3].row()],
        },
    ]
    assert client.data_array is True


def test_create_observations_error_entries_are_none(stub: StaStub, client: StaClient) -> None:
    stub.reset(data_array_answer(error_results=(1, 2)))
    ids = client.create_observations([obs(10, 0), obs(20, 1), obs(10, 2), obs(20, 3)])
    assert ids == [100, None, None, 103]


def test_create_observations_with_string_ids_and_non_string_entries(
    stub: StaStub, client: StaClient
) -> None:
    links = ["http://h/v1.1/Observations('o''1')", None, "http://h/v1.1/Observations(7)"]
    stub.reset(lambda seen: (201, {}, links))
    assert client.create_observations([obs(1, 0), obs(1, 1), obs(1, 2)]) == ["o'1", None, 7]


def test_create_observations_of_nothing_sends_nothing(stub: StaStub, client: StaClient) -> None:
    assert client.create_observations([]) == []
    assert stub.requests() == []


@pytest.mark.parametrize("answer", [["http://h/v1.1/Observations(1)"], [], {"value": []}])
def test_create_observations_answer_of_the_wrong_shape_is_a_sta_error(
    stub: StaStub, client: StaClient, answer: Any
) -> None:
    stub.reset(lambda seen: (201, {}, answer))
    with pytest.raises(StaError, match="CreateObservations: 2 sent") as info:
        client.create_observations([obs(1, 0), obs(2, 1)])
    assert type(info.value) is StaError
    assert client.data_array is True


def fallback_answer(not_supported: int, refused_results: tuple[float, ...] = ()) -> Answer:
    """A server without CreateObservations: ``not_supported`` there; POST /Observations
    answers 201 with a Location (id 100 + result) or 422 for the refused results."""

    def answer(seen: Seen) -> Reply:
        if seen.path == "/v1.1/CreateObservations":
            return not_supported, {}, {"message": "no such path"}
        if seen.method == "POST" and seen.path == "/v1.1/Observations":
            result = seen.body["result"]
            if result in refused_results:
                return 422, {}, {"message": "bad observation"}
            return 201, {"Location": f"http://h/v1.1/Observations({100 + int(result)})"}, None
        return not_found(seen)

    return answer


@pytest.mark.parametrize("status", [404, 405])
def test_create_observations_falls_back_to_single_posts_and_remembers(
    stub: StaStub, client: StaClient, status: int
) -> None:
    stub.reset(fallback_answer(status, refused_results=(1,)))
    observations = [obs(10, 0), obs(20, 1), obs(10, 2)]
    assert client.create_observations(observations) == [100, None, 102]
    assert client.data_array is False
    posts = stub.requests("POST")
    assert [p.path for p in posts] == ["/v1.1/CreateObservations"] + ["/v1.1/Observations"] * 3
    assert [p.body for p in posts[1:]] == [o.to_json() for o in observations]

    stub.reset(fallback_answer(status))
    assert client.create_observations([obs(20, 5), obs(10, 6)]) == [105, 106]
    posts = stub.requests("POST")
    assert [p.path for p in posts] == ["/v1.1/Observations"] * 2  # no CreateObservations


@pytest.mark.parametrize("status", [400, 403, 422])
def test_create_observations_other_refusals_are_raised_without_fallback(
    stub: StaStub, client: StaClient, status: int
) -> None:
    stub.reset(fallback_answer(status))
    with pytest.raises(StaRejected) as info:
        client.create_observations([obs(10, 0)])
    assert info.value.status == status
    assert client.data_array is True
    assert [p.path for p in stub.requests("POST")] == ["/v1.1/CreateObservations"]


def test_create_observations_unavailable_is_raised_without_fallback(
    stub: StaStub, client: StaClient
) -> None:
    stub.reset(fallback_answer(503))
    with pytest.raises(StaUnavailable):
        client.create_observations([obs(10, 0)])
    assert client.data_array is True
    assert [p.path for p in stub.requests("POST")] == ["/v1.1/CreateObservations"]


def test_create_observations_single_posts_propagate_unavailable(
    stub: StaStub, client: StaClient
) -> None:
    client.data_array = False

    def answer(seen: Seen) -> Reply:
        return 503, {}, "down"

    stub.reset(answer)
    with pytest.raises(StaUnavailable):
        client.create_observations([obs(10, 0), obs(10, 1)])
    assert [p.path for p in stub.requests("POST")] == ["/v1.1/Observations"]


def test_create_observations_falls_back_on_501(stub: StaStub, client: StaClient) -> None:
    stub.reset(fallback_answer(501))
    assert client.create_observations([obs(10, 0), obs(20, 1)]) == [100, 101]
    assert client.data_array is False
