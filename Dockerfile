# stationflow: Apache Airflow 3.3 + the stationflow package, DAGs and plugins in one image.
#
#   docker build -t stationflow:latest .
#
# The same image runs every Airflow component (api-server, scheduler, dag-processor, triggerer,
# celery worker, flower) and the `stationflow` CLI; docker-compose.yaml (or the Helm chart)
# chooses the command. Secrets are never baked in: they arrive as environment variables.
FROM python:3.11-slim-bookworm

ARG AIRFLOW_UID=50000

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# dumb-init: PID 1 that forwards signals (graceful Celery warm shutdown, see DUMB_INIT_SETSID in
# docker-compose.yaml); curl: container healthchecks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends dumb-init curl \
    && rm -rf /var/lib/apt/lists/*

# Same user as the official apache/airflow image: uid 50000, primary group 0 (root group), so
# group-writable volumes and the official Helm chart's securityContext (50000:0) just work.
RUN useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /home/airflow --create-home \
        --shell /bin/bash airflow

WORKDIR /opt/stationflow

# 1) Third-party dependencies, exactly as pinned (this layer is cached until the pins change).
COPY requirements.txt constraints.txt pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

# 2) The project itself. Editable install on purpose: stationflow resolves its project root
#    (sql/, dags/, config/) from the location of include/stationflow, i.e. /opt/stationflow.
#    README.md is referenced by pyproject.toml (project.readme).
COPY README.md ./
COPY include/ include/
COPY dags/ dags/
COPY plugins/ plugins/
COPY sql/ sql/
COPY config/ config/
RUN pip install --no-cache-dir --no-deps -e . \
    && python -c "import stationflow" \
    && command -v stationflow airflow >/dev/null

# Writable locations, owned by airflow:0 and group-writable. Named volumes mounted on these
# paths are initialised from the image, so they inherit this ownership.
#   /opt/airflow/logs       task and component logs
#   /opt/airflow/auth       SimpleAuthManager password file (written by airflow-init)
#   /opt/stationflow/data   STATIONFLOW_HOME: landing area and outputs
RUN mkdir -p /opt/airflow/logs /opt/airflow/auth /opt/stationflow/data \
    && chown -R "${AIRFLOW_UID}:0" /opt/airflow /opt/stationflow/data \
    && chmod -R g+rwX /opt/airflow /opt/stationflow/data

ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/stationflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/stationflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    STATIONFLOW_ROOT=/opt/stationflow \
    STATIONFLOW_HOME=/opt/stationflow/data \
    STATIONFLOW_CONFIG=/opt/stationflow/config/stations.yaml

USER airflow
WORKDIR /opt/airflow

# 8080 api-server, 8793 worker log server, 8974 scheduler health check, 5555 flower.
EXPOSE 8080 8793 8974 5555

ENTRYPOINT ["/usr/bin/dumb-init", "--"]
CMD ["airflow", "version"]
