"""``stationflow demo`` / ``stop``: the whole system on this machine, safe to run again.

Starts the embedded PostgreSQL, migrates both databases, runs ``airflow standalone`` in
its own process group and records what it started in ``<home>/run/demo.json``, so
``stop`` ends exactly that and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import requests

from stationflow.airflow_env import airflow_environment
from stationflow.settings import Settings
from stationflow.state import embedded
from stationflow.state.db import state_db_url
from stationflow.state.migrate import migrate

API_TIMEOUT = 120  # s: the API server shares two busy cores with the scheduler and tasks


class DemoError(RuntimeError):
    pass


@dataclass(frozen=True)
class DemoInfo:
    url: str
    user: str
    password: str | None
    dag_ids: list[str]
    import_errors: list[str]
    log: Path
    sample_run: str | None = None  # icos_assemble run on the bundled sample, if triggered
    services: dict[str, int] | None = None  # simulated network, FTP push server: pids
    runs: dict[str, str] | None = None  # first runs of the chain DAGs: dag id -> run id
    backfills: dict[str, list[str]] | None = None  # dag id -> the backfilled runs


def _state_file(settings: Settings) -> Path:
    return settings.run_dir / "demo.json"


def _read_state(settings: Settings) -> dict:
    try:
        return json.loads(_state_file(settings).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(settings: Settings, state: dict) -> None:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    _state_file(settings).write_text(json.dumps(state, indent=2))


def _our_airflow(pid: int | None) -> psutil.Process | None:
    """The recorded ``airflow standalone`` process, if it is still that process."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        return proc if "standalone" in proc.cmdline() and proc.is_running() else None
    except psutil.Error:
        return None


def admin_password(settings: Settings, env: dict[str, str]) -> str | None:
    """The admin password Airflow's SimpleAuthManager generated for this home."""
    home = Path(env.get("AIRFLOW_HOME", settings.airflow_home))
    try:
        return json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())[
            "admin"
        ]
    except (OSError, ValueError, KeyError):
        return None


def prepare_databases(settings: Settings) -> list[str]:
    """Start/create/migrate the state database; returns the migrations applied now."""
    return [m.path.name for m in migrate(state_db_url(settings), settings.sql_dir)]


