"""The low-level SOS-T client: 52North SOS 2.0, transactional profile, JSON binding.

Request bodies are typed (``SosFeature``, ``SosSensor``, ``SosObservation``, each with a
``to_json()``); the SensorML 2.0 procedure description is built with ElementTree, never
from a string template. ``SosClient`` posts them and turns every answer into either a
return value or one of the errors below (docs/sos-t.md has the answers they come from):

* ``SosDuplicate``: the observation is already stored (same identifier, or the same
  procedure/property/feature/times) - for a publisher that retries, this means "done";
* ``SosRejected`` (a ``PermanentError``): any other 4xx - malformed, invalid, not allowed;
* ``SosUnavailable``: 5xx, timeouts, connection errors - retry later (the client itself
  never retries, except the one InsertSensor-then-InsertObservation of lazy insertion).
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from stationflow.errors import PermanentError

SERVICE = "SOS"
VERSION = "2.0.0"
CODESPACE_UNKNOWN = "http://www.opengis.net/def/nil/OGC/0/unknown"
OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
SF_SAMPLING_POINT = "http://www.opengis.net/def/samplingFeatureType/OGC-OM/2.0/SF_SamplingPoint"
SENSORML_20 = "http://www.opengis.net/sensorml/2.0"
OFFERING_DEFINITION = "urn:ogc:def:identifier:OGC:offeringID"
FEATURE_DEFINITION = "http://www.opengis.net/def/featureOfInterest/identifier"
LONG_NAME = "urn:ogc:def:identifier:OGC:1.0:longName"
SHORT_NAME = "urn:ogc:def:identifier:OGC:1.0:shortName"
EPSG_4326 = "urn:ogc:def:crs:EPSG::4326"

NS = {
    "sml": SENSORML_20,
    "swe": "http://www.opengis.net/swe/2.0",
    "gml": "http://www.opengis.net/gml/3.2",
    "xlink": "http://www.w3.org/1999/xlink",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

_DUPLICATE_TEXTS = ("already contained in database", "already exists in the database")
_DUPLICATE_ID = re.compile(r"The observation identifier '(.+?)' already exists in the database")
_NCNAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def iso_z(dt: datetime) -> str:
    """An aware datetime as UTC ISO 8601 with ``Z`` (``2026-01-05T10:00:00Z``)."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: give a timezone (UTC)")
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ncname(text: str) -> str:
    name = _NCNAME_BAD.sub("_", text)
    return name if name[:1].isalpha() or name[:1] == "_" else f"_{name}"


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


# ------------------------------------------------------------------ request bodies


@dataclass(frozen=True)
class SosFeature:
    """The feature of interest (a sampling point: the station's location).

    Without coordinates the feature is sent as a reference (its identifier only), which the
    SOS accepts only for a feature it already has."""

    identifier: str
    name: str
    lon: float | None
    lat: float | None

    def __post_init__(self) -> None:
        if (self.lon is None) != (self.lat is None):
            raise ValueError(f"feature {self.identifier}: give both lon and lat, or neither")
        for v in (self.lon, self.lat):
            if v is not None and not math.isfinite(v):
                raise ValueError(f"feature {self.identifier}: coordinates must be finite")

    def to_json(self) -> dict[str, Any] | str:
        if self.lon is None or self.lat is None:
            return self.identifier
        return {
            "identifier": {"value": self.identifier, "codespace": CODESPACE_UNKNOWN},
            "name": [{"value": self.name, "codespace": CODESPACE_UNKNOWN}],
            "geometry": {
                "type": "Point",
                # EPSG:4326 axis order (latitude, longitude), as 52North reads it
                "coordinates": [self.lat, self.lon],
                "crs": {"type": "name", "properties": {"name": "EPSG:4326"}},
            },
        }


