"""Converters from raw sensor values to indicator values, on whole columns at once.

Each takes the indicator's input columns (float64, NaN where a sample has no valid value)
and its parameters, and returns one float64 column: NaN where the sample gives no value.
The formulas are those of seed 001 4.3 (``josenefuncs``, ``airsenseurfuncs``) computed in
floating point; rounding happens once, on the hourly aggregate. Two defects of the
original are not copied: the noise level is 1..5, never 6, and nothing divides integers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Columns = Sequence[np.ndarray]
Converter = Callable[[Columns, Mapping[str, Any]], np.ndarray]

NAN = np.nan
# Noise level boundaries in dB(A) (seed 001 4.3.5.2, after Peter vd Voorn): <=35 is 1,
# (35, 50] 2, (50, 65] 3, (65, 80] 4, above 80 is 5, however loud.
NOISE_LEVELS = np.array([20.0, 35.0, 50.0, 65.0, 80.0, 95.0])
TWO_POW_16 = 65536.0


def _where(valid: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.where(valid, values, NAN)


def _ints(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column as int64 (0 where NaN) and where it holds a whole number."""
    ok = np.isfinite(x) & (x == np.floor(x)) & (x >= 0) & (x < 2**32)
    return np.where(ok, x, 0).astype(np.int64), ok


