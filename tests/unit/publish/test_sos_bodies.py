"""SOS-T request bodies and the classification of SOS answers (no server)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest

from stationflow.errors import PermanentError
from stationflow.publish.sos import (
    CODESPACE_UNKNOWN,
    OM_MEASUREMENT,
    SENSORML_20,
    SosDuplicate,
    SosFeature,
    SosObservation,
    SosRejected,
    SosSensor,
    SosSensorExists,
    SosUnavailable,
    classify,
    get_observation_request,
    insert_observation_request,
    iso_z,
    parse_exception_report,
)
from stationflow.sim.sos import parse_procedure_description

T = datetime(2026, 1, 5, 10, tzinfo=UTC)
FEATURE = SosFeature("fid-ase01", "Station <ASE&01>", 5.91, 51.84)
SENSOR = SosSensor("station-ase01", "offering-ase01", "ASE 01", ("NO2", "O3"), FEATURE)


def obs(start: datetime | None = T, **kw) -> SosObservation:
    args = dict(
        identifier="ase01-NO2-1",
        procedure="station-ase01",
        offering="offering-ase01",
        observed_property="NO2",
        feature=FEATURE,
        phenomenon_start=start,
        phenomenon_end=T + timedelta(hours=1),
        result_time=T + timedelta(hours=1),
        value=12.5,
        uom="ug/m3",
    )
    args.update(kw)
    return SosObservation(**args)


def report(*exceptions: dict) -> str:
    return json.dumps({"version": "2.0.0", "exceptions": list(exceptions)})


# ------------------------------------------------------------------ bodies


def test_interval_observation_body():
    body = obs().to_json()
    assert body["phenomenonTime"] == ["2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z"]
    assert body["resultTime"] == "2026-01-05T11:00:00Z"
    assert body["identifier"] == {"value": "ase01-NO2-1", "codespace": CODESPACE_UNKNOWN}
    assert body["type"] == OM_MEASUREMENT
    assert body["procedure"] == "station-ase01" and body["observedProperty"] == "NO2"
    assert body["result"] == {"uom": "ug/m3", "value": 12.5}
    assert "offering" not in body  # the offering is the request's


def test_instant_observation_and_utc_conversion():
    cet = timezone(timedelta(hours=1))
    o = obs(None, phenomenon_end=datetime(2026, 1, 5, 11, tzinfo=cet))
    assert o.to_json()["phenomenonTime"] == "2026-01-05T10:00:00Z"
    assert iso_z(datetime(2026, 6, 1, 2, 30, tzinfo=cet)) == "2026-06-01T01:30:00Z"
    with pytest.raises(ValueError, match="naive"):
        iso_z(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        obs(phenomenon_end=datetime(2026, 1, 5, 11))  # naive
    with pytest.raises(ValueError, match="start >= end"):
        obs(T + timedelta(hours=2))
    with pytest.raises(ValueError, match="not finite"):
        obs(value=float("nan"))


def test_feature_with_and_without_coordinates():
    f = FEATURE.to_json()
    assert f["identifier"] == {"value": "fid-ase01", "codespace": CODESPACE_UNKNOWN}
    assert f["name"] == [{"value": "Station <ASE&01>", "codespace": CODESPACE_UNKNOWN}]
    assert f["geometry"]["coordinates"] == [51.84, 5.91]  # EPSG:4326: lat, lon
    assert f["geometry"]["crs"]["properties"]["name"] == "EPSG:4326"
    assert SosFeature("fid-x", "x", None, None).to_json() == "fid-x"
    with pytest.raises(ValueError):
        SosFeature("fid-x", "x", 5.0, None)


def test_insert_observation_single_and_array():
    one = insert_observation_request("offering-ase01", [obs()])
    assert (one["request"], one["service"], one["version"]) == ("InsertObservation", "SOS", "2.0.0")
    assert one["offering"] == "offering-ase01"
    assert isinstance(one["observation"], dict)
    two = insert_observation_request("offering-ase01", [obs(), obs(identifier="b")])
    assert [o["identifier"]["value"] for o in two["observation"]] == ["ase01-NO2-1", "b"]
    with pytest.raises(ValueError):
        insert_observation_request("offering-ase01", [])


def test_insert_sensor_body_and_sensorml():
    body = SENSOR.to_json()
    assert body["request"] == "InsertSensor" and body["version"] == "2.0.0"
    assert body["procedureDescriptionFormat"] == SENSORML_20
    assert body["observableProperty"] == ["NO2", "O3"]
    assert body["observationType"] == [OM_MEASUREMENT]
    assert body["featureOfInterestType"].endswith("SF_SamplingPoint")
    xml = body["procedureDescription"]
    assert isinstance(xml, str)
    root = ET.fromstring(xml)  # noqa: S314 - our own output
    assert root.tag == f"{{{SENSORML_20}}}PhysicalSystem"
    texts = [el.text for el in root.iter()]
    assert "station-ase01" in texts and "offering-ase01" in texts
    definitions = {el.get("definition") for el in root.iter() if el.tag.endswith("Quantity")}
    assert {"NO2", "O3"} <= definitions
    hrefs = [v for el in root.iter() for k, v in el.attrib.items() if k.endswith("href")]
    assert hrefs == ["fid-ase01"]
    # what the SOS (simulator) reads back from it
    assert parse_procedure_description(xml) == ("station-ase01", ["offering-ase01"])


def test_get_observation_body():
    body = get_observation_request(procedure="p", observed_property=["NO2", "O3"], during=(T, T))
    assert body["procedure"] == "p" and body["observedProperty"] == ["NO2", "O3"]
    assert body["temporalFilter"] == {
        "during": {"ref": "om:phenomenonTime", "value": [iso_z(T), iso_z(T)]}
    }
    assert "offering" not in body


# ------------------------------------------------------------------ answers


def test_parse_exception_report():
    got = parse_exception_report(
        report({"code": "InvalidParameterValue", "locator": "offering", "text": "x"}, {"code": "A"})
    )
    assert [(e.code, e.locator, e.text) for e in got] == [
        ("InvalidParameterValue", "offering", "x"),
        ("A", None, None),
    ]
    assert parse_exception_report("<html>502</html>") == ()


def test_success_is_none():
    assert classify("InsertObservation", ["a"], 200, '{"request": "InsertObservation"}') is None


def test_duplicate_identifier_names_it():
    text = "The observation identifier 'a-1' already exists in the database!"
    err = classify(
        "InsertObservation", ["a-1", "a-2"], 400, report({"code": "NoApplicableCode", "text": text})
    )
    assert isinstance(err, SosDuplicate) and not isinstance(err, SosRejected)
    assert err.duplicates == ("a-1",)
    assert "InsertObservation" in str(err) and "a-1" in str(err)


@pytest.mark.parametrize("status", [400, 500])
def test_duplicate_values_whatever_the_status(status):
    text = "Observation with same values already contained in database\n[EXEPTION]: \nERROR"
    err = classify(
        "InsertObservation", ["a"], status, report({"code": "NoApplicableCode", "text": text})
    )
    assert isinstance(err, SosDuplicate) and err.duplicates == () and err.status == status


def test_unknown_offering_is_rejected_and_unknown_sensor():
    body = report(
        {
            "code": "InvalidParameterValue",
            "locator": "offering",
            "text": "The value 'o' of the parameter 'offering' is invalid",
        }
    )
    err = classify("InsertObservation", ["a"], 400, body)
    assert isinstance(err, SosRejected) and isinstance(err, PermanentError)
    assert err.unknown_sensor
    other = report({"code": "InvalidParameterValue", "locator": "observationType", "text": "t"})
    assert not classify("InsertObservation", ["a"], 400, other).unknown_sensor


def test_sensor_exists():
    body = report({"code": "InvalidParameterValue", "locator": "offeringIdentifier", "text": "t"})
    assert isinstance(classify("InsertSensor", ["p"], 400, body), SosSensorExists)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_server_trouble_is_unavailable(status):
    err = classify("InsertObservation", ["a"], status, "<html>Bad Gateway</html>")
    assert isinstance(err, SosUnavailable) and not isinstance(err, PermanentError)
    assert "Bad Gateway" in str(err)


@pytest.mark.parametrize("status", [401, 403, 404, 415])
def test_other_4xx_rejected(status):
    assert isinstance(classify("GetObservation", [], status, "nope"), SosRejected)
