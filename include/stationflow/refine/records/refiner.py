"""Refine raw hour records into hourly indicator values, a whole batch at a time.

Per device type: validate the raw fields of every sample (input ranges), convert them to
indicators (calibration models included), aggregate per record over the valid samples
(energetic mean for dB), then check each hourly value against its indicator's range.
A record that is not a raw hour is rejected with a reason; bad samples are counted per
record, field and reason; neither stops the batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from stationflow.refine.records import aggregate, stored_columns
from stationflow.refine.records.converters import ASE_COEFFICIENTS, CONVERTERS
from stationflow.refine.records.definitions import DeviceDefs, defs_for
from stationflow.refine.records.samples import (
    SAMPLES,
    RawRecord,
    RecordError,
    SampleColumns,
    document,
    typed,
)


@dataclass(frozen=True)
class GasModel:
    """A trained calibration model for one gas: ``predictor.predict(X)`` with X's columns
    the raw fields ``inputs`` in that order."""

    model_id: int
    gas: str
    inputs: tuple[str, ...]
    predictor: Any


@dataclass(frozen=True)
class Calibration:
    """What the gas converters need: the newest valid ANN per gas (Josene) and the linear
    model coefficients per AirSensEUR box and gas (from stations.yaml)."""

    models: Mapping[str, GasModel] = field(default_factory=dict)
    ase: Mapping[int, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)


class RefinedRow(NamedTuple):
    """One hourly value (a tuple: a batch makes tens of thousands)."""

    device_id: int
    device_type: str
    name: str
    label: str
    unit: str
    day: int
    hour: int
    time: datetime  # the end of the hour
    value: float
    value_min: float
    value_max: float
    sample_count: int
    lon: float | None
    lat: float | None
    raw_gid: int | None = None
    model_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["time"] = self.time.isoformat()
        return d


@dataclass
class RefineResult:
    rows: list[RefinedRow] = field(default_factory=list)
    rejected: list[tuple[RawRecord, str]] = field(default_factory=list)  # record, why
    # (record unique_id, field, reason) -> samples
    bad_samples: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # hourly values outside their indicator's range: (record unique_id, indicator, value)
    out_of_range: list[tuple[str, str, float]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # indicator -> why (once a batch)
    samples: dict[str, int] = field(default_factory=dict)  # record unique_id -> samples read

    def merge(self, other: RefineResult) -> None:
        self.rows += other.rows
        self.rejected += other.rejected
        self.bad_samples.update(other.bad_samples)
        self.out_of_range += other.out_of_range
        self.skipped.update(other.skipped)
        self.samples.update(other.samples)

    def bad_sample_totals(self) -> dict[str, int]:
        """'field: reason' -> samples, over the batch."""
        out: Counter[str] = Counter()
        for (_, name, reason), n in self.bad_samples.items():
            out[f"{name}: {reason}"] += n
        return dict(out)


def wanted_for(defs: DeviceDefs, indicators: Sequence[str] | None) -> list[str]:
    """The network's indicators this device type defines (all its defaults if none)."""
    if indicators is None:
        return list(defs.default_indicators)
    return [i for i in indicators if i in defs.indicators]


def refine(
    records: Sequence[RawRecord],
    indicators: Sequence[str] | None = None,
    calibration: Calibration = Calibration(),
) -> RefineResult:
    """Refine a batch of raw records of any device types."""
    result = RefineResult()
    by_type: dict[str, list[RawRecord]] = {}
    for r in records:
        by_type.setdefault(r.device_type, []).append(r)
    for device_type, recs in by_type.items():
        try:
            defs = defs_for(device_type)
        except KeyError as e:
            result.rejected += [(r, str(e.args[0])) for r in recs]
            continue
        result.merge(refine_type(defs, recs, wanted_for(defs, indicators), calibration))
    return result


def refine_type(
    defs: DeviceDefs,
    records: Sequence[RawRecord],
    wanted: Sequence[str],
    calibration: Calibration,
) -> RefineResult:
    result = RefineResult()
    plan = defs.plan(list(wanted))
    inputs = _inputs(defs, plan, calibration, result.skipped)
    fields = sorted({i for name in plan if name in inputs for i in inputs[name] if i in defs.raw})
    kind = SAMPLES[defs.device_type]
    stored = [r for r in records if r.columns is not None]
    parts, good = [], []
    if stored:  # columns extracted at harvest: no JSON to read
        cols, unreadable = stored_columns.decode(stored, fields)
        result.rejected += unreadable
        failed = {id(r) for r, _ in unreadable}
        good += [r for r in stored if id(r) not in failed]
        parts.append(cols)
    parsed = []
    for r in records:
        if r.columns is not None:
            continue
        try:
            parsed.append(kind.parse(r, document(r), defs, fields))
            good.append(r)
        except RecordError as e:
            result.rejected.append((r, str(e)))
    if parsed:
        parts.append(typed(parsed, fields))
    if not good:
        return result
    cols = SampleColumns.concat(parts, fields).checked(defs)
    per_record = np.bincount(cols.record, minlength=len(good))
    result.samples = {r.unique_id: int(n) for r, n in zip(good, per_record, strict=True)}
    for (i, name, reason), n in cols.problem_counts().items():
        result.bad_samples[(good[i].unique_id, name, reason)] += n
    values = _convert(defs, plan, inputs, cols, good, calibration, result.skipped)
    result.rows += _aggregate(defs, wanted, values, cols, good, calibration, result)
    return result


