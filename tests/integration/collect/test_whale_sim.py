"""The Whale raw-sensor API simulator, spoken to over loopback HTTP with ``requests``."""

from __future__ import annotations

import itertools
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
import requests

from stationflow.sim.whale import WhaleSim, device_position, josene_coordinate

NOW = datetime(2026, 1, 20, 10, 30, tzinfo=UTC)  # hour 11 of 20260120 is being filled
DAY = 20260120
DEVICES = (23, 26)
TOKEN = "s3cret-token"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
OBJECT_ID = re.compile(r"[0-9a-f]{24}")
# keys of the real answers (shared Smart Emission samples), written out here on purpose
DEVICE_KEYS = ["id", "timeseries", "last", "outputs"]
DAYS_KEYS = ["id", "days"]
HOURS_KEYS = ["id", "date", "hours"]
HOUR_KEYS = ["id", "date", "hour", "timeseries"]
AUDIO = re.compile(r"[vuts]_audio")


def _template() -> list[dict]:
    blob = resources.files("stationflow.sim").joinpath("data", "whale-hour.json").read_bytes()
    return json.loads(blob)["timeseries"]


TEMPLATE = _template()


class Clock:
    """A settable clock: the simulator's "now"."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def start(hour: int, day: datetime = NOW) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour - 1)


def decode(raw: int) -> float:
    """The Josene nibble format, written from its description (not the simulator's code)."""
    sign = -1 if raw >> 28 & 0xF == 8 else 1
    return sign * ((raw >> 20 & 0xFF) + (raw & 0xFFFFF) / 1e6)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def sim(clock: Clock) -> Iterator[WhaleSim]:
    with WhaleSim(DEVICES, clock=clock) as s:
        yield s


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def get(http: requests.Session, sim: WhaleSim, path: str, **kw) -> requests.Response:
    return http.get(sim.url + path, timeout=5, **kw)


def complete_hour(sim: WhaleSim, device: int, late: bool) -> int:
    """An hour of DAY after the first and before the current one that is (not) late."""
    return next(h for h in range(2, 11) if sim.is_late_hour(device, start(h)) is late)


# --------------------------------------------------------------------- the API shape


def test_devices_and_metadata_are_shaped_like_the_real_api(sim, http) -> None:
    r = get(http, sim, "/devices")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"devices": ["/sensors/v1/devices/23", "/sensors/v1/devices/26"]}
    meta = get(http, sim, "/devices/26").json()
    assert list(meta) == DEVICE_KEYS
    assert meta["id"] == "26"
    assert meta["timeseries"] == "/sensors/v1/devices/26/timeseries"
    assert meta["last"] == "/sensors/v1/devices/26/last"
    assert len(meta["outputs"]) == 107
    assert {"name": "s_no2", "label": "NO2 Concentration", "chart": "True", "unit": "ppb"} in (
        meta["outputs"]
    )


def test_days_and_hours_cover_the_history_and_the_hour_being_filled(sim, http) -> None:
    days = get(http, sim, "/devices/23/timeseries").json()
    assert list(days) == DAYS_KEYS
    assert days["id"] == "23"
    # 72 h back from 10:30 on the 20th: from 10:00 on the 17th
    assert days["days"] == [f"/sensors/v1/devices/23/timeseries/202601{d}" for d in range(17, 21)]
    first = get(http, sim, "/devices/23/timeseries/20260117").json()
    assert list(first) == HOURS_KEYS
    assert (first["id"], first["date"], first["hours"]) == ("23", "2026-01-17", list(range(11, 25)))
    today = get(http, sim, f"/devices/23/timeseries/{DAY}").json()
    assert today["hours"] == list(range(1, 12))  # hour 11 (10:00-10:59) is still filling
    assert get(http, sim, "/devices/23/timeseries/20260116").status_code == 404
    assert get(http, sim, "/devices/23/timeseries/20260121").status_code == 404
    assert get(http, sim, f"/devices/23/timeseries/{DAY}/12").status_code == 404
    assert get(http, sim, "/devices/23/timeseries/20260117/10").status_code == 404


