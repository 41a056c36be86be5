"""DAG tests: a DagBag of dags/ and, for dag.test(), a migrated Airflow metadata database.

The root conftest already pointed Airflow at the session's PostgreSQL (database
``airflow``), so nothing here can fall back to SQLite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stationflow.settings import PROJECT_ROOT

DAGS = PROJECT_ROOT / "dags"


def dag_files() -> list[Path]:
    return sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    assert "sqlite" not in os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """``airflow db migrate`` once per session on the test server's ``airflow`` database."""
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run(
        [str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
