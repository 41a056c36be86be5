"""Per station, the file chain end to end: a daily DAG and a half-hourly EC DAG.

`icos_daily_<station>` runs shortly after local midnight (the station's fixed standard time):
a last collection of the station's folders and FTP servers, then for every daily ETC file
(BM, ST, SAHEAT) assemble -> upload -> verify the receipt. `icos_halfhourly_<station>` does
the same for each EC/PHEN half-hour, one half-hour behind. Tasks pass ledger ids only.
Replay with `airflow backfill create --dag-id icos_daily_<station> --from-date .. --to-date ..`:
unchanged days give identical files and upload nothing; late data gives a new version,
uploaded. A failed upload alerts at once (audit log, mail, webhook).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from stationflow.alerts import failure_callbacks
from stationflow.config import Station, load_inventory
from stationflow.dag_defaults import DEFAULT_ARGS, START_DATE
from stationflow.pools import station_pool
from stationflow.refine.daily import stream_id

INVENTORY = load_inventory()
ALERT = failure_callbacks(INVENTORY)


@task(retries=3, retry_delay=timedelta(seconds=30))
def collect(station_id: str) -> dict:
    """A last pass over the station's LoggerNet folders and FTP servers before assembly."""
    from stationflow.collect.tasks import collect_station

    return collect_station(station_id, get_current_context())


@task
def assemble(station_id: str, sid: str) -> list[int]:
    from stationflow.refine.daily import run_assemble

    return run_assemble(station_id, sid, get_current_context())


@task(on_failure_callback=ALERT)
def upload(station_id: str, output_ids: list[int]) -> list[int]:
    from stationflow.publish.tasks import upload_outputs

    return upload_outputs(station_id, output_ids, get_current_context())


@task
def verify(station_id: str, output_ids: list[int]) -> list[str]:
    from stationflow.publish.tasks import verify_receipts

    return verify_receipts(station_id, output_ids, get_current_context())


def _tz(st: Station) -> pendulum.FixedTimezone:
    return pendulum.FixedTimezone(round(st.utc_offset_hours * 3600), name=f"{st.id} LST")


def _chain(st: Station, half_hourly: bool) -> None:
    gather = collect.override(task_id="collect", pool=station_pool(st.id))(st.id)
    for f in st.files:
        if f.half_hourly != half_hourly or f.extension == "jpg":
            continue
        sid = stream_id(f)
        ids = assemble.override(task_id=f"assemble_{sid}")(st.id, sid)
        gather >> ids
        sent = upload.override(task_id=f"upload_{sid}", pool=station_pool(st.id))(st.id, ids)
        verify.override(task_id=f"verify_{sid}")(st.id, sent)


def chain_dag(st: Station, half_hourly: bool):
    """One station's daily chain, or its half-hourly one (EC/PHEN, a UTC timetable)."""
    if half_hourly:
        dag_id, timeout = f"icos_halfhourly_{st.id}", timedelta(minutes=55)
        timetable = CronDataIntervalTimetable("5,35 * * * *", timezone="UTC")
    else:
        hour, minute = (int(x) for x in st.upload.daily_at.split(":"))
        dag_id, timeout = f"icos_daily_{st.id}", timedelta(hours=6)
        timetable = CronDataIntervalTimetable(f"{minute} {hour} * * *", timezone=_tz(st))

    @dag(
        dag_id=dag_id,
        schedule=timetable,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=2,
        dagrun_timeout=timeout,
        default_args={**DEFAULT_ARGS, "on_failure_callback": ALERT},
        tags=["stationflow", "icos", "publish", st.id],
        doc_md=__doc__,
    )
    def icos_chain():
        _chain(st, half_hourly=half_hourly)

    return icos_chain()


DAILY = [chain_dag(st, half_hourly=False) for st in INVENTORY.stations]
HALF_HOURLY = [
    chain_dag(st, half_hourly=True)
    for st in INVENTORY.stations
    if any(f.half_hourly for f in st.files)
]
