"""The load test (bench/load.py): 100 stations x 2 days of daily files, first through the
package functions, then through Airflow's scheduler (``airflow standalone``, one backfill
per station's DAG; about 9 minutes here). Checked, not timed: every station-day accepted
exactly once either way; the wall times, the Airflow overhead and the ratio are printed at
the end of the run. ``STATIONFLOW_LOAD_STATIONS=10`` for a quick local run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from stationflow.settings import PROJECT_ROOT

pytestmark = pytest.mark.airflow
STATIONS = int(os.environ.get("STATIONFLOW_LOAD_STATIONS", "100"))
DAYS = 2
TASKS_PER_RUN = 4  # collect, assemble, upload, verify


@pytest.mark.timeout(2400)
def test_n_stations_two_days_through_the_dags(tmp_path, figures):
    out = tmp_path / "load.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "STATIONFLOW_"))}
    bench = subprocess.Popen(
        [
            sys.executable,
            str(PROJECT_ROOT / "bench" / "load.py"),
            *("--stations", str(STATIONS), "--days", str(DAYS), "--json", str(out)),
        ],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=2100)
    finally:
        if bench.poll() is None:  # SIGTERM: the bench stops its Airflow and PostgreSQL
            os.killpg(bench.pid, signal.SIGTERM)
            try:
                bench.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(bench.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(bench.args, bench.returncode, stdout, stderr)
    summary = [
        ln
        for ln in done.stdout.splitlines()
        if ln.startswith(("==", "direct", "airflow", "overhead"))
    ]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures.extend(summary)
    r = json.loads(out.read_text())
    files = STATIONS * DAYS
    assert (r["accepted_direct"], r["accepted_airflow"], r["duplicates"]) == (files, files, 0), r
    assert r["task_instances"] == files * TASKS_PER_RUN, r