@dataclass(frozen=True)
class SosSensor:
    """A station as an SOS procedure with its own offering."""

    procedure: str
    offering: str
    name: str
    observable_properties: tuple[str, ...]
    feature: SosFeature

    def __post_init__(self) -> None:
        if not self.observable_properties:
            raise ValueError(f"sensor {self.procedure}: no observable properties")

    def sensorml(self) -> str:
        """The SensorML 2.0 ``PhysicalSystem`` describing the station."""
        root = ET.Element(_q("sml", "PhysicalSystem"), {_q("gml", "id"): _ncname(self.procedure)})
        ident = ET.SubElement(root, _q("gml", "identifier"), codeSpace="uniqueID")
        ident.text = self.procedure
        idents = ET.SubElement(
            ET.SubElement(root, _q("sml", "identification")), _q("sml", "IdentifierList")
        )
        for definition, label in ((LONG_NAME, "longName"), (SHORT_NAME, "shortName")):
            term = ET.SubElement(
                ET.SubElement(idents, _q("sml", "identifier")),
                _q("sml", "Term"),
                definition=definition,
            )
            ET.SubElement(term, _q("sml", "label")).text = label
            ET.SubElement(term, _q("sml", "value")).text = self.name
        caps = ET.SubElement(
            ET.SubElement(root, _q("sml", "capabilities"), name="offerings"),
            _q("sml", "CapabilityList"),
        )
        text = ET.SubElement(
            ET.SubElement(caps, _q("sml", "capability"), name="offeringID"),
            _q("swe", "Text"),
            definition=OFFERING_DEFINITION,
        )
        ET.SubElement(text, _q("swe", "label")).text = self.name
        ET.SubElement(text, _q("swe", "value")).text = self.offering
        features = ET.SubElement(
            ET.SubElement(root, _q("sml", "featuresOfInterest")),
            _q("sml", "FeatureList"),
            definition=FEATURE_DEFINITION,
        )
        ET.SubElement(features, _q("swe", "label")).text = "featuresOfInterest"
        ET.SubElement(
            features, _q("sml", "feature"), {_q("xlink", "href"): self.feature.identifier}
        )
        outputs = ET.SubElement(ET.SubElement(root, _q("sml", "outputs")), _q("sml", "OutputList"))
        for prop in self.observable_properties:
            out = ET.SubElement(outputs, _q("sml", "output"), name=_ncname(prop))
            quantity = ET.SubElement(out, _q("swe", "Quantity"), definition=prop)
            ET.SubElement(quantity, _q("swe", "uom"), code="NOT_DEFINED")
        if self.feature.lon is not None and self.feature.lat is not None:
            vector = ET.SubElement(
                ET.SubElement(root, _q("sml", "position")),
                _q("swe", "Vector"),
                referenceFrame=EPSG_4326,
            )
            for axis, label, value in (
                ("x", "easting", self.feature.lon),
                ("y", "northing", self.feature.lat),
            ):
                q = ET.SubElement(
                    ET.SubElement(vector, _q("swe", "coordinate"), name=label),
                    _q("swe", "Quantity"),
                    axisID=axis,
                )
                ET.SubElement(q, _q("swe", "uom"), code="deg")
                ET.SubElement(q, _q("swe", "value")).text = repr(float(value))
        return ET.tostring(root, encoding="unicode")

    def to_json(self) -> dict[str, Any]:
        """The InsertSensor request."""
        return {
            "request": "InsertSensor",
            "service": SERVICE,
            "version": VERSION,
            "procedureDescriptionFormat": SENSORML_20,
            "procedureDescription": self.sensorml(),
            "observableProperty": list(self.observable_properties),
            "observationType": [OM_MEASUREMENT],
            "featureOfInterestType": SF_SAMPLING_POINT,
        }


