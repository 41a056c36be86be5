"""Demo plumbing that needs no Airflow: environment, expected DAGs, stopping by pid."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from stationflow import demo
from stationflow.airflow_env import airflow_environment, venv_bin
from stationflow.settings import load_settings


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        {
            "STATIONFLOW_HOME": str(tmp_path),
            "STATIONFLOW_DB_URL": "postgresql://u@db/state",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u@db/airflow",
            "STATIONFLOW_AIRFLOW_PORT": "18081",
        }
    )


def test_airflow_environment(settings):
    env = airflow_environment(settings, {"PATH": "/usr/bin", "AIRFLOW__CORE__PARALLELISM": "2"})
    assert env["PATH"].split(":")[0] == str(venv_bin())  # standalone spawns `airflow`
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://u@db/airflow"
    assert env["STATIONFLOW_DB_URL"] == "postgresql://u@db/state"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(settings.root / "dags")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:18081/execution/"
    assert env["AIRFLOW_HOME"] == str(settings.home / "airflow")
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"  # what the user set wins
    assert not any("sqlite" in v.lower() for v in env.values())


def test_expected_dag_ids_are_read_from_the_dag_files(settings):
    assert "stationflow_inventory" in demo.expected_dag_ids(settings)


def _spawn(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", *argv], start_new_session=True
    )


def test_stop_leaves_a_process_that_is_not_ours(settings):
    other = _spawn("not-airflow")
    try:
        demo._write_state(settings, {"airflow_pid": other.pid})
        assert demo.stop(settings) == []
        assert other.poll() is None  # a recycled pid is never killed
    finally:
        other.kill()
        other.wait()


def test_stop_ends_the_recorded_process_group(settings):
    ours = _spawn("standalone")  # looks like `airflow standalone` by its command line
    demo._write_state(settings, {"airflow_pid": ours.pid})
    assert demo.stop(settings) == [f"airflow standalone (pid {ours.pid})"]
    assert ours.wait(timeout=10) is not None
    assert demo._read_state(settings) == {}
    assert demo.stop(settings) == []  # again: nothing left to stop


def test_admin_password_is_read_from_airflow_home(settings, tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path)}
    assert demo.admin_password(settings, env) is None
    (tmp_path / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "pw"}')
    assert demo.admin_password(settings, env) == "pw"


def test_wait_healthy_notices_that_airflow_died(settings):
    short_lived = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    proc = psutil.Process(short_lived.pid)
    with pytest.raises(demo.DemoError, match="exited"):  # not "not healthy within 600 s"
        demo._wait_healthy("http://127.0.0.1:9", proc, timeout=600)
    short_lived.wait()


def test_publish_targets_are_where_the_simulated_network_serves_them(settings, monkeypatch):
    from stationflow.config import load_inventory
    from stationflow.sim.network import plan

    monkeypatch.setenv("STATIONFLOW_SIM_PORT_BASE", "31000")
    eps = plan(load_inventory(settings.config_path), 31000).endpoints
    assert demo.publish_targets(settings) == {
        "sta_default": f"http://127.0.0.1:{eps['sta_default'].port}/sensorthings/v1.1",
        "sos_default": f"http://127.0.0.1:{eps['sos_default'].port}/service",
    }


def test_a_peer_that_cannot_start_leaves_the_others_running(tmp_path):
    from stationflow.config import load_inventory
    from stationflow.sim.network import Network

    class Broken:
        def start(self):
            raise RuntimeError("port in use")

        def stop(self):
            pass

    class Fine(Broken):
        started = False

        def start(self):
            self.started = True

    net = Network(load_inventory(), tmp_path)
    fine = Fine()
    net.servers = [Broken(), fine]
    net.start()
    assert fine.started
