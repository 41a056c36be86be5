"""assemble() with the binary and LI-COR readers: one pipeline for every format."""

from __future__ import annotations

import io
import shutil
import zipfile
from datetime import date

import numpy as np

from stationflow.formats.timestamps import to_ns
from stationflow.refine.assemble import Request, assemble
from stationflow.settings import PROJECT_ROOT
from tests.unit.formats.tob1_writer import Column, time_columns, tob1

GHG = PROJECT_ROOT / "tests" / "fixtures" / "loggers" / "ghg" / "2016-12-11T200000_AIU-1359.ghg"


def test_smartflux_ghg_becomes_an_end_stamped_ec_half_hour(tmp_path):
    frag = tmp_path / GHG.name
    shutil.copy(GHG, frag)
    req = Request("FR-Lam", "EC", 3, 1, date(2016, 12, 11), tmp_path / "out", utc_offset_hours=1)
    res = assemble(req, [frag])
    (out,) = res.outputs  # the file starts at 20:00 local: the half-hour ending 20:30
    assert out.name == "FR-Lam_EC_201612112030_L03_F01.zip"
    r = out.report
    assert r["interval_s"] == 0.05 and r["interval_declared_s"] == 0.05
    assert r["rows_expected"] == 36_000 and r["rows_present"] == 2_400
    assert r["rows_filled"] == 36_000 - 2_400
    with zipfile.ZipFile(io.BytesIO(out.path.read_bytes())) as z:
        lines = z.read("FR-Lam_EC_201612112030_L03_F01.dat").split(b"\r\n")
    assert lines[0].startswith(b'"TOA5"') and lines[1].startswith(b'"TIMESTAMP","Seconds"')
    # samples are start-stamped: the first is 20:00:00.000 (UTC 19:00), the last slot 20:29:59.95
    assert lines[4].startswith(b'"2016-12-11 20:00:00",1481482800,0,')
    assert lines[-2].startswith(b'"2016-12-11 20:29:59.95",-9999,-9999')


def test_tob1_fragments_merge_like_toa5(tmp_path):
    times, ns = time_columns("2026-11-20 00:01:00", 1440, 60 * 10**9)
    values = np.linspace(-5, 5, 1440, dtype=np.float32)
    cols = [
        *times,
        Column("RECORD", "ULONG", np.arange(1440, dtype=np.uint32), "RN"),
        Column("Ts", "IEEE4", values, "degC"),
        Column("Rn", "FP2", values * 100, "W/m2"),
    ]
    whole = tob1(cols)
    header_len = sum(len(x) + 2 for x in whole.split(b"\r\n")[:5])
    rec = (len(whole) - header_len) // 1440
    body = whole[header_len:]
    (tmp_path / "a.dat").write_bytes(whole[:header_len] + body[: 700 * rec])
    (tmp_path / "b.dat").write_bytes(whole[:header_len] + body[690 * rec : 1400 * rec])
    req = Request("FR-Lam", "ST", 2, 1, date(2026, 11, 20), tmp_path / "out")
    (out,) = assemble(req, [tmp_path / "b.dat", tmp_path / "a.dat"]).outputs
    r = out.report
    assert (r["rows_expected"], r["rows_present"], r["rows_filled"]) == (1440, 1400, 40)
    assert r["duplicates_dropped"] == 10 and r["interval_s"] == 60
    lines = out.path.read_bytes().split(b"\r\n")
    assert lines[1] == b'"TIMESTAMP","RECORD","Ts","Rn"'
    assert lines[4] == b'"2026-11-20 00:01:00",0,-5,-500'
    assert lines[-2] == b'"2026-11-21 00:00:00",-9999,-9999,-9999'
    assert int(ns[0]) == to_ns("2026-11-20 00:01:00")
