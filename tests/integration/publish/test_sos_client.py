"""SosClient against the SOS-T simulator: lazy sensor insertion, batches, every error kind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from stationflow.errors import PermanentError
from stationflow.publish.sos import (
    SosClient,
    SosDuplicate,
    SosFeature,
    SosObservation,
    SosRejected,
    SosSensor,
    SosSensorExists,
    SosUnavailable,
)
from stationflow.sim.sos import SosSim

AUTH = ("publisher", "s3cret-pw")
T0 = datetime(2026, 1, 5, 0, tzinfo=UTC)
FEATURE = SosFeature("fid-ase01", "ASE 01", 5.91, 51.84)
SENSOR = SosSensor("station-ase01", "offering-ase01", "ASE 01", ("NO2", "O3"), FEATURE)


def obs(hour: int, prop: str = "NO2", value: float = 10.0, ident: str | None = None):
    start = T0 + timedelta(hours=hour)
    return SosObservation(
        identifier=ident or f"ase01-{prop}-{hour}",
        procedure=SENSOR.procedure,
        offering=SENSOR.offering,
        observed_property=prop,
        feature=FEATURE,
        phenomenon_start=start,
        phenomenon_end=start + timedelta(hours=1),
        result_time=start + timedelta(hours=1),
        value=value,
        uom="ug/m3",
    )


@pytest.fixture
def sos() -> Iterator[SosSim]:
    with SosSim(credentials=AUTH) as s:
        yield s


@pytest.fixture
def client(sos: SosSim) -> SosClient:
    return SosClient(sos.url, auth=AUTH, timeout=5)


def test_lazy_insert_sensor_then_retry_once(sos, client):
    client.insert_observations(SENSOR, [obs(0)])
    assert sos.requests == {"InsertObservation": 2, "InsertSensor": 1}
    assert [s.procedure for s in sos.sensors()] == ["station-ase01"]
    assert [o.identifier for o in sos.observations()] == ["ase01-NO2-0"]
    client.insert_observations(SENSOR, [obs(1)])  # known now: one request
    assert sos.requests["InsertObservation"] == 3 and sos.requests["InsertSensor"] == 1


def test_retry_failing_again_is_raised_not_repeated(sos, client):
    # a server that says yes to InsertSensor but keeps nothing: the retry meets the same 400
    sos._insert_sensor = lambda req: {"assignedProcedure": "p", "assignedOffering": "o"}
    with pytest.raises(SosRejected) as info:
        client.insert_observations(SENSOR, [obs(0)])
    assert info.value.unknown_sensor
    assert sos.requests == {"InsertObservation": 2, "InsertSensor": 1}  # ONE retry
    assert sos.observations() == []


def test_retry_unavailable_is_raised(sos, client):
    original = sos._insert_sensor

    def then_fail(req):  # InsertSensor succeeds, the retry meets a 503
        out = original(req)
        sos.fail_next(1, status=503)
        return out

    sos._insert_sensor = then_fail
    with pytest.raises(SosUnavailable):
        client.insert_observations(SENSOR, [obs(0)])
    assert sos.requests["InsertObservation"] == 2
    assert sos.observations() == []


def test_batch_is_one_request(sos, client):
    batch = [obs(h, p) for h in range(6) for p in ("NO2", "O3")]
    client.insert_sensor(SENSOR)
    client.insert_observations(SENSOR, batch)
    assert sos.requests["InsertObservation"] == 1
    assert {o.identifier for o in sos.observations()} == {o.identifier for o in batch}
    client.insert_observations(SENSOR, [])  # nothing to send: no request
    assert sos.requests["InsertObservation"] == 1


def test_observations_of_another_sensor_refused_locally(client):
    other = SosSensor("station-x", "offering-x", "X", ("NO2",), FEATURE)
    with pytest.raises(ValueError, match="station-x"):
        client.insert_observations(other, [obs(0)])


def test_duplicate(sos, client):
    client.insert_observations(SENSOR, [obs(0), obs(1)])
    with pytest.raises(SosDuplicate) as info:
        client.insert_observations(SENSOR, [obs(2), obs(1)])
    err = info.value
    assert err.duplicates == ("ase01-NO2-1",) and err.status == 400
    assert not isinstance(err, PermanentError)
    assert "InsertObservation" in str(err) and "ase01-NO2-2" in str(err)
    with pytest.raises(SosDuplicate) as info:  # same values, other identifier
        client.insert_observations(SENSOR, [obs(0, ident="renamed")])
    assert info.value.duplicates == ()
    assert len(sos.observations()) == 2


def test_rejected_is_permanent(sos, client):
    client.insert_sensor(SENSOR)
    bad = SosObservation(
        "x", SENSOR.procedure, SENSOR.offering, "PM10", FEATURE, None, T0, T0, 1.0, "ug/m3"
    )
    with pytest.raises(SosRejected) as info:
        client.insert_observations(SENSOR, [bad])
    assert isinstance(info.value, PermanentError) and not info.value.unknown_sensor
    assert info.value.exceptions[0].locator == "observedProperty"
    assert sos.requests["InsertSensor"] == 1  # no lazy insertion for this one


def test_insert_sensor_twice(sos, client):
    client.insert_sensor(SENSOR)
    with pytest.raises(SosSensorExists):
        client.insert_sensor(SENSOR)
    client.insert_sensor(SENSOR, exist_ok=True)
    assert len(sos.sensors()) == 1


def test_503_unavailable(sos, client):
    client.insert_sensor(SENSOR)
    sos.fail_next(1, status=503)
    with pytest.raises(SosUnavailable) as info:
        client.insert_observations(SENSOR, [obs(0)])
    assert info.value.status == 503 and not isinstance(info.value, PermanentError)
    assert sos.observations() == []
    assert sos.requests["InsertObservation"] == 1  # not retried by the client


def test_dropped_connection_unavailable_but_stored(sos, client):
    client.insert_sensor(SENSOR)
    sos.drop_next(1)
    with pytest.raises(SosUnavailable) as info:
        client.insert_observations(SENSOR, [obs(0)])
    assert info.value.status is None
    assert [o.identifier for o in sos.observations()] == ["ase01-NO2-0"]
    with pytest.raises(SosDuplicate):  # what the ledger's retry will meet
        client.insert_observations(SENSOR, [obs(0)])


def test_connection_refused_unavailable():
    with SosSim() as s:
        url = s.url
    with pytest.raises(SosUnavailable) as info:
        SosClient(url, timeout=2).insert_sensor(SENSOR)
    assert info.value.status is None


def test_auth_and_no_password_in_messages(sos):
    client = SosClient(sos.url, auth=("publisher", "wrong-pw-123"), timeout=5)
    with pytest.raises(SosRejected) as info:
        client.insert_sensor(SENSOR)
    assert info.value.status == 401 and "wrong-pw-123" not in str(info.value)
    in_url = sos.url.replace("http://", "http://publisher:s3cret-pw@")
    client = SosClient(in_url, timeout=5)
    assert "s3cret-pw" not in client.url
    client.insert_sensor(SENSOR)  # the URL's credentials are used
    sos.fail_next(1, status=502)
    with pytest.raises(SosUnavailable) as info:
        client.insert_observations(SENSOR, [obs(0)])
    assert "s3cret-pw" not in str(info.value)
    sos.drop_next(1)
    with pytest.raises(SosUnavailable) as info:
        client.insert_observations(SENSOR, [obs(1)])
    assert "s3cret-pw" not in str(info.value)


def test_delete(sos, client):
    client.insert_observations(SENSOR, [obs(0), obs(1)])
    assert client.delete_observation("ase01-NO2-0") is True
    assert [o.identifier for o in sos.observations()] == ["ase01-NO2-1"]
    assert client.delete_observation("ase01-NO2-0") is False
    client.insert_observations(SENSOR, [obs(0, value=11.0)])  # corrected value
    assert {o.identifier: o.value for o in sos.observations()}["ase01-NO2-0"] == 11.0


def test_read_back(client):
    client.insert_observations(
        SENSOR, [obs(h, p, value=h + 0.5) for h in range(4) for p in ("NO2", "O3")]
    )
    got = client.get_observations(
        procedure=SENSOR.procedure,
        observed_property="NO2",
        during=(T0 + timedelta(hours=1), T0 + timedelta(hours=3)),
    )
    assert sorted(o["identifier"]["value"] for o in got) == ["ase01-NO2-1", "ase01-NO2-2"]
    assert {o["result"]["value"] for o in got} == {1.5, 2.5}
    assert len(client.get_observations(offering=SENSOR.offering)) == 8
    with pytest.raises(SosRejected):
        client.get_observations(procedure="station-unknown")