def test_an_hour_holds_the_template_samples_moved_to_it(sim, http) -> None:
    hour = complete_hour(sim, 23, late=False)
    r = get(http, sim, f"/devices/23/timeseries/{DAY}/{hour}")
    doc = r.json()
    assert list(doc) == HOUR_KEYS
    assert (doc["id"], doc["date"], doc["hour"]) == ("23", "2026-01-20", hour)
    samples = doc["timeseries"]
    assert len(samples) == len(TEMPLATE) == 198
    assert [list(s) for s in samples] == [list(t) for t in TEMPLATE]
    times = [datetime.strptime(s["time"], "%Y-%m-%dT%H:%M:%S.%f%z") for s in samples]
    assert all(TIME.fullmatch(s["time"]) for s in samples)
    assert times == sorted(times)
    # hour h covers (h-1):00-(h-1):59, at the template's offsets into its hour
    assert all(start(hour) <= t < start(hour + 1) for t in times)
    template_start = datetime(2016, 1, 8, 22, tzinfo=UTC)
    offsets = [
        datetime.strptime(s["time"], "%Y-%m-%dT%H:%M:%S.%f%z") - template_start for s in TEMPLATE
    ]
    assert [t - start(hour) for t in times] == [
        timedelta(milliseconds=round(o / timedelta(milliseconds=1))) for o in offsets
    ]
    ids = [s["_id"] for s in samples]
    assert all(OBJECT_ID.fullmatch(i) for i in ids) and len(set(ids)) == 198
    assert {s["p_unitserialnumber"] for s in samples} == {23}
    assert {s["id"] for s in samples} == {23}
    for s, t in zip(samples, TEMPLATE, strict=True):
        assert all(type(s[k]) is type(t[k]) for k in t)  # integers stay integers
        assert all(s[k] == t[k] for k in t if AUDIO.match(k))  # packed audio untouched
    # the body is compact JSON, exactly as json.dumps writes it
    assert r.content == json.dumps(doc, separators=(",", ":")).encode()
    assert r.headers["Content-Length"] == str(len(r.content))


def test_values_vary_within_bounds(sim) -> None:
    for device in DEVICES:
        for hour in (1, 9, 17):
            samples = json.loads(sim.hour_body(device, 20260119, hour))["timeseries"]
            for s, t in zip(samples, TEMPLATE, strict=True):
                assert 20_000 <= s["s_humidity"] <= 100_000
                assert abs(s["s_temperatureambient"] - t["s_temperatureambient"]) <= 7_000
                assert abs(s["s_barometer"] - t["s_barometer"]) <= 400
                for k in ("s_coresistance", "s_no2resistance", "s_o3resistance", "s_co2"):
                    if k in t:
                        assert abs(s[k] - t[k]) <= 0.2 * t[k] + 1
    day = [json.loads(sim.hour_body(23, 20260119, h))["timeseries"][0] for h in range(1, 25)]
    temps = [s["s_temperatureambient"] for s in day]
    assert max(temps) - min(temps) > 5_000  # a daily cycle, not a constant


def test_the_hour_being_filled_holds_only_the_samples_up_to_now(sim, http, clock) -> None:
    samples = get(http, sim, f"/devices/23/timeseries/{DAY}/11").json()["timeseries"]
    expected = sum(t["time"] < "2016-01-08T22:30:00" for t in TEMPLATE)  # up to :30 in its hour
    assert 0 < expected < 198
    assert len(samples) == expected
    assert all(start(11) <= datetime.fromisoformat(s["time"]) <= NOW for s in samples)
    assert datetime.fromisoformat(samples[-1]["time"]) > NOW - timedelta(minutes=1)
    clock.now = start(12)  # the hour is over
    full = get(http, sim, f"/devices/23/timeseries/{DAY}/11").json()["timeseries"]
    assert len(full) == (158 if sim.is_late_hour(23, start(11)) else 198)
    assert full[: len(samples)] == samples


