"""Josene gas calibration (seed 001 4.3.2): an ANN per gas, trained on the raw samples of the
sensors co-located with a reference station against that station's hourly values, stored in
``smartem_calibration.model``; the refiner applies the newest valid model per gas.

Time convention: a reference value is stamped with the END of its hour (UTC), as RIVM
publishes and as ``RawRecord.hour_end`` stamps refined values, so raw hour h of day d
(covering (h-1):00-(h-1):59) joins the reference value at d + h hours. Every valid sample
of that raw hour (all inputs within their ranges) becomes one training row with the hour's
reference value as target; the refiner averages the per-sample predictions per hour, so
the score that matters is the one of those hourly means.

Training is reproducible (fixed ``random_state``, one BLAS thread) and bounded: the training
part is subsampled to ``max_samples`` rows and the search space is small. The split respects
time: the last ~20 % of the joined hours are held out for the stored score, and the
hyper-parameter search validates forward in time on the earlier hours (never a sample of an
hour in both parts). The stored model is the one fitted on the earlier hours only, so its
score is an honest one. Models are pickled; the sha256 stored beside them is checked before
unpickling, so only bytes this module wrote and nothing corrupted is ever loaded (it does
not authenticate a writer: whoever can write the table is trusted, as with any code).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import pickle
import platform
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from stationflow.config import SensorNetwork
from stationflow.errors import PermanentError
from stationflow.refine.records.definitions import DeviceDefs, defs_for
from stationflow.refine.records.refiner import GasModel
from stationflow.refine.records.samples import JoseneSamples, RawRecord, RecordError, document
from stationflow.state.audit import RunIds, audit

log = logging.getLogger("stationflow.refine.records.calibration")

STEP = "calibrate"
HOUR = timedelta(hours=1)
JOSENE = "jose"
REFERENCE_PACKAGE = "stationflow.sim"  # bare reference names: files in its data/ folder
COMPONENTS = {"no2": "no2", "o3": "o3", "co": "co"}  # reference component -> gas
UNITS = {"ug/m3", "µg/m3", "μg/m3", "ug/m³", "µg/m³", "μg/m³"}
MAX_VALUE = {"no2": 2000.0, "o3": 1000.0, "co": 50000.0}  # ug/m3: beyond is not a reading
REFERENCE_COLUMNS = ("time", "station", "component", "value", "unit")

ALGORITHM = "StandardScaler+MLPRegressor"
MODEL_FORMAT = "pickle-5"
RANDOM_STATE = 0
MAX_SAMPLES = 3000  # training rows after subsampling: well under a second per fit
TEST_FRACTION = 0.2
CV_FOLDS = 2
MAX_ITER = 200  # lbfgs iterations: the held-out scores are the same as with 400
# lbfgs: for a few thousand rows it converges in a fraction of adam's time, as well.
SEARCH_SPACE: dict[str, list[Any]] = {
    "mlp__hidden_layer_sizes": [(8,), (16,), (16, 8)],
    "mlp__alpha": [1e-3, 1e-1],
}
MIN_HOURS = 48  # joined hours needed to train at all (two days)
MIN_SAMPLES = 500


class ReferenceDataError(PermanentError, ValueError):
    """The reference file is unusable; the message names the file and line."""


class ModelIntegrityError(RuntimeError):
    """A stored model is refused: its bytes do not match its hash, or it cannot be used here."""


class NotEnoughData(ValueError):
    """Too few joined samples or hours to train and hold out."""


# ---------------------------------------------------------------------- reference data


@dataclass(frozen=True)
class Reference:
    """Hourly reference values: gas -> hour end (UTC) -> ug/m3."""

    source: str  # the file name
    station: str
    sha256: str
    values: Mapping[str, Mapping[datetime, float]]
    missing: int = 0  # rows without a value (no measurement that hour)
    ignored: int = 0  # rows of components no model is trained for


def reference_path(name: str | Path) -> Path:
    """A bare file name is the package's reference data (``sim/data``); else a path."""
    p = Path(name)
    if p.name == str(name):
        return Path(str(resources.files(REFERENCE_PACKAGE).joinpath("data").joinpath(p.name)))
    return p


