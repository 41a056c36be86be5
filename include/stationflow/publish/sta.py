"""An OGC SensorThings API (v1.1) client: typed entities, lookups by name, creation, updates
and batched Observations (the dataArray ``CreateObservations`` extension, with single POSTs
where the server lacks it).

Kept to the standard, so it works against any conformant server (FROST-Server,
django-ogc-sensorthings):

- an entity's id is read from the ``Location`` header of the 201 (a server may answer with
  an empty body), or from the body's ``@iot.id`` when there is one; ids are numbers or
  strings, and written in paths as ``Things(1)`` / ``Things('a-b')``;
- collections are paged through ``@iot.nextLink``, which is re-quoted (some servers do not
  encode it) and never followed twice (a server that emits a nextLink for an empty or
  repeated page cannot make us loop); entities seen on an earlier page are skipped;
- Observations are created with POST ``/Observations`` carrying ``Datastream`` by id, not
  with POST ``Datastreams(id)/Observations`` (optional in the standard);
- order by ``resultTime`` rather than ``phenomenonTime`` (a server may not sort intervals).

Errors: ``StaUnavailable`` (5xx, 408, 429, timeouts, connection errors: retry later),
``StaRejected`` (other 4xx: the request is wrong, a person has to look; a ``PermanentError``).
A password is only ever in the session's auth, never in a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import requests

from stationflow.errors import PermanentError

Id = int | str
OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
GEOJSON = "application/geo+json"
RETRYABLE = (408, 429)
_ID_IN_LINK = re.compile(r"\((?:'((?:[^']|'')*)'|(-?\d+))\)\s*$")
_NOT_SUPPORTED = (404, 405, 501)  # what a server without an (optional) endpoint answers


class StaError(Exception):
    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class StaUnavailable(StaError):
    """The server is down, busy or timed out: the same request may succeed later."""


class StaRejected(StaError, PermanentError):
    """The server refused the request (4xx): sending it again will not help."""


# ------------------------------------------------------------------------ entities


def iso(t: datetime) -> str:
    """UTC ISO 8601 with ``Z``: what every STA server parses."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: STA times must be timezone-aware")
    u = t.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S") + (f".{u.microsecond:06d}Z" if u.microsecond else "Z")


def ref(entity_id: Id) -> dict[str, Id]:
    return {"@iot.id": entity_id}


def point(lon: float | None, lat: float | None) -> dict[str, Any]:
    """A GeoJSON Point, or an empty GeometryCollection for a station that sent no position
    (valid GeoJSON; a made-up 0,0 would be a silently wrong place)."""
    if lon is None or lat is None:
        return {"type": "GeometryCollection", "geometries": []}
    return {"type": "Point", "coordinates": [lon, lat]}


@dataclass(frozen=True)
class Location:
    SET: ClassVar[str] = "Locations"
    name: str
    description: str
    lon: float | None
    lat: float | None
    properties: Mapping[str, Any] = field(default_factory=dict)
    thing_ids: tuple[Id, ...] = ()  # link it to existing Things (their current Location)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "encodingType": GEOJSON,
            "location": point(self.lon, self.lat),
            "properties": dict(self.properties),
        }
        if self.thing_ids:
            body["Things"] = [ref(i) for i in self.thing_ids]
        return body


@dataclass(frozen=True)
class Thing:
    SET: ClassVar[str] = "Things"
    name: str
    description: str
    properties: Mapping[str, Any] = field(default_factory=dict)
    location_ids: tuple[Id, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "properties": dict(self.properties),
        }
        if self.location_ids:
            body["Locations"] = [ref(i) for i in self.location_ids]
        return body


@dataclass(frozen=True)
class Sensor:
    SET: ClassVar[str] = "Sensors"
    name: str
    description: str
    metadata: str  # a URL of the datasheet
    encoding_type: str = "text/html"
    properties: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "encodingType": self.encoding_type,
            "metadata": self.metadata,
            "properties": dict(self.properties),
        }


@dataclass(frozen=True)
class ObservedProperty:
    SET: ClassVar[str] = "ObservedProperties"
    name: str
    definition: str
    description: str
    properties: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": self.definition,
            "description": self.description,
            "properties": dict(self.properties),
        }


@dataclass(frozen=True)
class Unit:
    name: str
    symbol: str
    definition: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "symbol": self.symbol, "definition": self.definition}


@dataclass(frozen=True)
class Datastream:
    SET: ClassVar[str] = "Datastreams"
    name: str
    description: str
    unit: Unit
    thing_id: Id
    sensor_id: Id
    observed_property_id: Id
    observation_type: str = OM_MEASUREMENT
    properties: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "observationType": self.observation_type,
            "unitOfMeasurement": self.unit.to_json(),
            "properties": dict(self.properties),
            "Thing": ref(self.thing_id),
            "Sensor": ref(self.sensor_id),
            "ObservedProperty": ref(self.observed_property_id),
        }


@dataclass(frozen=True)
class FeatureOfInterest:
    SET: ClassVar[str] = "FeaturesOfInterest"
    name: str
    description: str
    lon: float | None
    lat: float | None
    properties: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "encodingType": GEOJSON,
            "feature": point(self.lon, self.lat),
            "properties": dict(self.properties),
        }


