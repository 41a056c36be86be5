"""The STA publisher against a real SensorThings server (django-ogc-sensorthings, its own
venv, on the session's PostgreSQL): hours harvested from the Whale simulator and refined,
published, then read back with $filter/$expand; entities created once, a moved station's
Location updated, late data updated in place, no duplicates after a replay or a crash
mid-batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stationflow.config import parse_inventory
from stationflow.publish.records import ledger
from stationflow.publish.records.run import publish_network
from stationflow.publish.records.sta_target import StaTarget
from stationflow.publish.sta import Observation, StaClient, iso
from stationflow.sim.whale import WhaleSim
from tests.clock import Clock
from tests.record_chain import harvest_and_refine

TOKEN = "whale-bearer-5e1d"
DEVICES = [23, 26]
H = timedelta(hours=1)
T0 = datetime(2026, 3, 10, 10, 30, tzinfo=UTC)
NET = parse_inventory("""
sensor_networks:
  - id: se
    name: Smart Emission test
    harvest: [{kind: whale, connection_id: whale_api}]
    indicators: [temperature, pressure, humidity, noiseavg, co2]
    publish: [{kind: sta, connection_id: sta_test}]
""").network("se")
TARGET = "sta:sta_test"


@pytest.fixture
def conn(state_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(state_db, autocommit=True) as c:
        yield c


@pytest.fixture
def refined(conn: psycopg.Connection, sim: WhaleSim, clock: Clock) -> dict[tuple, tuple]:
    """Six hours of both stations, harvested and refined: {(device, name, time): value}."""
    harvest_and_refine(conn, sim, clock, NET, TOKEN)
    return refined_values(conn)


def refined_values(conn: psycopg.Connection) -> dict[tuple, tuple]:
    rows = conn.execute(
        "SELECT device_id, name, time, value, revision FROM smartem_refined.timeseries"
    ).fetchall()
    return {(d, n, t): (v, rev) for d, n, t, v, rev in rows}


def target(sta) -> StaTarget:
    return StaTarget(StaClient(sta.url), NET, TARGET)


def server_observations(client: StaClient) -> list[tuple]:
    """(device, indicator, resultTime, result, revision, FOI name) of every Observation, read
    back through Things -> Datastreams -> Observations. (The FeatureOfInterest is matched
    with $filter: this server's $expand=FeatureOfInterest on an Observations collection
    can show a stale one, docs/sta-server.md.)"""
    foi_of = {}
    for foi in client.collection("FeaturesOfInterest", {"$select": "id,name"}):
        query = {"$filter": f"FeatureOfInterest/id eq '{foi['@iot.id']}'", "$select": "id"}
        foi_of.update({o["@iot.id"]: foi["name"] for o in client.collection("Observations", query)})
    out = []
    for thing in client.collection("Things", {"$expand": "Datastreams($select=id,name)"}):
        for ds in thing["Datastreams"]:
            query = {"$filter": f"Datastream/id eq '{ds['@iot.id']}'", "$orderby": "resultTime asc"}
            for o in client.collection("Observations", query):
                out.append((
                    int(thing["name"]), ds["name"].split("-", 1)[1],
                    datetime.fromisoformat(o["resultTime"]), o["result"],
                    o["parameters"]["revision"], foi_of[o["@iot.id"]],
                ))  # fmt: skip
    return out


def entity_names(client: StaClient, entity_set: str) -> Counter[str]:
    return Counter(e["name"] for e in client.collection(entity_set, {"$select": "id,name"}))


def ledger_states(conn: psycopg.Connection) -> Counter[str]:
    return Counter(s for (s,) in conn.execute("SELECT state FROM smartem_publish.observation"))


def assert_server_matches(client: StaClient, conn: psycopg.Connection) -> list[tuple]:
    want = refined_values(conn)
    got = server_observations(client)
    keys = Counter((d, n, t) for d, n, t, *_ in got)
    assert [k for k, c in keys.items() if c > 1] == [], "duplicate Observations"
    assert {(d, n, t): (v, rev) for d, n, t, v, rev, _ in got} == want
    return got


def test_publish_and_read_back(conn, refined, sta):
    assert len(refined) >= 40  # 2 stations x 5 indicators x >= 4 complete hours
    summary = publish_network(conn, NET, target(sta), batch=25)
    assert (summary.values, summary.published, summary.failed) == (len(refined), len(refined), 0)
    assert summary.created == {
        "Locations": 2,
        "Things": 2,
        "Sensors": 1,
        "ObservedProperties": 5,
        "Datastreams": 10,
        "FeaturesOfInterest": 2,
    }
    client = StaClient(sta.url)
    got = assert_server_matches(client, conn)
    assert {foi for *_, foi in got} == {
        f"station-{d} at {lon:.6f},{lat:.6f}"
        for d, lon, lat in conn.execute(
            "SELECT DISTINCT device_id, lon, lat FROM smartem_refined.timeseries"
        )
    }
    # $filter/$expand: a station's Thing, its Location at the refined position, 5 Datastreams
    lon, lat = conn.execute(
        "SELECT lon, lat FROM smartem_refined.timeseries WHERE device_id = 23 LIMIT 1"
    ).fetchone()
    (thing,) = client.find("Things", "23", **{"$expand": "Locations,Datastreams($select=name)"})
    assert thing["Locations"][0]["location"] == {"type": "Point", "coordinates": [lon, lat]}
    assert sorted(d["name"] for d in thing["Datastreams"]) == [
        "23-co2",
        "23-humidity",
        "23-noiseavg",
        "23-pressure",
        "23-temperature",
    ]
    assert thing["properties"] == {"id": 23, "network": "se", "device_type": "jose"}
    one = client.get(
        "Observations",
        {
            "$filter": "Datastream/name eq '26-temperature'",
            "$orderby": "resultTime desc",
            "$top": "1",
        },
    )["value"][0]
    t = datetime.fromisoformat(one["resultTime"])
    assert one["phenomenonTime"] == one["resultTime"]
    assert one["parameters"]["unique_id"] == f"26-{t - H:%Y%m%d}-{(t - H).hour + 1}-temperature"
    assert one["parameters"]["hour_start"] == iso(t - H)
    assert one["parameters"]["sample_count"] > 0
    assert ledger_states(conn) == {"published": len(refined)}


def test_second_run_and_replay_create_nothing(conn, refined, sta):
    publish_network(conn, NET, target(sta))
    client = StaClient(sta.url)
    things, streams = entity_names(client, "Things"), entity_names(client, "Datastreams")
    again = publish_network(conn, NET, target(sta))
    assert (again.values, again.created) == (0, {})
    replay = publish_network(conn, NET, target(sta), since=T0 - 24 * H, until=T0)
    assert (replay.values, replay.published, replay.created) == (len(refined), len(refined), {})
    assert entity_names(client, "Things") == things == {"23": 1, "26": 1}
    assert entity_names(client, "Datastreams") == streams
    assert len(streams) == 10 and set(streams.values()) == {1}
    assert_server_matches(client, conn)


def test_crash_between_send_and_ledger_never_duplicates(conn, refined, sta, monkeypatch):
    """The server confirmed a batch but the ledger commit died: the rows stay 'sending'; the
    next run finds them on the server instead of creating them again."""
    real = ledger.settle
    calls = {"n": 0}

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("worker killed between the server's answer and the commit")
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger, "settle", crash_on_second)
    with pytest.raises(ConnectionError):
        publish_network(conn, NET, target(sta), batch=12)
    monkeypatch.setattr(ledger, "settle", real)
    assert ledger_states(conn) == {"published": 12, "sending": 12}
    client = StaClient(sta.url)
    assert len(server_observations(client)) == 24  # the second batch reached the server

    resumed = publish_network(conn, NET, target(sta), batch=12)
    assert resumed.values == len(refined) - 12
    assert ledger_states(conn) == {"published": len(refined)}
    assert_server_matches(client, conn)


def test_station_moves_and_late_data_update_in_place(conn, refined, sta):
    publish_network(conn, NET, target(sta))
    client = StaClient(sta.url)
    (thing,) = client.find("Things", "23", **{"$expand": "Locations"})
    location_id = thing["Locations"][0]["@iot.id"]
    # the newest hour of station 23 comes from a new place; an older hour gets late data
    newest, older = conn.execute(
        "SELECT max(time), min(time) FROM smartem_refined.timeseries WHERE device_id = 23"
    ).fetchone()
    conn.execute(
        "UPDATE smartem_refined.timeseries SET lon = 5.95, lat = 51.95, revision = revision + 1"
        " WHERE device_id = 23 AND time = %s",
        (newest,),
    )
    conn.execute(
        "UPDATE smartem_refined.timeseries SET value = value + 1, revision = revision + 1"
        " WHERE device_id = 23 AND time = %s AND name = 'temperature'",
        (older,),
    )
    s = publish_network(conn, NET, target(sta))
    assert (s.values, s.published) == (6, 6)
    (thing,) = client.find("Things", "23", **{"$expand": "Locations"})
    assert [loc["@iot.id"] for loc in thing["Locations"]] == [location_id]  # PATCHed in place
    assert thing["Locations"][0]["location"]["coordinates"] == [5.95, 51.95]
    assert thing["Locations"][0]["properties"]["as_of"] == iso(newest)
    got = assert_server_matches(client, conn)
    moved = {foi for d, _n, t, *_, foi in got if d == 23 and t == newest}
    assert moved == {"station-23 at 5.950000,51.950000"}
    # a replay of the older hours does not move the station back
    publish_network(conn, NET, target(sta), since=older - H, until=older)
    (thing,) = client.find("Things", "23", **{"$expand": "Locations"})
    assert thing["Locations"][0]["location"]["coordinates"] == [5.95, 51.95]


def test_replay_repairs_what_the_server_lost_and_duplicated(conn, refined, sta):
    publish_network(conn, NET, target(sta))
    client = StaClient(sta.url)
    obs = client.get(
        "Observations", {"$filter": "Datastream/name eq '23-co2'", "$orderby": "resultTime asc"}
    )["value"]
    lost, doubled = obs[0], obs[1]
    assert client.delete("Observations", lost["@iot.id"])
    full = client.get(
        f"Observations('{doubled['@iot.id']}')",
        {"$expand": "Datastream($select=id),FeatureOfInterest($select=id)"},
    )
    t = datetime.fromisoformat(full["resultTime"])
    copy = Observation(
        full["Datastream"]["@iot.id"],
        full["FeatureOfInterest"]["@iot.id"],
        t,
        t,
        full["result"],
        full["parameters"],
    )
    assert client.create_observations([copy])[0] is not None
    assert len(server_observations(client)) == len(refined)  # one lost, one doubled

    replay = publish_network(conn, NET, target(sta), since=T0 - 24 * H, until=T0)
    assert replay.values == len(refined)
    assert_server_matches(client, conn)
    # a value the refiner no longer gives is deleted from the server on replay
    conn.execute("DELETE FROM smartem_refined.timeseries WHERE device_id = 26 AND name = 'co2'")
    replay = publish_network(conn, NET, target(sta), since=T0 - 24 * H, until=T0)
    assert replay.deleted == sum(1 for d, n, _ in refined if (d, n) == (26, "co2"))
    assert_server_matches(client, conn)


def test_a_value_that_cannot_be_sent_fails_alone(conn, refined, sta):
    (bad,) = conn.execute(
        "UPDATE smartem_refined.timeseries SET value = 'NaN' WHERE gid ="
        " (SELECT min(gid) FROM smartem_refined.timeseries) RETURNING device_id, name, time"
    ).fetchall()
    s = publish_network(conn, NET, target(sta))
    assert (s.published, s.failed) == (len(refined) - 1, 1)
    assert "not finite" in s.errors[0]
    got = {(d, n, t) for d, n, t, *_ in server_observations(StaClient(sta.url))}
    assert got == set(refined) - {bad}
    assert ledger_states(conn) == {"published": len(refined) - 1, "failed": 1}
