"""The Whale harvester against the simulated raw-sensor API and the real PostgreSQL: resume,
late data, a failing device, bad JSON, crashes between and inside batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stationflow.collect.harvest import HarvestError, harvest
from stationflow.collect.raw_store import day_hour, hour_start, progress
from stationflow.collect.whale import WhaleSource
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.whale import WhaleSim
from tests.clock import Clock

TOKEN = "whale-bearer-7f3a9c"
DEVICES = [23, 26, 31]
H = timedelta(hours=1)
T0 = datetime(2026, 1, 20, 10, 30, tzinfo=UTC)  # "now": hour 11 (10:00-10:59) is filling


@pytest.fixture
def conn(state_db: str) -> Iterator[psycopg.Connection]:
    """Autocommit, as a task's connection between batches: reads never hold a transaction."""
    with psycopg.connect(state_db, autocommit=True) as c:
        yield c


def source(sim: WhaleSim, token: str = TOKEN, **kw) -> WhaleSource:
    kw.setdefault("backoff", 0.01)
    return WhaleSource(url=sim.url, connection_id="whale_api", token=token, **kw)


def run(conn: psycopg.Connection, sim: WhaleSim, clock: Clock, lookback: int = 6, **kw):
    kw.setdefault("batch_hours", 7)
    return harvest(
        conn,
        kw.pop("src", None) or source(sim),
        until=clock.t,
        now=clock.t,
        lookback=lookback * H,
        workers=2,
        **kw,
    )


def stored(conn: psycopg.Connection) -> dict[tuple[int, int, int], tuple]:
    rows = conn.execute(
        "SELECT device_id, day, hour, data::text, sample_count, revision, complete, device_type,"
        " lon, lat FROM smartem_raw.timeseries"
    )
    return {(r[0], r[1], r[2]): r[3:] for r in rows}


def hours_between(start: datetime, end: datetime) -> list[tuple[int, int]]:
    out, t = [], start
    while t < end:
        out.append(day_hour(t))
        t += H
    return out


def test_first_harvest_stores_the_ended_hours_verbatim(conn, sim, clock) -> None:
    report = run(conn, sim, clock)
    expected = hours_between(
        datetime(2026, 1, 20, 4, tzinfo=UTC), datetime(2026, 1, 20, 10, tzinfo=UTC)
    )
    rows = stored(conn)
    assert sorted(rows) == sorted((d, day, h) for d in DEVICES for day, h in expected)
    assert (20260120, 11) not in {(day, h) for _, day, h in rows}  # still being filled
    for (d, day, h), (data, count, revision, complete, dtype, lon, lat) in rows.items():
        assert data.encode() == sim.hour_body(d, day, h)
        assert count == data.count('"time":') > 100
        assert (revision, complete, dtype) == (1, True, "jose")
        assert 5.5 < lon < 6.2 and 51.5 < lat < 52.1
    assert report.written.inserted == 18 and report.failures == {}
    assert progress(conn, "whale:whale_api") == {d: hour_start(20260120, 10) for d in DEVICES}
    level, details = conn.execute(
        "SELECT level, details FROM stationflow.audit_log WHERE step = 'harvest'"
    ).fetchone()
    assert level == "INFO" and details["inserted"] == 18


def test_a_rerun_changes_nothing_and_resumes_where_it_stopped(conn, sim, clock) -> None:
    run(conn, sim, clock)
    again = run(conn, sim, clock)
    assert (again.written.inserted, again.written.updated, again.written.unchanged) == (0, 0, 18)
    clock.t = T0 + 5 * H  # five hours later, look-back 2 h: resume at the newest hour + 1
    sim.reset_requests()
    later = run(conn, sim, clock, lookback=2)
    assert later.written.inserted == 5 * len(DEVICES)
    hour_paths = [r["path"].split("/") for r in sim.requests if r["path"].count("/") == 7]
    fetched = sorted({(int(p[-2]), int(p[-1])) for p in hour_paths})
    assert fetched == hours_between(T0.replace(minute=0), clock.t.replace(minute=0))
    assert len(hour_paths) == 5 * len(DEVICES)  # each new hour once, nothing older
    assert len(stored(conn)) == (6 + 5) * len(DEVICES)


def test_late_samples_update_the_hour_they_belong_to(conn, sim, clock) -> None:
    start = next(
        hour_start(*day_hour(T0 - k * H))
        for k in range(2, 6)
        if sim.is_late_hour(23, hour_start(*day_hour(T0 - k * H)))
    )
    clock.t = start + H + timedelta(minutes=5)  # just after that hour ended
    run(conn, sim, clock, lookback=3)
    day, h = day_hour(start)
    first = stored(conn)[(23, day, h)]
    clock.t = start + H + timedelta(minutes=95)  # the late samples have arrived
    report = run(conn, sim, clock, lookback=3)
    late = stored(conn)[(23, day, h)]
    assert late[1] > first[1] and late[2] == 2  # more samples, revision 2
    assert late[0].encode() == sim.hour_body(23, day, h)
    assert report.written.updated >= 1
    changed = conn.execute(
        "SELECT hours_changed FROM smartem_raw.harvester_progress WHERE device_id = 23"
    ).fetchone()[0]
    assert changed >= 1


