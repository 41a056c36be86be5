from pathlib import Path

import pytest

from stationflow.settings import PROJECT_ROOT, load_settings


def test_defaults_live_in_the_checkout():
    s = load_settings({})
    assert s.root == PROJECT_ROOT
    assert (s.root / "dags").is_dir() and (s.root / "sql").is_dir()
    assert s.home == PROJECT_ROOT / ".local"
    assert s.pgdata == PROJECT_ROOT / ".local" / "pg"
    assert s.config_path == PROJECT_ROOT / "config" / "stations.yaml"
    assert s.state_db_url is None and s.airflow_db_url is None
    assert s.uses_embedded_db
    assert s.airflow_port == 8080


def test_environment_overrides(tmp_path: Path):
    s = load_settings(
        {
            "STATIONFLOW_HOME": str(tmp_path),
            "STATIONFLOW_CONFIG": str(tmp_path / "inv.yaml"),
            "STATIONFLOW_DB_URL": "postgresql://u@db/state",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u@db/af",
            "STATIONFLOW_AIRFLOW_PORT": "18080",
        }
    )
    assert s.home == tmp_path and s.pgdata == tmp_path / "pg"
    assert s.config_path == tmp_path / "inv.yaml"
    assert s.state_db_url == "postgresql://u@db/state"
    assert s.airflow_db_url == "postgresql+psycopg2://u@db/af"
    assert not s.uses_embedded_db
    assert s.airflow_port == 18080


@pytest.mark.parametrize("port", ["0", "http", "70000", "-1"])
def test_bad_port_is_refused(port: str):
    with pytest.raises(ValueError, match="STATIONFLOW_AIRFLOW_PORT"):
        load_settings({"STATIONFLOW_AIRFLOW_PORT": port})
