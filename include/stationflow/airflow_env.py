"""The environment every Airflow process of this project runs with.

The demo, ``stationflow airflow ...`` and the tests all build it here, so the DAGs,
plugins, metadata database and the ``stationflow`` package are the same everywhere.
Variables already set by the user win (that is how production overrides them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from stationflow.settings import Settings
from stationflow.state.db import airflow_db_url, state_db_url


def venv_bin() -> Path:
    """The bin folder of the running interpreter: ``airflow standalone`` spawns ``airflow``."""
    return Path(sys.executable).parent


def airflow_environment(
    settings: Settings, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    port = settings.airflow_port
    env["PATH"] = os.pathsep.join([str(venv_bin()), env.get("PATH", "")])
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = airflow_db_url(settings)
    env["STATIONFLOW_DB_URL"] = state_db_url(settings)
    env["STATIONFLOW_HOME"] = str(settings.home)
    env["STATIONFLOW_CONFIG"] = str(settings.config_path)
    defaults = {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.plugins_dir),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # 2 cores: a handful of task processes at once is what the machine can serve
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    return env
