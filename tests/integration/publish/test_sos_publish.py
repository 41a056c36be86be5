"""The SOS-T publisher against the SOS simulator (52North's rules): refined hours harvested
from the Whale simulator published with lazy InsertSensor, exactly once through a replay,
a crash between the server's answer and the ledger, a dropped answer and a 503."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stationflow.config import parse_inventory
from stationflow.publish.records import ledger
from stationflow.publish.records.run import publish_network
from stationflow.publish.records.sos_target import SosTarget
from stationflow.publish.sos import SosClient, SosUnavailable
from stationflow.sim.sos import SosSim
from stationflow.sim.whale import WhaleSim
from tests.clock import Clock
from tests.record_chain import harvest_and_refine

TOKEN = "whale-bearer-0c2b"
DEVICES = [23, 26]
H = timedelta(hours=1)
T0 = datetime(2026, 3, 10, 10, 30, tzinfo=UTC)
NET = parse_inventory("""
sensor_networks:
  - id: se
    harvest: [{kind: whale, connection_id: whale_api}]
    indicators: [temperature, pressure, humidity, noiseavg, co2]
    publish: [{kind: sos, connection_id: sos_test}]
""").network("se")
TARGET = "sos:sos_test"


@pytest.fixture
def conn(state_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(state_db, autocommit=True) as c:
        yield c


@pytest.fixture
def refined(conn: psycopg.Connection, sim: WhaleSim, clock: Clock) -> dict[str, tuple]:
    harvest_and_refine(conn, sim, clock, NET, TOKEN)
    return refined_values(conn)


@pytest.fixture
def sos() -> Iterator[SosSim]:
    with SosSim() as s:
        yield s


def refined_values(conn: psycopg.Connection) -> dict[str, tuple]:
    rows = conn.execute("SELECT unique_id, value, unit, time, lon, lat FROM"
                        " smartem_refined.timeseries").fetchall()  # fmt: skip
    return {u: (v, unit, t, lon, lat) for u, v, unit, t, lon, lat in rows}


def target(sos: SosSim) -> SosTarget:
    return SosTarget(SosClient(sos.url), NET, TARGET)


def assert_server_matches(sos: SosSim, conn: psycopg.Connection) -> None:
    held = sos.observations()
    ids = Counter(o.identifier for o in held)
    assert [i for i, n in ids.items() if n > 1] == [], "duplicate observations"
    want = refined_values(conn)
    got = {o.identifier: (o.value, o.uom, o.result_time, o.phenomenon_start) for o in held}
    assert got == {u: (v, unit, t, t - H) for u, (v, unit, t, _, _) in want.items()}
    for o in held:
        _, _, _, lon, lat = want[o.identifier]
        assert o.feature == f"fid-{o.procedure.split('-')[1]}-{lon:.6f},{lat:.6f}"


def test_publish_with_lazy_sensors(conn, refined, sos):
    s = publish_network(conn, NET, target(sos), batch=20)
    assert (s.values, s.published, s.failed) == (len(refined), len(refined), 0)
    assert_server_matches(sos, conn)
    assert sorted(x.procedure for x in sos.sensors()) == ["station-23", "station-26"]
    assert sos.requests["InsertSensor"] == 2  # once per station, on its first refusal
    again = publish_network(conn, NET, target(sos))
    assert again.values == 0
    # read back through GetObservation
    obs = SosClient(sos.url).get_observations(procedure="station-23", observed_property="co2")
    assert len(obs) == sum(1 for u in refined if u.startswith("23-") and u.endswith("-co2"))


def test_replay_and_late_data_never_duplicate(conn, refined, sos):
    publish_network(conn, NET, target(sos))
    conn.execute("UPDATE smartem_refined.timeseries SET value = value + 1,"
                 " revision = revision + 1 WHERE name = 'humidity'")  # fmt: skip
    s = publish_network(conn, NET, target(sos))
    assert s.values == sum(1 for u in refined if u.endswith("-humidity"))
    assert_server_matches(sos, conn)
    replay = publish_network(conn, NET, target(sos), since=T0 - 24 * H, until=T0)
    assert (replay.values, replay.failed) == (len(refined), 0)
    assert_server_matches(sos, conn)


def test_crash_between_answer_and_ledger_never_duplicates(conn, refined, sos, monkeypatch):
    real = ledger.settle
    calls = {"n": 0}

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("worker killed between the server's answer and the commit")
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger, "settle", crash_on_second)
    with pytest.raises(ConnectionError):
        publish_network(conn, NET, target(sos), batch=10)
    monkeypatch.setattr(ledger, "settle", real)
    states = Counter(s for (s,) in conn.execute("SELECT state FROM smartem_publish.observation"))
    assert states == {"published": 10, "sending": 10}
    s = publish_network(conn, NET, target(sos), batch=10)
    assert (s.values, s.failed) == (len(refined) - 10, 0)
    states = Counter(s for (s,) in conn.execute("SELECT state FROM smartem_publish.observation"))
    assert states == {"published": len(refined)}
    assert_server_matches(sos, conn)


def test_lost_answer_and_outage_never_duplicate(conn, refined, sos):
    """The SOS stored a batch but its answer never came back; then it answered 503."""
    rows = ledger.pending(conn, TARGET, ["whale:whale_api"], limit=1000)
    for device in (23, 26):  # sensors known, so the first request is an InsertObservation
        SosClient(sos.url).insert_sensor(
            target(sos).sensor(next(r for r in rows if r.device_id == device))
        )
    sos.drop_next(1)
    with pytest.raises(SosUnavailable, match="InsertObservation"):
        publish_network(conn, NET, target(sos), batch=10)
    assert len(sos.observations()) > 0  # stored, unconfirmed
    sos.fail_next(1, 503)
    with pytest.raises(SosUnavailable, match="503"):
        publish_network(conn, NET, target(sos), batch=10)
    s = publish_network(conn, NET, target(sos), batch=10)
    assert s.failed == 0
    states = Counter(s for (s,) in conn.execute("SELECT state FROM smartem_publish.observation"))
    assert states == {"published": len(refined)}
    assert_server_matches(sos, conn)


def test_refused_values_fail_alone_and_are_audited(conn, refined, sos):
    """What the SOS refuses (an indicator the station's sensor does not observe: 52North
    would drop it silently in a mixed request) and what cannot be sent (not a number) fail
    alone: 'failed' with the reason, an ERROR audit row, retried next run."""
    odd = next(u for u in refined if u.startswith("23-") and u.endswith("-co2"))
    nan = next(u for u in refined if u.startswith("26-") and u.endswith("-pressure"))
    conn.execute("UPDATE smartem_refined.timeseries SET name = 'pm10' WHERE unique_id = %s",
                 (odd,))  # fmt: skip
    conn.execute("UPDATE smartem_refined.timeseries SET value = 'NaN' WHERE unique_id = %s",
                 (nan,))  # fmt: skip
    s = publish_network(conn, NET, target(sos))
    assert (s.published, s.failed) == (len(refined) - 2, 2)
    errors = dict(conn.execute(
        "SELECT name, error FROM smartem_publish.observation WHERE state = 'failed'"
    ).fetchall())  # fmt: skip
    assert set(errors) == {"pm10", "pressure"}
    assert "observedProperty" in errors["pm10"] or "constellation" in errors["pm10"]
    assert "not finite" in errors["pressure"]
    (message,) = conn.execute(
        "SELECT message FROM stationflow.audit_log WHERE step = 'publish' AND level = 'ERROR'"
    ).fetchone()
    assert message.startswith("2 values refused by sos:sos_test")
    assert len(sos.observations()) == len(refined) - 2
    # fixed upstream (the value re-refined): published on the next run
    conn.execute("UPDATE smartem_refined.timeseries SET value = 1000, revision = revision + 1"
                 " WHERE unique_id = %s", (nan,))  # fmt: skip
    s = publish_network(conn, NET, target(sos))
    assert (s.published, s.failed) == (2 - 1, 1)  # pm10 is still not observed by station 23