def _hour_end(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset: reference times must be UTC")
    t = t.astimezone(UTC)
    if (t.minute, t.second, t.microsecond) != (0, 0, 0):
        raise ValueError(f"time {text!r} is not the end of an hour")
    return t


def load_reference(name: str | Path) -> Reference:
    """Read a reference CSV (``time,station,component,value,unit``; ``#`` comment lines).

    ``time`` is the end of the hour (ISO 8601 with offset), ``value`` in ug/m3 or empty (no
    measurement). One station per file; a time twice for a component is an error. Any bad
    line raises ReferenceDataError naming the file and line."""
    path = reference_path(name)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ReferenceDataError(f"{path}: cannot read the reference data: {e.strerror}") from e
    src = path.name
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ReferenceDataError(f"{src}: not UTF-8 text ({e.reason})") from None
    values: dict[str, dict[datetime, float]] = {}
    seen: dict[tuple[str, datetime], int] = {}
    station: str | None = None
    columns: dict[str, int] | None = None
    n_columns = 0
    missing = ignored = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in next(csv.reader([line]))]
        if columns is None:
            lower = [c.lower() for c in cells]
            absent = [c for c in REFERENCE_COLUMNS if c not in lower]
            if absent:
                raise ReferenceDataError(
                    f"{src}:{lineno}: header lacks {', '.join(absent)}"
                    f" (expected {','.join(REFERENCE_COLUMNS)})"
                )
            columns = {c: lower.index(c) for c in REFERENCE_COLUMNS}
            n_columns = len(cells)
            continue
        if len(cells) != n_columns:
            raise ReferenceDataError(
                f"{src}:{lineno}: {len(cells)} fields, the header has {n_columns}"
            )
        row = {c: cells[i] for c, i in columns.items()}
        gas = COMPONENTS.get(row["component"].lower())
        if gas is None:
            ignored += 1
            continue
        try:
            end = _hour_end(row["time"])
        except ValueError as e:
            raise ReferenceDataError(f"{src}:{lineno}: {e}") from None
        if station is None:
            station = row["station"]
        elif row["station"] != station:
            raise ReferenceDataError(
                f"{src}:{lineno}: station {row['station']!r}, but the file is {station!r}"
                " (one station per file)"
            )
        if row["unit"] not in UNITS:
            raise ReferenceDataError(f"{src}:{lineno}: unit {row['unit']!r}, expected ug/m3")
        if (gas, end) in seen:
            raise ReferenceDataError(
                f"{src}:{lineno}: {row['component']} at {row['time']} is also on line"
                f" {seen[(gas, end)]}"
            )
        seen[(gas, end)] = lineno
        if row["value"] == "":
            missing += 1
            continue
        try:
            value = float(row["value"])
        except ValueError:
            value = math.nan
        if not 0 <= value <= MAX_VALUE[gas]:  # NaN fails too
            raise ReferenceDataError(
                f"{src}:{lineno}: value {row['value']!r} is not a {row['component']}"
                f" concentration (0..{MAX_VALUE[gas]:g} ug/m3)"
            )
        values.setdefault(gas, {})[end] = value
    if columns is None or station is None:
        raise ReferenceDataError(f"{src}: no reference values")
    return Reference(
        source=src,
        station=station,
        sha256=hashlib.sha256(raw).hexdigest(),
        values=values,
        missing=missing,
        ignored=ignored,
    )


# ---------------------------------------------------------------------- training set


