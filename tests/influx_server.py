"""The real influxd for tests: skipped where it is not installed, a failure under CI
(which installs it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stationflow.sim import influxd
from stationflow.sim.influxd import MISSING

ADMIN = ("admin", "s3cret-Adm1n")


def influxd_binary() -> str:
    path = shutil.which("influxd")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return path


class InfluxServer(influxd.InfluxServer):
    def __init__(self, root: Path, *, auth: bool = False) -> None:
        super().__init__(root, credentials=ADMIN if auth else None)

    def start(self) -> InfluxServer:
        influxd_binary()
        super().start()
        return self
