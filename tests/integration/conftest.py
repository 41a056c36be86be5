"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.influx_server import InfluxServer


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One real influxd (no auth) for the session; tests keep apart by database name."""
    with InfluxServer(tmp_path_factory.mktemp("influxd")) as server:
        yield server