def _wait_healthy(base: str, proc: psutil.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            raise DemoError("airflow standalone exited; see its log")
        try:
            r = requests.get(f"{base}/api/v2/monitor/health", timeout=5)
            body = r.json() if r.ok else {}
            if r.ok and body.get("scheduler", {}).get("status") == "healthy":
                return
            last = f"HTTP {r.status_code} {body}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(2)
    raise DemoError(f"Airflow was not healthy within {timeout:.0f} s (last: {last})")


def _api_token(base: str, password: str) -> str:
    r = requests.post(
        f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=API_TIMEOUT
    )
    r.raise_for_status()
    return r.json()["access_token"]


def wait_for_dags(
    base: str, password: str, expected: set[str], timeout: float
) -> tuple[list[str], list[str]]:
    """Poll the REST API until every expected DAG is parsed (or an import error shows)."""
    headers = {"Authorization": f"Bearer {_api_token(base, password)}"}
    deadline = time.monotonic() + timeout
    while True:
        dags = requests.get(f"{base}/api/v2/dags?limit=1000", headers=headers, timeout=API_TIMEOUT)
        errs = requests.get(
            f"{base}/api/v2/importErrors?limit=1000", headers=headers, timeout=API_TIMEOUT
        )
        dags.raise_for_status()
        errs.raise_for_status()
        ids = sorted(d["dag_id"] for d in dags.json()["dags"])
        errors = [f"{e['filename']}: {e['stack_trace']}" for e in errs.json()["import_errors"]]
        if errors or expected <= set(ids) or time.monotonic() > deadline:
            return ids, errors
        time.sleep(3)


SAMPLE = Path("tests/fixtures/loggers/CampbellScientific_HC2S3_20161201-000000.dat")


def trigger_sample_assembly(base: str, password: str, settings: Settings) -> str | None:
    """Unpause icos_assemble and run it once on the real LoggerNet sample: a first file in
    the UI, the ledger and the audit log. Returns the run id (None without the sample)."""
    sample = settings.root / SAMPLE
    if not sample.exists():
        return None
    headers = {"Authorization": f"Bearer {_api_token(base, password)}"}
    dag = f"{base}/api/v2/dags/icos_assemble"
    requests.patch(
        dag, json={"is_paused": False}, headers=headers, timeout=API_TIMEOUT
    ).raise_for_status()
    conf = {
        "station": "FR-Lam",
        "file_type": "BM",
        "logger": 1,
        "file": 1,
        "date": "2016-12-02",
        "fragments": str(sample),
        "output_dir": "",
    }
    r = requests.post(
        f"{dag}/dagRuns",
        json={"logical_date": None, "conf": conf},
        headers=headers,
        timeout=API_TIMEOUT,
    )
    r.raise_for_status()
    return r.json()["dag_run_id"]


COLLECTION_DAGS = ("icos_poll", "icos_collect")
HARVEST_DAG = "smartem_harvest"
# refine runs on the harvest's Asset events; last values every 10 minutes; calibrate weekly
RECORD_DAGS = ("smartem_refine", "smartem_publish", "smartem_last", "smartem_calibrate")


def _trigger(base: str, headers: dict, dag_id: str, logical_date: str | None = None) -> str:
    r = requests.post(
        f"{base}/api/v2/dags/{dag_id}/dagRuns",
        json={"logical_date": logical_date},
        headers=headers,
        timeout=API_TIMEOUT,
    )
    r.raise_for_status()
    return r.json()["dag_run_id"]


def backfill(base: str, headers: dict, dag_id: str, start: datetime, end: datetime) -> list[str]:
    """An Airflow backfill of ``dag_id`` for the runs whose logical date is in [start, end]
    (what ``airflow backfill create`` does); returns those runs' ids, oldest first (runs
    the scheduler made already are reused, not repeated)."""
    r = requests.post(
        f"{base}/api/v2/backfills",
        json={
            "dag_id": dag_id,
            "from_date": start.isoformat(),
            "to_date": end.isoformat(),
            "reprocess_behavior": "none",
            "max_active_runs": 2,
        },
        headers=headers,
        timeout=API_TIMEOUT,
    )
    r.raise_for_status()
    runs = requests.get(
        f"{base}/api/v2/dags/{dag_id}/dagRuns",
        params={
            "logical_date_gte": start.isoformat(),
            "logical_date_lte": end.isoformat(),
            "order_by": "logical_date",
        },
        headers=headers,
        timeout=API_TIMEOUT,
    )
    runs.raise_for_status()
    return [run["dag_run_id"] for run in runs.json()["dag_runs"]]


BACKFILL_DAYS = 2  # ETC days of every station's daily chain (the simulators hold them)
BACKFILL_HALF_HOURS = 4  # of the half-hourly chains: each run is one EC/PHEN half-hour


def start_chains(base: str, password: str, settings: Settings) -> tuple[dict, dict]:
    """Unpause the chains' DAGs (the simulated network is up), collect and harvest once now
    and backfill every station's last two ETC days (and last half-hours): returns
    ({dag id: run id}, {dag id: backfilled run ids})."""
    from stationflow.config import load_inventory

    inv = load_inventory(settings.config_path)
    headers = {"Authorization": f"Bearer {_api_token(base, password)}"}

    def unpause(dag_ids: list[str]) -> None:
        for dag_id in dag_ids:
            requests.patch(
                f"{base}/api/v2/dags/{dag_id}",
                json={"is_paused": False},
                headers=headers,
                timeout=API_TIMEOUT,
            ).raise_for_status()

    # icos_reconcile stays paused: it would report the days before the demo existed
    unpause([*COLLECTION_DAGS, HARVEST_DAG, *(RECORD_DAGS if inv.sensor_networks else ())])
    runs = {"icos_collect": _trigger(base, headers, "icos_collect")}
    if inv.sensor_networks:  # the record chain: the last 48 hours of every device at once
        runs[HARVEST_DAG] = _trigger(base, headers, HARVEST_DAG)
        runs["smartem_last"] = _trigger(base, headers, "smartem_last")
    # The station chains are backfilled while still paused, then unpaused: the scheduler
    # then finds the latest interval's run made (creating it at the same moment as the
    # backfill does is a race that stops Airflow 3.3's scheduler on a unique violation).
    backfills, chains = {}, []
    now = datetime.now(UTC)
    for st in inv.stations:
        # a daily run's logical date is the start of the ETC day it assembles (+ daily_at)
        midnight = now.astimezone(st.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        first, last = midnight - timedelta(days=BACKFILL_DAYS), midnight - timedelta(minutes=1)
        dag_id = f"icos_daily_{st.id}"
        backfills[dag_id] = backfill(base, headers, dag_id, first, last)
        chains.append(dag_id)
        if any(f.half_hourly for f in st.files):
            dag_id = f"icos_halfhourly_{st.id}"
            since = now - timedelta(minutes=30 * (BACKFILL_HALF_HOURS + 1))
            backfills[dag_id] = backfill(base, headers, dag_id, since, now - timedelta(hours=1))
            chains.append(dag_id)
    unpause(chains)
    return runs, backfills


def expected_dag_ids(settings: Settings) -> set[str]:
    """DAG ids declared in dags/*.py, read as text so the demo needs no DagBag of its own."""
    import re

    pattern = re.compile(r"""dag_id\s*=\s*["']([\w.-]+)["']""")
    return {
        m.group(1) for f in settings.dags_dir.glob("*.py") for m in pattern.finditer(f.read_text())
    }


def start(settings: Settings, *, timeout: float = 300) -> DemoInfo:
    state = _read_state(settings)
    if settings.uses_embedded_db:
        info, started_now = embedded.ensure_running(settings.pgdata)
        if started_now:  # recorded, so `stop` ends it; a server started otherwise is left alone
            state["postgres_pid"] = info.pid
            _write_state(settings, state)
    prepare_databases(settings)
    env = airflow_environment(settings)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / "airflow-standalone.log"

    proc = _our_airflow(state.get("airflow_pid"))
    started_airflow = proc is None
    if proc is None:
        subprocess.run(
            ["airflow", "db", "migrate"], env=env, check=True, capture_output=True, text=True
        )
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                ["airflow", "standalone"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop ends all its children
                cwd=settings.root,
            )
        state["airflow_pid"] = popen.pid
        _write_state(settings, state)
        proc = psutil.Process(popen.pid)

    network = start_network(settings)
    base = env["AIRFLOW__API__BASE_URL"]
    _wait_healthy(base, proc, timeout)
    password = admin_password(settings, env)
    ids, errors, sample_run, runs, backfills = [], [], None, {}, {}
    if password:
        ids, errors = wait_for_dags(base, password, expected_dag_ids(settings), timeout=timeout)
        if started_airflow and not errors and "icos_assemble" in ids:
            sample_run = trigger_sample_assembly(base, password, settings)
        if started_airflow and not errors and set(COLLECTION_DAGS) <= set(ids):
            runs, backfills = start_chains(base, password, settings)
    return DemoInfo(
        base, "admin", password, ids, errors, log_path, sample_run, network, runs, backfills
    )


def start_network(settings: Settings) -> dict[str, int]:
    """Connections and pools, then the simulated network and the FTP push server."""
    from stationflow import services

    env = airflow_environment(settings)
    done = subprocess.run(
        ["stationflow", "sim", "setup"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise DemoError(f"sim setup failed: {done.stderr.strip()[-2000:]}")
    return {name: services.start(settings, name, env)[0] for name in ("sim", "ftp-server")}


def stop_network(settings: Settings) -> list[str]:
    from stationflow import services

    stopped = []
    for name in ("ftp-server", "sim"):
        pid = services.stop(settings, name)
        if pid:
            stopped.append(f"{name} (pid {pid})")
    return stopped


def _terminate_group(proc: psutil.Process, grace: float = 30) -> None:
    pgid = os.getpgid(proc.pid)
    members = [proc, *proc.children(recursive=True)]
    os.killpg(pgid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=grace)
    if alive:
        os.killpg(pgid, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=30)


def stop(settings: Settings) -> list[str]:
    """Stop what ``start`` recorded (by pid); returns what was stopped."""
    state = _read_state(settings)
    stopped = stop_network(settings)
    proc = _our_airflow(state.pop("airflow_pid", None))
    if proc is not None:
        _terminate_group(proc)
        stopped.append(f"airflow standalone (pid {proc.pid})")
    pg_pid = state.pop("postgres_pid", None)
    if pg_pid and embedded.stop(settings.pgdata, expected_pid=pg_pid):
        stopped.append(f"embedded PostgreSQL (pid {pg_pid})")
    _write_state(settings, state)
    return stopped


def publish_targets(settings: Settings) -> dict[str, str]:
    """Where the demo's publish targets listen: {connection id: service URL}."""
    from stationflow.config import load_inventory
    from stationflow.sim.network import HOST, plan

    inv = load_inventory(settings.config_path)
    eps = plan(inv).endpoints
    return {
        t.connection_id: f"http://{HOST}:{eps[t.connection_id].port}{eps[t.connection_id].extra['path']}"
        for net in inv.sensor_networks
        for t in net.publish
    }
