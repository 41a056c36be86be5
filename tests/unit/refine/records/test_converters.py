"""The converters pinned to the seed's formulas (seed 001 4.3), both forms: the vectorized
ones the refiner uses (``converters.CONVERTERS``) and the scalar ones of the reference
loop. Expected numbers are worked out by hand from the raw values (arithmetic in the
comments), never by calling the code under test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stationflow.refine.records import aggregate
from stationflow.refine.records import reference_loop as loop
from stationflow.refine.records.converters import CONVERTERS
from stationflow.refine.records.definitions import defs_for

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "smartemission"
NOISE_INPUTS = ["v_audio0", *(f"v_audioplus{i}" for i in range(1, 9))]


def vec(converter: str, *columns: list[float], **params) -> list[float]:
    """A vectorized converter on plain lists; NaN (no value) comes back as None."""
    out = CONVERTERS[converter]([np.asarray(c, dtype=np.float64) for c in columns], params)
    return [None if math.isnan(v) else float(v) for v in out]


def noise_params(names: list[str] = NOISE_INPUTS) -> dict:
    p = dict(defs_for("jose").indicators["noiseavg"].params)
    return {**p, "input_names": names}


def loop_noise(values: list[float], names: list[str] = NOISE_INPUTS) -> float | None:
    p = noise_params(names)
    return loop.convert_noise_avg(values, names, p["band_min"], p["band_max"], p["drop_bands"])


# --- GPS ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        # seed 4.3.3: 5914103 = 0x005A3DF7: n1 0 (East), 0x05 = 5 degrees, 0xA3DF7 = 671223
        (5914103, 180, 5.671223),
        # 53949937 = 0x033735F1: n1 0 (North), 0x33 = 51 degrees, 0x735F1 = 472561
        (53949937, 90, 51.472561),
        # sign nibble 8 (0x80000000 = 2147483648 added): West/South
        (2147483648 + 5914103, 180, -5.671223),
        (2147483648 + 53949937, 90, -51.472561),
        # station 26: 6119535 = 5 * 2^20 + 876655 -> 5.876655; 54302101 = 51 * 2^20 + 824725
        (6119535, 180, 5.876655),
        (54302101, 90, 51.824725),
        (0, 180, None),  # 0: no fix
        (2147483648, 180, None),  # only the sign nibble: 0 degrees, still no fix
        (5 * 2**20 + 1000000, 180, None),  # fraction over 999999
        (91 * 2**20, 90, None),  # 91 degrees is no latitude
        (91 * 2**20, 180, 91.0),  # ...but a longitude
        (5914103.5, 180, None),  # not a whole number: not nibbles
        (2**32, 180, None),  # more than 32 bits
        (-5914103, 180, None),
    ],
)
def test_coordinate_nibbles(raw: float, limit: float, expected: float | None) -> None:
    assert vec("coordinate", [raw], limit=limit) == [pytest.approx(expected, abs=1e-9)]
    got = loop.convert_coord(float(raw), limit)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-9))


# --- meteo --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mk", "expected"),
    [
        (296087, 22.987),  # 296.087 K - 273.1 (the seed's offset, not 273.15)
        (298587, 25.487),
        (233150, -39.95),  # 233.15 - 273.1
        (0, None),  # 0: no reading
        (373000, 99.9),  # 373.0 - 273.1
        (374000, None),  # 100.9 C: above 100 is no value
    ],
)
def test_temperature(mk: float, expected: float | None) -> None:
    want = None if expected is None else pytest.approx(expected, abs=1e-9)
    assert vec("temperature", [mk]) == [want]
    assert loop.convert_temperature(float(mk)) == want


@pytest.mark.parametrize(
    ("pa", "expected"), [(101242, 1012.42), (200000, 2000.0), (200100, None), (20000, 200.0)]
)
def test_barometer(pa: float, expected: float | None) -> None:
    want = None if expected is None else pytest.approx(expected, abs=1e-9)
    assert vec("barometer", [pa]) == [want]  # Pa / 100, above 2000 hPa is no value
    assert loop.convert_barometer(float(pa)) == want


@pytest.mark.parametrize(
    ("m_rh", "expected"), [(55801, 55.801), (100000, 100.0), (100001, None), (10000, 10.0)]
)
def test_humidity(m_rh: float, expected: float | None) -> None:
    want = None if expected is None else pytest.approx(expected, abs=1e-9)
    assert vec("humidity", [m_rh]) == [want]  # m%RH / 1000, above 100 % is no value
    assert loop.convert_humidity(float(m_rh)) == want


def test_meteo_not_rounded_per_sample() -> None:
    """The seed rounded each sample to an int; we round the hourly value only."""
    assert vec("temperature", [296087, 296650]) == [
        pytest.approx(22.987),
        pytest.approx(23.55),
    ]


# --- audio --------------------------------------------------------------------------------


def test_noise_octave_decoding_on_real_values() -> None:
    """Station 26, 2016-06-28 hour 12, first sample: the v_audio* words decoded by hand.

    v_audio0     1579520 = 24*65536 + 26*256 +  0 -> bands 0,26,24; 40 Hz (byte 0) dropped
    v_audioplus1 1448982 = 22*65536 + 28*256 + 22 -> 22,28,22
    v_audioplus2 1581335 = 24*65536 + 33*256 + 23 -> 23,33,24
    v_audioplus3 1842459 = 28*65536 + 29*256 + 27 -> 27,29,28
    v_audioplus4 1907742 = 29*65536 + 28*256 + 30 -> 30,28,29
    v_audioplus5 2105117 = 32*65536 + 31*256 + 29 -> 29,31,32
    v_audioplus6 2039327 = 31*65536 + 30*256 + 31 -> 31,30,31
    v_audioplus7 2236704 = 34*65536 + 33*256 + 32 -> 32,33,34
    v_audioplus8 2368291 = 36*65536 + 35*256 + 35 -> 35,35,36; 10 kHz (byte 2) dropped

    Octave energies sum(10^(b/10)): 10^2.6 + 10^2.4 = 398.107 + 251.189 = 649.296
    (28.1244 dB); 947.936; 2445.977; 1926.473; 2425.286; 3638.147; 3517.851; 6092.042;
    10^3.5 * 2 = 6324.555 (38.0103 dB). Total 27967.562 -> 10*log10 = 44.4665 dB(A).
    """
    ts = json.loads((FIXTURES / "station-26-raw.json").read_text())[0]["data"]["timeseries"]
    words = [ts[0][n] for n in NOISE_INPUTS]
    assert words[0] == 1579520 and words[-1] == 2368291
    assert vec("noise_avg", *[[w] for w in words], **noise_params()) == [
        pytest.approx(44.4665, abs=1e-4)
    ]
    assert loop_noise([float(w) for w in words]) == pytest.approx(44.4665, abs=1e-4)
    # one octave alone: v_audio0 -> 10*log10(649.296) = 28.1244
    assert vec("noise_avg", [1579520], **noise_params(["v_audio0"])) == [
        pytest.approx(28.1244, abs=1e-4)
    ]
    # v_audioplus8 alone: 35 + 10*log10(2) = 38.0103 (its 36 dB 10 kHz band dropped)
    assert loop_noise([2368291.0], ["v_audioplus8"]) == pytest.approx(38.0103, abs=1e-4)


def test_noise_dropped_and_outlier_bands() -> None:
    # a loud 40 Hz band in v_audio0 (byte 0 = 100 dB) is dropped: still 28.1244
    assert vec("noise_avg", [1579520 + 100], **noise_params(["v_audio0"])) == [
        pytest.approx(28.1244, abs=1e-4)
    ]
    # the same word read as another octave keeps byte 0: 10*log10(10^10 + 649.296) = 100.0000
    assert loop_noise([1579520.0 + 100], ["v_audioplus1"]) == pytest.approx(100.0, abs=1e-4)
    # a band above 195 is skipped: 200 + 30*256 + 30*65536 -> 30, 30 -> 33.0103
    word = 200 + 30 * 256 + 30 * 65536
    assert vec("noise_avg", [word], **noise_params(["v_audioplus1"])) == [
        pytest.approx(33.0103, abs=1e-4)
    ]
    assert loop_noise([float(word)], ["v_audioplus1"]) == pytest.approx(33.0103, abs=1e-4)
    # every band skipped (all 255): no value; an octave over 195 (3 x 195 dB = 199.77): none
    for bad in (255 * 65793, 195 * 65793):
        assert vec("noise_avg", [bad], **noise_params(["v_audioplus1"])) == [None]
        assert loop_noise([float(bad)], ["v_audioplus1"]) is None
    # one invalid octave invalidates the sample
    assert vec("noise_avg", [1579520], [math.nan], **noise_params(NOISE_INPUTS[:2])) == [None]


@pytest.mark.parametrize(
    ("db", "level"),
    [
        (0, 1),
        (20, 1),
        (35, 1),
        (35.01, 2),
        (50, 2),
        (50.01, 3),
        (65, 3),
        (65.01, 4),
        (80, 4),
        (80.01, 5),
        (95, 5),
        (96, 5),  # the original returned 6 above 95 dB(A)
        (195, 5),
    ],
)
def test_noise_level(db: float, level: int) -> None:
    assert vec("noise_level", [db]) == [level]
    assert loop.calc_audio_level(db) == level


def test_noise_level_of_no_value_is_no_value() -> None:
    assert vec("noise_level", [math.nan]) == [None]


# --- gases and AirSensEUR -----------------------------------------------------------------


def test_per_thousand() -> None:
    assert vec("ohm_to_kohm", [284744, 10000]) == [284.744, 10.0]
    assert vec("ppb_to_ppm", [198000, 191000]) == [198.0, 191.0]
    assert vec("ng_to_ug", [12500]) == [12.5]
    assert loop.ohm_to_kohm(284744.0) == 284.744
    assert loop.ppb_to_ppm(198000.0) == 198.0


@pytest.mark.parametrize(
    ("counts", "v_ref", "v_ref_ad", "mv"),
    [
        (32767, 2.0, 1.0, 2000.0),  # 1000 * ((2-1) + 32768/65536 * 2 * 1) = 1000 * 2
        (65535, 1.7, 0.5, 2200.0),  # 1000 * (1.2 + 65536/65536 * 2 * 0.5) = 1000 * 2.2
        (0, 1.7, 0.5, 1200.0152587890625),  # 1000 * (1.2 + 1/65536) = 1200 + 1000/65536
    ],
)
def test_bits_to_millivolt(counts: float, v_ref: float, v_ref_ad: float, mv: float) -> None:
    assert vec("bits_to_millivolt", [counts], v_ref=v_ref, v_ref_ad=v_ref_ad) == [
        pytest.approx(mv, abs=1e-9)
    ]
    assert loop.bits_to_millivolt(float(counts), v_ref, v_ref_ad) == pytest.approx(mv, abs=1e-9)


@pytest.mark.parametrize(
    ("gas", "inputs", "coefficients", "expected"),
    [
        # CO: Rs = a0 + a1*C + a2*RH -> C = (1000 - 100 - 2*50) / 10 = 80
        ("co", [1000, 50], {"a0": 100, "a1": 10, "a2": 2}, 80.0),
        # NO: Rs = a0 + a1*C + a2*T + a3*T^2 -> C = (1000 - 100 - 3*10 - 0.5*100) / 5 = 164
        ("no", [1000, 10], {"a0": 100, "a1": 5, "a2": 3, "a3": 0.5}, 164.0),
        # NO2: Rs = a0 + a1*C + a2*T -> C = (500 - 100 - 2*20) / 4 = 90
        ("no2", [500, 20], {"a0": 100, "a1": 4, "a2": 2}, 90.0),
        # O3: Rs = a0 + a1*C + a2*NO2 + a3*T -> C = (800 - 100 - 0.5*40 - 2*25) / 5 = 126
        ("o3", [800, 40, 25], {"a0": 100, "a1": 5, "a2": 0.5, "a3": 2}, 126.0),
        # the cutoff: C = (120 - 100) / 10 = 2 is kept, (119 - 100) / 10 = 1.9 is not
        ("no2", [120, 0], {"a0": 100, "a1": 10, "a2": 1}, 2.0),
        ("no2", [119, 0], {"a0": 100, "a1": 10, "a2": 1}, None),
        ("co", [0, 0], {"a0": 100, "a1": 10, "a2": 1}, None),  # negative: below range
    ],
)
def test_ase_linear(
    gas: str, inputs: list[float], coefficients: dict[str, float], expected: float | None
) -> None:
    want = None if expected is None else pytest.approx(expected, abs=1e-9)
    per_sample = {k: np.array([v], dtype=np.float64) for k, v in coefficients.items()}
    cols = [[x] for x in inputs]
    assert vec("ase_linear", *cols, gas=gas, coefficients=per_sample) == [want]
    assert loop.ase_linear(gas, [float(x) for x in inputs], coefficients) == want


def test_ase_linear_without_coefficients_or_gas() -> None:
    nan = {k: np.array([math.nan]) for k in ("a0", "a1", "a2")}
    assert vec("ase_linear", [500], [20], gas="no2", coefficients=nan) == [None]
    with pytest.raises(ValueError, match="pm10"):
        vec("ase_linear", [500], gas="pm10", coefficients=nan)
    assert loop.ase_linear("no2", [500.0, 20.0], {"a0": 1, "a1": 0, "a2": 1}) is None


def test_ann_applies_the_model_to_complete_samples_only() -> None:
    class Sum:
        def predict(self, x: np.ndarray) -> np.ndarray:
            return x.sum(axis=1)

    assert vec("ann", [1, math.nan, 3], [10, 20, 30], model=Sum()) == [11.0, None, 33.0]
    assert loop.ann([1.0, 10.0], Sum()) == 11.0


# --- aggregation --------------------------------------------------------------------------


def test_energetic_mean_of_43_44_45_db_is_44_not_40() -> None:
    """10*log10((10^4.3 + 10^4.4 + 10^4.5) / 3) = 10*log10((19952.6 + 25118.9 + 31622.8)/3)
    = 10*log10(25564.8) = 44.0764 -> 44. The original divided integers (43/10 = 4 in
    Python 2: every sample became 10^4) and reported 40."""
    s = aggregate.stats(np.zeros(3, dtype=np.int64), np.array([43.0, 44, 45]), 1, energetic=True)
    assert s.mean[0] == pytest.approx(44.0764, abs=1e-4)
    assert aggregate.round_half_away(s.mean, 0)[0] == 44
    assert (s.count[0], s.min[0], s.max[0]) == (3, 43.0, 45.0)
    m = 43.0
    for n, x in ((2, 44.0), (3, 45.0)):
        m = loop.moving_average(m, x, n, "dB(A)")
    assert m == pytest.approx(44.0764, abs=1e-4)
    assert loop.round_half_away(m, 0) == 44
    # and the arithmetic mean when the unit is not dB: (43 + 44 + 45) / 3 = 44 exactly
    s = aggregate.stats(np.zeros(3, dtype=np.int64), np.array([43.0, 44, 45]), 1, energetic=False)
    assert s.mean[0] == 44.0


def test_stats_per_record_over_valid_values_only() -> None:
    nan = math.nan
    record = np.array([0, 0, 0, 1, 1, 2, 3, 3, 4])
    values = np.array([1.0, nan, 5.0, nan, nan, 7.0, -2.0, 4.0, nan])
    s = aggregate.stats(record, values, 6, energetic=False)
    assert s.count.tolist() == [2, 0, 1, 2, 0, 0]  # NaN samples are not counted
    np.testing.assert_array_equal(s.mean, [3.0, nan, 7.0, 1.0, nan, nan])
    np.testing.assert_array_equal(s.min, [1.0, nan, 7.0, -2.0, nan, nan])
    np.testing.assert_array_equal(s.max, [5.0, nan, 7.0, 4.0, nan, nan])


def test_stats_with_no_valid_value_at_all() -> None:
    s = aggregate.stats(np.array([0, 1]), np.array([math.nan, math.nan]), 3, energetic=True)
    assert s.count.tolist() == [0, 0, 0]
    assert np.isnan(s.mean).all() and np.isnan(s.min).all() and np.isnan(s.max).all()
    assert np.isnan(aggregate.median(np.array([0, 1]), np.array([math.nan, math.nan]), 2)).all()


def test_median_per_record() -> None:
    nan = math.nan
    record = np.array([0, 0, 0, 1, 2, 2, 2, 2, 3])
    values = np.array([3.0, 1.0, 2.0, nan, 7.0, 1.0, nan, 4.0, 9.0])
    # record 0: 1,2,3 -> 2; 1: none; 2: 1,4,7 -> 4; 3: 9; 4: no samples
    np.testing.assert_array_equal(aggregate.median(record, values, 5), [2.0, nan, 4.0, 9.0, nan])
    # an even count: the mean of the middle two, (2 + 5) / 2 = 3.5
    even = aggregate.median(np.zeros(4, dtype=np.int64), np.array([8.0, 2.0, 5.0, 1.0]), 1)
    assert even.tolist() == [3.5]


@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=8),
    data=st.data(),
)
def test_median_equals_numpy_median_for_even_and_lopsided_records(counts, data) -> None:
    values = np.array(
        data.draw(
            st.lists(
                st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)),
                min_size=sum(counts),
                max_size=sum(counts),
            )
        ),
        dtype=np.float64,
    )
    record = np.repeat(np.arange(len(counts)), counts)
    got = aggregate.median(record, values, len(counts))
    for i in range(len(counts)):
        valid = values[(record == i) & np.isfinite(values)]
        assert (np.isnan(got[i]) and not len(valid)) or got[i] == np.median(valid)


def test_noise_octave_bounds_are_exact_energies() -> None:
    """The octave range is checked on energies: the bounds are the exact edges of
    lo <= 10*log10(E) <= hi, so no octave is let in or out that the log would not."""
    from stationflow.refine.records.converters import _energy_range

    for lo, hi in [(0.0, 195.0), (30.0, 120.0), (17.3, 88.8)]:
        e_lo, e_hi = _energy_range(lo, hi)
        assert 10 * np.log10(e_lo) >= lo > 10 * np.log10(np.nextafter(e_lo, 0))
        assert 10 * np.log10(e_hi) <= hi < 10 * np.log10(np.nextafter(e_hi, np.inf))


@pytest.mark.parametrize(
    ("x", "digits", "expected"),
    [(2.5, 0, 3.0), (-2.5, 0, -3.0), (3.5, 0, 4.0), (2.4999, 0, 2.0), (0.0, 0, 0.0),
     (1.25, 1, 1.3), (-1.25, 1, -1.3), (23.654, 0, 24.0), (308.6543333, 3, 308.654)],
)  # fmt: skip
def test_round_half_away(x: float, digits: int, expected: float) -> None:
    assert aggregate.round_half_away(np.array([x]), digits)[0] == expected
    assert loop.round_half_away(x, digits) == expected
