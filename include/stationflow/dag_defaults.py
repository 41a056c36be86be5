"""Defaults every stationflow DAG shares: ownership, retries with backoff, tags.

Transient faults (a station behind a 4G VPN, a busy portal) are the normal case, so
every task retries with exponential backoff; a ``stationflow.errors.PermanentError``
fails the task at once (Airflow 3.3 ``retry_policy``).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

OWNER = "stationflow"
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")

#: Permanent errors fail the task at once; the rest retry with backoff.
FAIL_FAST_ON_PERMANENT = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="stationflow.errors.PermanentError",
            action=RetryAction.FAIL,
            reason="permanent error: retrying cannot help, a person has to act",
        )
    ]
)

DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=2),
    "retry_policy": FAIL_FAST_ON_PERMANENT,
}
