-- Smart Emission record chain, calibrate: the gas models (an ANN per network and gas)
-- trained weekly against a reference station (seed 001 4.3.2), and what each was trained
-- on. A schema of its own: models are neither raw nor refined data, they have their own
-- writer (the calibrate DAG) and readers (the refiner), and can be granted apart.

CREATE SCHEMA smartem_calibration;

-- One row per training run of one gas, kept whether or not it scored well enough (an
-- invalid model documents why the previous one stays in use). The refiner uses, per
-- network and gas, the newest row with valid = true whose bytes still match sha256.
CREATE TABLE smartem_calibration.model (
    id               bigserial PRIMARY KEY,
    network          text        NOT NULL,
    gas              text        NOT NULL CHECK (gas ~ '^[a-z][a-z0-9_]*$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- the raw fields the model reads, in the order of its input columns
    inputs           text[]      NOT NULL CHECK (cardinality(inputs) > 0),
    unit             text        NOT NULL,               -- of the predictions: ug/m3
    model            bytea       NOT NULL,               -- the fitted pipeline, pickled
    sha256           char(64)    NOT NULL,               -- of `model`, checked on load
    model_format     text        NOT NULL,               -- 'pickle-5'
    libraries        jsonb       NOT NULL,               -- versions it was pickled with
    algorithm        text        NOT NULL,               -- 'StandardScaler+MLPRegressor'
    hyper_parameters jsonb       NOT NULL,               -- chosen by the search
    search           jsonb       NOT NULL,               -- space, folds, scores tried
    -- held-out scores: the last ~20 % of the joined hours, never seen in training;
    -- R^2 and RMSE of the hourly means of the per-sample predictions (as refined)
    score            double precision NOT NULL,
    rmse             double precision NOT NULL,
    sample_score     double precision,                   -- R^2 per sample
    min_score        double precision NOT NULL,          -- the threshold at training
    valid            boolean     NOT NULL,
    n_train_samples  integer     NOT NULL CHECK (n_train_samples > 0),  -- after subsampling
    n_test_samples   integer     NOT NULL CHECK (n_test_samples > 0),
    n_train_hours    integer     NOT NULL CHECK (n_train_hours > 0),
    n_test_hours     integer     NOT NULL CHECK (n_test_hours > 0),
    -- the window asked for [window_start, window_end), and the hours that had both raw
    -- samples and reference values (hour ends, as the reference stamps them)
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    data_start       timestamptz NOT NULL,
    data_end         timestamptz NOT NULL,
    test_start       timestamptz NOT NULL,               -- first held-out hour end
    devices          integer[]   NOT NULL,               -- the co-located sensors
    reference        text        NOT NULL,               -- the reference source (file name)
    reference_station text       NOT NULL,
    reference_sha256 char(64)    NOT NULL,
    -- trained by: the Airflow run
    dag_id           text,
    run_id           text,
    task_id          text,
    try_number       integer,
    CHECK (window_start < window_end AND data_start <= data_end),
    CHECK (NOT valid OR score >= min_score)
);

-- "The newest valid model per network and gas": a partial index in the query's order.
CREATE INDEX model_newest_valid
    ON smartem_calibration.model (network, gas, created_at DESC, id DESC)
    WHERE valid;
