"""Gas calibration without a database: the reference CSV (the shipped one and bad lines), and
training on synthetic data whose relation is known, on shuffled targets, reproducibly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from stationflow.refine.records.calibration import (
    NotEnoughData,
    ReferenceDataError,
    gas_inputs,
    load_reference,
    reference_path,
    train,
)
from stationflow.refine.records.definitions import defs_for
from stationflow.sim import reference as simref

HEADER = "time,station,component,value,unit\n"
SMALL_SPACE = {"mlp__hidden_layer_sizes": [(8,)], "mlp__alpha": [1e-3, 1e-1]}


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    p = tmp_path / "ref.csv"
    p.write_text("# a comment\n" + header + body, encoding="utf-8")
    return p


# ------------------------------------------------------------------ the reference CSV


def test_the_shipped_reference_is_read_with_hour_end_stamps() -> None:
    ref = load_reference("reference-nijmegen.csv")  # a bare name: the package's data
    assert ref.source == "reference-nijmegen.csv" and ref.station == simref.STATION
    assert set(ref.values) == {"no2", "o3", "co"}
    first_end = simref.START + timedelta(hours=1)  # the first hour 00:00-00:59 ends at 01:00
    for gas, series in ref.values.items():
        times = sorted(series)
        assert times[0] >= first_end and times[-1] <= simref.START + timedelta(hours=504)
        assert all(t.tzinfo is not None and t.minute == 0 for t in times)
        assert len(series) > 450, gas  # a few hours missing, as in real data
    assert ref.missing > 0 and ref.ignored == 0
    no2 = np.array(list(ref.values["no2"].values()))
    o3 = np.array(list(ref.values["o3"].values()))
    co = np.array(list(ref.values["co"].values()))
    assert 10 < no2.mean() < 60 and 15 < o3.mean() < 70 and 150 < co.mean() < 600  # ug/m3
    assert len(ref.sha256) == 64


def test_the_reference_has_daily_cycles() -> None:
    ref = load_reference("reference-nijmegen.csv")

    def by_hour(gas: str) -> np.ndarray:
        sums, counts = np.zeros(24), np.zeros(24)
        for t, v in ref.values[gas].items():
            sums[t.hour] += v
            counts[t.hour] += 1
        return sums / counts

    o3, no2 = by_hour("o3"), by_hour("no2")
    assert o3[13:17].mean() > 1.5 * o3[0:4].mean()  # ozone: the warm afternoon
    assert no2[0:4].mean() > 1.3 * no2[13:17].mean()  # NO2: the cold night


def test_the_shipped_csv_is_what_the_generator_writes() -> None:
    shipped = reference_path("reference-nijmegen.csv").read_text(encoding="utf-8")
    assert shipped == simref.generate(), "regenerate: python -m stationflow.sim.reference"


def test_a_good_file_with_gaps_other_components_and_offsets(tmp_path) -> None:
    p = write(
        tmp_path,
        "2026-01-05T01:00:00Z,NL10741,NO2,31.5,ug/m3\n"
        "2026-01-05T03:00:00+01:00,NL10741,O3,,ug/m3\n"
        "2026-01-05T02:00:00Z,NL10741,no2,33,µg/m3\n"
        "2026-01-05T02:00:00Z,NL10741,PM10,20,ug/m3\n",
    )
    ref = load_reference(p)
    t1 = datetime(2026, 1, 5, 1, tzinfo=UTC)
    assert ref.values == {"no2": {t1: 31.5, t1 + timedelta(hours=1): 33.0}}
    assert (ref.missing, ref.ignored, ref.station) == (1, 1, "NL10741")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("2026-01-05T01:00:00Z,NL10741,NO2,abc,ug/m3\n", r"ref\.csv:3: value 'abc' is not"),
        ("2026-01-05T01:00:00Z,NL10741,O3,-2,ug/m3\n", r"ref\.csv:3: value '-2' is not"),
        ("2026-01-05T01:00:00Z,NL10741,CO,nan,ug/m3\n", r"ref\.csv:3: value 'nan'"),
        ("2026-01-05T01:00:00Z,NL10741,NO2,30,ppb\n", r"ref\.csv:3: unit 'ppb'"),
        ("2026-01-05T01:00:00,NL10741,NO2,30,ug/m3\n", r"ref\.csv:3: .*no offset"),
        ("2026-01-05T01:30:00Z,NL10741,NO2,30,ug/m3\n", r"ref\.csv:3: .*not the end of an hour"),
        ("yesterday,NL10741,NO2,30,ug/m3\n", r"ref\.csv:3: Invalid isoformat"),
        ("2026-01-05T01:00:00Z,NL10741,NO2,30\n", r"ref\.csv:3: 4 fields, the header has 5"),
        (
            "2026-01-05T01:00:00Z,NL10741,NO2,30,ug/m3\n2026-01-05T02:00:00Z,NL10742,NO2,30,ug/m3\n",
            r"ref\.csv:4: station 'NL10742'.*one station per file",
        ),
        (  # the same hour twice, once written with an offset
            "2026-01-05T01:00:00Z,NL10741,NO2,30,ug/m3\n2026-01-05T02:00:00+01:00,NL10741,NO2,,ug/m3\n",
            r"ref\.csv:4: NO2 at 2026-01-05T02:00:00\+01:00 is also on line 3",
        ),
        ("", r"ref\.csv: no reference values"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path, body, message) -> None:
    with pytest.raises(ReferenceDataError, match=message):
        load_reference(write(tmp_path, body))


def test_a_bad_header_or_a_missing_file(tmp_path) -> None:
    p = write(tmp_path, "2026-01-05T01:00:00Z,NL10741,30\n", header="time,station,value\n")
    with pytest.raises(ReferenceDataError, match=r"ref\.csv:2: header lacks component, unit"):
        load_reference(p)
    with pytest.raises(ReferenceDataError, match="cannot read"):
        load_reference(tmp_path / "nowhere.csv")


def test_model_inputs_are_the_definitions_order() -> None:
    defs = defs_for("jose")
    assert gas_inputs(defs, "no2") == tuple(defs.indicators["no2"].inputs)
    assert gas_inputs(defs, "co")[:2] == ("s_barometer", "s_coresistance")
    with pytest.raises(KeyError, match="no ANN indicator for gas 'so2'"):
        gas_inputs(defs, "so2")


# ------------------------------------------------------------------ training


def synthetic(hours: int = 300, per_hour: int = 15, seed: int = 1):
    """Samples whose hourly mean target is known: a power law in a resistance-like input
    scaled per hour, a temperature-like daily cycle, two inputs of pure noise."""
    rng = np.random.default_rng(seed)
    hour = np.repeat(np.arange(hours), per_hour)
    factor = rng.uniform(0.8, 1.2, hours)[hour] * rng.normal(1, 0.03, len(hour))
    temp = 294 + 4 * np.cos(2 * np.pi * hour / 24) + rng.normal(0, 0.1, len(hour))
    X = np.column_stack(
        [
            33_000 * factor,
            temp * 1000,
            rng.normal(100_000, 50, len(hour)),
            rng.integers(20, 30, len(hour)).astype(float),
        ]
    )
    per_sample = 30 * factor**1.4 * np.exp(-0.06 * (temp - 294))
    hourly = np.bincount(hour, weights=per_sample) / per_hour
    y_hour = hourly * (1 + rng.normal(0, 0.02, hours))
    return X, y_hour, hour


def test_a_known_relation_is_learned_and_scored_on_the_last_hours() -> None:
    X, y_hour, hour = synthetic()
    model = train(X, y_hour[hour], hour)
    assert model.score > 0.85 and model.sample_score > 0.8
    assert model.rmse < 0.3 * y_hour.std()
    assert (model.n_train_hours, model.n_test_hours) == (240, 60)  # the last 20 % held out
    assert model.test_start == 240  # in time: every held-out hour after every trained one
    assert model.n_train_samples == 3000 and model.n_test_samples == 60 * 15  # subsampled
    assert model.pipeline.named_steps["scale"].n_features_in_ == 4
    assert type(model.pipeline.named_steps["mlp"]).__name__ == "MLPRegressor"
    assert set(model.params) == {"mlp__hidden_layer_sizes", "mlp__alpha"}
    assert len(model.search["tried"]) == 6 and model.seconds < 30


def test_shuffled_targets_score_badly() -> None:
    X, y_hour, hour = synthetic()
    shuffled = np.random.default_rng(7).permutation(y_hour)
    model = train(X, shuffled[hour], hour, search_space=SMALL_SPACE)
    assert model.score < 0.2  # far below the 0.5 a model needs to be used


def test_training_is_reproducible() -> None:
    X, y_hour, hour = synthetic(hours=120)
    a = train(X, y_hour[hour], hour, search_space=SMALL_SPACE)
    b = train(X, y_hour[hour], hour, search_space=SMALL_SPACE)
    assert a.params == b.params and a.score == b.score
    assert np.array_equal(a.pipeline.predict(X), b.pipeline.predict(X))
    c = train(X, y_hour[hour], hour, search_space=SMALL_SPACE, random_state=3)
    assert not np.array_equal(a.pipeline.predict(X), c.pipeline.predict(X))


def test_too_little_data_or_bad_values_are_refused() -> None:
    X, y_hour, hour = synthetic(hours=3, per_hour=2)
    with pytest.raises(NotEnoughData, match="too few to train"):
        train(X, y_hour[hour], hour)
    X, y_hour, hour = synthetic(hours=50)
    y = y_hour[hour]
    y[3] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        train(X, y, hour)
