"""assemble(): fragments in, ETC files out, everything that happened reported."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stationflow.formats.timestamps import format_toa5, to_ns
from stationflow.refine.assemble import Request, assemble
from tests.toa5_builder import HEADER, series, stamp_of, toa5

DAY = date(2026, 11, 20)
FULL_DAY = series("2026-11-20 00:30:00", 1800, 48)  # (00:00, 24:00]: 00:30 .. next 00:00


def with_last(row: bytes, value: bytes) -> bytes:
    """The row with its last value replaced."""
    return row.rsplit(b",", 1)[0] + b"," + value


def write(tmp: Path, name: str, rows, *, age: int = 0, **kw) -> Path:
    p = tmp / name
    p.write_bytes(toa5(rows, **kw))
    os.utime(p, ns=(10**18 + age, 10**18 + age))  # mtime orders fragments: newest wins
    return p


def request(tmp: Path, **kw) -> Request:
    return Request(
        **{
            "station": "FR-Lam",
            "file_type": "BM",
            "logger": 1,
            "file": 1,
            "day": DAY,
            "output_dir": tmp / "out",
            **kw,
        }
    )


def body(result, k: int = 0) -> list[bytes]:
    """Data rows of output k (header lines dropped)."""
    data = result.outputs[k].path.read_bytes()
    assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    return data.split(b"\r\n")[4:-1]


def test_a_day_is_first_record_after_midnight_through_24h(tmp_path):
    day_before = series("2026-11-19 23:30:00", 1800, 2)  # 2026-11-20 00:00 is its 24:00
    res = assemble(request(tmp_path), [write(tmp_path, "a.dat", day_before + FULL_DAY)])
    (out,) = res.outputs
    assert out.name == "FR-Lam_BM_20261120_L01_F01.dat"
    rows = body(res)
    assert rows == FULL_DAY and stamp_of(rows[-1]) == b'"2026-11-21 00:00:00"'
    r = out.report
    assert (r["rows_expected"], r["rows_present"], r["rows_filled"]) == (48, 48, 0)
    assert r["rows_outside_period"] == 2  # 2026-11-20 00:00 (the day before) and 23:30
    assert out.path.read_bytes().split(b"\r\n")[:4] == HEADER  # logger header kept


def test_missing_lines_get_the_missing_code_in_every_column(tmp_path):
    rows = FULL_DAY[:10] + FULL_DAY[13:]
    res = assemble(request(tmp_path, missing=-8888), [write(tmp_path, "a.dat", rows)])
    out = body(res)
    assert out[:10] == FULL_DAY[:10] and out[13:] == FULL_DAY[13:]
    assert out[10:13] == [stamp_of(FULL_DAY[i]) + b",-8888,-8888,-8888,-8888" for i in (10, 11, 12)]
    assert res.outputs[0].report["rows_filled"] == 3


def test_fragments_in_any_order_with_overlaps_and_duplicates(tmp_path):
    a = write(tmp_path, "a.dat", FULL_DAY[20:], age=1)
    b = write(tmp_path, "b.dat", FULL_DAY[:25], age=2)  # overlaps a by 5 rows, same bytes
    c = write(tmp_path, "c.dat", FULL_DAY[5:15][::-1], age=3)  # out of order, all duplicates
    res = assemble(request(tmp_path), [c, a, b])
    assert body(res) == FULL_DAY
    r = res.outputs[0].report
    assert (r["duplicates_dropped"], r["conflicts"], r["rows_filled"]) == (15, 0, 0)
    assert [f["rows_used"] for f in r["fragments"]] == [28, 20, 0] or sum(
        f["rows_used"] for f in r["fragments"]
    ) == 48


def test_conflicting_rows_keep_the_newest_fragment(tmp_path):
    changed = [with_last(r, b"1013") if i in (3, 4) else r for i, r in enumerate(FULL_DAY)]
    old = write(tmp_path, "old.dat", FULL_DAY, age=1)
    new = write(tmp_path, "new.dat", changed[:6], age=2)
    res = assemble(request(tmp_path), [new, old])
    assert body(res) == changed[:6] + FULL_DAY[6:]
    r = res.outputs[0].report
    assert r["conflicts"] == 2 and r["duplicates_dropped"] == 4
    assert any(w.startswith(f"{old}:8: conflicts with {new}:8") for w in r["warnings"])
    # the other way round, the old fragment is newer and wins
    os.utime(old, ns=(10**18 + 9, 10**18 + 9))
    assert body(assemble(request(tmp_path), [new, old])) == FULL_DAY


def test_nan_and_lf_are_written_as_the_etc_wants(tmp_path):
    rows = [with_last(r, b'"NAN"') for r in FULL_DAY]
    rows[7] = with_last(rows[7], b'"INF"')
    res = assemble(request(tmp_path), [write(tmp_path, "a.dat", rows, eol=b"\n")])
    out = body(res)
    assert b"NAN" not in b"".join(out) and b"INF" not in b"".join(out)
    assert out == [with_last(r, b"-9999") for r in FULL_DAY]


def test_a_bad_line_between_good_ones_is_never_copied(tmp_path):
    rows = [*FULL_DAY[:5], b"\x00\x00garbage\x00", *FULL_DAY[5:]]
    res = assemble(request(tmp_path), [write(tmp_path, "a.dat", rows)])
    assert body(res) == FULL_DAY
    assert res.has_errors and f"{tmp_path / 'a.dat'}:10: unparsable timestamp" in str(res.issues[0])
    assert res.outputs[0].report["errors"]


def test_off_grid_rows_are_reported_not_moved(tmp_path):
    rows = list(FULL_DAY)
    rows[10] = rows[10].replace(b':00:00"', b':00:17"').replace(b':30:00"', b':30:17"')
    res = assemble(request(tmp_path), [write(tmp_path, "a.dat", rows)])
    out = body(res)
    assert out[10] == stamp_of(FULL_DAY[10]) + b",-9999,-9999,-9999,-9999"
    r = res.outputs[0].report
    assert r["rows_off_grid"] == 1 and r["rows_filled"] == 1
    assert any(":15: 1 row(s) off the 1800 s grid" in w for w in r["warnings"])


def test_another_column_set_is_not_merged(tmp_path):
    new_header = [
        HEADER[0],
        b'"TIMESTAMP","RECORD","Ta","RH","P","Rain"',
        b'"TS","RN","degC","%","hPa","mm"',
        b'"","","Avg","Avg","Smp","Tot"',
    ]
    later = [r + b",0.2" for r in FULL_DAY[30:]]
    a = write(tmp_path, "a.dat", FULL_DAY[:30])
    b = write(tmp_path, "b.dat", later, header=new_header)
    res = assemble(request(tmp_path), [a, b])
    assert [o.name for o in res.outputs] == ["FR-Lam_BM_20261120_L01_F01.dat"]
    assert any("column set differs" in i.message and i.level == "error" for i in res.issues)
    assert body(res)[30] == stamp_of(FULL_DAY[30]) + b",-9999,-9999,-9999,-9999"

    res = assemble(request(tmp_path, new_columns="next-file"), [a, b])
    assert [o.name for o in res.outputs] == [
        "FR-Lam_BM_20261120_L01_F01.dat",
        "FR-Lam_BM_20261120_L01_F02.dat",
    ]
    assert body(res, 1)[30:] == later and res.outputs[1].report["rows_filled"] == 30
    assert res.outputs[1].path.read_bytes().split(b"\r\n")[1] == new_header[1]


def test_unreadable_fragments_are_quarantined_not_lost(tmp_path):
    good = write(tmp_path, "good.dat", FULL_DAY)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x89PNG not a logger file")
    res = assemble(request(tmp_path), [empty, good, junk])
    assert body(res) == FULL_DAY  # the run goes on with what is readable
    qdir = tmp_path / "out" / "quarantine"
    assert not empty.exists() and not junk.exists()
    assert (qdir / "junk.dat").read_bytes() == b"\x89PNG not a logger file"
    assert (qdir / "empty.dat").exists()
    assert "unknown format" in (qdir / "junk.dat.reason.txt").read_text()
    assert {f.path.name for f in res.quarantined} == {"empty.dat", "junk.dat"}
    assert res.has_errors


def test_etc_layout_with_a_columns_map(tmp_path):
    rows = [with_last(r, b'"NAN"') if i == 2 else r for i, r in enumerate(FULL_DAY[:40])]
    req = request(tmp_path, layout="etc", columns_map={"Ta": "TA_1_1_1", "P": "PA_1_1_1"})
    res = assemble(req, [write(tmp_path, "a.dat", rows)])
    (out,) = res.outputs
    assert out.name == "FR-Lam_BM_20261120_L01_F01.csv"
    lines = out.path.read_bytes().split(b"\r\n")
    assert lines[0] == b"TIMESTAMP,TA_1_1_1,PA_1_1_1"
    assert lines[1] == b"202611200030,10.00,1000"
    assert lines[3] == b"202611200130,10.20,-9999"  # NAN -> missing code
    assert lines[48] == b"202611210000,-9999,-9999"  # filled, timestamp as everywhere else
    with pytest.raises(ValueError, match="does not have"):
        assemble(
            request(tmp_path, layout="etc", columns_map={"Nope": "X"}),
            [write(tmp_path, "b.dat", rows)],
        )


def test_ec_half_hours_are_zipped_end_stamped_and_reproducible(tmp_path):
    rows = series("2026-11-20 00:00:00.05", 0.05, 36_000 + 20)  # 20 Hz: 30 min + 1 s
    del rows[1000:1010]
    frag = write(tmp_path, "ec.dat", rows)
    res = assemble(request(tmp_path, file_type="EC"), [frag])
    assert [o.name for o in res.outputs] == [
        "FR-Lam_EC_202611200030_L01_F01.zip",
        "FR-Lam_EC_202611200100_L01_F01.zip",
    ]
    first = res.outputs[0]
    assert first.report["rows_expected"] == 36_000 and first.report["rows_filled"] == 10
    assert first.report["interval_s"] == 0.05
    with zipfile.ZipFile(io.BytesIO(first.path.read_bytes())) as z:
        assert z.namelist() == ["FR-Lam_EC_202611200030_L01_F01.dat"]
        inner = z.read(z.namelist()[0]).split(b"\r\n")
    assert inner[4] == rows[0] and stamp_of(inner[-2]) == b'"2026-11-20 00:30:00"'
    md5 = first.report["md5"]
    again = assemble(request(tmp_path, file_type="EC"), [frag])
    assert again.outputs[0].report["md5"] == md5  # same bytes, same upload


def test_rerun_is_identical_and_changed_bytes_keep_the_old_file(tmp_path):
    frag = write(tmp_path, "a.dat", FULL_DAY[:40])
    first = assemble(request(tmp_path), [frag]).outputs[0]
    again = assemble(request(tmp_path), [frag]).outputs[0]
    assert again.report["sha256"] == first.report["sha256"]
    assert not (tmp_path / "out" / "superseded").exists()
    late = write(tmp_path, "late.dat", FULL_DAY[40:], age=5)  # late data re-opens the day
    third = assemble(request(tmp_path), [frag, late]).outputs[0]
    assert third.report["sha256"] != first.report["sha256"] and third.report["rows_filled"] == 0
    (kept,) = (tmp_path / "out" / "superseded").iterdir()
    assert kept.name.startswith(first.name) and kept.stat().st_size == first.report["size"]


def test_twenty_hertz_and_thirty_minutes_extremes(tmp_path):
    hz = series("2026-11-20 23:59:00.05", 0.05, 1200)  # the day's last minute at 20 Hz
    r = assemble(request(tmp_path), [write(tmp_path, "hz.dat", hz)]).outputs[0].report
    assert r["interval_s"] == 0.05 and r["rows_expected"] == 1_728_000
    assert r["rows_present"] == 1200 and r["rows_filled"] == 1_728_000 - 1200


# ---------------------------------------------------------------- the property


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_fragments_cut_from_a_series_give_the_series_with_holes_filled(tmp_path, data):
    step = data.draw(st.sampled_from([1800, 600, 60, 30]), label="step")
    n = 86_400 // step
    full = series(
        format_toa5(np.array([to_ns("2026-11-20 00:00:00") + step * 10**9]), quoted=False)[
            0
        ].decode(),
        step,
        n,
    )
    removed = set()
    for _ in range(data.draw(st.integers(0, 4), label="holes")):
        a = data.draw(st.integers(0, n - 1))
        removed |= set(range(a, min(n, a + data.draw(st.integers(1, max(1, n // 10))))))
    kept = [i for i in range(n) if i not in removed]
    if len(kept) < 2:
        return
    cuts = sorted(data.draw(st.lists(st.integers(0, len(kept)), max_size=5)))
    pieces = [kept[a:b] for a, b in zip([0, *cuts], [*cuts, len(kept)], strict=True) if b > a]
    overlaps = [
        kept[a : a + w]
        for a, w in data.draw(
            st.lists(st.tuples(st.integers(0, len(kept) - 1), st.integers(1, 20)), max_size=3)
        )
    ]
    order = data.draw(st.permutations(list(range(len(pieces) + len(overlaps)))))
    run = Path(tempfile.mkdtemp(dir=tmp_path))
    paths = [
        write(run, f"f{k}.dat", [full[i] for i in (pieces + overlaps)[k]], age=k) for k in order
    ]

    res = assemble(request(run), paths)
    (out,) = res.outputs
    rows = body(res)
    assert len(rows) == n
    for i in range(n):
        if i in removed:
            assert rows[i] == stamp_of(full[i]) + b",-9999,-9999,-9999,-9999"
        else:
            assert rows[i] == full[i]
    assert out.report["rows_filled"] == len(removed)
    assert out.report["rows_present"] == n - len(removed)


def test_a_frozen_clock_is_conflicts_not_a_hang(tmp_path):
    frozen = [stamp_of(FULL_DAY[5]) + b",%d,1,2,3" % i for i in range(50_000)]
    res = assemble(request(tmp_path), [write(tmp_path, "a.dat", FULL_DAY[:5] + frozen)])
    r = res.outputs[0].report
    assert r["rows_present"] == 6 and r["conflicts"] == 49_999 and r["rows_filled"] == 42
    assert body(res)[5] == frozen[-1]  # the last written row of the newest fragment
