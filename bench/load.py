"""Load test of issue 9: N stations x D days of daily files through the DAGs on this machine.

Every station has one Campbell logger (LoggerNet folder, a 1-minute table, written by the
LoggerNet simulator for the last D local days) and one daily BM file; every station uploads
to the ICOS ETC upload simulator with its own account. Measured in the same run:

(a) direct: the package functions the daily DAG's tasks call (collect -> assemble ->
    upload -> verify), station after station, day after day, in this process;
(b) through Airflow: ``airflow standalone`` (LocalExecutor, the real scheduler, DAG
    processor and API server) runs ``icos_daily_<station>`` backfills of the same D days
    for every station at once, on a fresh ledger and a fresh portal.

Airflow overhead = (b) - (a): scheduling, task processes, the execution API and XComs. Both
are checked, not only timed: every station-day accepted exactly once by the portal, with a
receipt in the ledger. Prints figures and the ratio (b)/(a); asserts no time.

    .venv/bin/python bench/load.py                        # 100 stations x 2 days
    .venv/bin/python bench/load.py --stations 5 --days 2  # what CI runs (tests/reliability)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from stationflow.sim.icos_etc import IcosEtcSim  # noqa: E402
from stationflow.sim.loggernet import Faults, LoggerNetSim, TableSpec  # noqa: E402

UTC_OFFSET = 1  # every station in Central European standard time
TABLE = "Meteo_1min"


@dataclass
class Result:
    stations: int
    days: int
    files: int
    direct_s: float
    airflow_s: float
    task_instances: int
    task_s: float  # sum of the task instances' own durations
    accepted_direct: int
    accepted_airflow: int
    duplicates: int

    @property
    def overhead_s(self) -> float:
        return self.airflow_s - self.direct_s

    @property
    def ratio(self) -> float:
        return self.airflow_s / self.direct_s if self.direct_s else float("inf")


def station_ids(n: int) -> list[str]:
    if n > 26 * 36 * 36:
        raise ValueError("too many stations")
    alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [f"LT-{chr(65 + k // 1296)}{alnum[k // 36 % 36]}{alnum[k % 36]}" for k in range(n)]


def write_inventory(path: Path, ids: list[str]) -> None:
    stations = [
        {
            "id": sid,
            "utc_offset_hours": UTC_OFFSET,
            "upload": {"connection_id": f"icos_etc_{sid.lower().replace('-', '_')}"},
            "loggers": [
                {
                    "id": "cr1000",
                    "kind": "campbell",
                    "model": "CR1000X",
                    "collect": {
                        "method": "loggernet",
                        "folder": f"loggernet/{sid}",
                        "tables": [TABLE],
                        "settle_seconds": 0,
                    },
                }
            ],
            "files": [
                {
                    "type": "BM",
                    "logger": "cr1000",
                    "table": TABLE,
                    "logger_number": 1,
                    "file_number": 1,
                    "interval": "1min",
                }
            ],
        }
        for sid in ids
    ]
    path.write_text(yaml.safe_dump({"version": 1, "stations": stations}, sort_keys=False))


def write_logger_files(home: Path, ids: list[str], days: int, now: datetime) -> None:
    local_now = (now + timedelta(hours=UTC_OFFSET)).replace(tzinfo=None)
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    for sid in ids:
        sim = LoggerNetSim(
            home / "loggernet" / sid,
            station=sid,
            tables=[TableSpec(TABLE, 60_000)],
            start=midnight - timedelta(days=days, minutes=10),
            # fragments, skipped scans, late rows and NANs as a station has them; no program
            # change, which would make every day after it a second stream
            faults=Faults(program_change_at=0),
        )
        sim.write_until(midnight + timedelta(minutes=5))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ledger_counts(url: str) -> tuple[int, int]:
    """(station-days accepted with a receipt, byte-identical files accepted twice)."""
    with psycopg.connect(url) as c:
        accepted = c.execute(
            "SELECT count(DISTINCT (o.station, o.period_start)) FROM stationflow.output_file o"
            " JOIN stationflow.upload u ON u.output_file_id = o.id"
            " WHERE u.outcome = 'accepted' AND u.receipt IS NOT NULL"
        ).fetchone()[0]
        twice = c.execute(
            "SELECT count(*) FROM (SELECT o.sha256 FROM stationflow.upload u"
            " JOIN stationflow.output_file o ON o.id = u.output_file_id"
            " WHERE u.outcome = 'accepted' GROUP BY o.sha256 HAVING count(*) > 1) t"
        ).fetchone()[0]
    return accepted, twice


def reset(url: str, home: Path) -> None:
    with psycopg.connect(url) as c:
        c.execute(
            "TRUNCATE stationflow.upload, stationflow.output_fragment, stationflow.output_file,"
            " stationflow.source_file, stationflow.remote_file, stationflow.fragment,"
            " stationflow.audit_log"
        )
    for sub in ("landing", "etc", "quarantine"):
        shutil.rmtree(home / sub, ignore_errors=True)


def day_contexts(days: int, now: datetime) -> list[dict]:
    """The data intervals the daily DAG's runs of the last ``days`` ETC days have."""
    tz_shift = timedelta(hours=UTC_OFFSET)
    local_midnight = (now + tz_shift).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    for k in range(days, 0, -1):
        start = local_midnight - timedelta(days=k) - tz_shift + timedelta(minutes=30)
        out.append({"data_interval_start": start, "data_interval_end": start + timedelta(days=1)})
    return out


