"""The data-completeness view in the Airflow UI: a FastAPI app on the API server, shown as
"Completeness" in the navigation (an external view, embedded in the UI's page frame).

Every route needs an Airflow login (the UI's session cookie or a Bearer token) and DAG read
permission, through Airflow's own security dependencies.
"""

from __future__ import annotations

from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin

from stationflow.ui.app import create_app

PREFIX = "/stationflow"


class StationflowCompleteness(AirflowPlugin):
    name = "stationflow_completeness"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares these as class attributes
        {
            "app": create_app(dependencies=[requires_access_dag("GET")]),
            "url_prefix": PREFIX,
            "name": "stationflow completeness",
        }
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Completeness",
            "href": f"{PREFIX}/completeness",
            "destination": "nav",
            "url_route": "completeness",
            "nav_top_level": True,
        }
    ]
