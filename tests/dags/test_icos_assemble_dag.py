"""icos_assemble end to end with dag.test(): the form's params in, ETC files and ledger out."""

from __future__ import annotations

import os

import psycopg
import pytest

from stationflow.settings import PROJECT_ROOT

pytestmark = pytest.mark.airflow
SAMPLE = (
    PROJECT_ROOT / "tests" / "fixtures" / "loggers" / "CampbellScientific_HC2S3_20161201-000000.dat"
)


def conf(tmp_path, fragments: str) -> dict:
    return {
        "station": "FR-Lam",
        "file_type": "BM",
        "logger": 1,
        "file": 1,
        "date": "2016-12-02",
        "fragments": fragments,
        "output_dir": str(tmp_path / "out"),
    }


def test_assembles_the_real_sample_from_params(airflow_db, dagbag, tmp_path):
    run = dagbag.get_dag("icos_assemble").test(run_conf=conf(tmp_path, str(SAMPLE)))
    assert run.state == "success"
    out = tmp_path / "out" / "FR-Lam_BM_20161202_L01_F01.dat"
    assert out.read_bytes().count(b"\r\n") == 4 + 2880  # header + a 30 s day, nothing filled
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        row = c.execute(
            "SELECT o.rows_expected, o.rows_filled, a.dag_id, a.task_id FROM"
            " stationflow.output_file o JOIN stationflow.audit_log a ON a.details->>'name' ="
            " o.etc_name WHERE a.run_id = %s",
            (run.run_id,),
        ).fetchone()
    assert row == (2880, 0, "icos_assemble", "assemble")


def test_unreadable_fragments_fail_the_run_after_writing_the_rest(airflow_db, dagbag, tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x00" * 64)
    run = dagbag.get_dag("icos_assemble").test(run_conf=conf(tmp_path, f"{SAMPLE} {bad}"))
    assert run.state == "failed"
    ti = run.get_task_instance("assemble")
    assert ti.try_number == 1  # BadInput is permanent: no retries
    assert (tmp_path / "out" / "FR-Lam_BM_20161202_L01_F01.dat").exists()
    assert (tmp_path / "out" / "quarantine" / "bad.dat").read_bytes() == b"\x00" * 64