@dataclass(frozen=True)
class Observation:
    SET: ClassVar[str] = "Observations"
    datastream_id: Id
    feature_id: Id
    phenomenon_time: datetime
    result_time: datetime
    result: float
    parameters: Mapping[str, Any] = field(default_factory=dict)

    COMPONENTS: ClassVar[tuple[str, ...]] = (
        "phenomenonTime", "resultTime", "result", "FeatureOfInterest/id", "parameters",
    )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "phenomenonTime": iso(self.phenomenon_time),
            "resultTime": iso(self.result_time),
            "result": self.result,
            "parameters": dict(self.parameters),
            "Datastream": ref(self.datastream_id),
            "FeatureOfInterest": ref(self.feature_id),
        }

    def row(self) -> list[Any]:
        """Its dataArray row, in ``COMPONENTS`` order."""
        return [
            iso(self.phenomenon_time),
            iso(self.result_time),
            self.result,
            self.feature_id,
            dict(self.parameters),
        ]


Entity = Location | Thing | Sensor | ObservedProperty | Datastream | FeatureOfInterest | Observation


# ------------------------------------------------------------------------ client


def id_literal(entity_id: Id) -> str:
    """``1`` or ``'a-b'`` (quotes doubled), as ids are written in paths and $filter."""
    if isinstance(entity_id, int):
        return str(entity_id)
    return "'" + str(entity_id).replace("'", "''") + "'"


def string_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def id_from_link(link: str) -> Id:
    """The id at the end of an entity's URL: ``.../Things(7)`` or ``.../Things('a-b')``."""
    m = _ID_IN_LINK.search(link)
    if m is None:
        raise StaError(f"no entity id in {link!r}")
    return m.group(1).replace("''", "'") if m.group(1) is not None else int(m.group(2))


class StaClient:
    """One server's service root (``.../v1.1``); a requests Session with its auth."""

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        timeout: float = 60.0,
        session: requests.Session | None = None,
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.auth = auth
        self.session.verify = verify
        self.session.headers.setdefault("Accept", "application/json")
        self.data_array = True  # CreateObservations, until the server says it has none

    def __repr__(self) -> str:
        return f"StaClient({self.url!r})"

    # -- HTTP
    def _request(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        url = path_or_url if "://" in path_or_url else f"{self.url}/{path_or_url}"
        what = f"{method} {urlsplit(url).path}"
        try:
            r = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise StaUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
        if r.status_code < 400:
            return r
        detail = r.text[:500].strip()
        message = f"{what}: HTTP {r.status_code}" + (f": {detail}" if detail else "")
        if r.status_code >= 500 or r.status_code in RETRYABLE:
            raise StaUnavailable(message, status=r.status_code)
        raise StaRejected(message, status=r.status_code)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._request("GET", path, params=params).json()

    def collection(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every entity of a collection, across pages; each id once."""
        page = self.get(path, params)
        seen_links: set[str] = set()
        seen_ids: set[Any] = set()
        while True:
            values = page.get("value", [])
            for v in values:
                key = v.get("@iot.id")
                if key is None or key not in seen_ids:
                    seen_ids.add(key)
                    yield v
            link = page.get("@iot.nextLink")
            if not link or not values or link in seen_links:
                return
            seen_links.add(link)
            page = self._request("GET", quote(link, safe=":/?&=$'(),;@%+")).json()

    def find(self, entity_set: str, name: str, **params: str) -> list[dict]:
        """The entities named ``name`` (oldest id first: the one to use if there are two)."""
        found = list(
            self.collection(entity_set, {"$filter": f"name eq {string_literal(name)}", **params})
        )
        return sorted(found, key=lambda e: (str(type(e["@iot.id"])), e["@iot.id"]))

    def create(self, entity: Entity) -> Id:
        r = self._request("POST", entity.SET, json=entity.to_json())
        if r.headers.get("Location"):
            return id_from_link(r.headers["Location"])
        body = r.json() if r.content else {}
        if "@iot.id" in body:
            return body["@iot.id"]
        raise StaError(f"POST {entity.SET}: HTTP {r.status_code} without a Location or @iot.id")

    def patch(self, entity_set: str, entity_id: Id, body: Mapping[str, Any]) -> None:
        self._request("PATCH", f"{entity_set}({id_literal(entity_id)})", json=dict(body))

    def delete(self, entity_set: str, entity_id: Id) -> bool:
        """False when it was not there."""
        try:
            self._request("DELETE", f"{entity_set}({id_literal(entity_id)})")
        except StaRejected as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_observations(self, observations: Sequence[Observation]) -> list[Id | None]:
        """Create them in one request where the server can (one dataArray group per
        Datastream), else one POST each. Per observation, in order: its id, or None for one
        the server refused (a batch reports refusals row by row)."""
        if not observations:
            return []
        if self.data_array:
            try:
                return self._create_data_array(observations)
            except (StaRejected, StaUnavailable) as exc:
                if exc.status not in _NOT_SUPPORTED:
                    raise
                self.data_array = False
        out: list[Id | None] = []
        for obs in observations:
            try:
                out.append(self.create(obs))
            except StaRejected:
                out.append(None)
        return out

    def _create_data_array(self, observations: Sequence[Observation]) -> list[Id | None]:
        groups: dict[Id, list[int]] = {}
        for i, obs in enumerate(observations):
            groups.setdefault(obs.datastream_id, []).append(i)
        body = [
            {
                "Datastream": ref(ds),
                "components": list(Observation.COMPONENTS),
                "dataArray": [observations[i].row() for i in idx],
            }
            for ds, idx in groups.items()
        ]
        links = self._request("POST", "CreateObservations", json=body).json()
        order = [i for idx in groups.values() for i in idx]
        if not isinstance(links, list) or len(links) != len(order):
            raise StaError(
                f"CreateObservations: {len(observations)} sent, answer not a list of as many"
            )
        out: list[Id | None] = [None] * len(observations)
        for i, link in zip(order, links, strict=True):
            out[i] = None if not isinstance(link, str) or link == "error" else id_from_link(link)
        return out
