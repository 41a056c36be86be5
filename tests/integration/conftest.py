"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stationflow.sim.whale import WhaleSim
from tests.clock import Clock
from tests.influx_server import InfluxServer


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One real influxd (no auth) for the session; tests keep apart by database name."""
    with InfluxServer(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Clock:
    """The test module's "now", ``T0``, settable."""
    return Clock(request.module.T0)


@pytest.fixture
def sim(request: pytest.FixtureRequest, clock: Clock) -> Iterator[WhaleSim]:
    """The Whale simulator for the module's ``DEVICES`` and ``TOKEN``, 72 h of history."""
    m = request.module
    with WhaleSim(m.DEVICES, token=m.TOKEN, clock=clock, history_hours=72) as s:
        yield s
