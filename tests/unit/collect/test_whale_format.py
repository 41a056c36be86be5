"""The Whale API documents, read from the real samples (tests/fixtures/smartemission)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stationflow.collect.harvest import windows
from stationflow.formats import whale

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "smartemission"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_gps_nibbles_decode_as_the_seed_says() -> None:
    assert whale.decode_gps(5914103) == pytest.approx(5.671223, abs=1e-9)
    assert whale.decode_gps(53949937) == pytest.approx(51.472561, abs=1e-9)
    assert whale.decode_gps(0x8_05_A3DF7) == pytest.approx(-5.671223, abs=1e-9)  # West
    for no_fix in (0, None, "5914103", True, 0x0_B5_00000, 0x0_05_F4240, 0x4_05_A3DF7):
        assert whale.decode_gps(no_fix) is None, no_fix  # no fix, not an int, 181°, >999999


def test_listings_of_the_real_api() -> None:
    assert whale.device_ids(sample("devices.json")) == [23, 9, 3, 24, 8, 29, 26, 25]
    days = whale.days(sample("timeseries.json"), "t")
    assert days[0] == 20160108 and days[-1] == 20160118 and len(days) == 11
    assert whale.hours(sample("timeseries-hours.json"), "t") == [20, 21, 22, 23, 24]


def test_the_real_hour_document() -> None:
    doc = whale.hour_doc(sample("timeseries-hour.json"), 23, 20160108, 23, "u")
    assert doc.sample_count == 198
    # in January 2016 device 23 was still at Intemo in Helmond (seed 001, 4.3.3)
    assert doc.lon == pytest.approx(5.6712, abs=1e-4)
    assert doc.lat == pytest.approx(51.4726, abs=1e-4)


@pytest.mark.parametrize(
    ("body", "device", "day", "hour", "message"),
    [
        (b'{"id": "23", "timeseries": [', 23, 20160108, 23, r"u: not JSON"),
        (b"[1, 2]", 23, 20160108, 23, r"u: expected a JSON object, got list"),
        (b'{"id": "23"}', 23, 20160108, 23, r"field 'timeseries' must be a list \(missing\)"),
        (b'{"timeseries": "x"}', 23, 20160108, 23, r"'timeseries' must be a list \(str\)"),
        (b'{"id": "24", "timeseries": []}', 23, 20160108, 23, r"'id' is '24', expected 23"),
        (b'{"hour": 22, "timeseries": []}', 23, 20160108, 23, r"'hour' is 22, expected 23"),
        (b'{"date": "2016-01-09", "timeseries": []}', 23, 20160108, 23, r"'date' is"),
        (b'{"timeseries": [{}, 3]}', 23, 20160108, 23, r"timeseries\[1\] must be an object"),
        (b'{"timeseries": [\xff]}', 23, 20160108, 23, r"not JSON"),
    ],
)
def test_bad_hour_documents_name_the_field(
    body: bytes, device: int, day: int, hour: int, message: str
) -> None:
    with pytest.raises(whale.WhaleFormatError, match=message):
        whale.hour_doc(body, device, day, hour, "u")


def test_bad_listings_name_the_item() -> None:
    with pytest.raises(whale.WhaleFormatError, match=r"devices\[1\] = '/x/abc'"):
        whale.device_ids(b'{"devices": ["/x/1", "/x/abc"]}')
    with pytest.raises(whale.WhaleFormatError, match=r"hours\[0\] = 25"):
        whale.hours(b'{"hours": [25]}', "t")
    with pytest.raises(whale.WhaleFormatError, match=r"days\[0\] = 2016 is not"):
        whale.days(b'{"days": ["/d/2016"]}', "t")


T = datetime(2026, 1, 20, 10, tzinfo=UTC)
H = timedelta(hours=1)


def test_windows_resume_from_progress_and_recheck_the_lookback() -> None:
    progress = {1: T - 2 * H, 2: T - 100 * H, 3: T - 200 * H}
    w = windows([1, 2, 3, 4], progress, until=T, lookback=48 * H)
    assert w[1].since == T - 48 * H  # recent progress: the look-back decides
    assert w[2].since == T - 99 * H  # behind: resume after the newest committed hour
    assert w[3].since == T - 199 * H
    assert w[4].since == T - 48 * H  # never harvested: the look-back window
    assert {x.until for x in w.values()} == {T}


def test_windows_of_a_backfill_are_its_interval() -> None:
    w = windows([1], {1: T}, until=T - 24 * H, lookback=48 * H, since=T - 25 * H)
    assert (w[1].since, w[1].until) == (T - 25 * H, T - 24 * H)
    assert windows([1], {}, until=T, lookback=H, since=T) == {}  # empty interval


def test_airflows_pendulum_times_become_plain_utc_hours() -> None:
    import pendulum

    from stationflow.collect.harvest import floor_hour

    t = floor_hour(pendulum.datetime(2026, 1, 20, 11, 59, 59, tz="Europe/Amsterdam"))
    assert type(t) is datetime and t == datetime(2026, 1, 20, 10, tzinfo=UTC)
    assert (t - datetime(1970, 1, 1, tzinfo=UTC)) % timedelta(days=1) == timedelta(hours=10)


def test_a_backfill_run_harvests_exactly_its_interval() -> None:
    from types import SimpleNamespace

    from airflow.utils.types import DagRunType

    from stationflow.collect.tasks import _interval

    start, end = T - H, T
    for run_type, backfill in ((DagRunType.BACKFILL_JOB, True), (DagRunType.SCHEDULED, False)):
        run = SimpleNamespace(run_type=run_type, data_interval_start=start, data_interval_end=end)
        assert _interval({"dag_run": run}) == (start, end, backfill)
    assert _interval(None) == (None, None, False)