@dataclass(frozen=True)
class SosObservation:
    """One measurement: an hourly aggregate (``phenomenon_start`` given: a time period)
    or an instant."""

    identifier: str
    procedure: str
    offering: str
    observed_property: str
    feature: SosFeature
    phenomenon_start: datetime | None
    phenomenon_end: datetime
    result_time: datetime
    value: float
    uom: str

    def __post_init__(self) -> None:
        if not self.identifier:
            raise ValueError("an observation needs an identifier")
        if not math.isfinite(self.value):
            raise ValueError(f"observation {self.identifier}: value {self.value} is not finite")
        for dt in (self.phenomenon_start, self.phenomenon_end, self.result_time):
            if dt is not None:
                iso_z(dt)  # aware, or ValueError
        if self.phenomenon_start is not None and self.phenomenon_start >= self.phenomenon_end:
            raise ValueError(f"observation {self.identifier}: phenomenon start >= end")

    def phenomenon_time(self) -> str | list[str]:
        if self.phenomenon_start is None:
            return iso_z(self.phenomenon_end)
        return [iso_z(self.phenomenon_start), iso_z(self.phenomenon_end)]

    def to_json(self) -> dict[str, Any]:
        """The observation object of an InsertObservation request."""
        return {
            "identifier": {"value": self.identifier, "codespace": CODESPACE_UNKNOWN},
            "type": OM_MEASUREMENT,
            "procedure": self.procedure,
            "observedProperty": self.observed_property,
            "featureOfInterest": self.feature.to_json(),
            "phenomenonTime": self.phenomenon_time(),
            "resultTime": iso_z(self.result_time),
            "result": {"uom": self.uom, "value": float(self.value)},
        }


def insert_observation_request(
    offering: str, observations: Sequence[SosObservation]
) -> dict[str, Any]:
    """One InsertObservation: an observation object for one, an array for several."""
    if not observations:
        raise ValueError("InsertObservation needs at least one observation")
    items = [o.to_json() for o in observations]
    return {
        "request": "InsertObservation",
        "service": SERVICE,
        "version": VERSION,
        "offering": offering,
        "observation": items[0] if len(items) == 1 else items,
    }


def delete_observation_request(identifier: str) -> dict[str, Any]:
    return {
        "request": "DeleteObservation",
        "service": SERVICE,
        "version": VERSION,
        "observation": identifier,
    }


def get_observation_request(
    *,
    procedure: str | Sequence[str] | None = None,
    offering: str | Sequence[str] | None = None,
    observed_property: str | Sequence[str] | None = None,
    feature_of_interest: str | Sequence[str] | None = None,
    during: tuple[datetime, datetime] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"request": "GetObservation", "service": SERVICE, "version": VERSION}
    for key, value in (
        ("procedure", procedure),
        ("offering", offering),
        ("observedProperty", observed_property),
        ("featureOfInterest", feature_of_interest),
    ):
        if value is not None:
            body[key] = value if isinstance(value, str) else list(value)
    if during is not None:
        body["temporalFilter"] = {
            "during": {"ref": "om:phenomenonTime", "value": [iso_z(during[0]), iso_z(during[1])]}
        }
    return body


# ------------------------------------------------------------------ errors


@dataclass(frozen=True)
class OwsException:
    """One entry of an OWS exception report."""

    code: str
    locator: str | None = None
    text: str | None = None

    def __str__(self) -> str:
        where = f" at {self.locator}" if self.locator else ""
        text = f": {self.text.strip()}" if self.text else ""
        return f"{self.code}{where}{text}"


