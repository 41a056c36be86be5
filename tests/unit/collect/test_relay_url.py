from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from stationflow.collect.health import (
    RESET_BACKOFF_MAX,
    RESET_BACKOFF_MIN,
    DeviceDown,
    DeviceHealth,
    RelayError,
    next_reset_at,
    relay_url,
    reset_backoff,
)
from stationflow.config import Relay
from stationflow.errors import PermanentError

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
PW = "pw-x"


def _conn(host="10.8.0.5", port=None, schema=None, extra=None, login="admin", pw=PW):
    extra = extra or {}
    return SimpleNamespace(
        host=host, port=port, schema=schema, extra_dejson=extra, login=login, password=pw
    )


def _relay(url="/relay/{channel}/cycle", channel=2, wait=60.0):
    return Relay(connection_id="relay_fr_lam", url=url, channel=channel, wait_seconds=wait)


def test_url_from_template_and_connection():
    url = relay_url(_relay(), "FR-Lam", "cr3000_meteo", _conn(port=8081))
    assert url == "http://10.8.0.5:8081/relay/2/cycle"


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        (_conn(schema="https"), "https://10.8.0.5/relay/2/cycle"),  # no port: the default
        (_conn(extra={"scheme": "https"}, port=8443), "https://10.8.0.5:8443/relay/2/cycle"),
        (_conn(schema="HTTP", extra={"scheme": "https"}), "http://10.8.0.5/relay/2/cycle"),
        (_conn(host="https://relay.example"), "https://relay.example/relay/2/cycle"),
        (_conn(host="fe80::1", port=80), "http://[fe80::1]:80/relay/2/cycle"),
    ],
)
def test_scheme_host_and_port(conn, expected):
    assert relay_url(_relay(), "FR-Lam", "cr3000_meteo", conn) == expected


def test_no_credentials_in_the_url():
    conn = _conn(host="http://admin:pw-x@relay.example/", port=81)
    url = relay_url(_relay(), "FR-Lam", "cr3000_meteo", conn)
    assert url == "http://relay.example:81/relay/2/cycle"
    assert "admin" not in url and "pw-x" not in url


def test_station_and_device_placeholders_are_quoted():
    relay = _relay(url="/api/{station}/{device}/power?ch={channel}")
    url = relay_url(relay, "FR-Lam", "cr 1000/x", _conn())
    assert url == "http://10.8.0.5/api/FR-Lam/cr%201000%2Fx/power?ch=2"


@pytest.mark.parametrize("url", ["/relay/{chanel}/cycle", "/relay/{0}/cycle", "/relay/{channel"])
def test_a_wrong_template_is_a_relay_error(url):
    with pytest.raises(RelayError, match="template"):
        relay_url(_relay(url=url), "FR-Lam", "d", _conn())


def test_a_scheme_other_than_http_is_refused():
    with pytest.raises(RelayError, match="scheme 'ftp'"):
        relay_url(_relay(), "FR-Lam", "d", _conn(schema="ftp"))


def test_errors_are_permanent_so_airflow_does_not_swallow_the_alert():
    assert issubclass(RelayError, PermanentError)
    assert issubclass(DeviceDown, PermanentError)


# ---------------------------------------------------------------------- backoff


def _h(**kw):
    return DeviceHealth("FR-Lam", "cr3000_meteo", **kw)


def test_backoff_base_is_ten_boot_times_but_at_least_the_minimum():
    assert reset_backoff(_h(), _relay(wait=60)) == RESET_BACKOFF_MIN  # 10 min < 30 min
    assert reset_backoff(_h(), _relay(wait=600)) == timedelta(minutes=100)
    assert next_reset_at(_h(), _relay()) is None  # never reset: at once


def test_backoff_doubles_within_one_outage():
    relay = _relay(wait=60)
    ok = T0
    first = _h(last_ok_at=ok, last_reset_at=ok + timedelta(minutes=30), resets=1)
    assert next_reset_at(first, relay) == ok + timedelta(minutes=60)
    second = _h(last_ok_at=ok, last_reset_at=ok + timedelta(minutes=60), resets=2)
    assert next_reset_at(second, relay) == ok + timedelta(minutes=120)
    late = _h(last_ok_at=ok, last_reset_at=ok + timedelta(days=3), resets=9)
    assert reset_backoff(late, relay) == RESET_BACKOFF_MAX  # at most once a day


def test_a_reset_of_an_earlier_outage_only_keeps_the_base_gap():
    h = _h(last_reset_at=T0, last_ok_at=T0 + timedelta(minutes=5), resets=4)
    assert reset_backoff(h, _relay(wait=60)) == RESET_BACKOFF_MIN


def test_never_seen_up_doubles_with_each_reset():
    relay = _relay(wait=60)
    gaps = [reset_backoff(_h(last_reset_at=T0, resets=n), relay) for n in (0, 1, 2, 3, 99)]
    assert gaps == [
        timedelta(minutes=30),
        timedelta(minutes=30),
        timedelta(minutes=60),
        timedelta(minutes=120),
        RESET_BACKOFF_MAX,
    ]
