"""Shared set-up of the ICOS file-chain fault tests: a station's day collected into the
landing area, assembled by the scheduled path, uploaded to the simulated portal, and how to
read back what the portal and the ledger hold.

Run as a module (``python -m tests.reliability.icos_setup upload-dag OID DATE``) it is the
task process of the SIGKILL fault: a DAG with the real ``upload`` task of
``dags/icos_daily.py``, run with ``dag.test()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from stationflow.collect.landing import land
from stationflow.config import Inventory, load_inventory
from stationflow.formats.timestamps import format_toa5, to_ns
from stationflow.publish.icos_etc import IN_FLIGHT
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.icos_etc import IcosEtcSim

INV = load_inventory(PROJECT_ROOT / "config" / "stations.yaml")
LAM = INV.station("FR-Lam")
DAY = date(2026, 11, 19)  # the ETC day the chain works on
TODAY = DAY + timedelta(days=1)  # the portal's date
PASSWORD = "Lam-reliab1lity-Pw"
BM_SID = "BM_L01_F01"
UPLOAD_DAG_ID = "reliability_icos_upload"


def fast_inventory(inv: Inventory, station_id: str, logger_id: str, **collect) -> Inventory:
    """``inv`` with one logger's collect settings changed (short timeouts for tests)."""
    st = inv.station(station_id)
    lg = st.logger(logger_id)
    lg = lg.model_copy(update={"collect": lg.collect.model_copy(update=collect)})
    st = st.model_copy(update={"loggers": [lg if x.id == logger_id else x for x in st.loggers]})
    return inv.model_copy(
        update={"stations": [st if s.id == station_id else s for s in inv.stations]}
    )


# ------------------------------------------------------------------ the input


def meteo_toa5(day: date, utc_offset_hours: float = 1) -> tuple[bytes, list[str]]:
    """A CR3000 Meteo_1min file of the whole ETC day ``day`` (00:01 .. 24:00 local), as
    LoggerNet writes it; (bytes, row timestamps)."""
    start = to_ns(f"{day:%Y-%m-%d} 00:01:00")
    ns = [start + i * 60 * 10**9 for i in range(1440)]
    stamps = format_toa5(np.array(ns, dtype=np.int64))
    header = [
        b'"TOA5","FR-Lam","CR3000","4711","CR3000.Std.32","CPU:meteo.CR3","4242","Meteo_1min"',
        b'"TIMESTAMP","RECORD","TA_1_1_1","RH_1_1_1","PA_1_1_1"',
        b'"TS","RN","degC","%","kPa"',
        b'"","","Avg","Avg","Smp"',
    ]
    rows = [
        s + b",%d,%.2f,%.1f,%.2f" % (i, 8 + (i % 120) / 20, 60 + (i % 37), 101.3 - (i % 9) / 100)
        for i, s in enumerate(stamps)
    ]
    return b"\r\n".join([*header, *rows]) + b"\r\n", [s.decode().strip('"') for s in stamps]


def land_meteo_day(conn: psycopg.Connection, home: Path, day: date = DAY) -> Path:
    """Collect the day's LoggerNet file of FR-Lam into the landing area (ledger included)."""
    data, _ = meteo_toa5(day)
    src = home / "loggernet" / "FR-Lam" / "FR-Lam_Meteo_1min.dat"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    with conn.transaction():
        landed = land(
            conn,
            src,
            landing=home / "landing",
            station="FR-Lam",
            logger="cr3000_meteo",
            table="Meteo_1min",
            source="loggernet:cr3000_meteo/Meteo_1min",
            utc_offset_hours=LAM.utc_offset_hours,
            source_path=str(src),
        )
    conn.commit()
    return landed.path


def assemble_bm(day: date = DAY) -> int:
    """The scheduled refine step for FR-Lam's BM file of ``day``: its output_file id."""
    from stationflow.refine.daily import assemble_stream

    [oid] = assemble_stream(INV, "FR-Lam", BM_SID, day)
    return oid


# ------------------------------------------------------------------ the portal


@dataclass
class Portal:
    sim: IcosEtcSim
    conn_id: str

    def copies(self, name: str) -> list[tuple[str, str]]:
        """One (name, sha256) per version of the data object ``name`` the portal holds
        (identical bytes uploaded again are the same object: REFERENCE section 1)."""
        return [(name, v.sha256) for v in self.sim.objects.get(name, [])]

    def resent(self, name: str) -> int:
        """Uploads of ``name`` the portal accepted beyond one per distinct content."""
        accepted = self.sim.history(name)
        return len(accepted) - len({e["sha256"] for e in accepted})

    def puts(self, name: str) -> list[dict]:
        """Every PUT of ``name`` that reached the portal, whatever came of it."""
        return [r for r in self.sim.puts() if r["path"].endswith("/" + name)]


def start_portal(monkeypatch, port: int = 0) -> Portal:
    """The simulated ICOS ETC endpoint and FR-Lam's upload Connection pointing at it."""
    sim = IcosEtcSim({"FR-Lam": PASSWORD}, port=port, today=lambda: TODAY).start()
    conn_id = LAM.upload.connection_id
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": sim.port,
        "schema": "http",
        "login": "FR-Lam",
        "password": PASSWORD,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return Portal(sim, conn_id)