def parse_exception_report(body: str) -> tuple[OwsException, ...]:
    """The exceptions of a JSON exception report; () when the body is not one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ()
    items = doc.get("exceptions") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return ()
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str):
            continue
        text = item.get("text")
        if isinstance(text, list):
            text = "\n".join(str(t) for t in text)
        locator = item.get("locator")
        out.append(
            OwsException(
                item["code"],
                locator if isinstance(locator, str) else None,
                text if isinstance(text, str) else None,
            )
        )
    return tuple(out)


def _summary(identifiers: Sequence[str]) -> str:
    if not identifiers:
        return ""
    shown = ", ".join(identifiers[:3])
    more = f" and {len(identifiers) - 3} more" if len(identifiers) > 3 else ""
    return f" of {shown}{more}"


class SosError(Exception):
    """An SOS request that did not succeed: the request type, the identifiers it was about,
    the HTTP status (None: no answer) and the parsed exception report."""

    def __init__(
        self,
        request: str,
        identifiers: Sequence[str],
        status: int | None,
        exceptions: Sequence[OwsException] = (),
        detail: str = "",
    ):
        self.request = request
        self.identifiers = tuple(identifiers)
        self.status = status
        self.exceptions = tuple(exceptions)
        answer = f"HTTP {status}" if status is not None else "no answer"
        what = "; ".join(str(e) for e in self.exceptions) or detail
        super().__init__(
            f"SOS {request}{_summary(self.identifiers)} failed: {answer}"
            + (f": {what}" if what else "")
        )

    def has(self, code: str, locators: Iterable[str] | None = None) -> bool:
        wanted = set(locators) if locators is not None else None
        return any(
            e.code == code and (wanted is None or e.locator in wanted) for e in self.exceptions
        )

    @property
    def unknown_sensor(self) -> bool:
        """The 400 of an InsertObservation for a procedure/offering the SOS does not have."""
        return self.status == 400 and self.has("InvalidParameterValue", ("offering", "procedure"))


class SosDuplicate(SosError):
    """The SOS already has the observation; ``duplicates``: the identifiers it named
    (empty when it only says "same values")."""

    def __init__(self, *args: Any, duplicates: Sequence[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.duplicates = tuple(duplicates)


class SosRejected(SosError, PermanentError):
    """A 4xx: the request is wrong or not allowed; sending it again cannot help."""


class SosSensorExists(SosRejected):
    """InsertSensor for an offering the SOS already has."""


class SosUnavailable(SosError):
    """5xx, a timeout or a broken connection: the SOS may or may not have acted; retry."""


def classify(request: str, identifiers: Sequence[str], status: int, body: str) -> SosError | None:
    """The error an answer means, or None for a success."""
    exceptions = parse_exception_report(body)
    texts = [e.text or "" for e in exceptions if e.code == "NoApplicableCode"]
    if any(marker in t for t in texts for marker in _DUPLICATE_TEXTS) and status >= 400:
        named = [m.group(1) for t in texts for m in _DUPLICATE_ID.finditer(t)]
        return SosDuplicate(request, identifiers, status, exceptions, duplicates=named)
    if 200 <= status < 300:
        return SosRejected(request, identifiers, status, exceptions) if exceptions else None
    if status >= 500 or status in (408, 429):
        detail = "" if exceptions else _snippet(body)
        return SosUnavailable(request, identifiers, status, exceptions, detail)
    exists = any(
        e.code == "InvalidParameterValue" and e.locator == "offeringIdentifier" for e in exceptions
    )
    if request == "InsertSensor" and status == 400 and exists:
        return SosSensorExists(request, identifiers, status, exceptions)
    return SosRejected(
        request, identifiers, status, exceptions, "" if exceptions else _snippet(body)
    )


def _snippet(body: str) -> str:
    text = " ".join(body.split())
    return text[:200]


# ------------------------------------------------------------------ the client


class SosClient:
    """POSTs JSON SOS requests to ``url`` (52North: ``.../service``)."""

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        verify: bool = True,
        timeout: float = 30,
        session: requests.Session | None = None,
    ):
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            # credentials in the URL: move them to ``auth`` so no message ever shows them
            if auth is None:
                auth = (parts.username or "", parts.password or "")
            host = parts.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            if parts.port is not None:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        self.url = urlunsplit(parts)
        self._auth = auth
        self._verify = verify
        self._timeout = timeout
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"SosClient({self.url!r})"

    # ------------------------------------------------------------ transport

    def _post(self, request: str, body: dict[str, Any], identifiers: Sequence[str]) -> dict:
        try:
            response = self._session.post(
                self.url,
                data=json.dumps(body).encode("utf-8"),
                headers={
                    "Content-Type": "application/json;charset=UTF-8",
                    "Accept": "application/json",
                },
                auth=self._auth,
                verify=self._verify,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise SosUnavailable(request, identifiers, None, detail=f"timeout: {exc}") from exc
        except requests.RequestException as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise SosUnavailable(request, identifiers, None, detail=detail) from exc
        error = classify(request, identifiers, response.status_code, response.text)
        if error is not None:
            raise error
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise SosUnavailable(
                request,
                identifiers,
                response.status_code,
                detail=f"not a JSON answer: {_snippet(response.text)}",
            )
        return doc

    # ------------------------------------------------------------ operations

    def insert_sensor(self, sensor: SosSensor, *, exist_ok: bool = False) -> None:
        """InsertSensor; ``exist_ok``: an offering already there is success."""
        try:
            self._post("InsertSensor", sensor.to_json(), [sensor.procedure])
        except SosSensorExists:
            if not exist_ok:
                raise

    def insert_observations(
        self, sensor: SosSensor, observations: Sequence[SosObservation]
    ) -> None:
        """One InsertObservation with all ``observations`` (all of ``sensor``). When the SOS
        does not know the procedure/offering, InsertSensor(sensor) and the same
        InsertObservation once more (lazy sensor insertion); a second failure is raised."""
        if not observations:
            return
        for o in observations:
            if o.procedure != sensor.procedure or o.offering != sensor.offering:
                raise ValueError(
                    f"observation {o.identifier} is for {o.procedure}/{o.offering}, "
                    f"not for {sensor.procedure}/{sensor.offering}"
                )
        body = insert_observation_request(sensor.offering, observations)
        ids = [o.identifier for o in observations]
        try:
            self._post("InsertObservation", body, ids)
        except SosRejected as exc:
            if not exc.unknown_sensor:
                raise
            self.insert_sensor(sensor, exist_ok=True)
            self._post("InsertObservation", body, ids)

    def delete_observation(self, identifier: str) -> bool:
        """DeleteObservation (52North extension); False when the SOS has no such
        observation (sosdo 1.0: ``InvalidParameterValue`` at ``observation``)."""
        try:
            self._post("DeleteObservation", delete_observation_request(identifier), [identifier])
        except SosRejected as exc:
            if exc.status == 400 and exc.has("InvalidParameterValue", ("observation",)):
                return False
            raise
        return True

    def get_observations(
        self,
        *,
        procedure: str | Sequence[str] | None = None,
        offering: str | Sequence[str] | None = None,
        observed_property: str | Sequence[str] | None = None,
        feature_of_interest: str | Sequence[str] | None = None,
        during: tuple[datetime, datetime] | None = None,
    ) -> list[dict[str, Any]]:
        """GetObservation: the observations as the SOS encodes them (JSON objects)."""
        body = get_observation_request(
            procedure=procedure,
            offering=offering,
            observed_property=observed_property,
            feature_of_interest=feature_of_interest,
            during=during,
        )
        doc = self._post("GetObservation", body, [])
        observations = doc.get("observations") or []
        return [o for o in observations if isinstance(o, dict)]


__all__ = [
    "CODESPACE_UNKNOWN",
    "OM_MEASUREMENT",
    "SENSORML_20",
    "OwsException",
    "SosClient",
    "SosDuplicate",
    "SosError",
    "SosFeature",
    "SosObservation",
    "SosRejected",
    "SosSensor",
    "SosSensorExists",
    "SosUnavailable",
    "classify",
    "delete_observation_request",
    "get_observation_request",
    "insert_observation_request",
    "iso_z",
    "parse_exception_report",
]