def test_last_is_the_newest_sample_with_a_string_id(sim, http, clock) -> None:
    last = get(http, sim, "/devices/26/last").json()
    current = get(http, sim, f"/devices/26/timeseries/{DAY}/11").json()["timeseries"]
    assert last["id"] == "26"
    assert next(iter(last)) == "id"
    assert set(last) == set(TEMPLATE[len(current) - 1]) - {"_id"}
    assert last["time"] == current[-1]["time"]
    assert last["s_humidity"] == current[-1]["s_humidity"]
    clock.now = NOW + timedelta(minutes=10)
    assert get(http, sim, "/devices/26/last").json()["time"] > last["time"]


# --------------------------------------------------------------------- late data


def test_a_late_hour_grows_after_the_late_delay(sim, http, clock) -> None:
    hour = complete_hour(sim, 23, late=True)
    on_time = hour - 1  # over for longer, but arrived in full
    assert not sim.is_late_hour(23, start(on_time))
    path = f"/devices/23/timeseries/{DAY}/{hour}"
    clock.now = start(hour + 1) + timedelta(minutes=5)  # just after it ended
    early = get(http, sim, path)
    n_early = len(early.json()["timeseries"])
    assert n_early == 198 - round(198 * 0.2)
    assert (
        len(get(http, sim, f"/devices/23/timeseries/{DAY}/{on_time}").json()["timeseries"]) == 198
    )
    clock.now = start(hour + 1) + timedelta(minutes=90) - timedelta(milliseconds=1)
    assert get(http, sim, path).content == early.content
    clock.now = start(hour + 1) + timedelta(minutes=90)
    later = get(http, sim, path)
    assert later.content != early.content
    samples = later.json()["timeseries"]
    assert len(samples) == 198
    assert samples[:n_early] == early.json()["timeseries"]  # the missing ones were the last
    assert sim.visible_count(23, DAY, hour) == 198


def test_late_hours_follow_device_plus_hour_index(sim) -> None:
    late = [h for h in range(1, 25) if sim.is_late_hour(23, start(h))]
    assert len(late) in (4, 5)
    assert all(b - a == 5 for a, b in itertools.pairwise(late))
    index = int(start(late[0]).timestamp()) // 3600
    assert (23 + index) % 5 == 0
    assert not sim.is_late_hour(26, start(late[0]))


# --------------------------------------------------------------------- determinism, GPS


def test_the_same_device_hour_and_clock_give_the_same_bytes(sim, http, clock) -> None:
    path = f"/devices/23/timeseries/{DAY}/5"
    first = get(http, sim, path).content
    assert get(http, sim, path).content == first
    with WhaleSim(DEVICES, clock=clock) as other:  # a new simulator, nothing cached
        assert get(http, other, path).content == first
    assert sim.hour_body(23, DAY, 5) == first
    other_device = get(http, sim, f"/devices/26/timeseries/{DAY}/5").json()["timeseries"]
    other_hour = get(http, sim, f"/devices/23/timeseries/{DAY}/6").json()["timeseries"]
    mine = json.loads(first)["timeseries"]
    for key in ("s_temperatureambient", "s_humidity", "s_barometer", "s_no2resistance", "_id"):
        assert [s.get(key) for s in mine] != [s.get(key) for s in other_device], key
        assert [s.get(key) for s in mine] != [s.get(key) for s in other_hour], key


def test_gps_encodes_each_devices_position(sim) -> None:
    assert josene_coordinate(5.671223) == 5914103 == 0x005A3DF7
    assert josene_coordinate(51.472561) == 53949937 == 0x033735F1
    assert josene_coordinate(-5.671223) == 0x805A3DF7
    assert decode(TEMPLATE[0]["s_longitude"]) == pytest.approx(5.671198, abs=1e-9)
    positions = {}
    for device in DEVICES:
        lon, lat = device_position(device)
        assert 5.8 <= lon <= 5.9 and 51.8 <= lat <= 51.9
        samples = json.loads(sim.hour_body(device, DAY, 3))["timeseries"]
        for s in samples:
            assert decode(s["s_longitude"]) == pytest.approx(lon, abs=1e-6)
            assert decode(s["s_latitude"]) == pytest.approx(lat, abs=1e-6)
        positions[device] = (lon, lat)
    assert positions[23] != positions[26]


# --------------------------------------------------------------------- auth, faults