def test_a_failing_device_is_isolated_audited_and_caught_up(conn, sim, clock) -> None:
    sim.fail_device(26, status=500)
    report = run(conn, sim, clock)
    assert set(report.failures) == {26} and "HTTP 500" in report.failures[26]
    rows = stored(conn)
    assert {d for d, _, _ in rows} == {23, 31} and len(rows) == 12
    msg = conn.execute(
        "SELECT message FROM stationflow.audit_log WHERE level = 'ERROR' AND step = 'harvest'"
    ).fetchone()[0]
    assert "device 26 not harvested" in msg and TOKEN not in msg
    sim.clear_faults()
    clock.t = T0 + 2 * H
    run(conn, sim, clock)
    assert len([k for k in stored(conn) if k[0] == 26]) == 6  # look-back 6 h: 06:00..11:00


def test_a_flaky_device_is_retried_to_completion(conn, clock) -> None:
    with WhaleSim(DEVICES, token=TOKEN, clock=clock, flaky_device=31, flaky_every=3) as sim:
        report = run(conn, sim, clock)
        assert report.failures == {} and report.written.inserted == 18
        assert any(r["status"] == 503 for r in sim.requests)


def test_bad_json_is_quarantined_with_its_bytes_and_others_go_on(conn, sim, clock) -> None:
    sim.bad_json(23, 20260120, 8)
    sim.wrong_shape(31, 20260120, 9)
    bad_body = sim.hour_body(23, 20260120, 8)
    report = run(conn, sim, clock)
    assert report.written.quarantined == 2 and report.failures == {}
    rows = stored(conn)
    assert (23, 20260120, 8) not in rows and (31, 20260120, 9) not in rows
    assert len(rows) == 16  # the other hours of 23 and 31, all of 26
    q = conn.execute(
        "SELECT device_id, hour, error, body FROM smartem_raw.quarantine ORDER BY device_id"
    ).fetchall()
    assert (q[0][0], q[0][1], bytes(q[0][3])) == (23, 8, bad_body)
    assert "not JSON" in q[0][2] and "/devices/23/timeseries/20260120/8" in q[0][2]
    assert "'timeseries' must be a list (str)" in q[1][2]
    audited = conn.execute(
        "SELECT count(*) FROM stationflow.audit_log WHERE level = 'ERROR'"
        " AND message LIKE 'quarantined device%%'"
    ).fetchone()[0]
    assert audited == 2
    sim.clear_faults()  # fixed at the source: the next run stores the hour
    run(conn, sim, clock)
    assert (23, 20260120, 8) in stored(conn) and (31, 20260120, 9) in stored(conn)


def test_a_refused_token_fails_the_run_and_never_shows(conn, sim, clock) -> None:
    with pytest.raises(HarvestError, match="HTTP 401") as err:
        run(conn, sim, clock, src=source(sim, token="wrong-token-123"))
    assert "wrong-token-123" not in str(err.value)
    assert stored(conn) == {}
    assert (
        conn.execute("SELECT count(*) FROM stationflow.audit_log WHERE level = 'ERROR'").fetchone()[
            0
        ]
        == 1
    )


# ------------------------------------------------------------------ crashes mid-harvest

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime, timedelta
    import psycopg
    from stationflow.collect import raw_store
    from stationflow.collect.harvest import harvest
    from stationflow.collect.whale import WhaleSource

    db, url, token, now, mode, k = sys.argv[1:7]
    k, n = int(k), [0]
    write_batch = raw_store.write_batch

    def dying_write(conn, hours, rejected=()):
        n[0] += 1
        if n[0] < k:
            return write_batch(conn, hours, rejected)
        if mode == "between":
            os.kill(os.getpid(), signal.SIGKILL)
        execute = conn.execute
        def execute_then_die(query, *a, **kw):
            cur = execute(query, *a, **kw)
            if "merge_stage" in str(query):  # merged, progress moved, not committed
                os.kill(os.getpid(), signal.SIGKILL)
            return cur
        conn.execute = execute_then_die
        return write_batch(conn, hours, rejected)

    raw_store.write_batch = dying_write
    now = datetime.fromisoformat(now)
    with psycopg.connect(db) as conn:
        harvest(conn, WhaleSource(url=url, connection_id="whale_api", token=token),
                until=now, now=now, lookback=timedelta(hours=12), workers=2, batch_hours=5)
    """
)


@pytest.mark.parametrize("mode", ["between", "inside"])
def test_a_kill_mid_harvest_loses_and_duplicates_nothing(mode, state_db, conn, sim, clock):
    child = subprocess.run(
        [sys.executable, "-c", CHILD, state_db, sim.url, TOKEN, T0.isoformat(), mode, "4"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "include")},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    after_crash = stored(conn)
    assert len(after_crash) == 3 * 5  # three batches of five committed, the fourth not
    done = progress(conn, "whale:whale_api")
    for d in DEVICES:  # what is committed is a prefix of each device's walk
        have = sorted(hour_start(day, h) for dd, day, h in after_crash if dd == d)
        if have:
            assert done[d] == have[-1]
            assert have == [have[0] + i * H for i in range(len(have))]
        else:
            assert d not in done
    report = run(conn, sim, clock, lookback=12)
    rows = stored(conn)
    expected = hours_between(T0.replace(minute=0) - 12 * H, T0.replace(minute=0))
    assert sorted(rows) == sorted((d, day, h) for d in DEVICES for day, h in expected)
    w = report.written
    assert (w.inserted, w.updated, w.unchanged) == (36 - 15, 0, 15)
    assert all(r[2] == 1 for r in rows.values())  # nothing written twice
    assert all(r[0].encode() == sim.hour_body(d, day, h) for (d, day, h), r in rows.items())
