"""Column sets extracted at harvest refine exactly like the JSON they came from: the same
rows, the same bad-sample counts and reasons, the same rejections; a set that cannot be
read rejects its hour by name and spares the rest of the batch."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stationflow.refine.records import stored_columns
from stationflow.refine.records.definitions import defs_for
from stationflow.refine.records.refiner import Calibration, RefineResult, refine
from stationflow.refine.records.samples import RawRecord, RecordError
from tests.unit.refine.records.test_refiner import (
    INDICATORS,
    ase_record,
    batches,
    mutated_hour12,
    no2_model,
    station26,
    whale23,
)


def with_columns(records: list[RawRecord]) -> list[RawRecord]:
    """As the refiner gets hours harvested after sample columns existed: no JSON at all
    (hours that are no raw hour keep their JSON; the harvester stores no set for them)."""
    out = []
    for r in records:
        try:
            _, body = stored_columns.extract(r)
        except RecordError:
            out.append(r)
            continue
        out.append(replace(r, data=None, columns=body))
    return out


def same(a: RefineResult, b: RefineResult) -> None:
    assert sorted(a.rows) == sorted(b.rows)
    assert a.bad_samples == b.bad_samples
    assert sorted(a.out_of_range) == sorted(b.out_of_range)
    assert a.skipped == b.skipped and a.samples == b.samples
    assert sorted((r.unique_id, why) for r, why in a.rejected) == sorted(
        (r.unique_id, why) for r, why in b.rejected
    )


ASE_CAL = Calibration(ase={71: {"co": {"a0": -200.0, "a1": 0.1, "a2": 0.0, "a3": 0.0}}})


@pytest.mark.parametrize(
    ("records", "calibration"),
    [
        (station26, Calibration()),
        (whale23, Calibration(models={"no2": no2_model()})),
        (lambda: [mutated_hour12()], Calibration()),  # missing, strings, nulls, out of range
        (lambda: [ase_record()], ASE_CAL),
    ],
    ids=["station26", "device23-with-model", "bad-samples", "airsenseur"],
)
def test_stored_columns_refine_like_the_json(records, calibration) -> None:
    recs = records()
    stored = with_columns(recs)
    assert all(r.columns is not None and r.data is None for r in stored)
    from_json = refine(recs, calibration=calibration)
    assert from_json.rows
    same(refine(stored, calibration=calibration), from_json)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=batches(), indicators=INDICATORS, mixed=st.booleans())
def test_generated_batches_refine_alike_stored_or_mixed(records, indicators, mixed) -> None:
    stored = with_columns(records)
    if mixed:  # half the hours harvested before sample columns existed
        stored = [s if i % 2 else r for i, (r, s) in enumerate(zip(records, stored, strict=True))]
    same(refine(stored, indicators), refine(records, indicators))


def test_bad_samples_keep_their_reasons_in_the_stored_set() -> None:
    res = refine(with_columns([mutated_hour12()]))
    uid = "26-20160628-12"
    assert res.bad_samples[(uid, "s_barometer", "missing")] == 1
    assert res.bad_samples[(uid, "s_barometer", "not a number")] == 1
    assert res.bad_samples[(uid, "s_barometer", "null")] == 1
    assert res.bad_samples[(uid, "s_humidity", "out of range")] == 1
    assert res.bad_samples[(uid, "s_co2", "not a number")] == 2


def test_an_unreadable_set_rejects_its_hour_by_name_and_the_rest_refine() -> None:
    good, other = with_columns(station26())
    truncated = replace(good, columns=good.columns[:-9])
    foreign = replace(other, columns=b"PAR1" + other.columns[4:])
    res = refine([truncated, foreign, *with_columns(whale23())])
    why = dict((r.unique_id, w) for r, w in res.rejected)
    assert set(why) == {good.unique_id, other.unique_id}
    assert why[good.unique_id].startswith(f"raw record {good.unique_id}: stored columns")
    assert "not a stationflow column set" in why[other.unique_id]
    assert {r.hour for r in res.rows} == {23}  # device 23's hour still refined


def test_a_set_lacking_a_field_the_refiner_needs_is_rejected_not_guessed() -> None:
    (rec,) = with_columns(whale23())
    defs = defs_for("jose")
    fields = [f for f in sorted(defs.raw) if f != "s_barometer"]
    cols, _ = stored_columns.decode([rec], sorted(defs.raw))
    body = stored_columns.encode(fields, cols)
    res = refine([replace(rec, columns=body)], ["pressure"])
    assert not res.rows and "s_barometer" in res.rejected[0][1]


def test_layout_holds_every_raw_field_as_float64_and_codes_only_where_needed() -> None:
    (rec,) = station26()[:1]
    key, body = stored_columns.extract(rec)
    defs = defs_for("jose")
    assert key == stored_columns.fields_key(defs) and key in stored_columns.current_keys()
    assert stored_columns.fields_key(defs_for("ase")) != key
    (size,) = struct.unpack_from("<I", body, 4)
    (n,) = struct.unpack_from("<I", body, 8 + size)
    assert n == len(rec.data["timeseries"])
    cols, bad = stored_columns.decode([replace(rec, columns=body)], ["s_barometer"])
    assert not bad
    expected = [s.get("s_barometer", np.nan) for s in rec.data["timeseries"]]
    np.testing.assert_array_equal(cols.values["s_barometer"], np.array(expected, float))


def test_extract_names_the_hour_that_is_no_raw_hour() -> None:
    rec = RawRecord(26, 20160628, 5, {"timeseries": [{"s_barometer": 1}, 7]})
    with pytest.raises(RecordError, match=r"26-20160628-5: timeseries\[1\]"):
        stored_columns.extract(rec)


def test_a_nan_float_is_out_of_range_whatever_else_its_column_holds() -> None:
    """Found by the generated batches: a NaN counted as null when a None shared its column
    in the batch, so one hour's reasons depended on its neighbours."""
    nan_only = RawRecord(26, 20160628, 1, {"timeseries": [{"s_co2": float("nan")}]})
    mixed = RawRecord(
        26, 20160628, 2, {"timeseries": [{"s_co2": float("nan")}, {"s_co2": None}, {}]}
    )
    res = refine([nan_only, mixed], ["co2"])
    co2 = {k: n for k, n in res.bad_samples.items() if k[1] == "s_co2"}
    assert co2 == {
        ("26-20160628-1", "s_co2", "out of range"): 1,
        ("26-20160628-2", "s_co2", "out of range"): 1,
        ("26-20160628-2", "s_co2", "null"): 1,
        ("26-20160628-2", "s_co2", "missing"): 1,
    }