def identity(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(inputs[0], dtype=np.float64)


def per_thousand(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """ohm -> kOhm, ppb -> ppm, ng/m3 -> ug/m3."""
    return inputs[0] / 1000.0


def temperature(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """milliKelvin -> Celsius as the seed: 0 is no reading, above 100 C is not a value."""
    mk = inputs[0]
    c = mk / 1000.0 - 273.1
    return _where((mk != 0) & (c <= 100), c)


def barometer(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """Pascal -> hectoPascal; above 2000 hPa is not a value."""
    hpa = inputs[0] / 100.0
    return _where(hpa <= 2000, hpa)


def humidity(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """milli-%RH -> %RH; above 100 % is not a value."""
    pct = inputs[0] / 1000.0
    return _where(pct <= 100, pct)


def coordinate(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """Josene GPS nibbles n1..n8: n1 0 = East/North, 8 = West/South; n2n3 whole degrees;
    n4..n8 the fraction in millionths. 0 is no fix; a fraction over 999999 or a result
    beyond ``limit`` degrees is not a fix either."""
    x, ok = _ints(inputs[0])
    sign = np.where(x >> 28, -1.0, 1.0)
    deg = ((x >> 20) & 255).astype(np.float64)
    frac = (x & 1048575).astype(np.float64)
    value = (deg + frac / 1e6) * sign
    limit = float(params.get("limit", 180))
    return _where(ok & (frac <= 999999) & (value != 0) & (np.abs(value) <= limit), value)


@functools.lru_cache(maxsize=32)
def _band_energies(lo: float, hi: float, dropped: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Energy tables of one octave: bands 0+1 by their two bytes (65,536 entries, summed in
    the order the bands come) and band 2 by its byte; a skipped band adds 0."""
    db = np.arange(256.0)
    energy = np.where((db >= lo) & (db <= hi), np.power(10.0, db / 10.0), 0.0)
    e0, e1, e2 = (np.zeros(256) if b in dropped else energy for b in range(3))
    return np.add.outer(e1, e0).ravel(), e2


@functools.lru_cache(maxsize=32)
def _energy_range(lo: float, hi: float) -> tuple[float, float]:
    """The energies E with lo <= 10*log10(E) <= hi, found exactly (log10 is monotonic), so
    octaves are checked without a logarithm each."""

    def db(e: float) -> float:
        return 10.0 * float(np.log10(e))

    e_lo, e_hi = 10.0 ** (lo / 10.0), 10.0 ** (hi / 10.0)
    while db(e_lo) < lo:
        e_lo = float(np.nextafter(e_lo, np.inf))
    while db(float(np.nextafter(e_lo, 0.0))) >= lo:
        e_lo = float(np.nextafter(e_lo, 0.0))
    while db(e_hi) > hi:
        e_hi = float(np.nextafter(e_hi, 0.0))
    while db(float(np.nextafter(e_hi, np.inf))) <= hi:
        e_hi = float(np.nextafter(e_hi, np.inf))
    return e_lo, e_hi


def noise_avg(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """Sound pressure over the octaves: each uint32 input holds three 1/3-octave bands
    (bytes 0-2, dB(A)); bands outside [band_min, band_max] are skipped, the others summed
    as energies into the octave, and the octaves summed as energies into the total.
    An octave with no valid band, or outside the range itself, makes the sample invalid.

    Bands are bytes, so their energies are table lookups (bench/refine.py: this converter
    was a third of the compute when done band by band)."""
    lo, hi = float(params["band_min"]), float(params["band_max"])
    drop: Mapping[str, list[int]] = params.get("drop_bands", {})
    names: Sequence[str] = params.get("input_names", ())
    e_lo, e_hi = _energy_range(lo, hi)
    total = np.zeros(len(inputs[0]))
    valid = np.ones(len(inputs[0]), dtype=bool)
    for i, column in enumerate(inputs):
        x, ok = _ints(column)
        dropped = tuple(sorted(drop.get(names[i], ()))) if i < len(names) else ()
        low, high = _band_energies(lo, hi, dropped)
        halves = x.astype("<u4").view("<u2").reshape(-1, 2)  # bytes 0-1, bytes 2-3
        energy = low[halves[:, 0]] + high[halves[:, 1] & 255]
        valid &= ok & (energy >= e_lo) & (energy <= e_hi)  # energy 0: no valid band
        total += energy
    with np.errstate(divide="ignore"):
        db_total = 10.0 * np.log10(total)
    return _where(valid & (db_total >= lo) & (db_total <= hi), db_total)


def noise_level(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """dB(A) -> level 1..5 (the original returned 6 above 95 dB)."""
    db = inputs[0]
    level = np.clip(np.searchsorted(NOISE_LEVELS, db, side="left"), 1, 5).astype(np.float64)
    return _where(np.isfinite(db), level)


def gps_fix(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """AirSensEUR reports 0 for a coordinate when it has no fix."""
    return _where(inputs[0] != 0, inputs[0])


def bits_to_millivolt(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """16-bit ADC counts -> mV: V = (Vref - RefAD) + (counts + 1) / 2^16 * 2 * RefAD."""
    ref, ref_ad = float(params["v_ref"]), float(params["v_ref_ad"])
    return 1000.0 * ((ref - ref_ad) + (inputs[0] + 1.0) / TWO_POW_16 * 2.0 * ref_ad)


def ase_linear(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """The AirSensEUR per-box linear models, solved for the concentration C from the raw
    reading Rs: CO Rs=a0+a1*C+a2*RH; NO Rs=a0+a1*C+a2*T+a3*T^2; NO2 Rs=a0+a1*C+a2*T;
    O3 Rs=a0+a1*C+a2*NO2+a3*T. ``coefficients`` maps a0..a3 to per-sample columns (NaN
    where the box has no model); under 2 ug/m3 is below the sensors' range."""
    gas = params["gas"]
    a = params["coefficients"]
    rs = inputs[0]
    if gas == "co":
        c = (rs - a["a0"] - a["a2"] * inputs[1]) / a["a1"]
    elif gas == "no":
        t = inputs[1]
        c = (rs - a["a0"] - a["a2"] * t - a["a3"] * t * t) / a["a1"]
    elif gas == "no2":
        c = (rs - a["a0"] - a["a2"] * inputs[1]) / a["a1"]
    elif gas == "o3":
        c = (rs - a["a0"] - a["a2"] * inputs[1] - a["a3"] * inputs[2]) / a["a1"]
    else:
        raise ValueError(f"no linear AirSensEUR model for gas {gas!r}")
    return _where(c >= 2, c)


def ann(inputs: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """A trained calibration model (``model``: anything with ``predict``) applied to the
    samples whose inputs are all valid."""
    x = np.column_stack(inputs)
    ok = np.isfinite(x).all(axis=1)
    out = np.full(len(x), NAN)
    if ok.any():
        out[ok] = params["model"].predict(x[ok])
    return out


# Coefficients each linear model needs, by gas (a config check names what is missing).
ASE_COEFFICIENTS = {
    "co": ("a0", "a1", "a2"),
    "no": ("a0", "a1", "a2", "a3"),
    "no2": ("a0", "a1", "a2"),
    "o3": ("a0", "a1", "a2", "a3"),
}

CONVERTERS: dict[str, Converter] = {
    "identity": identity,
    "ohm_to_kohm": per_thousand,
    "ppb_to_ppm": per_thousand,
    "ng_to_ug": per_thousand,
    "temperature": temperature,
    "barometer": barometer,
    "humidity": humidity,
    "coordinate": coordinate,
    "noise_avg": noise_avg,
    "noise_level": noise_level,
    "gps_fix": gps_fix,
    "bits_to_millivolt": bits_to_millivolt,
    "ase_linear": ase_linear,
    "ann": ann,
}