def run_direct(ids: list[str], days: int, now: datetime) -> float:
    from stationflow.collect.tasks import collect_station
    from stationflow.config import load_inventory
    from stationflow.publish.tasks import upload_outputs, verify_receipts
    from stationflow.refine.daily import run_assemble

    inv = load_inventory()
    t0 = time.perf_counter()
    for ctx in day_contexts(days, now):
        for sid in ids:
            collect_station(sid, ctx, inv)
            out = run_assemble(sid, "BM_L01_F01", ctx)
            sent = upload_outputs(sid, out, ctx, inv)
            verify_receipts(sid, sent, ctx)
    return time.perf_counter() - t0


def _api(base: str) -> dict:
    token = requests.get(f"{base}/auth/token", timeout=30).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def paged(base: str, headers: dict, path: str, key: str, **params) -> list[dict]:
    """Every item of a list endpoint (the API gives at most 100 per page)."""
    items: list[dict] = []
    while True:
        got = requests.get(
            f"{base}{path}",
            params={**params, "limit": 100, "offset": len(items)},
            headers=headers,
            timeout=60,
        ).json()
        items += got[key]
        if not got[key] or len(items) >= got["total_entries"]:
            return items


def run_airflow(env: dict, ids: list[str], days: int, now: datetime, log: Path) -> tuple:
    """Backfill every station's daily DAG; (wall s, task instances, their summed s)."""
    from stationflow.demo import backfill

    base = env["AIRFLOW__API__BASE_URL"]
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(["stationflow", "pools"], env=env, check=True, capture_output=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["airflow", "standalone"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        dag_ids = {f"icos_daily_{sid}" for sid in ids}
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited; see {log}")
            try:
                h = _api(base)
                parsed = paged(base, h, "/api/v2/dags", "dags", dag_id_pattern="icos_daily_")
                if dag_ids <= {d["dag_id"] for d in parsed}:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the DAGs were not parsed within 300 s; see {log}")
            time.sleep(2)
        contexts = day_contexts(days, now)
        first = contexts[0]["data_interval_start"] - timedelta(minutes=1)
        last = contexts[-1]["data_interval_start"] + timedelta(minutes=1)
        t0 = time.perf_counter()
        for dag_id in sorted(dag_ids):  # made while paused: see demo.start_chains
            backfill(base, h, dag_id, first, last)
        for dag_id in sorted(dag_ids):
            requests.patch(
                f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=h, timeout=60
            ).raise_for_status()
        while True:  # until no run is queued or running
            time.sleep(3)
            h = _api(base)
            active = requests.get(
                f"{base}/api/v2/dags/~/dagRuns",
                params={"state": ["queued", "running"], "limit": 1},
                headers=h,
                timeout=60,
            ).json()["total_entries"]
            if not active:
                break
        wall = time.perf_counter() - t0
        runs = paged(base, h, "/api/v2/dags/~/dagRuns", "dag_runs")
        failed = [(r["dag_id"], r["dag_run_id"]) for r in runs if r["state"] != "success"]
        if failed or len(runs) != len(ids) * days:
            raise RuntimeError(f"{len(runs)} runs, {len(failed)} not successful: {failed[:3]}")
        tis = paged(base, h, "/api/v2/dags/~/dagRuns/~/taskInstances", "task_instances")
        return wall, len(tis), sum(t["duration"] or 0 for t in tis)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> Result:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stations", type=int, default=100)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--parallelism", type=int, default=4, help="Airflow task slots")
    ap.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    # SIGTERM (a test's timeout, Ctrl-C's cousin): unwind, so Airflow and PostgreSQL stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = args.workdir or Path(tempfile.mkdtemp(prefix="sf-load-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    ids = station_ids(args.stations)
    now = datetime.now(UTC)
    os.environ.update(
        STATIONFLOW_HOME=str(home),
        STATIONFLOW_CONFIG=str(work / "stations.yaml"),
        STATIONFLOW_AIRFLOW_PORT=str(free_port()),
    )
    os.environ.pop("STATIONFLOW_DB_URL", None)  # the embedded server in the work home
    for var in [v for v in os.environ if v.startswith("AIRFLOW")]:
        del os.environ[var]  # nothing of a caller's Airflow (a test session's) leaks in
    write_inventory(work / "stations.yaml", ids)
    write_logger_files(home, ids, args.days, now)

    from stationflow.airflow_env import airflow_environment
    from stationflow.demo import prepare_databases
    from stationflow.settings import load_settings
    from stationflow.state import embedded
    from stationflow.state.db import state_db_url

    settings = load_settings()
    embedded.ensure_running(settings.pgdata)
    accounts = {sid: secrets.token_urlsafe(12) for sid in ids}
    portal = IcosEtcSim(accounts, port=0).start()
    try:
        prepare_databases(settings)
        url = state_db_url(settings)
        for sid, password in accounts.items():
            conn_id = f"icos_etc_{sid.lower().replace('-', '_')}"
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {
                    "conn_type": "http",
                    "host": "127.0.0.1",
                    "port": portal.port,
                    "schema": "http",
                    "login": sid,
                    "password": password,
                }
            )
        env = airflow_environment(settings)
        env.update(
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__PARALLELISM=str(args.parallelism),
            AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG="2",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="600",
        )
        os.environ.update(env)  # this process sees the same Airflow and state database
        print(f"== {args.stations} stations x {args.days} days, work dir {work}", flush=True)
        direct = run_direct(ids, args.days, now)
        accepted_direct, dup_direct = ledger_counts(url)
        print(f"direct:   {direct:8.1f} s  {accepted_direct} station-days accepted", flush=True)
        reset(url, home)
        port = portal.port
        portal.stop()  # a fresh portal on the same port: it has seen nothing
        portal = IcosEtcSim(accounts, port=port).start()
        wall, tis, task_s = run_airflow(env, ids, args.days, now, work / "airflow.log")
        accepted_airflow, dup_airflow = ledger_counts(url)
        result = Result(
            stations=args.stations,
            days=args.days,
            files=args.stations * args.days,
            direct_s=direct,
            airflow_s=wall,
            task_instances=tis,
            task_s=task_s,
            accepted_direct=accepted_direct,
            accepted_airflow=accepted_airflow,
            duplicates=dup_direct + dup_airflow,
        )
    finally:
        portal.stop()
        embedded.stop(settings.pgdata)
    print(
        f"airflow:  {wall:8.1f} s  {accepted_airflow} station-days accepted,"
        f" {tis} task instances ({task_s:.1f} s inside tasks, {args.parallelism} slots)"
    )
    print(
        f"overhead: {result.overhead_s:8.1f} s  = {result.overhead_s / tis:.2f} s per task"
        f" instance; airflow/direct = {result.ratio:.1f}x; duplicates {result.duplicates}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({**asdict(result), "overhead_s": result.overhead_s, "ratio": result.ratio})
        )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
