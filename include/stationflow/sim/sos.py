"""A 52North SOS 2.0 with the transactional profile and the JSON binding, on loopback.

``SosSim`` is a real HTTP server (a ``ThreadingHTTPServer`` in a thread) that answers POSTed
JSON requests at ``path`` the way 52North SOS 4.x/5.x does (docs/sos-t.md has the sources
and says which answers are confirmed and which are assumptions):

* ``InsertSensor``: SensorML 2.0 (or 1.0.1) in ``procedureDescription``; the procedure is the
  description's identifier, the offerings come from the ``offerings`` capabilities (none: the
  offering is the procedure). An offering already in the service:
  ``InvalidParameterValue`` at ``offeringIdentifier``. Answer: ``assignedProcedure`` and
  ``assignedOffering``.
* ``InsertObservation`` (one observation object or an array): the parameter checks of
  ``SosInsertObservationOperatorV20`` first, collected into one exception report (unknown
  offering, procedure, observedProperty: ``InvalidParameterValue`` at that parameter;
  observation type not allowed for the offering); then, per observation, the observation
  constellation (procedure, observedProperty, offering) - observations with an invalid
  constellation are left out, and only when all are invalid is the request refused (as
  ``InsertObservationDAO`` does). Duplicates (``NoApplicableCode``, HTTP 400): an identifier
  already stored (or twice in the request), or the same procedure/observedProperty/feature/
  offering/phenomenonTime/resultTime. A refused request stores nothing.
* ``DeleteObservation`` (the 52North extension; sosdo 1.0 answers): ``deletedObservation``,
  an unknown identifier is ``InvalidParameterValue`` at ``observation``.
* ``GetObservation``: procedure, offering, observedProperty, featureOfInterest (string or
  list) and ``temporalFilter`` ``during`` / ``equals`` on ``om:phenomenonTime``.
* ``GetCapabilities``: a minimal ``contents`` list (simulator-only shape).

Errors are the JSON exception report ``{"version": "2.0.0", "exceptions": [{"code",
"locator", "text"}]}``. Optional HTTP Basic auth (``credentials``): 401 without the right
ones. Simulator-only: ``fail_next`` (answer a status, store nothing), ``drop_next`` (handle
the request, store, then close the connection without an answer), ``requests`` (a counter
per request type), ``observations()``, ``sensors()``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from stationflow.sim.http_server import AnsweringHandler, LoopbackHttpServer

SERVICE = "SOS"
VERSION = "2.0.0"
CODESPACE_UNKNOWN = "http://www.opengis.net/def/nil/OGC/0/unknown"
OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
SENSORML_20 = "http://www.opengis.net/sensorml/2.0"
SENSORML_101 = "http://www.opengis.net/sensorML/1.0.1"
PROCEDURE_FORMATS = (SENSORML_20, SENSORML_101)
OFFERING_DEFINITION = "urn:ogc:def:identifier:OGC:offeringID"
PHENOMENON_TIME_REFS = ("om:phenomenonTime", "phenomenonTime")

# codes of OGC 06-121r9 / 52North OwsExceptionCode
INVALID = "InvalidParameterValue"
MISSING = "MissingParameterValue"
NO_CODE = "NoApplicableCode"
NOT_SUPPORTED = "OperationNotSupported"

MSG_SAME_VALUES = "Observation with same values already contained in database"
MSG_SAME_VALUES_CAUSE = (
    '\n[EXEPTION]: \nERROR: duplicate key value violates unique constraint "observationidentity"\n'
)
TRANSACTIONAL = ("InsertSensor", "InsertObservation", "DeleteObservation")
OPERATIONS = (*TRANSACTIONAL, "GetObservation", "GetCapabilities")


# ------------------------------------------------------------------ answers


def invalid(parameter: str, value: str) -> dict[str, str]:
    """``InvalidParameterValueException(parameter, value)``."""
    text = f"The value '{value}' of the parameter '{parameter}' is invalid"
    return {"code": INVALID, "locator": parameter, "text": text}


def missing(parameter: str) -> dict[str, str]:
    """``MissingParameterValueException(parameter)``."""
    text = f"The value for the parameter '{parameter}' is missing in the request!"
    return {"code": MISSING, "locator": parameter, "text": text}


class OwsError(Exception):
    """An exception report to answer (a ``CompositeOwsException`` when several)."""

    def __init__(self, exceptions: list[dict[str, str]], status: int = 400):
        super().__init__(exceptions[0].get("text", exceptions[0]["code"]))
        self.exceptions = exceptions
        self.status = status

    def report(self) -> dict[str, Any]:
        return {"version": VERSION, "exceptions": self.exceptions}


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class SimFeature:
    identifier: str
    name: str | None = None
    geometry: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any] | str:
        if self.geometry is None:
            return self.identifier
        out: dict[str, Any] = {
            "identifier": {"codespace": CODESPACE_UNKNOWN, "value": self.identifier}
        }
        if self.name is not None:
            out["name"] = {"codespace": CODESPACE_UNKNOWN, "value": self.name}
        out["geometry"] = self.geometry
        return out


@dataclass(frozen=True)
class SimSensor:
    """What InsertSensor left in the service."""

    procedure: str
    offerings: tuple[str, ...]
    observable_properties: tuple[str, ...]
    observation_types: tuple[str, ...]
    feature_of_interest_types: tuple[str, ...]
    procedure_description_format: str
    procedure_description: str = field(repr=False)


@dataclass(frozen=True)
class SimObservation:
    """A stored observation (phenomenon start == end for an instant)."""

    identifier: str | None
    procedure: str
    offering: str
    observed_property: str
    feature: str
    phenomenon_start: datetime
    phenomenon_end: datetime
    result_time: datetime
    value: float
    uom: str | None
    type: str = OM_MEASUREMENT

    @property
    def key(self) -> tuple[Any, ...]:
        """The ``observationIdentity`` unique constraint: the series and the three times."""
        return (
            self.procedure,
            self.observed_property,
            self.feature,
            self.offering,
            self.phenomenon_start,
            self.phenomenon_end,
            self.result_time,
        )

    def to_json(self, feature: SimFeature | None) -> dict[str, Any]:
        """As 52North's JSON ``ObservationEncoder`` writes it in a GetObservation answer."""
        out: dict[str, Any] = {}
        if self.identifier is not None:
            out["identifier"] = {"codespace": CODESPACE_UNKNOWN, "value": self.identifier}
        if self.phenomenon_start == self.phenomenon_end:
            phenomenon: str | list[str] = _time(self.phenomenon_end)
        else:
            phenomenon = [_time(self.phenomenon_start), _time(self.phenomenon_end)]
        out.update(
            {
                "type": self.type,
                "procedure": self.procedure,
                "offering": self.offering,
                "observableProperty": self.observed_property,
                "featureOfInterest": (feature or SimFeature(self.feature)).to_json(),
                "phenomenonTime": phenomenon,
                "resultTime": _time(self.result_time),
                "result": {"uom": self.uom, "value": self.value}
                if self.uom is not None
                else {"value": self.value},
            }
        )
        return out


