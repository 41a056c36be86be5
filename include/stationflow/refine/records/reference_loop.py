"""The refiner written the plain way: one sample at a time, one Python float at a time.

It reads the same device definitions as the vectorized refiner (``refiner.refine``) but
computes with scalar converters transcribed from the seed's formulas (seed 001 4.3,
``josenefuncs``) and the seed's cumulative moving average. It exists for two reasons: it
is the test oracle the vectorized refiner is checked against, and the baseline of the
refine benchmark. So it stays deliberately simple and per sample; do not optimise it.

The defects of the original are not copied here either: the dB mean is computed in
floats (never integer division), the noise level is 1..5 (never 6), nothing is rounded
per sample, and only valid samples are counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from stationflow.refine.records.converters import ASE_COEFFICIENTS
from stationflow.refine.records.definitions import DeviceDefs, defs_for
from stationflow.refine.records.refiner import Calibration, RefinedRow
from stationflow.refine.records.samples import AseSamples, RawRecord, RecordError

# Noise level edges in dB(A) (seed 4.3.5.2, ``calc_audio_level``).
AUDIO_LEVELS = (20, 35, 50, 65, 80, 95)
UINT32 = 2**32
NO_CALIBRATION = Calibration()  # frozen: a safe shared default


# --- scalar converters (seed 4.3.3 - 4.3.5 and the AirSensEUR functions) ------------------


def convert_temperature(mk: float) -> float | None:
    """milliKelvin -> Celsius; 0 means no reading and above 100 C is not a value."""
    if mk == 0:
        return None
    c = mk / 1000.0 - 273.1
    if c > 100:
        return None
    return c


def convert_barometer(pa: float) -> float | None:
    """Pascal -> hectoPascal; above 2000 hPa is not a value."""
    result = pa / 100.0
    if result > 2000:
        return None
    return result


def convert_humidity(m_rh: float) -> float | None:
    """milli-%RH -> %RH; above 100 % is not a value."""
    pct = m_rh / 1000.0
    if pct > 100:
        return None
    return pct


def _uint32(value: float) -> int | None:
    """The value as the uint32 the station sent, None when it cannot be one."""
    if not math.isfinite(value) or value < 0 or value >= UINT32 or value != math.floor(value):
        return None
    return int(value)


def convert_coord(value: float, limit: float = 180.0) -> float | None:
    """Josene GPS nibbles: n1 0 = East/North, 8 = West/South; n2n3 whole degrees; n4..n8
    the fraction in millionths (max 999999). 0 means no fix, as does a result beyond
    ``limit`` degrees (the seed's convert_latitude/convert_longitude)."""
    x = _uint32(value)
    if x is None:
        return None
    sign = 1.0
    if x >> 28:
        sign = -1.0
    deg = float((x >> 20) & 255)
    dec = float(x & 1048575)
    if dec > 999999:
        return None
    result = (deg + dec / 1000000.0) * sign
    if result == 0.0 or result < -limit or result > limit:
        return None
    return result


def convert_noise_avg(
    values: Sequence[float],
    names: Sequence[str],
    db_min: float,
    db_max: float,
    drop_bands: Mapping[str, Sequence[int]],
) -> float | None:
    """The seed's convert_noise_avg: each uint32 holds three 1/3-octave bands (bytes 0-2,
    dB(A)); the dropped bands go (v_audio0's 40 Hz, v_audioplus8's 10 kHz), bands outside
    [db_min, db_max] are skipped, the others summed as energies into the octave, and the
    octaves summed as energies into the total. Not rounded (the seed rounded per sample)."""
    total = 0.0
    for name, value in zip(names, values, strict=True):
        x = _uint32(value)
        if x is None:
            return None
        bands = [float(x & 255), float((x >> 8) & 255), float((x >> 16) & 255)]
        for i in sorted(drop_bands.get(name, ()), reverse=True):
            del bands[i]
        band_sum = 0.0
        band_cnt = 0
        for band_val in bands:
            if band_val < db_min or band_val > db_max:
                continue  # skip outliers
            band_cnt += 1
            band_sum += math.pow(10, band_val / 10)
        if band_cnt == 0:
            return None
        band_sum = math.log10(band_sum) * 10.0
        if band_sum < db_min or band_sum > db_max:
            return None
        total += math.pow(10, band_sum / 10)
    result = math.log10(total) * 10.0
    if result < db_min or result > db_max:
        return None
    return result


def calc_audio_level(db: float) -> int:
    """dB(A) -> level 1..5, the seed's loop with its defect fixed: it returned 6 above
    95 dB(A); everything above 80 is 5."""
    level_num = 1
    for i in range(len(AUDIO_LEVELS)):
        if db > AUDIO_LEVELS[i]:
            level_num = i + 1
    return min(level_num, 5)


def ohm_to_kohm(ohm: float) -> float:
    return ohm / 1000.0


def ppb_to_ppm(ppb: float) -> float:
    return ppb / 1000.0


def ng_to_ug(ng: float) -> float:
    return ng / 1000.0


def bits_to_millivolt(counts: float, v_ref: float, v_ref_ad: float) -> float:
    """16-bit ADC counts -> mV (JRC106095 eq. 1): (Vref - RefAD) + (counts+1)/2^16 * 2*RefAD."""
    return 1000.0 * ((v_ref - v_ref_ad) + (counts + 1.0) / 65536.0 * 2.0 * v_ref_ad)


def ase_linear(gas: str, x: Sequence[float], a: Mapping[str, float]) -> float | None:
    """The AirSensEUR linear models solved for the concentration C from the reading Rs:
    CO Rs=a0+a1*C+a2*RH; NO Rs=a0+a1*C+a2*T+a3*T^2; NO2 Rs=a0+a1*C+a2*T;
    O3 Rs=a0+a1*C+a2*NO2+a3*T. Under 2 ug/m3 is below the sensors' range."""
    if a["a1"] == 0:
        return None
    rs = x[0]
    if gas == "co":
        c = (rs - a["a0"] - a["a2"] * x[1]) / a["a1"]
    elif gas == "no":
        t = x[1]
        c = (rs - a["a0"] - a["a2"] * t - a["a3"] * t * t) / a["a1"]
    elif gas == "no2":
        c = (rs - a["a0"] - a["a2"] * x[1]) / a["a1"]
    elif gas == "o3":
        c = (rs - a["a0"] - a["a2"] * x[1] - a["a3"] * x[2]) / a["a1"]
    else:
        raise ValueError(f"no linear AirSensEUR model for gas {gas!r}")
    if not c >= 2:
        return None
    return c


def ann(x: Sequence[float], predictor: Any) -> float:
    """A trained model on this one sample (a 1-row array, as the seed's refiner did)."""
    y = predictor.predict(np.array([list(x)], dtype=np.float64))
    return float(np.asarray(y, dtype=np.float64).reshape(-1)[0])


def round_half_away(x: float, digits: int) -> float:
    """Round as people do (2.5 -> 3, -2.5 -> -3), once, on the hourly value. Not finite
    stays as it is (and fails the range check), as in the vectorized refiner."""
    if not math.isfinite(x) or x == 0:
        return x
    scale = 10.0**digits
    return math.copysign(1.0, x) * math.floor(abs(x) * scale + 0.5) / scale


# --- the seed's hourly aggregation --------------------------------------------------------


def moving_average(moving_avg: float, x: float, n: int, unit: str) -> float:
    """The seed's cumulative moving average M = M + (x - M)/n, on energies for dB units,
    in floats throughout (the original's hourly dB mean divided integers)."""
    if "dB" in unit:
        x = math.pow(10, x / 10)
        moving_avg = math.pow(10, moving_avg / 10)
        moving_avg = moving_average(moving_avg, x, n, "int")
        return math.log10(moving_avg) * 10.0
    return float(moving_avg) + (float(x) - float(moving_avg)) / float(n)


@dataclass
class HourStat:
    """One indicator over one record's valid samples; ``mean`` is not rounded yet."""

    unit: str  # what moving_average goes by: "dB" for an energetic mean, else "int"
    count: int = 0
    mean: float = math.nan
    min: float = math.inf
    max: float = -math.inf

    def add(self, x: float) -> None:
        self.count += 1
        self.mean = x if self.count == 1 else moving_average(self.mean, x, self.count, self.unit)
        self.min = min(self.min, x)
        self.max = max(self.max, x)


@dataclass
class RecordStats:
    """What the loop found in one raw record: stats per wanted indicator with at least
    one valid sample, and the median GPS fix (None when no sample has one)."""

    stats: dict[str, HourStat]
    lon: float | None
    lat: float | None
    samples: int


# --- the loop -----------------------------------------------------------------------------

Computer = Callable[[list[float], RawRecord], float | None]


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    n = len(v)
    return (v[(n - 1) // 2] + v[n // 2]) / 2.0


def _valid(value: Any, lo: float | None, hi: float | None) -> float | None:
    """A raw sample value: a JSON number within [lo, hi], else None (missing, null,
    strings, booleans, objects and out of range values alike)."""
    if type(value) is not int and type(value) is not float:
        return None
    try:
        f = float(value)
    except OverflowError:  # an integer beyond any float: out of range
        return None
    if not math.isfinite(f):
        return None
    if lo is not None and f < lo:
        return None
    if hi is not None and f > hi:
        return None
    return f


def _document(record: RawRecord) -> Mapping[str, Any]:
    data = record.data
    if isinstance(data, str | bytes | bytearray | memoryview):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"raw record {record.unique_id}: data is not JSON: {e}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"raw record {record.unique_id}: data must be an object")
    return data


def _samples(record: RawRecord, defs: DeviceDefs) -> list[Mapping[str, Any]]:
    """The record's samples as one mapping each (field -> value as sent)."""
    doc = _document(record)
    if defs.device_type == "ase":  # points of one minute form a sample: same bucketing
        return AseSamples.parse(record, doc, defs, list(defs.raw))
    ts = doc.get("timeseries")
    if not isinstance(ts, list):
        raise ValueError(f"raw record {record.unique_id}: 'timeseries' must be a list")
    for i, s in enumerate(ts):
        if not isinstance(s, dict):
            raise ValueError(f"raw record {record.unique_id}: timeseries[{i}] must be an object")
    return ts


def _computers(
    defs: DeviceDefs, plan: Sequence[str], calibration: Calibration
) -> dict[str, tuple[list[str], Computer]]:
    """Per computable planned indicator: its input names and a scalar function of their
    (all valid) values. Gas indicators without a model, or needing a skipped one, are
    left out, as the vectorized refiner does."""
    out: dict[str, tuple[list[str], Computer]] = {}
    for name in plan:
        ind = defs.indicators[name]
        p = ind.params
        inputs = list(ind.inputs)
        fn: Computer
        if ind.converter == "ann":
            model = calibration.models.get(p["gas"])
            if model is None or any(i not in defs.raw for i in model.inputs):
                continue
            inputs = list(model.inputs)

            def fn(x: list[float], r: RawRecord, m: Any = model.predictor) -> float | None:
                return ann(x, m)

        elif ind.converter == "ase_linear":
            keys = ASE_COEFFICIENTS[p["gas"]]

            def fn(
                x: list[float], r: RawRecord, gas: str = p["gas"], keys: tuple = keys
            ) -> float | None:
                model = calibration.ase.get(r.device_id, {}).get(gas)
                if not model or not all(k in model for k in keys):
                    return None  # this box has no model for the gas
                return ase_linear(gas, x, model)

        else:
            fn = _scalar(ind.converter, p, inputs)
        if any(i in defs.indicators and i not in out for i in inputs):
            continue
        out[name] = (inputs, fn)
    return out


def _scalar(converter: str, p: Mapping[str, Any], inputs: list[str]) -> Computer:
    """The scalar form of a converter that needs no calibration."""
    if converter == "identity":
        return lambda x, r: x[0]
    if converter == "ohm_to_kohm":
        return lambda x, r: ohm_to_kohm(x[0])
    if converter == "ppb_to_ppm":
        return lambda x, r: ppb_to_ppm(x[0])
    if converter == "ng_to_ug":
        return lambda x, r: ng_to_ug(x[0])
    if converter == "temperature":
        return lambda x, r: convert_temperature(x[0])
    if converter == "barometer":
        return lambda x, r: convert_barometer(x[0])
    if converter == "humidity":
        return lambda x, r: convert_humidity(x[0])
    if converter == "coordinate":
        limit = float(p.get("limit", 180))
        return lambda x, r: convert_coord(x[0], limit)
    if converter == "noise_avg":
        lo, hi, drop = float(p["band_min"]), float(p["band_max"]), p.get("drop_bands", {})
        return lambda x, r: convert_noise_avg(x, inputs, lo, hi, drop)
    if converter == "noise_level":
        return lambda x, r: float(calc_audio_level(x[0]))
    if converter == "gps_fix":
        return lambda x, r: None if x[0] == 0 else x[0]
    if converter == "bits_to_millivolt":
        v_ref, v_ref_ad = float(p["v_ref"]), float(p["v_ref_ad"])
        return lambda x, r: bits_to_millivolt(x[0], v_ref, v_ref_ad)
    raise ValueError(f"no scalar converter {converter!r}")


class _TypePlan:
    """What one device type needs for a batch: worked out once, used for every sample."""

    def __init__(self, defs: DeviceDefs, wanted: Sequence[str], calibration: Calibration):
        self.defs = defs
        self.calibration = calibration
        self.wanted = list(wanted)
        self.plan = defs.plan(self.wanted)
        self.computers = _computers(defs, self.plan, calibration)
        needed = {i for ins, _ in self.computers.values() for i in ins if i in defs.raw}
        self.raw = [(f, r.min, r.max) for f, r in defs.raw.items() if f in needed]
        self.order = [(n, *self.computers[n]) for n in self.plan if n in self.computers]
        self.lon, self.lat = defs.location["lon"], defs.location["lat"]

    def record(self, record: RawRecord) -> RecordStats:
        """Refine one record, sample by sample; ValueError when it is not a raw hour."""
        samples = _samples(record, self.defs)
        indicators = self.defs.indicators
        stats = {
            n: HourStat("dB" if indicators[n].energetic else "int")
            for n in self.wanted
            if n in self.computers
        }
        lons: list[float] = []
        lats: list[float] = []
        for sample in samples:
            values: dict[str, float | None] = {}
            for name, lo, hi in self.raw:
                values[name] = _valid(sample.get(name), lo, hi)
            for name, inputs, fn in self.order:
                x = [values[i] for i in inputs]
                v = None if None in x else fn(x, record)  # type: ignore[arg-type]
                values[name] = v if v is not None and math.isfinite(v) else None
            for name, stat in stats.items():
                v = values[name]
                if v is not None:
                    stat.add(v)
            lon, lat = values.get(self.lon), values.get(self.lat)
            if lon is not None and lat is not None:
                lons.append(lon)
                lats.append(lat)
        return RecordStats(
            stats={n: s for n, s in stats.items() if s.count},
            lon=_median(lons),
            lat=_median(lats),
            samples=len(samples),
        )

    def row(self, record: RawRecord, rs: RecordStats, name: str) -> RefinedRow | None:
        """The hourly row, or None when no sample was valid or the rounded hourly value is
        outside the indicator's range."""
        s = rs.stats.get(name)
        if s is None:
            return None
        ind = self.defs.indicators[name]
        value = round_half_away(s.mean, ind.digits)
        if not (ind.min <= value <= ind.max):
            return None
        model = self.calibration.models[ind.params["gas"]] if ind.converter == "ann" else None
        return RefinedRow(
            device_id=record.device_id,
            device_type=self.defs.device_type,
            name=name,
            label=ind.label,
            unit=ind.unit,
            day=record.day,
            hour=record.hour,
            time=record.hour_end,
            value=value,
            value_min=round_half_away(s.min, ind.digits),
            value_max=round_half_away(s.max, ind.digits),
            sample_count=s.count,
            lon=None if rs.lon is None else round(rs.lon, 6),
            lat=None if rs.lat is None else round(rs.lat, 6),
            raw_gid=record.gid,
            model_id=None if model is None else model.model_id,
        )


def _wanted(defs: DeviceDefs, indicators: Sequence[str] | None) -> list[str]:
    if indicators is None:
        return list(defs.default_indicators)
    return [i for i in indicators if i in defs.indicators]


def record_stats(
    record: RawRecord,
    indicators: Sequence[str] | None = None,
    calibration: Calibration = NO_CALIBRATION,
) -> RecordStats:
    """One record's unrounded hourly stats (for tests that need the exact means).
    Raises KeyError for an unknown device type, ValueError for a record that is not a
    raw hour."""
    defs = defs_for(record.device_type)
    return _TypePlan(defs, _wanted(defs, indicators), calibration).record(record)


def refine_loop(
    records: Sequence[RawRecord],
    indicators: Sequence[str] | None = None,
    calibration: Calibration = NO_CALIBRATION,
) -> list[RefinedRow]:
    """The rows ``refiner.refine`` gives for the same input, in the same order (per device
    type as first met, then per wanted indicator, then per record); records it rejects
    give no rows."""
    by_type: dict[str, list[RawRecord]] = {}
    for r in records:
        by_type.setdefault(r.device_type, []).append(r)
    rows: list[RefinedRow] = []
    for device_type, recs in by_type.items():
        try:
            defs = defs_for(device_type)
        except KeyError:
            continue
        tp = _TypePlan(defs, _wanted(defs, indicators), calibration)
        done: list[tuple[RawRecord, RecordStats]] = []
        for r in recs:
            try:
                done.append((r, tp.record(r)))
            except (ValueError, RecordError):
                continue
        for name in tp.wanted:
            for r, rs in done:
                row = tp.row(r, rs, name)
                if row is not None:
                    rows.append(row)
    return rows