def test_a_token_is_required_when_set(clock, http, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="stationflow.sim.whale")
    with WhaleSim(DEVICES, clock=clock, token=TOKEN) as sim:
        missing = get(http, sim, "/devices")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert "error" in missing.json()
        wrong = get(http, sim, "/devices", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        basic = get(http, sim, "/devices", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        ok = get(http, sim, "/devices/23", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert [r["status"] for r in sim.requests] == [401, 401, 401, 200]
        assert TOKEN not in repr(sim.requests)
    assert caplog.records  # requests are logged...
    assert TOKEN not in caplog.text  # ...without the token


def test_the_flaky_device_fails_every_nth_request(clock, http) -> None:
    with WhaleSim(DEVICES, clock=clock, flaky_device=23, flaky_every=3) as sim:
        statuses = []
        for path in ("", "/timeseries", f"/timeseries/{DAY}", f"/timeseries/{DAY}/4") * 2:
            statuses.append(get(http, sim, f"/devices/23{path}").status_code)
            assert get(http, sim, f"/devices/26{path}").status_code == 200
        assert statuses == [200, 200, 503, 200, 200, 503, 200, 200]
        failed = get(http, sim, "/devices/23")
        assert failed.status_code == 503 and "error" in failed.json()
        assert get(http, sim, "/devices").status_code == 200  # not a device path


def test_fail_device_until_cleared(sim, http) -> None:
    sim.fail_device(23, status=502)
    assert get(http, sim, "/devices/23").status_code == 502
    assert get(http, sim, f"/devices/23/timeseries/{DAY}/4").status_code == 502
    assert "error" in get(http, sim, "/devices/23/last").json()
    assert get(http, sim, "/devices/26").status_code == 200
    sim.clear_faults()
    assert get(http, sim, "/devices/23").status_code == 200
    sim.fail_device(26, times=1)
    assert [get(http, sim, "/devices/26").status_code for _ in range(2)] == [500, 200]


def test_bad_json_and_wrong_shape(sim, http) -> None:
    good = get(http, sim, f"/devices/23/timeseries/{DAY}/4").content
    sim.bad_json(23, DAY, 4)
    sim.wrong_shape(23, DAY, 5)
    bad = get(http, sim, f"/devices/23/timeseries/{DAY}/4")
    assert bad.status_code == 200
    assert bad.content == good[: len(good) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad.content)
    assert sim.hour_body(23, DAY, 4) == bad.content
    shaped = get(http, sim, f"/devices/23/timeseries/{DAY}/5")
    assert shaped.status_code == 200
    assert isinstance(shaped.json()["timeseries"], str)
    assert len(get(http, sim, f"/devices/26/timeseries/{DAY}/4").json()["timeseries"]) == 198
    sim.clear_faults()
    assert get(http, sim, f"/devices/23/timeseries/{DAY}/4").content == good
    assert isinstance(get(http, sim, f"/devices/23/timeseries/{DAY}/5").json()["timeseries"], list)


def test_override_serves_exact_bytes_for_one_hour(sim, http) -> None:
    good = get(http, sim, f"/devices/23/timeseries/{DAY}/4").content
    body = b'{"id": "23", "timeseries": [NaN, \xff'
    sim.override(23, DAY, 4, body, times=1)
    assert sim.hour_body(23, DAY, 4) == body
    served = get(http, sim, f"/devices/23/timeseries/{DAY}/4")
    assert served.status_code == 200 and served.content == body
    assert get(http, sim, f"/devices/23/timeseries/{DAY}/5").json()["hour"] == 5
    assert get(http, sim, f"/devices/26/timeseries/{DAY}/4").json()["id"] == "26"
    assert get(http, sim, f"/devices/23/timeseries/{DAY}").json()["hours"][:4] == [1, 2, 3, 4]
    assert get(http, sim, f"/devices/23/timeseries/{DAY}/4").content == good  # times=1: used up
    sim.override(23, DAY, 4, b"")
    assert [get(http, sim, f"/devices/23/timeseries/{DAY}/4").content for _ in range(2)] == [
        b"",
        b"",
    ]
    assert get(http, sim, f"/devices/23/timeseries/{DAY}/12").status_code == 404  # no samples
    sim.override(23, DAY, 12, b"{}")
    assert get(http, sim, f"/devices/23/timeseries/{DAY}/12").status_code == 404
    sim.clear_faults()
    assert get(http, sim, f"/devices/23/timeseries/{DAY}/4").content == good


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/devices/99", 404),
        ("/devices/99/timeseries", 404),
        ("/devices/abc", 400),
        ("/devices/23/timeseries/2026012x", 400),
        ("/devices/23/timeseries/20261340", 400),
        ("/devices/23/timeseries/20260120/x", 400),
        ("/devices/23/timeseries/20260120/0", 404),
        ("/devices/23/timeseries/20260120/25", 404),
        ("/devices/23/nothing", 404),
        ("/elsewhere", 404),
    ],
)
def test_errors(sim, http, path, status) -> None:
    r = get(http, sim, path)
    assert r.status_code == status
    assert r.headers["Content-Type"] == "application/json"
    assert isinstance(r.json()["error"], str)


def test_only_get_and_head(sim, http) -> None:
    for method in ("POST", "PUT", "DELETE"):
        r = http.request(method, f"{sim.url}/devices", data=b"{}", timeout=5)
        assert r.status_code == 405
        assert r.headers["Allow"] == "GET, HEAD"
    head = http.head(f"{sim.url}/devices/23/timeseries/{DAY}/4", timeout=5)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["Content-Length"]) == len(sim.hour_body(23, DAY, 4))
    assert [r["method"] for r in sim.requests] == ["POST", "PUT", "DELETE", "HEAD"]
    assert {r["at"] for r in sim.requests} == {NOW}
    sim.reset_requests()
    assert sim.requests == []