@dataclass
class TrainingSet:
    """Samples of the co-located sensors joined with the reference value of their hour."""

    gas: str
    inputs: tuple[str, ...]
    X: np.ndarray  # (samples, inputs), every value valid
    y: np.ndarray  # the reference value of the sample's hour
    hour_end: np.ndarray  # int64 epoch seconds: groups the samples of one raw hour
    device: np.ndarray
    window: tuple[datetime, datetime]
    hours_read: int = 0  # raw hours in the window
    hours_rejected: int = 0  # raw hours that are not a raw hour at all

    @property
    def n_samples(self) -> int:
        return len(self.y)

    @property
    def n_hours(self) -> int:
        """Joined hours (of a time, across devices)."""
        return len(np.unique(self.hour_end))

    def data_span(self) -> tuple[datetime, datetime] | None:
        if not self.n_samples:
            return None
        lo, hi = int(self.hour_end.min()), int(self.hour_end.max())
        return datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)


def gas_inputs(defs: DeviceDefs, gas: str) -> tuple[str, ...]:
    """The raw fields the gas's ANN indicator reads (the model's input order)."""
    for ind in defs.indicators.values():
        if ind.converter == "ann" and ind.params.get("gas") == gas:
            return tuple(ind.inputs)
    raise KeyError(f"{defs.device_type} defines no ANN indicator for gas {gas!r}")


def training_sets(
    conn: psycopg.Connection,
    devices: Sequence[int],
    gases: Sequence[str],
    window: tuple[datetime, datetime],
    reference: Reference,
    *,
    batch: timedelta = timedelta(days=1),
) -> dict[str, TrainingSet]:
    """Per gas, the valid samples of the Josene devices' complete raw hours that lie wholly
    in ``window`` = [start, end) and have a reference value (the ANN gases are Josene's).
    Samples of several devices in one hour share that hour's value and group. Read once for
    all gases, a day at a time (a raw hour is ~330 KB)."""
    defs = defs_for(JOSENE)
    inputs = {g: gas_inputs(defs, g) for g in gases}
    fields = sorted({f for names in inputs.values() for f in names})
    start, end = window
    parts: dict[str, list[tuple[np.ndarray, ...]]] = {g: [] for g in gases}
    empty = np.empty(0, dtype=np.int64)
    out = {
        g: TrainingSet(
            g, inputs[g], np.empty((0, len(inputs[g]))), np.empty(0), empty, empty, window
        )
        for g in gases
    }
    t = start
    while t < end:
        t_next = min(t + batch, end)
        rows = conn.execute(
            "SELECT device_id, day, hour, data::text, gid, revision"
            " FROM smartem_raw.timeseries WHERE device_type = %s AND device_id = ANY(%s)"
            " AND complete AND hour_start >= %s AND hour_start < %s"
            " AND hour_start + interval '1 hour' <= %s ORDER BY hour_start, device_id",
            (defs.device_type, list(devices), t, t_next, end),
        ).fetchall()
        t = t_next
        records, parsed = [], []
        for device_id, day, hour, data, gid, revision in rows:
            rec = RawRecord(device_id, day, hour, data, defs.device_type, gid, revision)
            for ts in out.values():
                ts.hours_read += 1
            if not any(rec.hour_end in reference.values.get(g, {}) for g in gases):
                continue
            try:
                parsed.append(JoseneSamples.parse(rec, document(rec), defs, fields))
            except RecordError as e:
                log.warning("calibration: skipping %s", e)
                for ts in out.values():
                    ts.hours_rejected += 1
                continue
            records.append(rec)
        if not records:
            continue
        cols = JoseneSamples.combine(parsed, defs, fields)
        ends = np.array([int(r.hour_end.timestamp()) for r in records], dtype=np.int64)
        dev = np.array([r.device_id for r in records], dtype=np.int64)
        for g in gases:
            ref = reference.values.get(g, {})
            y_rec = np.array([ref.get(r.hour_end, np.nan) for r in records])
            X = np.column_stack([cols.values[f] for f in inputs[g]])
            ok = np.isfinite(X).all(axis=1) & np.isfinite(y_rec[cols.record])
            rec_i = cols.record[ok]
            parts[g].append((X[ok], y_rec[rec_i], ends[rec_i], dev[rec_i]))
    for g, chunks in parts.items():
        if chunks:
            ts = out[g]
            ts.X, ts.y, ts.hour_end, ts.device = (
                np.concatenate(c) for c in zip(*chunks, strict=True)
            )
    return out


