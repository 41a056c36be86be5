"""The 52North SOS-T simulator on its own, over HTTP with plain requests."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from stationflow.publish.sos import SosFeature, SosSensor
from stationflow.sim.sos import CODESPACE_UNKNOWN, OM_MEASUREMENT, SosSim

AUTH = ("publisher", "s3cret-pw")
FEATURE = SosFeature("fid-1", "Station 1", 5.9, 51.8)
SENSOR = SosSensor("station-1", "offering-1", "Station 1", ("NO2", "O3"), FEATURE)
HEAD = {"service": "SOS", "version": "2.0.0"}


@pytest.fixture
def sos() -> Iterator[SosSim]:
    with SosSim(credentials=AUTH) as s:
        yield s


def post(sos: SosSim, body, *, auth=AUTH, raw: bytes | None = None, ctype="application/json"):
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(sos.url, data=data, auth=auth, headers={"Content-Type": ctype}, timeout=10)


def observation(ident="o-1", prop="NO2", start="2026-01-05T10:00:00Z", **kw) -> dict:
    o = {
        "identifier": {"value": ident, "codespace": CODESPACE_UNKNOWN},
        "type": OM_MEASUREMENT,
        "procedure": "station-1",
        "observedProperty": prop,
        "featureOfInterest": FEATURE.to_json(),
        "phenomenonTime": [start, start.replace("T10", "T11")],
        "resultTime": start.replace("T10", "T11"),
        "result": {"uom": "ug/m3", "value": 7.5},
    }
    o.update(kw)
    return o


def insert_obs(sos, *obs, offering="offering-1"):
    body = {"request": "InsertObservation", **HEAD, "offering": offering}
    body["observation"] = obs[0] if len(obs) == 1 else list(obs)
    return post(sos, body)


def exceptions(r) -> list[tuple]:
    doc = r.json()
    assert doc["version"] == "2.0.0"
    return [(e["code"], e.get("locator"), e.get("text")) for e in doc["exceptions"]]


def with_sensor(sos):
    r = post(sos, SENSOR.to_json())
    assert r.status_code == 200, r.text
    return r


# ------------------------------------------------------------------ InsertSensor


def test_insert_sensor_answer_and_state(sos):
    r = with_sensor(sos)
    assert r.json() == {
        "request": "InsertSensor",
        "version": "2.0.0",
        "service": "SOS",
        "assignedProcedure": "station-1",
        "assignedOffering": "offering-1",
    }
    (s,) = sos.sensors()
    assert (s.procedure, s.offerings, s.observable_properties) == (
        "station-1",
        ("offering-1",),
        ("NO2", "O3"),
    )
    assert s.observation_types == (OM_MEASUREMENT,)


def test_insert_sensor_twice(sos):
    with_sensor(sos)
    r = post(sos, SENSOR.to_json())
    assert r.status_code == 400
    assert exceptions(r) == [
        (
            "InvalidParameterValue",
            "offeringIdentifier",
            "The offering with the identifier 'offering-1' still exists in this service and "
            "it is not allowed to insert more than one procedure to an offering!",
        )
    ]
    assert len(sos.sensors()) == 1


def test_insert_sensor_missing_and_wrong_format(sos):
    body = SENSOR.to_json()
    del body["procedureDescriptionFormat"]
    r = post(sos, body)
    assert r.status_code == 400
    assert exceptions(r)[0][:2] == ("MissingParameterValue", "procedureDescriptionFormat")
    r = post(sos, {**SENSOR.to_json(), "procedureDescriptionFormat": "text/plain"})
    assert exceptions(r) == [
        (
            "InvalidParameterValue",
            "procedureDescriptionFormat",
            "The value 'text/plain' of the parameter 'procedureDescriptionFormat' is invalid",
        )
    ]
    assert sos.sensors() == []


# ------------------------------------------------------------------ InsertObservation


def test_unknown_offering_and_procedure(sos):
    r = insert_obs(sos, observation())
    assert r.status_code == 400
    got = exceptions(r)
    assert (
        "InvalidParameterValue",
        "offering",
        "The value 'offering-1' of the parameter 'offering' is invalid",
    ) in got
    assert (
        "InvalidParameterValue",
        "procedure",
        "The value 'station-1' of the parameter 'procedure' is invalid",
    ) in got
    assert sos.observations() == []


def test_single_and_array_insert(sos):
    with_sensor(sos)
    r = insert_obs(sos, observation())
    assert r.status_code == 200
    assert r.json() == {"request": "InsertObservation", "version": "2.0.0", "service": "SOS"}
    r = insert_obs(sos, observation("o-2", "O3"), observation("o-3", start="2026-01-05T12:00:00Z"))
    assert r.status_code == 200
    stored = {o.identifier: o for o in sos.observations()}
    assert set(stored) == {"o-1", "o-2", "o-3"}
    o = stored["o-1"]
    assert (o.offering, o.feature, o.value, o.uom) == ("offering-1", "fid-1", 7.5, "ug/m3")
    assert o.phenomenon_start.isoformat() == "2026-01-05T10:00:00+00:00"
    assert sos.requests["InsertObservation"] == 2 and sos.requests["InsertSensor"] == 1


def test_duplicate_identifier_rolls_back_the_batch(sos):
    with_sensor(sos)
    assert insert_obs(sos, observation()).status_code == 200
    r = insert_obs(sos, observation("o-new", start="2026-01-05T12:00:00Z"), observation("o-1"))
    assert r.status_code == 400
    assert exceptions(r) == [
        (
            "NoApplicableCode",
            None,
            "The observation identifier 'o-1' already exists in the database!",
        )
    ]
    assert [o.identifier for o in sos.observations()] == ["o-1"]


def test_duplicate_values_under_a_new_identifier(sos):
    with_sensor(sos)
    assert insert_obs(sos, observation()).status_code == 200
    r = insert_obs(sos, observation("o-other"))
    assert r.status_code == 400
    ((code, locator, text),) = exceptions(r)
    assert (code, locator) == ("NoApplicableCode", None)
    assert text.startswith("Observation with same values already contained in database")
    assert len(sos.observations()) == 1


def test_property_not_of_the_sensor(sos):
    with_sensor(sos)
    r = insert_obs(sos, observation(prop="PM10"))
    assert exceptions(r) == [
        (
            "InvalidParameterValue",
            "observedProperty",
            "The value 'PM10' of the parameter 'observedProperty' is invalid",
        )
    ]


def test_constellation_invalid_only_when_all_are(sos):
    with_sensor(sos)
    other = SosSensor("station-2", "offering-2", "S2", ("PM10",), FEATURE)
    assert post(sos, other.to_json()).status_code == 200
    r = insert_obs(sos, observation(prop="PM10"))  # PM10 is known, not for station-1
    assert r.status_code == 400
    ((code, locator, text),) = exceptions(r)
    assert (code, locator) == ("InvalidParameterValue", "observation")
    assert "observation constellation" in text
    # one valid among them: 52North stores the valid one and says nothing
    r = insert_obs(sos, observation("ok"), observation("bad", prop="PM10"))
    assert r.status_code == 200
    assert [o.identifier for o in sos.observations()] == ["ok"]


def test_malformed_requests(sos):
    r = post(sos, None, raw=b"{not json")
    assert r.status_code == 400 and exceptions(r)[0][0] == "NoApplicableCode"
    r = post(sos, {"service": "SOS", "version": "2.0.0"})
    assert exceptions(r) == [
        (
            "MissingParameterValue",
            "request",
            "The value for the parameter 'request' is missing in the request!",
        )
    ]
    r = post(sos, {"request": "InsertObservation", "version": "2.0.0", "offering": "x"})
    assert ("MissingParameterValue", "service") in [e[:2] for e in exceptions(r)]
    r = post(sos, {"request": "InsertObservation", "service": "WFS", "version": "1.0.0"})
    assert [e[:2] for e in exceptions(r)] == [
        ("InvalidParameterValue", "service"),
        ("InvalidParameterValue", "version"),
    ]
    r = post(sos, {"request": "InsertObservation", **HEAD})
    assert {e[:2] for e in exceptions(r)} == {
        ("MissingParameterValue", "offering"),
        ("MissingParameterValue", "observation"),
    }
    r = post(sos, {"request": "Frobnicate", **HEAD})
    assert r.status_code == 400 and exceptions(r)[0][:2] == ("OperationNotSupported", "Frobnicate")
    with_sensor(sos)
    r = insert_obs(sos, observation(phenomenonTime="yesterday"))
    assert exceptions(r)[0][:2] == ("InvalidParameterValue", "phenomenonTime")
    r = insert_obs(sos, observation(result={"uom": "x", "value": "high"}))
    assert exceptions(r)[0][:2] == ("InvalidParameterValue", "result")
    assert post(sos, observation(), ctype="text/plain").status_code == 415
    assert sos.observations() == []


# ------------------------------------------------------------------ auth, faults


def test_auth(sos):
    assert post(sos, SENSOR.to_json(), auth=None).status_code == 401
    r = post(sos, SENSOR.to_json(), auth=("publisher", "wrong"))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert sos.sensors() == []
    with SosSim() as open_sim:  # no credentials: no auth
        assert post(open_sim, SENSOR.to_json(), auth=None).status_code == 200


def test_fail_next_stores_nothing(sos):
    with_sensor(sos)
    sos.fail_next(2, status=503)
    assert insert_obs(sos, observation()).status_code == 503
    assert insert_obs(sos, observation()).status_code == 503
    assert sos.observations() == []
    assert insert_obs(sos, observation()).status_code == 200
    assert sos.requests["InsertObservation"] == 3


def test_drop_next_stores_but_never_answers(sos):
    with_sensor(sos)
    sos.drop_next(1)
    with pytest.raises(requests.ConnectionError):
        insert_obs(sos, observation())
    assert [o.identifier for o in sos.observations()] == ["o-1"]
    assert insert_obs(sos, observation()).status_code == 400  # it is there: duplicate


# ------------------------------------------------------------------ read back, delete


def test_get_observation_filters(sos):
    with_sensor(sos)
    other = SosSensor("station-2", "offering-2", "S2", ("NO2",), SosFeature("fid-2", "S2", 6, 52))
    assert post(sos, other.to_json()).status_code == 200
    insert_obs(
        sos,
        observation("a"),
        observation("b", "O3"),
        observation("c", start="2026-01-05T12:00:00Z"),
    )
    o2 = observation("d", procedure="station-2", featureOfInterest=other.feature.to_json())
    assert insert_obs(sos, o2, offering="offering-2").status_code == 200

    def ids(**filters):
        r = post(sos, {"request": "GetObservation", **HEAD, **filters})
        assert r.status_code == 200, r.text
        return sorted(o["identifier"]["value"] for o in r.json()["observations"])

    assert ids() == ["a", "b", "c", "d"]
    assert ids(procedure="station-1") == ["a", "b", "c"]
    assert ids(offering=["offering-2"]) == ["d"]
    assert ids(observedProperty="O3") == ["b"]
    assert ids(featureOfInterest="fid-2") == ["d"]
    during = {
        "during": {
            "ref": "om:phenomenonTime",
            "value": ["2026-01-05T09:00:00Z", "2026-01-05T11:00:00Z"],
        }
    }
    assert ids(temporalFilter=during) == ["a", "b", "d"]
    assert ids(procedure="station-1", temporalFilter=during, observedProperty="NO2") == ["a"]
    r = post(
        sos,
        {"request": "GetObservation", **HEAD, "procedure": "station-1", "observedProperty": "O3"},
    )
    (o,) = r.json()["observations"]
    assert o["phenomenonTime"] == ["2026-01-05T10:00:00.000Z", "2026-01-05T11:00:00.000Z"]
    assert o["observableProperty"] == "O3" and o["result"] == {"uom": "ug/m3", "value": 7.5}
    assert o["featureOfInterest"]["identifier"]["value"] == "fid-1"
    r = post(sos, {"request": "GetObservation", **HEAD, "procedure": "nope"})
    assert exceptions(r)[0][:2] == ("InvalidParameterValue", "procedure")


def test_delete_observation(sos):
    with_sensor(sos)
    insert_obs(sos, observation("a"), observation("b", "O3"))
    r = post(sos, {"request": "DeleteObservation", **HEAD, "observation": "a"})
    assert r.status_code == 200
    assert r.json() == {
        "request": "DeleteObservation",
        "version": "2.0.0",
        "service": "SOS",
        "deletedObservation": "a",
    }
    assert [o.identifier for o in sos.observations()] == ["b"]
    r = post(sos, {"request": "DeleteObservation", **HEAD, "observation": "a"})
    assert exceptions(r) == [
        (
            "InvalidParameterValue",
            "observation",
            "The value 'a' of the parameter 'observation' is invalid",
        )
    ]
    r = post(sos, {"request": "DeleteObservation", **HEAD})
    assert exceptions(r)[0][:2] == ("MissingParameterValue", "observation")