# ------------------------------------------------------------------ transport faults


def test_delay_holds_answers_past_a_client_timeout(sim, http) -> None:
    sim.delay(0.6, device=23, skip=1, times=2)
    assert get(http, sim, "/devices/23").status_code == 200  # skipped: answered at once
    for _ in range(2):
        with pytest.raises(requests.exceptions.ReadTimeout):
            http.get(f"{sim.url}/devices/23/timeseries", timeout=0.2)
    assert get(http, sim, "/devices/26/timeseries").status_code == 200  # another device
    started = time.monotonic()
    assert http.get(f"{sim.url}/devices/23/timeseries", timeout=0.2).status_code == 200
    assert time.monotonic() - started < 0.2  # the two held answers are used up
    sim.delay(0.3)  # every request, until cleared
    started = time.monotonic()
    assert get(http, sim, "/devices").status_code == 200
    assert time.monotonic() - started >= 0.3
    sim.clear_faults()
    started = time.monotonic()
    assert get(http, sim, "/devices").status_code == 200
    assert time.monotonic() - started < 0.3


def test_cut_next_closes_the_connection_mid_body(sim, http) -> None:
    path = f"/devices/23/timeseries/{DAY}/4"
    whole = sim.hour_body(23, DAY, 4)
    sim.cut_next(1, device=23, keep=0.4)
    assert get(http, sim, f"/devices/23/timeseries/{DAY}").status_code == 200  # not an hour
    assert get(http, sim, f"/devices/26/timeseries/{DAY}/4").status_code == 200
    with socket.create_connection((sim.host, sim.port), timeout=5) as s:
        s.sendall(f"GET {sim.base_path}{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(whole)}".encode() in head
    assert body == whole[: int(len(whole) * 0.4)]  # then the server closed the socket
    sim.cut_next(1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(sim.url + path, timeout=5)
    assert get(http, sim, path).content == whole


def test_pause_after_holds_requests_until_resumed(sim) -> None:
    sim.pause_after(2)
    statuses: list[int] = []

    def fetch(hour: int) -> None:
        with requests.Session() as s:
            statuses.append(s.get(f"{sim.url}/devices/23/timeseries/{DAY}/{hour}").status_code)

    fetch(4)
    fetch(5)
    assert not sim.wait_paused(0.1)
    held = threading.Thread(target=fetch, args=(6,))
    held.start()
    assert sim.wait_paused(5)
    held.join(0.3)
    assert held.is_alive() and statuses == [200, 200]
    sim.resume()
    held.join(5)
    assert statuses == [200, 200, 200]
