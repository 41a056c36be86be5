"""The SmartFlux simulator: valid .ghg half-hours, written atomically, served over FTP."""

# ruff: noqa: S321 - an FTP server is tested by speaking FTP to it

from __future__ import annotations

import ftplib
import io
import os
import zipfile
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from stationflow.formats.ghg import read_ghg
from stationflow.formats.timestamps import to_ns
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.smartflux import PERIOD, SmartFluxSim, build_ghg, ghg_name

START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("hz", "offset"), [(2, 1.0), (10, 0.0), (1, 5.75)])
def test_a_generated_file_is_a_valid_ghg_of_its_period(hz, offset):
    name, blob = build_ghg(START, logger_name="AIU-1359", hz=hz, utc_offset_hours=offset)
    local = START + timedelta(hours=offset)
    assert name == f"{local:%Y-%m-%dT%H%M%S}_AIU-1359.ghg"
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        stem = name.removesuffix(".ghg")
        assert sorted(zf.namelist()) == [f"{stem}.data", f"{stem}.metadata"]
        data = zf.read(f"{stem}.data").decode()
    assert f"Timestamp:\t{local:%H:%M:%S}" in data and not data.endswith("\n")

    t = read_ghg(blob, utc_offset_hours=offset, source=name)
    assert not t.issues
    assert len(t) == 1800 * hz
    assert t.header.declared_interval_ns == 10**9 // hz
    assert t.header.environment[-1] == "AIU-1359"
    first = to_ns(f"{local:%Y-%m-%d %H:%M:%S}")
    step = 10**9 // hz
    assert t.ts[0] == first and t.ts[-1] == first + (1800 * hz - 1) * step
    assert np.all(np.diff(t.ts) == step)
    # Date/Time columns follow the SmartFlux clock, to the millisecond
    last = local + PERIOD - timedelta(milliseconds=1000 // hz)
    assert f'"{last:%Y-%m-%d}","{last:%H:%M:%S}:{last.microsecond // 1000:03d}"'.encode() in (
        t.row(len(t) - 1)
    )


def test_wrong_periods_and_rates_are_refused():
    with pytest.raises(ValueError, match="half-hour"):
        build_ghg(START + timedelta(minutes=10))
    with pytest.raises(ValueError, match="aware"):
        build_ghg(START.replace(tzinfo=None))
    with pytest.raises(ValueError, match="hz"):
        build_ghg(START, hz=3)


def test_publish_until_writes_each_missing_half_hour_once(tmp_path):
    sim = SmartFluxSim(tmp_path, "sf", "pw", hz=1, utc_offset_hours=1)
    now = datetime(2026, 11, 20, 1, 10, tzinfo=UTC)  # 02:10 at the station
    written = sim.publish_until(now)
    assert [p.name for p in written] == [
        f"2026-11-20T{hhmm}00_smartflux.ghg" for hhmm in ("0000", "0030", "0100", "0130")
    ]
    assert sim.publish_until(now) == []
    assert sorted(os.listdir(tmp_path)) == [p.name for p in written]  # no temporary left
    last = written[-1]
    assert last.stat().st_mtime == now.replace(minute=0).timestamp()  # its period's end
    assert ghg_name(now.replace(minute=0) - PERIOD, "smartflux", 1) == last.name


def test_the_ftp_server_serves_the_folder_read_only(tmp_path):
    with SmartFluxSim(tmp_path / "sf", "sf", "sf-pw-123", hz=1, remote_dir="/data") as sim:
        path = sim.publish(START)
        assert sim.port > 0
        with ftplib.FTP(timeout=10) as ftp:
            ftp.connect("127.0.0.1", sim.port)
            ftp.login("sf", "sf-pw-123")
            (entry,) = [e for e in ftp.mlsd("/data") if e[1]["type"] == "file"]
            assert entry[0] == path.name and int(entry[1]["size"]) == path.stat().st_size
            got = io.BytesIO()
            ftp.retrbinary(f"RETR /data/{path.name}", got.write)
            assert got.getvalue() == path.read_bytes()
            with pytest.raises(ftplib.error_perm, match=r"^550"):
                ftp.delete(f"/data/{path.name}")
        assert sim.commands_of("RETR") == [f"/data/{path.name}"]
        assert sim.bytes_sent == path.stat().st_size
        with ftplib.FTP(timeout=10) as ftp:
            ftp.connect("127.0.0.1", sim.port)
            with pytest.raises(ftplib.error_perm, match=r"^530"):
                ftp.login("sf", "wrong")


def test_the_sample_is_package_data_not_a_test_fixture():
    import stationflow.sim.smartflux as mod

    data = PROJECT_ROOT / "include" / "stationflow" / "sim" / "data"
    assert (data / mod.SAMPLE).is_file()
    assert sum(p.stat().st_size for p in data.iterdir()) < 2 * 1024 * 1024
