"""The `stationflow` console script, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stationflow.cli import build_parser
from stationflow.settings import PROJECT_ROOT

STATIONFLOW = str(Path(sys.executable).parent / "stationflow")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [STATIONFLOW, *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=120,
    )


def test_help_explains_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("db", "config", "demo", "stop", "airflow"):
        assert f"    {command}" in out.stdout
    assert "STATIONFLOW_DB_URL" in out.stdout
    parser = build_parser()
    for path in (
        ["db", "up"],
        ["db", "url"],
        ["db", "status"],
        ["db", "stop"],
        ["config", "check"],
        ["demo"],
        ["stop"],
    ):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([*path, "--help"])
        assert exc.value.code == 0


def test_db_up_is_idempotent_and_status_tells_pending(fresh_db):
    env = dict(os.environ, STATIONFLOW_DB_URL=fresh_db)
    pending = run("db", "status", env=env)
    assert pending.returncode == 1 and "PENDING" in pending.stdout
    first = run("db", "up", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 001_ledger.sql" in first.stdout
    second = run("db", "up", env=env)
    assert "(0 migration(s) applied now)" in second.stdout
    done = run("db", "status", env=env)
    assert done.returncode == 0 and "PENDING" not in done.stdout
    assert run("db", "url", env=env).stdout.strip() == fresh_db


def test_embedded_server_starts_on_demand_in_stationflow_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STATIONFLOW_DB_URL"}
    env["STATIONFLOW_HOME"] = str(tmp_path)
    try:
        up = run("db", "up", env=env)
        assert up.returncode == 0, up.stderr
        assert "applied 001_ledger.sql" in up.stdout
        assert (tmp_path / "pg" / "PG_VERSION").exists()
        url = run("db", "url", env=env).stdout.strip()
        assert url.startswith("postgresql://postgres@/stationflow?host=") and str(tmp_path) in url
    finally:
        stop = run("db", "stop", env=env)
    assert stop.stdout.strip() == "stopped"
    assert run("db", "stop", env=env).stdout.strip() == "embedded PostgreSQL was not running"


def test_config_check(tmp_path):
    ok = run("config", "check")
    assert ok.returncode == 0
    assert "station FR-Lam: UTC+1" in ok.stdout and "network smartemission" in ok.stdout
    bad = tmp_path / "stations.yaml"
    bad.write_text(
        (PROJECT_ROOT / "config" / "stations.yaml")
        .read_text()
        .replace(
            "utc_offset_hours: 1\n    upload:\n      connection_id: icos_etc_fr_aur",
            "utc_offset_hours: CET\n    upload:\n      connection_id: icos_etc_fr_aur",
        )
    )
    refused = run("config", "check", str(bad))
    assert refused.returncode == 2
    line = bad.read_text().split("utc_offset_hours: CET")[0].count("\n") + 1
    assert f"{bad}:{line}: stations[1].utc_offset_hours: Input should be a valid number" in (
        refused.stderr
    )


def test_errors_are_one_clear_line(tmp_path):
    env = dict(os.environ, STATIONFLOW_AIRFLOW_PORT="eighty")
    out = run("db", "url", env=env)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "stationflow: error: STATIONFLOW_AIRFLOW_PORT must be a TCP port number, got 'eighty'"
    )
