#!/usr/bin/env bash
# Creates the two application databases on first start of the Postgres container.
#
# Mounted into /docker-entrypoint-initdb.d/ by docker-compose.yaml. The official postgres
# entrypoint runs it once, on an empty data directory, as the superuser POSTGRES_USER and after
# the postgis image's own 10_postgis.sh. It is executed when it has the executable bit and
# sourced otherwise, so it sticks to `set -Eeo pipefail` (what the entrypoint itself uses) and
# never calls `exit`.
#
#   airflow      role + database: Airflow metadata DB and Celery result backend
#   stationflow  role + database: stationflow state DB (`stationflow db up` creates the schema)
#
# Passwords come from the environment (AIRFLOW_DB_PASSWORD, STATIONFLOW_DB_PASSWORD), are
# passed to psql as variables and quoted by Postgres itself (format %L), never spliced into SQL.
# Safe to run again on an initialised cluster: existing roles/databases are left alone.
set -Eeo pipefail

stationflow_init_databases() {
    local var
    for var in AIRFLOW_DB_PASSWORD STATIONFLOW_DB_PASSWORD; do
        if [[ -z "${!var:-}" ]]; then
            echo "init-databases.sh: ${var} is empty; set it in .env (see deploy/.env.example)" >&2
            return 1
        fi
    done

    local -a psql_cmd=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}")

    "${psql_cmd[@]}" --dbname "${POSTGRES_DB:-postgres}" \
        -v airflow_pw="${AIRFLOW_DB_PASSWORD}" \
        -v stationflow_pw="${STATIONFLOW_DB_PASSWORD}" <<-'SQL'
	SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', 'airflow', :'airflow_pw')
	WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'airflow') \gexec
	SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', 'stationflow', :'stationflow_pw')
	WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stationflow') \gexec

	SELECT 'CREATE DATABASE airflow OWNER airflow ENCODING ''UTF8'' TEMPLATE template0'
	WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'airflow') \gexec
	SELECT 'CREATE DATABASE stationflow OWNER stationflow ENCODING ''UTF8'' TEMPLATE template0'
	WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'stationflow') \gexec

	REVOKE ALL ON DATABASE airflow FROM PUBLIC;
	REVOKE ALL ON DATABASE stationflow FROM PUBLIC;
	GRANT ALL PRIVILEGES ON DATABASE airflow TO airflow;
	GRANT ALL PRIVILEGES ON DATABASE stationflow TO stationflow;
	SQL

    # PostGIS in the stationflow database when the server has it (the postgis/postgis image
    # does); creating an extension needs the superuser, so it is done here and not by
    # `stationflow db up`.
    "${psql_cmd[@]}" --dbname stationflow <<-'SQL'
	SELECT 'CREATE EXTENSION IF NOT EXISTS postgis'
	WHERE EXISTS (SELECT FROM pg_available_extensions WHERE name = 'postgis') \gexec
	SQL

    echo "init-databases.sh: databases 'airflow' and 'stationflow' are ready"
}

stationflow_init_databases