# ------------------------------------------------------------------ the ledger


@dataclass(frozen=True)
class Output:
    id: int
    etc_name: str
    md5: str
    sha256: str
    path: str


def output(conn: psycopg.Connection, oid: int) -> Output:
    row = conn.execute(
        "SELECT id, etc_name, md5, sha256, path FROM stationflow.output_file WHERE id = %s",
        (oid,),
    ).fetchone()
    return Output(*row)


def upload_ledger_problems(
    conn: psycopg.Connection,
    portal: Portal,
    oid: int,
    *,
    failed: int,
    unreached: int = 0,
) -> list[str]:
    """What is wrong with the ledger's account of ``oid`` against the portal (empty: ok).

    It must show exactly one accepted upload whose receipt the portal issued for these
    bytes (and certifies name and md5); a receipt the portal issued that the ledger lacks
    must belong to an attempt the ledger says got no answer; ``failed`` error attempts each
    with a reason, one attempt row per PUT that reached the portal (``unreached``: the
    attempts that could not connect) and one publish.upload audit row per answered attempt."""
    conn.commit()  # a fresh snapshot
    out = output(conn, oid)
    rows = conn.execute(
        "SELECT attempt, outcome, http_status, receipt, message FROM stationflow.upload"
        " WHERE output_file_id = %s ORDER BY attempt",
        (oid,),
    ).fetchall()
    problems = []
    accepted = [r for r in rows if r[1] == "accepted"]
    errors = [r for r in rows if r[1] != "accepted"]
    if len(accepted) != 1:
        problems.append(f"{len(accepted)} accepted upload rows, not 1: {rows}")
    ours = sorted(r[3] for r in accepted)
    theirs = sorted(
        e["receipt"] for e in portal.sim.history(out.etc_name) if e["sha256"] == out.sha256
    )
    unanswered = [r for r in errors if r[2] is None]
    if not set(ours) <= set(theirs) or len(theirs) - len(ours) > len(unanswered):
        problems.append(
            f"ledger receipts {ours} vs receipts the portal issued {theirs}: more than the"
            f" {len(unanswered)} attempt(s) the ledger says got no answer can explain"
        )
    for token in ours:
        got = portal.sim.receipt(token) or {}
        if (got.get("file_name"), got.get("md5")) != (out.etc_name, out.md5):
            problems.append(f"receipt {token} certifies {got}")
    if len(errors) != failed or any(r[1] != "error" or not r[4] for r in errors):
        problems.append(f"expected {failed} error attempts with a reason, got {errors}")
    reached = len(portal.puts(out.etc_name))
    if reached != len(rows) - unreached:
        problems.append(f"the portal saw {reached} PUTs, the ledger has {len(rows)} attempts")
    audited = conn.execute(
        "SELECT (details->>'attempt')::int, level FROM stationflow.audit_log"
        " WHERE step = 'publish.upload' AND details->>'output_file_id' = %s"
        " AND details ? 'attempt' ORDER BY id",
        (str(oid),),
    ).fetchall()
    want = [(r[0], "INFO" if r[1] == "accepted" else "WARNING") for r in rows if r[4] != IN_FLIGHT]
    if audited != want:
        problems.append(f"audit rows {audited} != attempts {want}")
    return problems


def sha256_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------ the task process

#: A DAG file (in a DAG folder of its own: dag.test() runs what a DAG bundle holds) with
#: the real ``upload`` task of dags/icos_daily.py, uploading the output_file id given in
#: RELIABILITY_ICOS_OID.
UPLOAD_DAG = f"""
import os
import sys
from datetime import UTC, datetime

sys.path.insert(0, {str(PROJECT_ROOT / "dags")!r})

from airflow.sdk import dag
from icos_daily import upload

from stationflow.dag_defaults import DEFAULT_ARGS


@dag(
    dag_id={UPLOAD_DAG_ID!r},
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args={{**DEFAULT_ARGS, "retries": 0}},
)
def reliability_icos_upload():
    upload.override(task_id="upload_{BM_SID}")("FR-Lam", [int(os.environ["RELIABILITY_ICOS_OID"])])


reliability_icos_upload()
"""


def write_upload_dag(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{UPLOAD_DAG_ID}.py"
    path.write_text(UPLOAD_DAG)
    return folder


def _upload_dag_main(logical: datetime) -> int:
    """Run the upload DAG of AIRFLOW__CORE__DAGS_FOLDER with ``dag.test()``."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = bag.get_dag(UPLOAD_DAG_ID)
    if dag is None:
        print(json.dumps({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}))
        return 2
    run = dag.test(logical_date=logical)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    print(json.dumps({"run_id": run.run_id, "state": str(run.state), "tasks": states}))
    return 0 if str(run.state) == "success" else 1


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "upload-dag":
        sys.exit("usage: python -m tests.reliability.icos_setup upload-dag ISO-DATE")
    sys.exit(_upload_dag_main(datetime.fromisoformat(sys.argv[2])))