def training_set(
    conn: psycopg.Connection,
    devices: Sequence[int],
    gas: str,
    window: tuple[datetime, datetime],
    reference: Reference,
) -> TrainingSet:
    """One gas's training set (see ``training_sets``)."""
    return training_sets(conn, devices, [gas], window, reference)[gas]


# ---------------------------------------------------------------------- training


@dataclass
class TrainedModel:
    """The fitted pipeline and how it did on the held-out hours it never saw."""

    pipeline: Any  # sklearn Pipeline(StandardScaler, MLPRegressor)
    score: float  # R^2 of the hourly means over the held-out hours
    rmse: float  # of the hourly means, in the target's unit
    sample_score: float  # R^2 per held-out sample
    cv_score: float  # the search's best forward-validation R^2 (per sample)
    params: dict[str, Any]
    search: dict[str, Any]
    n_train_samples: int
    n_test_samples: int
    n_train_hours: int
    n_test_hours: int
    test_start: int  # hour (epoch seconds, as given) of the first held-out hour
    seconds: float = 0.0

    def metrics(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "rmse": self.rmse,
            "sample_score": self.sample_score,
            "cv_score": self.cv_score,
            "params": self.params,
            "n_train_samples": self.n_train_samples,
            "n_test_samples": self.n_test_samples,
            "n_train_hours": self.n_train_hours,
            "n_test_hours": self.n_test_hours,
            "seconds": round(self.seconds, 2),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _forward_folds(hours: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window splits over whole hours (TimeSeriesSplit on the distinct hours)."""
    from sklearn.model_selection import TimeSeriesSplit

    distinct = np.unique(hours)
    out = []
    for tr, va in TimeSeriesSplit(n_splits=folds).split(distinct):
        out.append(
            (
                np.flatnonzero(np.isin(hours, distinct[tr])),
                np.flatnonzero(np.isin(hours, distinct[va])),
            )
        )
    return out


def _hourly(values: np.ndarray, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct hour: (hours, mean of the values)."""
    distinct, inverse = np.unique(hours, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    return distinct, sums / np.bincount(inverse)


def train(
    X: np.ndarray,
    y: np.ndarray,
    hours: np.ndarray | None = None,
    *,
    max_samples: int = MAX_SAMPLES,
    test_fraction: float = TEST_FRACTION,
    folds: int = CV_FOLDS,
    search_space: Mapping[str, list[Any]] | None = None,
    max_iter: int = MAX_ITER,
    random_state: int = RANDOM_STATE,
) -> TrainedModel:
    """Fit Pipeline(StandardScaler, MLPRegressor) with a grid search over the network size
    and its L2 penalty. ``hours`` groups samples of one hour and orders them in time (None:
    each sample its own hour, in the given order); the last ``test_fraction`` of the hours
    are held out and scored as hourly means."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    began = time.perf_counter()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    hours = np.arange(len(y)) if hours is None else np.asarray(hours)
    if X.ndim != 2 or len(X) != len(y) or len(y) != len(hours):
        raise ValueError(f"X {X.shape}, y {y.shape} and hours {hours.shape} do not match")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ValueError("X and y must be finite (drop invalid samples first)")
    distinct = np.unique(hours)
    n_test = max(1, math.ceil(len(distinct) * test_fraction))
    if len(distinct) - n_test < folds + 1 or len(y) < 2 * (folds + 1):
        raise NotEnoughData(f"{len(y)} samples in {len(distinct)} hours: too few to train")
    test_start = distinct[-n_test]
    is_test = hours >= test_start
    train_idx = np.flatnonzero(~is_test)
    rng = np.random.default_rng(random_state)
    if len(train_idx) > max_samples:
        train_idx = np.sort(rng.choice(train_idx, size=max_samples, replace=False))
    Xt, yt, ht = X[train_idx], y[train_idx], hours[train_idx]
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("mlp", MLPRegressor(solver="lbfgs", max_iter=max_iter, random_state=random_state)),
        ]
    )
    space = dict(search_space or SEARCH_SPACE)
    cv = _forward_folds(ht, folds)
    grid = GridSearchCV(pipeline, space, scoring="r2", cv=cv, n_jobs=1, error_score="raise")
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(Xt, yt)
        predicted = grid.best_estimator_.predict(X[is_test])
    y_test, h_test = y[is_test], hours[is_test]
    _, hourly_pred = _hourly(predicted, h_test)
    _, hourly_true = _hourly(y_test, h_test)
    tried = [
        {"params": _jsonable(p), "cv_score": float(s)}
        for p, s in zip(
            grid.cv_results_["params"], grid.cv_results_["mean_test_score"], strict=True
        )
    ]
    return TrainedModel(
        pipeline=grid.best_estimator_,
        score=float(r2_score(hourly_true, hourly_pred)) if len(hourly_true) > 1 else math.nan,
        rmse=float(np.sqrt(np.mean((hourly_true - hourly_pred) ** 2))),
        sample_score=float(r2_score(y_test, predicted)) if len(y_test) > 1 else math.nan,
        cv_score=float(grid.best_score_),
        params=_jsonable(grid.best_params_),
        search={
            "space": _jsonable(space),
            "folds": folds,
            "split": "forward in time over whole hours; last hours held out",
            "test_fraction": test_fraction,
            "max_samples": max_samples,
            "random_state": random_state,
            "solver": "lbfgs",
            "max_iter": max_iter,
            "n_iter": int(grid.best_estimator_.named_steps["mlp"].n_iter_),
            "tried": tried,
        },
        n_train_samples=len(train_idx),
        n_test_samples=int(is_test.sum()),
        n_train_hours=len(distinct) - n_test,
        n_test_hours=n_test,
        test_start=int(test_start),
        seconds=time.perf_counter() - began,
    )


# ---------------------------------------------------------------------- storage


def _libraries() -> dict[str, str]:
    import sklearn

    return {
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class StoredModel:
    id: int
    valid: bool


def store_model(
    conn: psycopg.Connection,
    *,
    network: str,
    gas: str,
    inputs: Sequence[str],
    trained: TrainedModel,
    window: tuple[datetime, datetime],
    data_span: tuple[datetime, datetime],
    devices: Sequence[int],
    reference: Reference,
    min_score: float,
    ids: RunIds | None = None,
    created_at: datetime | None = None,
    unit: str = "ug/m3",
) -> StoredModel:
    """Insert the model (valid when its held-out score reaches ``min_score``), in the
    caller's transaction."""
    blob = pickle.dumps(trained.pipeline, protocol=5)
    valid = math.isfinite(trained.score) and trained.score >= min_score
    ids = ids or RunIds()
    row = conn.execute(
        "INSERT INTO smartem_calibration.model (network, gas, created_at, inputs, unit, model,"
        " sha256, model_format, libraries, algorithm, hyper_parameters, search, score, rmse,"
        " sample_score, min_score, valid, n_train_samples, n_test_samples, n_train_hours,"
        " n_test_hours, window_start, window_end, data_start, data_end, test_start, devices,"
        " reference, reference_station, reference_sha256, dag_id, run_id, task_id, try_number)"
        " VALUES (%s, %s, COALESCE(%s, now()), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (
            network,
            gas,
            created_at,
            list(inputs),
            unit,
            blob,
            hashlib.sha256(blob).hexdigest(),
            MODEL_FORMAT,
            Jsonb(_libraries()),
            ALGORITHM,
            Jsonb(trained.params),
            Jsonb(trained.search),
            trained.score,
            trained.rmse,
            trained.sample_score,
            min_score,
            valid,
            trained.n_train_samples,
            trained.n_test_samples,
            trained.n_train_hours,
            trained.n_test_hours,
            window[0],
            window[1],
            data_span[0],
            data_span[1],
            datetime.fromtimestamp(trained.test_start, UTC),
            list(devices),
            reference.source,
            reference.station,
            reference.sha256,
            ids.dag_id,
            ids.run_id,
            ids.task_id,
            ids.try_number,
        ),
    ).fetchone()
    return StoredModel(row[0], valid)


def load_model(conn: psycopg.Connection, model_id: int) -> GasModel:
    """One stored model, its bytes checked against their hash before they are unpickled;
    ModelIntegrityError if they do not match or it was pickled by another scikit-learn."""
    row = conn.execute(
        "SELECT gas, inputs, model, sha256, model_format, libraries"
        " FROM smartem_calibration.model WHERE id = %s",
        (model_id,),
    ).fetchone()
    if row is None:
        raise KeyError(f"no calibration model {model_id}")
    gas, inputs, blob, sha, fmt, libraries = row
    blob = bytes(blob)
    if hashlib.sha256(blob).hexdigest() != sha.strip():
        raise ModelIntegrityError(f"model {model_id} ({gas}): its bytes do not match its sha256")
    if fmt != MODEL_FORMAT:
        raise ModelIntegrityError(f"model {model_id} ({gas}): unknown format {fmt!r}")
    here = _libraries()["scikit-learn"]
    if libraries.get("scikit-learn") != here:
        raise ModelIntegrityError(
            f"model {model_id} ({gas}): pickled with scikit-learn"
            f" {libraries.get('scikit-learn')}, this is {here}: retrain"
        )
    predictor = pickle.loads(blob)  # noqa: S301 - our own bytes, hash checked above
    n_in = getattr(predictor, "n_features_in_", None)
    if not hasattr(predictor, "predict") or n_in != len(inputs):
        raise ModelIntegrityError(f"model {model_id} ({gas}): not a predictor of {len(inputs)}")
    return GasModel(model_id=model_id, gas=gas, inputs=tuple(inputs), predictor=predictor)


def newest_models(
    conn: psycopg.Connection,
    network: str,
    *,
    refused: dict[int, str] | None = None,
) -> dict[str, GasModel]:
    """gas -> the newest valid model of the network that loads. A model refused on load
    (bytes corrupted, another scikit-learn) is logged, added to ``refused`` (id -> why)
    and passed over for the next newest valid one; a gas with none is simply absent."""
    rows = conn.execute(
        "SELECT id, gas FROM smartem_calibration.model WHERE network = %s AND valid"
        " ORDER BY gas, created_at DESC, id DESC",
        (network,),
    ).fetchall()
    out: dict[str, GasModel] = {}
    for model_id, gas in rows:
        if gas in out:
            continue
        try:
            out[gas] = load_model(conn, model_id)
        except ModelIntegrityError as e:
            log.error("calibration: refusing %s", e)
            if refused is not None:
                refused[model_id] = str(e)
    return out


# ---------------------------------------------------------------------- the task


def floor_hour(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, t.hour, tzinfo=UTC)


@dataclass
class CalibrationReport:
    network: str
    window: tuple[datetime, datetime]
    gases: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "window": [t.isoformat() for t in self.window],
            "gases": self.gases,
            "errors": self.errors,
        }


class CalibrationError(RuntimeError):
    """Training failed for some gas in a way that may pass on a retry."""


def _iso(span: Iterable[datetime] | None) -> list[str] | None:
    return None if span is None else [t.isoformat() for t in span]


def train_network(
    conn: psycopg.Connection,
    network: SensorNetwork,
    *,
    now: datetime | None = None,
    end: datetime | None = None,
    ids: RunIds | None = None,
    reference: Reference | None = None,
) -> CalibrationReport:
    """Train, store and audit a model per configured gas on the ``training_days`` before
    ``end`` (default: now, to the hour). Invalid models are stored too (they say why the
    old one stays); too few joined samples is an audited WARNING and no model. Each gas
    commits on its own; errors of one gas do not stop the others, and raise at the end."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError(
            "train_network commits per gas: give it a connection outside a transaction"
        )
    setup = network.calibration
    now = now or datetime.now(UTC)
    window_end = floor_hour(min(end or now, now))
    days = setup.training_days if setup else 0
    window = (window_end - timedelta(days=days), window_end)
    report = CalibrationReport(network.id, window)
    if setup is None:
        return report
    ids = ids or RunIds()
    where = {"network": network.id, "window": _iso(window), "devices": setup.devices}
    if reference is None:
        try:
            reference = load_reference(setup.reference)
        except ReferenceDataError as e:
            with conn.transaction():
                audit(conn, STEP, str(e), level="ERROR", station=network.id, details=where, ids=ids)
            raise
    where["reference"] = f"{reference.source} ({reference.station})"
    with conn.transaction():
        sets = training_sets(conn, setup.devices, setup.gases, window, reference)
    for gas in setup.gases:
        ts = sets[gas]
        span = ts.data_span()
        facts = {
            **where,
            "gas": gas,
            "samples": ts.n_samples,
            "hours": ts.n_hours,
            "hours_read": ts.hours_read,
            "data": _iso(span),
        }
        if span is None or ts.n_hours < MIN_HOURS or ts.n_samples < MIN_SAMPLES:
            msg = (
                f"{gas}: too few samples joined with the reference ({ts.n_samples} samples in"
                f" {ts.n_hours} hours; at least {MIN_SAMPLES} in {MIN_HOURS} needed):"
                " no model trained, the previous one stays in use"
            )
            with conn.transaction():
                audit(conn, STEP, msg, level="WARNING", station=network.id, details=facts, ids=ids)
            report.gases[gas] = {"status": "skipped", "reason": msg, **facts}
            continue
        try:
            trained = train(ts.X, ts.y, ts.hour_end)
            with conn.transaction():
                stored = store_model(
                    conn,
                    network=network.id,
                    gas=gas,
                    inputs=ts.inputs,
                    trained=trained,
                    window=window,
                    data_span=span,
                    devices=setup.devices,
                    reference=reference,
                    min_score=setup.min_score,
                    ids=ids,
                    created_at=now,
                )
                facts.update(model_id=stored.id, valid=stored.valid, **trained.metrics())
                if stored.valid:
                    level = "INFO"
                    msg = f"{gas}: model {stored.id} stored and in use, held-out R^2"
                else:
                    level = "WARNING"
                    msg = f"{gas}: model {stored.id} stored but not used (min {setup.min_score}),"
                    msg += " held-out R^2"
                msg += f" {trained.score:.3f}, RMSE {trained.rmse:.2f} ug/m3"
                audit(conn, STEP, msg, level=level, station=network.id, details=facts, ids=ids)
            report.gases[gas] = {"status": "valid" if stored.valid else "invalid", **facts}
        except Exception as e:  # one gas's failure is audited; the others go on
            log.exception("calibration of %s %s failed", network.id, gas)
            report.errors[gas] = f"{type(e).__name__}: {e}"
            with conn.transaction():
                audit(
                    conn,
                    STEP,
                    f"{gas}: training failed: {type(e).__name__}: {e}",
                    level="ERROR",
                    station=network.id,
                    details=facts,
                    ids=ids,
                )
    if report.errors:
        raise CalibrationError(f"{network.id}: training failed for {report.errors}")
    return report