def _inputs(
    defs: DeviceDefs, plan: Sequence[str], calibration: Calibration, skipped: dict[str, str]
) -> dict[str, list[str]]:
    """Per planned indicator the columns it reads; indicators that cannot be computed
    (no calibration model, or an input that cannot) are left out and listed in skipped."""
    out: dict[str, list[str]] = {}
    for name in plan:
        ind = defs.indicators[name]
        cols = list(ind.inputs)
        if ind.converter == "ann":
            model = calibration.models.get(ind.params["gas"])
            if model is None:
                skipped[name] = f"no valid calibration model for {ind.params['gas']}"
                continue
            unknown = [i for i in model.inputs if i not in defs.raw]
            if unknown:
                skipped[name] = f"model {model.model_id} reads unknown fields {unknown}"
                continue
            cols = list(model.inputs)
        missing = [i for i in cols if i in defs.indicators and i not in out]
        if missing:
            skipped[name] = f"needs {', '.join(missing)}, which is skipped"
            continue
        out[name] = cols
    return out


def _convert(
    defs: DeviceDefs,
    plan: Sequence[str],
    inputs: Mapping[str, list[str]],
    cols: SampleColumns,
    records: Sequence[RawRecord],
    calibration: Calibration,
    skipped: dict[str, str],
) -> dict[str, np.ndarray]:
    """Per-sample values of every computable indicator, in dependency order."""
    values: dict[str, np.ndarray] = dict(cols.values)
    for name in plan:
        if name not in inputs:
            continue
        ind = defs.indicators[name]
        params: dict[str, Any] = {**ind.params, "input_names": inputs[name]}
        if ind.converter == "ann":
            params["model"] = calibration.models[ind.params["gas"]].predictor
        elif ind.converter == "ase_linear":
            params["coefficients"] = _coefficients(
                ind.params["gas"], records, cols.record, calibration, skipped, name
            )
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            values[name] = CONVERTERS[ind.converter]([values[i] for i in inputs[name]], params)
    return values


def _coefficients(
    gas: str,
    records: Sequence[RawRecord],
    record: np.ndarray,
    calibration: Calibration,
    skipped: dict[str, str],
    name: str,
) -> dict[str, np.ndarray]:
    """Per-sample coefficient columns of each box's linear model (NaN: the box has none)."""
    keys = ASE_COEFFICIENTS[gas]
    per_record = np.full((len(records), len(keys)), np.nan)
    lacking = set()
    for i, r in enumerate(records):
        model = calibration.ase.get(r.device_id, {}).get(gas)
        if model and all(k in model for k in keys):
            per_record[i] = [model[k] for k in keys]
        else:
            lacking.add(r.device_id)
    if lacking:
        skipped[f"{name}@{','.join(map(str, sorted(lacking)))}"] = (
            f"no linear {gas} model for device {', '.join(map(str, sorted(lacking)))}"
        )
    return {k: per_record[record, j] for j, k in enumerate(keys)}


def _aggregate(
    defs: DeviceDefs,
    wanted: Sequence[str],
    values: Mapping[str, np.ndarray],
    cols: SampleColumns,
    records: Sequence[RawRecord],
    calibration: Calibration,
    result: RefineResult,
) -> list[RefinedRow]:
    n, rec = cols.n_records, cols.record
    lon_name, lat_name = defs.location["lon"], defs.location["lat"]
    lon_v, lat_v = values.get(lon_name), values.get(lat_name)
    if lon_v is not None and lat_v is not None:
        fix = np.isfinite(lon_v) & np.isfinite(lat_v)
        lon = aggregate.median(rec, np.where(fix, lon_v, np.nan), n)
        lat = aggregate.median(rec, np.where(fix, lat_v, np.nan), n)
    else:
        lon = lat = np.full(n, np.nan)
    rows: list[RefinedRow] = []
    ends = [r.hour_end for r in records]
    lons = [None if np.isnan(x) else round(x, 6) for x in lon.tolist()]
    lats = [None if np.isnan(x) else round(x, 6) for x in lat.tolist()]
    for name in wanted:
        if name not in values:
            continue
        ind = defs.indicators[name]
        s = aggregate.stats(rec, values[name], n, energetic=ind.energetic)
        mean = aggregate.round_half_away(s.mean, ind.digits).tolist()
        lo = aggregate.round_half_away(s.min, ind.digits).tolist()
        hi = aggregate.round_half_away(s.max, ind.digits).tolist()
        raw_mean, count = s.mean.tolist(), s.count.tolist()
        model_id = (
            calibration.models[ind.params["gas"]].model_id if ind.converter == "ann" else None
        )
        for i in np.flatnonzero(s.count > 0).tolist():
            r = records[i]
            if not ind.min <= mean[i] <= ind.max:
                result.out_of_range.append((r.unique_id, name, raw_mean[i]))
                continue
            rows.append(
                RefinedRow(
                    r.device_id, defs.device_type, name, ind.label, ind.unit, r.day, r.hour,
                    ends[i], mean[i], lo[i], hi[i], count[i], lons[i], lats[i], r.gid,
                    model_id,
                )
            )  # fmt: skip
    return rows
