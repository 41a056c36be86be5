"""`stationflow demo` on a fresh home, as a newcomer runs it: up, listed, again, stopped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import requests

from tests.alert_sinks import free_port
from tests.sim_network import free_base

pytestmark = pytest.mark.airflow

STATIONFLOW = str(Path(sys.executable).parent / "stationflow")


@pytest.fixture
def demo_env(tmp_path):
    """A user's environment: no overrides, so both databases are embedded in the home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "STATIONFLOW_"))}
    env.update(
        STATIONFLOW_HOME=str(tmp_path),
        STATIONFLOW_AIRFLOW_PORT=str(free_port()),
        STATIONFLOW_SIM_PORT_BASE=str(free_base()),  # beside a user's own demo, if any
    )
    yield env
    subprocess.run([STATIONFLOW, "stop"], env=env, capture_output=True, timeout=120)


def sf(env, *args, timeout=420):
    return subprocess.run(
        [STATIONFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def final_state(port: str, headers: dict, dag_id: str, run_id: str, timeout: float = 300) -> str:
    """The run's state once it left queued/running (or when the time is up)."""
    url = f"http://localhost:{port}/api/v2/dags/{dag_id}/dagRuns/{run_id}"
    deadline = time.monotonic() + timeout
    state = "queued"
    while state in ("queued", "running") and time.monotonic() < deadline:
        # the API server shares two busy cores with the scheduler and the tasks
        with contextlib.suppress(requests.Timeout):
            state = requests.get(url, headers=headers, timeout=30).json()["state"]
        time.sleep(3)
    return state


def test_demo_up_again_and_stop(demo_env, tmp_path):
    port = demo_env["STATIONFLOW_AIRFLOW_PORT"]
    first = sf(demo_env, "demo")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Airflow UI:  http://localhost:{port}" in first.stdout
    assert "stationflow_inventory" in first.stdout
    password = next(ln.split()[-1] for ln in first.stdout.splitlines() if ln.startswith("password"))

    health = requests.get(f"http://localhost:{port}/api/v2/monitor/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["metadatabase"]["status"] == "healthy"
    token = requests.post(
        f"http://localhost:{port}/auth/token",
        json={"username": "admin", "password": password},
        timeout=10,
    ).json()["access_token"]
    errors = requests.get(
        f"http://localhost:{port}/api/v2/importErrors",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert errors["total_entries"] == 0

    # the first run the demo triggers: the real LoggerNet sample through the scheduler
    run_id = next(ln.split()[3] for ln in first.stdout.splitlines() if ln.startswith("first run"))
    headers = {"Authorization": f"Bearer {token}"}
    assert final_state(port, headers, "icos_assemble", run_id) == "success"
    assert (tmp_path / "etc" / "FR-Lam" / "FR-Lam_BM_20161202_L01_F01.dat").exists()

    # collection: the simulated network is up and the first icos_collect run lands files
    run_id = re.search(r"^collection: .*first run (\S+?)\)", first.stdout, re.M).group(1)
    assert final_state(port, headers, "icos_collect", run_id) == "success"
    landed = {p.parent.name for p in (tmp_path / "landing").rglob("*") if p.is_file()}
    assert {"Meteo_1min", "Meteo_30s", "ghg"} <= landed, landed

    # the record chain's harvest: Whale API and influxd hours in the raw table
    run_id = re.search(r"^harvest: .*first run (\S+?)\)", first.stdout, re.M).group(1)
    assert final_state(port, headers, "smartem_harvest", run_id, timeout=420) == "success"
    with psycopg.connect(sf(demo_env, "db", "url").stdout.strip()) as c:
        kinds = dict(
            c.execute(
                "SELECT device_type, count(*) FROM smartem_raw.timeseries GROUP BY device_type"
            ).fetchall()
        )
    assert kinds.get("jose", 0) >= 2 * 47 and kinds.get("ase", 0) >= 2 * 47, kinds
    # ... refined by smartem_refine (triggered by the raw Asset) and the last values
    deadline = time.monotonic() + 420
    while True:
        with psycopg.connect(sf(demo_env, "db", "url").stdout.strip()) as c:
            refined, last = c.execute(
                "SELECT (SELECT count(DISTINCT (device_id, day, hour))"
                " FROM smartem_refined.timeseries), (SELECT count(*)"
                " FROM smartem_rt.v_last_measurements_temperature)"
            ).fetchone()
        if (refined >= sum(kinds.values()) and last == 4) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert refined >= sum(kinds.values()) and last == 4, (refined, last)
    # ... published by smartem_publish (on the refined Asset) to the real STA server and the
    # SOS-T simulator, exactly once each
    sta_url = re.search(r"^publish: .* sta_default (\S+)", first.stdout, re.M).group(1)
    deadline = time.monotonic() + 420
    while True:
        with psycopg.connect(sf(demo_env, "db", "url").stdout.strip()) as c:
            values = c.execute("SELECT count(*) FROM smartem_refined.timeseries").fetchone()[0]
            published = dict(
                c.execute(
                    "SELECT target, count(*) FROM smartem_publish.observation"
                    " WHERE state = 'published' GROUP BY target"
                ).fetchall()
            )
        done = [published.get(t, 0) for t in ("sta:sta_default", "sos:sos_default")]
        if min(done) >= values or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert min(done) >= values, (values, published)
    count = requests.get(
        f"{sta_url}/Observations", params={"$count": "true", "$top": "1"}, timeout=30
    ).json()["@iot.count"]
    assert count == published["sta:sta_default"], (count, published)

    # the backfill of the last two ETC days of both stations: every daily file accepted
    backfilled = {
        m.group(1): m.group(2).split()
        for m in re.finditer(r"^backfill:\s+(\S+) \d+ [\w-]+ ?\w*: (.*)$", first.stdout, re.M)
    }
    daily = {k: v for k, v in backfilled.items() if k.startswith("icos_daily_")}
    assert set(daily) == {"icos_daily_FR-Lam", "icos_daily_FR-Aur"}, first.stdout
    assert all(len(v) == 2 for v in daily.values()), daily
    for dag_id, run_ids in backfilled.items():
        for run_id in run_ids:
            assert final_state(port, headers, dag_id, run_id, timeout=600) == "success", run_id
    url = sf(demo_env, "db", "url").stdout.strip()
    with psycopg.connect(url) as c:
        accepted = c.execute(
            "SELECT o.station, o.file_type, count(DISTINCT o.period_start)"
            " FROM stationflow.output_file o JOIN stationflow.upload u"
            " ON u.output_file_id = o.id WHERE u.outcome = 'accepted' AND u.receipt IS NOT NULL"
            " AND o.file_type IN ('BM', 'ST') GROUP BY 1, 2"
        ).fetchall()
    assert {(s, t): n for s, t, n in accepted} == {
        (s, t): 2 for s in ("FR-Lam", "FR-Aur") for t in ("BM", "ST")
    }, accepted
    # ... and the completeness view shows those days uploaded (an Airflow login needed)
    view = f"http://localhost:{port}/stationflow/api/completeness"
    assert requests.get(view, timeout=30).status_code == 401
    assert f"completeness: http://localhost:{port}/plugin/completeness" in first.stdout
    body = requests.get(view, params={"days": 3}, headers=headers, timeout=60).json()
    for row in body["files"]:
        if row["stream"].startswith(("BM", "ST")):
            # the local day before yesterday and yesterday (today's column is the last)
            states = [d["state"] for d in row["days"][-3:-1]]
            assert states == ["uploaded", "uploaded"], row
    (net,) = body["networks"]
    assert sum(d["harvested"] for d in net["days"]) >= sum(kinds.values()) - 8, net

    # replay yesterday with a real backfill: identical files, nothing uploaded twice
    def upload_rows() -> tuple[int, int]:
        """(upload attempts, upload audit rows): a replay audits its skips, sends nothing."""
        with psycopg.connect(url) as c:
            return c.execute(
                "SELECT (SELECT count(*) FROM stationflow.upload), (SELECT count(*) FROM"
                " stationflow.audit_log WHERE step = 'publish.upload' AND station = 'FR-Lam')"
            ).fetchone()

    before = upload_rows()
    api = f"http://localhost:{port}/api/v2/dags/icos_daily_FR-Lam/dagRuns"
    day_run = requests.get(f"{api}/{daily['icos_daily_FR-Lam'][-1]}", headers=headers, timeout=30)
    start = day_run.json()["data_interval_start"]
    backfills = f"http://localhost:{port}/api/v2/backfills"

    def fr_lam_backfills() -> list[dict]:
        return requests.get(
            backfills, params={"dag_id": "icos_daily_FR-Lam"}, headers=headers, timeout=60
        ).json()["backfills"]

    deadline = time.monotonic() + 120  # the demo's own backfill is marked complete first
    while any(not b["completed_at"] for b in fr_lam_backfills()) and time.monotonic() < deadline:
        time.sleep(3)
    known = {b["id"] for b in fr_lam_backfills()}
    backfill = sf(
        demo_env,
        *("airflow", "backfill", "create", "--dag-id", "icos_daily_FR-Lam"),
        *("--from-date", start, "--to-date", start, "--reprocess-behavior", "completed"),
    )
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    deadline = time.monotonic() + 420
    replay = []
    while time.monotonic() < deadline:  # until the new backfill is complete
        new = [b for b in fr_lam_backfills() if b["id"] not in known]
        if new and new[0]["completed_at"]:
            runs = requests.get(api, headers=headers, timeout=30).json()["dag_runs"]
            replay = [r for r in runs if r["data_interval_start"] == start]
            break
        time.sleep(3)
    assert new and [r["state"] for r in replay] == ["success"], (new, replay)
    after = upload_rows()
    assert after[1] > before[1], (before, after)  # the replay audited its upload step
    with psycopg.connect(url) as c:
        # nothing accepted twice: a replay sends only a day whose content changed (a
        # fragment collected after the first run makes a new version, rightly uploaded)
        twice = c.execute(
            "SELECT o.sha256, count(*) FROM stationflow.upload u JOIN stationflow.output_file"
            " o ON o.id = u.output_file_id WHERE u.outcome = 'accepted'"
            " GROUP BY o.sha256 HAVING count(*) > 1"
        ).fetchall()
    assert twice == [], (before, after, twice)
    services = {
        ln.split(":")[0]: int(ln.split()[2].rstrip(","))
        for ln in first.stdout.splitlines()
        if ln.startswith(("sim:", "ftp-server:"))
    }
    assert set(services) == {"sim", "ftp-server"}

    state = json.loads((tmp_path / "run" / "demo.json").read_text())
    airflow_pid, pg_pid = state["airflow_pid"], state["postgres_pid"]
    assert not list((tmp_path / "airflow").glob("*.db"))  # no SQLite file anywhere

    again = sf(demo_env, "demo")  # safe to run again: same processes, same answer
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run" / "demo.json").read_text())["airflow_pid"] == airflow_pid

    children = psutil.Process(airflow_pid).children(recursive=True)
    stopped = sf(demo_env, "stop", timeout=120)
    assert stopped.returncode == 0
    assert f"stopped airflow standalone (pid {airflow_pid})" in stopped.stdout
    assert f"stopped embedded PostgreSQL (pid {pg_pid})" in stopped.stdout
    assert f"stopped sim (pid {services['sim']})" in stopped.stdout
    assert f"stopped ftp-server (pid {services['ftp-server']})" in stopped.stdout
    assert not any(psutil.pid_exists(pid) for pid in services.values())
    assert not psutil.pid_exists(airflow_pid) or psutil.Process(airflow_pid).status() == "zombie"
    assert not [c for c in children if c.is_running() and c.status() != "zombie"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://localhost:{port}/api/v2/monitor/health", timeout=5)