def _time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse_time(value: Any, parameter: str) -> datetime:
    if not isinstance(value, str):
        raise OwsError([invalid(parameter, json.dumps(value))])
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise OwsError([invalid(parameter, value)]) from None
    if dt.tzinfo is None:  # 52North reads a time without offset in the server's zone: UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _phenomenon(value: Any) -> tuple[datetime, datetime]:
    if isinstance(value, list):
        if len(value) != 2:
            raise OwsError([invalid("phenomenonTime", json.dumps(value))])
        start = _parse_time(value[0], "phenomenonTime")
        end = _parse_time(value[1], "phenomenonTime")
        if end < start:
            raise OwsError([invalid("phenomenonTime", json.dumps(value))])
        return start, end
    instant = _parse_time(value, "phenomenonTime")
    return instant, instant


def _strings(value: Any, parameter: str) -> list[str]:
    """A string or a list of strings (the schemas' ``uriOrUriList``)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise OwsError([invalid(parameter, json.dumps(value))])
    return list(items)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_procedure_description(xml: str) -> tuple[str | None, list[str]]:
    """The procedure identifier and the offering identifiers of a SensorML 2.0 or 1.0.1
    description (``gml:identifier`` / the ``uniqueID`` identifier; the offeringID texts of
    the ``offerings`` capabilities)."""
    root = ET.fromstring(xml)  # noqa: S314 - loopback test server, trusted test input
    procedure: str | None = None
    for el in root.iter():
        name = _local(el.tag)
        if name == "identifier" and el.text and el.text.strip() and el.get("codeSpace"):
            procedure = el.text.strip()  # SensorML 2.0: gml:identifier codeSpace="uniqueID"
            break
        if name == "identifier" and el.get("name") == "uniqueID":  # SensorML 1.0.1
            for sub in el.iter():
                if _local(sub.tag) == "value" and sub.text and sub.text.strip():
                    procedure = sub.text.strip()
                    break
            if procedure:
                break
    offerings: list[str] = []
    for caps in root.iter():
        if _local(caps.tag) != "capabilities" or caps.get("name") != "offerings":
            continue
        for text in caps.iter():
            if _local(text.tag) == "Text" and text.get("definition") == OFFERING_DEFINITION:
                for sub in text:
                    if _local(sub.tag) == "value" and sub.text and sub.text.strip():
                        offerings.append(sub.text.strip())
    return procedure, offerings


# ------------------------------------------------------------------ the server


@dataclass
class _Answer:
    status: int  # 0: close the connection without an answer
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class SosSim(LoopbackHttpServer):
    """52North SOS (transactional, JSON binding) in a thread. ``port=0``: a free port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str = "/service",
        credentials: tuple[str, str] | None = None,
    ):
        self.host = host
        self._port = port
        self.path = path
        self._credentials = credentials
        self._lock = threading.RLock()
        self._sensors: dict[str, SimSensor] = {}  # procedure -> sensor
        self._features: dict[str, SimFeature] = {}
        self._observations: list[SimObservation] = []
        self._requests: Counter[str] = Counter()
        self._faults: list[int] = []  # HTTP status, or 0: drop after handling
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    # ------------------------------------------------------------ test hooks

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next ``n`` requests answer ``status`` (plain text, as a proxy in front of
        the SOS would) without reaching the SOS: nothing is stored."""
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        with self._lock:
            self._faults.extend([status] * n)

    def drop_next(self, n: int = 1) -> None:
        """The next ``n`` requests are handled (and stored) but never answered: the
        connection is closed - the server has it, the client never hears back."""
        with self._lock:
            self._faults.extend([0] * n)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> Counter[str]:
        """How many requests of each type arrived (faulted ones too; ``"?"``: unreadable)."""
        with self._lock:
            return Counter(self._requests)

    def observations(self) -> list[SimObservation]:
        with self._lock:
            return list(self._observations)

    def sensors(self) -> list[SimSensor]:
        with self._lock:
            return list(self._sensors.values())

    def features(self) -> list[SimFeature]:
        with self._lock:
            return list(self._features.values())

    # ------------------------------------------------------------ HTTP

    def _authorized(self, header: str | None) -> bool:
        if self._credentials is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = given.partition(":")
        want_user, want_password = self._credentials
        return bool(sep) and hmac.compare_digest(
            f"{user}\0{password}".encode(), f"{want_user}\0{want_password}".encode()
        )

    def _handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> _Answer:
        if urlsplit(raw_path).path != self.path:
            return _Answer(404, b"Not Found", "text/plain")
        if not self._authorized(headers.get("Authorization")):
            return _Answer(
                401, b"Unauthorized", "text/plain", {"WWW-Authenticate": 'Basic realm="SOS"'}
            )
        if method != "POST":
            return _Answer(405, b"Method Not Allowed", "text/plain", {"Allow": "POST"})
        try:
            request = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            request = None
            parse_error: Exception | None = exc
        else:
            parse_error = None
        name = request.get("request") if isinstance(request, dict) else None
        with self._lock:
            self._requests[name if isinstance(name, str) else "?"] += 1
            fault = self._faults.pop(0) if self._faults else None
        if fault:
            return _Answer(fault, f"Simulated HTTP {fault}".encode(), "text/plain")
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            answer = _Answer(415, b"Unsupported Media Type", "text/plain")
        elif parse_error is not None:
            text = f"Error while reading request! Message: {parse_error}"
            answer = self._report(OwsError([{"code": NO_CODE, "text": text}]))
        else:
            try:
                answer = _Answer(200, json.dumps(self._dispatch(request)).encode("utf-8"))
            except OwsError as exc:
                answer = self._report(exc)
        return _Answer(0) if fault == 0 else answer

    @staticmethod
    def _report(exc: OwsError) -> _Answer:
        return _Answer(exc.status, json.dumps(exc.report()).encode("utf-8"))

    # ------------------------------------------------------------ SOS

    def _dispatch(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not request.get("request"):
            raise OwsError([missing("request")])
        name = request["request"]
        if name not in OPERATIONS:
            text = f"The requested operation '{name}' is not supported by this service!"
            raise OwsError([{"code": NOT_SUPPORTED, "locator": str(name), "text": text}])
        problems: list[dict[str, str]] = []
        service = request.get("service")
        if not service:
            problems.append(missing("service"))
        elif service != SERVICE:
            problems.append(invalid("service", str(service)))
        version = request.get("version")
        if name != "GetCapabilities":
            if not version:
                problems.append(missing("version"))
            elif version != VERSION:
                problems.append(
                    {
                        "code": INVALID,
                        "locator": "version",
                        "text": "The requested version is not supported!",
                    }
                )
        if problems:
            raise OwsError(problems)
        handler = {
            "InsertSensor": self._insert_sensor,
            "InsertObservation": self._insert_observation,
            "DeleteObservation": self._delete_observation,
            "GetObservation": self._get_observation,
            "GetCapabilities": self._get_capabilities,
        }[name]
        with self._lock:
            body = handler(request)
        return {"request": name, "version": VERSION, "service": SERVICE, **body}

    def _insert_sensor(self, req: dict[str, Any]) -> dict[str, Any]:
        problems: list[dict[str, str]] = []
        fmt = req.get("procedureDescriptionFormat")
        description = req.get("procedureDescription")
        if not fmt:
            problems.append(missing("procedureDescriptionFormat"))
        elif fmt not in PROCEDURE_FORMATS:
            problems.append(invalid("procedureDescriptionFormat", str(fmt)))
        if not description:
            problems.append(missing("procedureDescription"))
        properties = _strings(req.get("observableProperty"), "observableProperty")
        if not properties:
            problems.append(missing("observedProperty"))
        observation_types = _strings(req.get("observationType"), "observationType")
        foi_types = _strings(req.get("featureOfInterestType"), "featureOfInterestType")
        if problems:
            raise OwsError(problems)
        if not isinstance(description, str):
            raise OwsError([invalid("procedureDescription", json.dumps(description))])
        try:
            procedure, offerings = parse_procedure_description(description)
        except ET.ParseError as exc:
            text = f"The procedure description is not valid XML: {exc}"
            error = {"code": INVALID, "locator": "procedureDescription", "text": text}
            raise OwsError([error]) from None
        if not procedure:
            raise OwsError([missing("procedureIdentifier")])
        offerings = offerings or [procedure]  # 52North: no offering -> the procedure's id
        taken = {o for s in self._sensors.values() for o in s.offerings}
        for offering in offerings:
            if offering in taken:
                text = (
                    f"The offering with the identifier '{offering}' still exists in this "
                    "service and it is not allowed to insert more than one procedure to an "
                    "offering!"
                )
                raise OwsError([{"code": INVALID, "locator": "offeringIdentifier", "text": text}])
        old = self._sensors.get(procedure)
        self._sensors[procedure] = SimSensor(
            procedure=procedure,
            offerings=(*(old.offerings if old else ()), *offerings),
            observable_properties=tuple(dict.fromkeys(properties)),
            observation_types=tuple(dict.fromkeys(observation_types)),
            feature_of_interest_types=tuple(dict.fromkeys(foi_types)),
            procedure_description_format=str(fmt),
            procedure_description=description,
        )
        return {"assignedProcedure": procedure, "assignedOffering": offerings[0]}

    def _feature(self, value: Any, problems: list[dict[str, str]]) -> SimFeature | None:
        if isinstance(value, str):
            if value not in self._features:
                problems.append(invalid("featureOfInterest", value))
                return None
            return self._features[value]
        if not isinstance(value, dict):
            problems.append(missing("featureOfInterest"))
            return None
        ident = value.get("identifier")
        ident = ident.get("value") if isinstance(ident, dict) else ident
        if not isinstance(ident, str) or not ident:
            problems.append(missing("featureOfInterest"))
            return None
        geometry = value.get("geometry")
        if not isinstance(geometry, dict):
            problems.append(missing("geometry"))
            return None
        names = value.get("name")
        first = names[0] if isinstance(names, list) and names else names
        name = first.get("value") if isinstance(first, dict) else first
        return self._features.get(ident) or SimFeature(ident, name, geometry)

    def _insert_observation(self, req: dict[str, Any]) -> dict[str, Any]:
        problems: list[dict[str, str]] = []
        offerings = _strings(req.get("offering"), "offering")
        raw = req.get("observation")
        if not offerings:
            problems.append(missing("offering"))
        if not raw:
            problems.append(missing("observation"))
        if problems:
            raise OwsError(problems)
        items = raw if isinstance(raw, list) else [raw]
        known_offerings = {o: s for s in self._sensors.values() for o in s.offerings}
        known_properties = {p for s in self._sensors.values() for p in s.observable_properties}
        for offering in offerings:
            if offering not in known_offerings:
                problems.append(invalid("offering", offering))
        parsed: list[tuple[dict[str, Any], SimFeature | None, tuple[datetime, ...]]] = []
        for item in items:
            if not isinstance(item, dict):
                problems.append(invalid("observation", json.dumps(item)))
                continue
            for required in ("procedure", "observedProperty", "phenomenonTime", "resultTime"):
                if not item.get(required):
                    problems.append(missing(required))
            procedure, prop = item.get("procedure"), item.get("observedProperty")
            if isinstance(procedure, str) and procedure and procedure not in self._sensors:
                problems.append(invalid("procedure", procedure))
            if isinstance(prop, str) and prop and prop not in known_properties:
                problems.append(invalid("observedProperty", prop))
            obs_type = item.get("type") or OM_MEASUREMENT
            for offering in offerings:
                sensor = known_offerings.get(offering)
                if sensor is not None and obs_type not in sensor.observation_types:
                    text = (
                        f"The requested observationType ({obs_type}) is not allowed for the "
                        f"requested offering ({offering})!"
                    )
                    problems.append({"code": INVALID, "locator": "observationType", "text": text})
            feature = self._feature(item.get("featureOfInterest"), problems)
            result = item.get("result")
            value = result.get("value") if isinstance(result, dict) else None
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                problems.append(invalid("result", json.dumps(result)))
            times: tuple[datetime, ...] = ()
            if item.get("phenomenonTime") and item.get("resultTime"):
                try:
                    times = (
                        *_phenomenon(item["phenomenonTime"]),
                        _parse_time(item["resultTime"], "resultTime"),
                    )
                except OwsError as exc:
                    problems.extend(exc.exceptions)
            parsed.append((item, feature, times))
        if problems:
            raise OwsError(_unique(problems))
        # InsertObservationDAO: constellation per observation/offering, duplicates, commit
        new: list[SimObservation] = []
        constellation_errors: list[dict[str, str]] = []
        identifiers = {o.identifier for o in self._observations if o.identifier is not None}
        keys = {o.key for o in self._observations}
        new_features: dict[str, SimFeature] = {}
        for item, feature, times in parsed:
            assert feature is not None and len(times) == 3
            ident = item.get("identifier")
            ident = ident.get("value") if isinstance(ident, dict) else ident
            if ident is not None and not isinstance(ident, str):
                raise OwsError([invalid("identifier", json.dumps(ident))])
            if ident is not None and ident in identifiers:
                text = f"The observation identifier '{ident}' already exists in the database!"
                raise OwsError([{"code": NO_CODE, "text": text}], status=400)
            sensor = self._sensors[item["procedure"]]
            valid = [
                o
                for o in offerings
                if o in sensor.offerings
                and item["observedProperty"] in sensor.observable_properties
            ]
            if not valid:
                text = (
                    "The requested observation constellation (procedure="
                    f"{item['procedure']}, observedProperty={item['observedProperty']} and "
                    f"offering=[{', '.join(offerings)}]) is invalid!"
                )
                constellation_errors.append(
                    {"code": INVALID, "locator": "observation", "text": text}
                )
                continue
            if ident is not None:
                identifiers.add(ident)
            for offering in valid:
                obs = SimObservation(
                    identifier=ident,
                    procedure=item["procedure"],
                    offering=offering,
                    observed_property=item["observedProperty"],
                    feature=feature.identifier,
                    phenomenon_start=times[0],
                    phenomenon_end=times[1],
                    result_time=times[2],
                    value=float(item["result"]["value"]),
                    uom=item["result"].get("uom"),
                    type=item.get("type") or OM_MEASUREMENT,
                )
                if obs.key in keys:
                    text = MSG_SAME_VALUES + MSG_SAME_VALUES_CAUSE
                    raise OwsError([{"code": NO_CODE, "text": text}], status=400)
                keys.add(obs.key)
                new.append(obs)
                new_features.setdefault(feature.identifier, feature)
        if constellation_errors and len(constellation_errors) == len(parsed):
            raise OwsError(constellation_errors)
        self._observations.extend(new)
        for ident, feature in new_features.items():
            self._features.setdefault(ident, feature)
        return {}

    def _delete_observation(self, req: dict[str, Any]) -> dict[str, Any]:
        ids = _strings(req.get("observation"), "observation")
        if not ids:
            raise OwsError([missing("observation")])
        stored = {o.identifier for o in self._observations}
        unknown = [i for i in ids if i not in stored]
        if unknown:
            raise OwsError([invalid("observation", ", ".join(unknown))])
        self._observations = [o for o in self._observations if o.identifier not in ids]
        return {"deletedObservation": ids[0]}

    def _get_observation(self, req: dict[str, Any]) -> dict[str, Any]:
        procedures = _strings(req.get("procedure"), "procedure")
        offerings = _strings(req.get("offering"), "offering")
        properties = _strings(req.get("observedProperty"), "observedProperty")
        features = _strings(req.get("featureOfInterest"), "featureOfInterest")
        problems: list[dict[str, str]] = []
        known_offerings = {o for s in self._sensors.values() for o in s.offerings}
        known_properties = {p for s in self._sensors.values() for p in s.observable_properties}
        problems += [invalid("procedure", p) for p in procedures if p not in self._sensors]
        problems += [invalid("offering", o) for o in offerings if o not in known_offerings]
        problems += [
            invalid("observedProperty", p) for p in properties if p not in known_properties
        ]
        problems += [invalid("featureOfInterest", f) for f in features if f not in self._features]
        windows = self._temporal_filters(req.get("temporalFilter"), problems)
        if problems:
            raise OwsError(problems)
        out = []
        for o in self._observations:
            if procedures and o.procedure not in procedures:
                continue
            if offerings and o.offering not in offerings:
                continue
            if properties and o.observed_property not in properties:
                continue
            if features and o.feature not in features:
                continue
            if not all(_matches(o, op, start, end) for op, start, end in windows):
                continue
            out.append(o.to_json(self._features.get(o.feature)))
        return {"observations": out}

    @staticmethod
    def _temporal_filters(
        value: Any, problems: list[dict[str, str]]
    ) -> list[tuple[str, datetime, datetime]]:
        if value is None:
            return []
        out = []
        for f in value if isinstance(value, list) else [value]:
            if not isinstance(f, dict) or len(f) != 1:
                problems.append(invalid("temporalFilter", json.dumps(f)))
                continue
            ((op, spec),) = f.items()
            if op not in ("during", "equals") or not isinstance(spec, dict):
                problems.append(invalid("temporalFilter", json.dumps(f)))
                continue
            if spec.get("ref", "om:phenomenonTime") not in PHENOMENON_TIME_REFS:
                problems.append(invalid("temporalFilter", json.dumps(f)))
                continue
            try:
                start, end = _phenomenon(spec.get("value"))
            except OwsError:
                problems.append(invalid("temporalFilter", json.dumps(f)))
                continue
            out.append((op, start, end))
        return out

    def _get_capabilities(self, req: dict[str, Any]) -> dict[str, Any]:
        contents = []
        for s in self._sensors.values():
            for offering in s.offerings:
                contents.append(
                    {
                        "identifier": offering,
                        "procedure": [s.procedure],
                        "observableProperty": list(s.observable_properties),
                        "observationType": list(s.observation_types),
                    }
                )
        return {"contents": contents}


def _matches(o: SimObservation, op: str, start: datetime, end: datetime) -> bool:
    if op == "equals":
        return o.phenomenon_start == start and o.phenomenon_end == end
    return start <= o.phenomenon_start and o.phenomenon_end <= end  # during (inclusive)


def _unique(problems: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    for p in problems:
        if p not in seen:
            seen.append(p)
    return seen


def _handler(sim: SosSim) -> type[BaseHTTPRequestHandler]:
    class Handler(AnsweringHandler):
        server_version = "SosSim/1"
        protocol_version = "HTTP/1.1"

        def _answer(self, method: str) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
            except (ValueError, OSError):
                self.close_connection = True
                return
            answer = sim._handle(method, self.path, self.headers, body)
            if not answer.status:
                self.close_connection = True
                return
            ctype = {"Content-Type": f"{answer.content_type};charset=UTF-8"}
            self.reply(method, answer.status, {**ctype, **answer.headers}, answer.body)

    return Handler


__all__ = [
    "CODESPACE_UNKNOWN",
    "OM_MEASUREMENT",
    "SENSORML_20",
    "SimFeature",
    "SimObservation",
    "SimSensor",
    "SosSim",
    "parse_procedure_description",
]
