"""Health checks and relay resets against real sockets: a TcpDevice, a RelaySim, a state DB."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import requests

from stationflow.collect.health import (
    DeviceDown,
    RelayError,
    check_device,
    reachable,
    reset_device,
)
from stationflow.config import Logger, Relay, Station
from stationflow.sim.device import TcpDevice
from stationflow.sim.relay import RelaySim

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
RUN = timedelta(minutes=10)  # the DAG's schedule
RELAY_LOGIN, RELAY_PASSWORD = "admin", "relay-Secret-8731"
WAIT = 1.0  # the relay's wait_seconds (a fake sleep records it)


def _set_conn(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "http", **fields})
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _station(relay: Relay | None = None, device: str = "cr3000_meteo") -> tuple[Station, Logger]:
    logger = {
        "id": device,
        "kind": "campbell",
        "collect": {"method": "loggernet", "folder": "x", "tables": ["Meteo_30min"]},
        "health_connection_id": "health_dev",
        "relay": relay.model_dump() if relay else None,
    }
    station = Station.model_validate(
        {
            "id": "FR-Lam",
            "utc_offset_hours": 1,
            "upload": {"connection_id": "icos_etc_fr_lam"},
            "loggers": [logger],
            "files": [{"type": "BM", "logger": device, "logger_number": 1, "file_number": 1}],
        }
    )
    return station, station.loggers[0]


def _relay(**kw) -> Relay:
    args = {"connection_id": "relay_test", "url": "/relay/{channel}/cycle", "channel": 1}
    return Relay(**{"after_failures": 3, "wait_seconds": WAIT, **args, **kw})


class FakeSleep:
    """Records the waits; lets a simulated device finish booting (bounded) instead."""

    def __init__(self, device: TcpDevice | None = None):
        self.device = device
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        deadline = time.monotonic() + 2
        while self.device is not None and not self.device.powered:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)


@pytest.fixture
def device(monkeypatch):
    with TcpDevice() as dev:
        _set_conn(monkeypatch, "health_dev", host="127.0.0.1", port=dev.port)
        yield dev


@pytest.fixture
def relay_sim(monkeypatch):
    with RelaySim(login=RELAY_LOGIN, password=RELAY_PASSWORD) as sim:
        _set_conn(
            monkeypatch,
            "relay_test",
            host="127.0.0.1",
            port=sim.port,
            login=RELAY_LOGIN,
            password=RELAY_PASSWORD,
        )
        yield sim


def _row(conn):
    return conn.execute(
        "SELECT status, consecutive_failures, resets, last_ok_at, last_reset_at, message"
        " FROM stationflow.device_health WHERE station = 'FR-Lam' AND device = 'cr3000_meteo'"
    ).fetchone()


def _audit(conn):
    return conn.execute(
        "SELECT step, level, message, details::text FROM stationflow.audit_log ORDER BY id"
    ).fetchall()


# --------------------------------------------------------------------- checks


def test_reachable_says_why_not(device):
    assert reachable("127.0.0.1", device.port, 1) == (
        True,
        f"127.0.0.1:{device.port} accepts connections",
    )
    device.power_off()
    ok, why = reachable("127.0.0.1", device.port, 1)
    assert not ok and why.endswith("connection refused")
    device.power_on()  # the same port again
    assert reachable("127.0.0.1", device.port, 1)[0]


def test_an_up_device_is_up_and_not_reset(conn, device, relay_sim):
    station, logger = _station(_relay())
    sleep = FakeSleep()
    result = check_device(conn, station, logger, now=T0, sleep=sleep)
    assert result["status"] == "up" and result["reachable"] and not result["reset"]
    assert _row(conn)[:3] == ("up", 0, 0)
    check_device(conn, station, logger, now=T0 + RUN, sleep=sleep)
    assert relay_sim.cycles[1] == 0 and sleep.waits == []
    assert [(s, lv) for s, lv, *_ in _audit(conn)] == [("health.check", "INFO")]  # changes only


def test_failures_below_the_threshold_only_count(conn, device, relay_sim):
    station, logger = _station(_relay(after_failures=3))
    relay_sim.register(1, device.power_cycle)
    device.power_off()
    for i in range(2):
        result = check_device(conn, station, logger, now=T0 + i * RUN, sleep=FakeSleep())
    assert result["status"] == "down" and result["consecutive_failures"] == 2
    assert _row(conn)[:3] == ("down", 2, 0)
    assert relay_sim.requests == []
    levels = [(s, lv) for s, lv, *_ in _audit(conn)]
    assert levels == [("health.check", "WARNING")] * 2


def test_the_nth_failure_power_cycles_and_the_device_comes_back(conn, device, relay_sim):
    station, logger = _station(_relay(after_failures=3))
    relay_sim.register(1, lambda: device.power_cycle(0.1))
    check_device(conn, station, logger, now=T0, sleep=FakeSleep())  # up first
    device.power_off()
    sleep = FakeSleep(device)
    for i in (1, 2):
        check_device(conn, station, logger, now=T0 + i * RUN, sleep=sleep)
    assert relay_sim.cycles[1] == 0
    result = check_device(conn, station, logger, now=T0 + 3 * RUN, sleep=sleep)

    assert relay_sim.cycles[1] == 1 and sleep.waits == [WAIT]
    assert result["status"] == "up" and result["reset"] and result["consecutive_failures"] == 0
    status, failures, resets, last_ok, last_reset, _ = _row(conn)
    assert (status, failures, resets) == ("up", 0, 1)
    assert last_reset == T0 + 3 * RUN and last_ok >= last_reset
    expected = [
        ("health.check", "INFO", f"up (127.0.0.1:{device.port} accepts connections)"),
        ("health.check", "WARNING", "unreachable (1/3): "),
        ("health.check", "WARNING", "unreachable (2/3): "),
        ("health.check", "WARNING", "unreachable (3/3): "),
        ("health.reset", "WARNING", "down for 3 checks: resetting through relay 'relay_test'"),
        ("health.reset", "INFO", f"power-cycled (relay GET http://127.0.0.1:{relay_sim.port}/"),
        ("health.recheck", "INFO", "back after reset ("),
    ]
    rows = _audit(conn)
    assert [(s, lv) for s, lv, *_ in rows] == [(s, lv) for s, lv, _ in expected]
    for (_, _, message, _), (_, _, start) in zip(rows, expected, strict=True):
        assert message.startswith(f"cr3000_meteo: {start}"), message
    # Up again: a normal run leaves no audit row and no reset.
    check_device(conn, station, logger, now=T0 + 4 * RUN, sleep=sleep)
    assert len(_audit(conn)) == 7 and relay_sim.cycles[1] == 1


def test_a_device_dead_after_the_reset_alerts_and_is_not_reset_inside_the_backoff(
    conn, device, relay_sim
):
    station, logger = _station(_relay(after_failures=2, method="POST"))
    relay_sim.register(1, lambda: None)  # the power cut does not help: it stays down
    device.power_off()
    check_device(conn, station, logger, now=T0, sleep=FakeSleep())
    with pytest.raises(DeviceDown, match="still down 1 s after the reset") as err:
        check_device(conn, station, logger, now=T0 + RUN, sleep=FakeSleep())
    assert relay_sim.cycles[1] == 1 and relay_sim.requests[0][0] == "POST"
    assert err.value.health["status"] == "dead"
    assert _row(conn)[:3] == ("dead", 3, 1)  # the re-check counts as a failed check
    step, level, message, _ = _audit(conn)[-1]
    assert (step, level) == ("health.recheck", "ERROR") and "next reset not before" in message

    # Inside the backoff (30 min after the reset): no reset, no second alert.
    for i in (2, 3, 4):
        result = check_device(conn, station, logger, now=T0 + i * RUN - timedelta(seconds=1))
        assert result["status"] == "dead" and not result["reset"]
    assert relay_sim.cycles[1] == 1
    assert [lv for _, lv, *_ in _audit(conn)[-3:]] == ["WARNING"] * 3

    # Once it has passed, the relay tries again, and the alert comes again.
    with pytest.raises(DeviceDown) as err:
        check_device(conn, station, logger, now=T0 + 4 * RUN, sleep=FakeSleep())
    assert relay_sim.cycles[1] == 2
    assert err.value.health["next_reset_at"] == (T0 + 4 * RUN + timedelta(hours=1)).isoformat()


def test_a_crash_while_waiting_for_the_boot_keeps_the_reset_recorded(conn, device, relay_sim):
    station, logger = _station(_relay(after_failures=1))
    relay_sim.register(1, lambda: None)
    device.power_off()

    def crash(seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        check_device(conn, station, logger, now=T0, sleep=crash)
    status, failures, resets, _, last_reset, _ = _row(conn)
    assert (status, failures, resets, last_reset) == ("resetting", 1, 1, T0)
    # The next run, inside the backoff, declares it dead (once).
    with pytest.raises(DeviceDown, match="next reset not before"):
        check_device(conn, station, logger, now=T0 + RUN)
    assert relay_sim.cycles[1] == 1


def test_a_device_without_relay_alerts_once_then_warns(conn, device):
    station, logger = _station(None)
    device.power_off()
    for i in (0, 1):
        check_device(conn, station, logger, now=T0 + i * RUN)
    with pytest.raises(DeviceDown, match="no relay to reset it"):
        check_device(conn, station, logger, now=T0 + 2 * RUN)
    assert _row(conn)[:2] == ("dead", 3)
    for i in (3, 4):
        assert check_device(conn, station, logger, now=T0 + i * RUN)["status"] == "dead"
    assert [lv for _, lv, *_ in _audit(conn)] == [
        "WARNING",
        "WARNING",
        "ERROR",
        "WARNING",
        "WARNING",
    ]
    device.power_on()
    result = check_device(conn, station, logger, now=T0 + 5 * RUN)
    assert result["status"] == "up" and result["consecutive_failures"] == 0
    assert _audit(conn)[-1][1:3] == ("INFO", "cr3000_meteo: back up after 5 failed checks")


def test_a_device_another_run_is_checking_is_skipped(conn, state_db, device, relay_sim):
    station, logger = _station(_relay(after_failures=1))
    relay_sim.register(1, lambda: None)
    device.power_off()
    key = "stationflow.device_health:FR-Lam/cr3000_meteo"
    with psycopg.connect(state_db, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        result = check_device(conn, station, logger, now=T0)
    assert result["skipped"] and relay_sim.requests == [] and _audit(conn) == []
    with pytest.raises(DeviceDown):  # the lock was released with the other session
        check_device(conn, station, logger, now=T0 + RUN, sleep=FakeSleep())


# ---------------------------------------------------------------- relay errors


def test_wrong_relay_credentials_fail_audited_without_the_password(
    conn, device, relay_sim, monkeypatch, caplog
):
    wrong = "Wrong-Password-5150"
    _set_conn(
        monkeypatch,
        "relay_test",
        host="127.0.0.1",
        port=relay_sim.port,
        login="admin",
        password=wrong,
    )
    relay_sim.register(1, device.power_cycle)
    station, logger = _station(_relay(after_failures=1))
    device.power_off()
    with pytest.raises(RelayError) as err:
        check_device(conn, station, logger, now=T0, sleep=FakeSleep(device))
    assert err.value.status == 401 and "HTTP 401" in str(err.value)
    assert relay_sim.cycles[1] == 0 and relay_sim.requests == [("GET", "/relay/1/cycle", 401)]
    status, _, resets, _, last_reset, message = _row(conn)
    assert (status, resets, last_reset) == ("dead", 0, T0)  # the attempt counts for the backoff
    step, level, text, _ = _audit(conn)[-1]
    assert (step, level) == ("health.reset", "ERROR") and "401" in text

    # The next run inside the backoff does not call the relay again, and does not alert.
    assert check_device(conn, station, logger, now=T0 + RUN)["status"] == "dead"
    assert len(relay_sim.requests) == 1

    everything = [str(err.value), message, caplog.text]
    everything += [f"{m} {d}" for _, _, m, d in _audit(conn)]
    for text in everything:
        assert wrong not in text and RELAY_PASSWORD not in text


def test_an_unreachable_relay_is_a_relay_error(conn, device, monkeypatch):
    _set_conn(
        monkeypatch,
        "relay_test",
        host="127.0.0.1",
        port=_free_port(),
        login="a",
        password="b-secret",
    )
    station, logger = _station(_relay(after_failures=1))
    device.power_off()
    with pytest.raises(RelayError, match="Connection refused") as err:
        check_device(conn, station, logger, now=T0, sleep=FakeSleep())
    assert err.value.status is None
    assert _row(conn)[0] == "dead"
    assert _audit(conn)[-1][:2] == ("health.reset", "ERROR")


def test_reset_device_talks_to_the_relay(relay_sim):
    relay_sim.register(3, lambda: None)
    answer = reset_device(_relay(channel=3), "FR-Lam", "cr3000_meteo")
    assert (
        answer == f"relay GET http://127.0.0.1:{relay_sim.port}/relay/3/cycle answered HTTP 200 OK"
    )
    assert relay_sim.cycles == {3: 1}
    with pytest.raises(RelayError, match="HTTP 404") as err:
        reset_device(_relay(channel=4), "FR-Lam", "cr3000_meteo")  # no such channel
    assert err.value.status == 404


# ----------------------------------------------------------------- simulators


def test_relay_sim_answers_like_a_relay():
    calls = []
    with RelaySim({5: lambda: calls.append(5)}, login="u", password="p") as sim:
        base = f"http://127.0.0.1:{sim.port}"
        ok = requests.post(f"{base}/relay/5/cycle", auth=("u", "p"), timeout=5)
        assert ok.status_code == 200 and ok.json() == {"channel": 5, "state": "cycled"}
        assert requests.get(f"{base}/relay/5/cycle", timeout=5).status_code == 401
        assert requests.get(f"{base}/relay/5/cycle", auth=("u", "x"), timeout=5).status_code == 401
        assert requests.get(f"{base}/relay/6/cycle", auth=("u", "p"), timeout=5).status_code == 404
        assert requests.get(f"{base}/other", auth=("u", "p"), timeout=5).status_code == 404
        assert sim.cycles == {5: 1} and calls == [5]


def test_tcp_device_power_cycle_comes_back_on_the_same_port():
    with TcpDevice() as dev:
        port = dev.port
        dev.power_cycle(0.1)
        assert not reachable("127.0.0.1", port, 1)[0]
        deadline = time.monotonic() + 2
        while not dev.powered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dev.port == port and reachable("127.0.0.1", port, 1)[0]
    assert not reachable("127.0.0.1", port, 1)[0]
