"""Static checks of the container deployment: Dockerfile, docker-compose.yaml, deploy/.

No Docker engine is needed: the files are parsed and cross-checked against each other and
against the repository (every file they reference must exist).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
INIT_DB_SCRIPT = REPO / "deploy" / "postgres" / "init-databases.sh"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
EXPECTED_SERVICES = ("postgres", "redis", *AIRFLOW_SERVICES)
# Services that read or write STATIONFLOW_HOME.
DATA_SERVICES = ("airflow-scheduler", "airflow-triggerer", "airflow-worker")
STATIONFLOW_HOME = "/opt/stationflow/data"

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}.
# "$$" is an escaped literal "$" and is not a reference.
_REF = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
_REQUIRED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|(^|_)KEY$|(^|_)AUTH$", re.IGNORECASE)


def secret_placeholder(name: str) -> str:
    return f"SECRETREF{name}"


def resolve(value: str) -> str:
    """Interpolate like compose would with an empty environment.

    Defaults are taken; a required reference becomes a recognisable placeholder, so a test
    can tell "this part is a ${VAR:?...} secret reference" from a literal value.
    """

    def substitute(match: re.Match[str]) -> str:
        op = match["op"] or ""
        if "?" in op:
            return secret_placeholder(match["name"])
        if "-" in op:
            return match["arg"]
        return ""

    return _REF.sub(substitute, value).replace("$$", "$")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def volume_entries(service: dict) -> list[tuple[str, str, str]]:
    """(type, source, target) of every volume of a service (short and long syntax)."""
    entries = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            entries.append(
                (volume.get("type", "volume"), volume.get("source", ""), volume["target"])
            )
            continue
        parts = resolve(volume).split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        entries.append((kind, source, target))
    return entries


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    result = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def copy_sources() -> list[str]:
    sources = []
    for instruction, args in dockerfile_instructions():
        if instruction not in {"COPY", "ADD"}:
            continue
        # The JSON (exec) form is valid YAML.
        parts = yaml.safe_load(args) if args.startswith("[") else shlex.split(args)
        if any(p.startswith("--from") for p in parts):
            continue  # from another stage or image, not from the build context
        parts = [p for p in parts if not p.startswith("--")]
        sources.extend(parts[:-1])
    return sources


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose_code(compose_text: str) -> str:
    """docker-compose.yaml without its comment lines."""
    return "\n".join(
        line for line in compose_text.splitlines() if not line.lstrip().startswith("#")
    )


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def common_env(compose: dict) -> dict[str, str]:
    common = compose.get("x-airflow-common")
    assert isinstance(common, dict), "x-airflow-common anchor block is missing"
    env = env_of(common)
    assert env, "x-airflow-common has no environment"
    return env


# --- services -----------------------------------------------------------------------------------


def test_expected_services_exist(services):
    missing = [name for name in EXPECTED_SERVICES if name not in services]
    assert not missing, f"services missing from docker-compose.yaml: {missing}"


def test_postgres_uses_postgis_image(services):
    image = services["postgres"].get("image", "")
    assert image.startswith("postgis/postgis:"), image
    assert re.fullmatch(r"postgis/postgis:\d+-\d+\.\d+.*", image), f"unpinned image {image}"


def test_redis_image_is_pinned(services):
    image = services["redis"].get("image", "")
    assert re.fullmatch(r"redis:\d+\.\d+[\w.-]*", image), image


def test_airflow_services_use_the_project_image_and_build(compose, services):
    common = compose["x-airflow-common"]
    assert common.get("image"), "x-airflow-common must name the image"
    build = common.get("build")
    assert build in (".", "./") or (isinstance(build, dict) and build.get("context") in (".", "./"))
    for name in AIRFLOW_SERVICES:
        assert services[name].get("image") == common["image"], name
        assert services[name].get("build") == build, name


def test_airflow_service_commands(services):
    def command(name):
        cmd = services[name].get("command")
        return cmd if isinstance(cmd, str) else " ".join(cmd)

    assert command("airflow-apiserver").split()[-1] == "api-server"
    assert command("airflow-scheduler").split()[-1] == "scheduler"
    assert command("airflow-dag-processor").split()[-1] == "dag-processor"
    assert command("airflow-triggerer").split()[-1] == "triggerer"
    assert command("airflow-worker").split()[-2:] == ["celery", "worker"]
    init = command("airflow-init")
    for step in ("airflow db migrate", "stationflow db up"):
        assert step in init, f"airflow-init does not run {step!r}"
    assert init.index("airflow db migrate") < init.index("stationflow db up")


def _init_command(services) -> str:
    cmd = services["airflow-init"].get("command")
    return cmd if isinstance(cmd, str) else " ".join(cmd)


def test_airflow_init_bootstraps_from_one_settings_file(services):
    """Connections, variables and pools come from `stationflow bootstrap --file ...` only."""
    init = _init_command(services)
    match = re.search(r"stationflow bootstrap --file (\S+)", init)
    assert match, "airflow-init does not run `stationflow bootstrap --file ...`"
    assert init.index("stationflow db up") < match.start()
    assert "--dry-run" not in init[match.start() : init.index("\n", match.start())]
    for old in ("pools import", "variables import", "connections import", "stationflow pools"):
        assert old not in init, f"airflow-init still runs {old!r}: the bootstrap replaces it"
    env = env_of(services["airflow-init"])
    ref = match[1].strip("\"'")
    name = re.fullmatch(r"\$\$\{?(\w+)\}?", ref)
    path = env[name[1]] if name else ref
    assert path.startswith("/opt/stationflow/config/"), path
    # the image copies config/ there (test_dockerfile_copy_sources_exist checks the COPY)
    assert (REPO / "config" / path.removeprefix("/opt/stationflow/config/")).is_file(), path


def _settings_placeholders() -> list[tuple[str, bool, str]]:
    """(variable, has a default, field) of every ${VAR} in config/airflow_settings.yaml."""
    found = []
    data = yaml.safe_load((REPO / "config" / "airflow_settings.yaml").read_text(encoding="utf-8"))

    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif isinstance(value, str):
            for m in re.finditer(r"\$\{(\w+)(:-[^}]*)?\}", value):
                found.append((m[1], m[2] is not None, where))

    walk(data, "airflow_settings")
    return found


def test_settings_file_placeholders_reach_airflow_init(services, common_env):
    placeholders = _settings_placeholders()
    assert placeholders, "config/airflow_settings.yaml has no ${VAR} placeholder"
    env = env_of(services["airflow-init"])
    problems = []
    for name, has_default, where in placeholders:
        value = env.get(name)
        if not has_default and (value is None or not _REQUIRED_REF.fullmatch(value)):
            problems.append(f"{where}: {name} must be a ${{{name}:?...}} reference in airflow-init")
        if has_default and value is not None and not re.fullmatch(r"\$\{\w+:-[^}]*\}", value):
            problems.append(f"{where}: {name} in airflow-init should be ${{{name}:-...}}")
        if name in common_env:
            problems.append(f"{name} is in the shared environment: give it to airflow-init only")
    assert not problems, problems


def test_connection_secrets_are_only_given_to_airflow_init(compose):
    secret_vars = {name for name, has_default, _ in _settings_placeholders() if not has_default}
    assert secret_vars
    for owner, env in _all_env_mappings(compose):
        if owner == "airflow-init":
            continue
        leaked = secret_vars & set(env)
        assert not leaked, f"{owner} receives the connection secrets {sorted(leaked)}"


def test_flower_is_optional(services):
    if "flower" in services:
        assert services["flower"].get("profiles"), "flower must sit behind a compose profile"


# --- shared environment -------------------------------------------------------------------------


def test_every_airflow_service_shares_the_common_env(services, common_env):
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        differing = {k for k, v in common_env.items() if env.get(k) != v}
        assert not differing, f"{name} lacks or overrides common env: {sorted(differing)}"


def test_executor_is_celery(common_env):
    assert common_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_metadata_db_is_postgres_service(common_env, services):
    url = urlsplit(resolve(common_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    assert url.scheme == "postgresql+psycopg2"
    assert url.hostname == "postgres" and url.hostname in services
    assert url.port in (None, 5432)
    assert url.path == "/airflow"
    assert url.username == "airflow"
    assert url.password == secret_placeholder("AIRFLOW_DB_PASSWORD")


def test_celery_result_backend_is_the_metadata_db(common_env):
    backend = urlsplit(resolve(common_env["AIRFLOW__CELERY__RESULT_BACKEND"]))
    meta = urlsplit(resolve(common_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    assert backend.scheme == "db+postgresql"
    assert backend.netloc == meta.netloc
    assert backend.path == meta.path


def test_no_sqlite_anywhere(compose_text):
    assert "sqlite" not in compose_text.lower()


def test_execution_api_url_points_at_the_api_server(common_env, services):
    url = urlsplit(resolve(common_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]))
    assert url.scheme == "http"
    assert url.hostname == "airflow-apiserver" and url.hostname in services
    assert url.path == "/execution/"
    container_ports = {
        resolve(str(p)).split(":")[-1].split("/")[0]
        for p in services["airflow-apiserver"].get("ports", [])
    }
    assert str(url.port) in container_ports, (url.port, container_ports)
    assert "api-server" in " ".join(services["airflow-apiserver"]["command"])


def test_broker_points_at_the_redis_service(common_env, services):
    url = urlsplit(resolve(common_env["AIRFLOW__CELERY__BROKER_URL"]))
    assert url.scheme == "redis"
    assert url.hostname == "redis" and url.hostname in services
    assert url.port == 6379


def test_redis_requires_the_broker_password(common_env, services):
    broker = urlsplit(resolve(common_env["AIRFLOW__CELERY__BROKER_URL"]))
    command = [resolve(str(part)) for part in services["redis"]["command"]]
    assert "--requirepass" in command
    assert command[command.index("--requirepass") + 1] == broker.password
    assert broker.password == secret_placeholder("REDIS_PASSWORD")


def test_stationflow_db_url_is_postgres(common_env, services):
    url = urlsplit(resolve(common_env["STATIONFLOW_DB_URL"]))
    assert url.scheme in ("postgresql", "postgres"), "psycopg 3 takes a plain postgresql:// URL"
    assert url.hostname == "postgres" and url.hostname in services
    assert url.path == "/stationflow"
    assert url.username == "stationflow"
    assert url.password == secret_placeholder("STATIONFLOW_DB_PASSWORD")


def test_project_paths_in_env(common_env):
    assert common_env["STATIONFLOW_HOME"] == STATIONFLOW_HOME
    assert common_env["STATIONFLOW_CONFIG"].endswith("/config/stations.yaml")
    assert common_env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert common_env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"].lower() == "true"


def test_simple_auth_manager_password_file_is_shared_by_init_and_api_server(common_env, services):
    path = common_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    users = resolve(common_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"])
    assert re.fullmatch(r"[\w.-]+:admin", users), users
    for name in ("airflow-init", "airflow-apiserver"):
        targets = {target for kind, _, target in volume_entries(services[name]) if kind == "volume"}
        assert any(path.startswith(t.rstrip("/") + "/") for t in targets), (name, path, targets)
    init_env = env_of(services["airflow-init"])
    assert _REQUIRED_REF.fullmatch(init_env["AIRFLOW_ADMIN_PASSWORD"])


# --- secrets ------------------------------------------------------------------------------------


def _all_env_mappings(compose: dict):
    yield "x-airflow-common", env_of(compose["x-airflow-common"])
    for name, service in compose["services"].items():
        yield name, env_of(service)


def test_no_literal_secret_values(compose):
    offenders = []
    for owner, env in _all_env_mappings(compose):
        for key, value in env.items():
            is_secret = _SECRET_NAME.search(key) and not key.endswith(("_FILE", "_PATH"))
            if is_secret and not _REQUIRED_REF.fullmatch(value):
                offenders.append(f"{owner}.{key}={value!r}")
            resolved = resolve(value)
            if "://" in resolved:
                password = urlsplit(resolved).password
                if password and not re.fullmatch(r"SECRETREF\w+", password):
                    offenders.append(f"{owner}.{key}: literal password in URL")
    assert not offenders, "secrets must be ${VAR:?...} references: " + ", ".join(offenders)


def test_every_reference_is_required_or_defaulted(compose_code):
    """A bare ${VAR} silently becomes "" when unset; use ${VAR:?msg} or ${VAR:-default}."""
    bare = [m.group(0) for m in _REF.finditer(compose_code) if not m["op"]]
    assert not bare, f"references without default or error message: {bare}"
    unbraced = re.findall(r"(?<!\$)\$(?![{$])[A-Za-z_]\w*", compose_code)
    assert not unbraced, f"unbraced references (escape a literal $ as $$): {unbraced}"


def test_required_variables_are_documented_with_empty_placeholders(compose_code):
    required = sorted({m["name"] for m in _REF.finditer(compose_code) if "?" in (m["op"] or "")})
    assert required, "no ${VAR:?...} secret references found"
    example = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    missing = [name for name in required if name not in example]
    assert not missing, f"deploy/.env.example does not document {missing}"
    filled = [name for name in required if example[name]]
    assert not filled, f"deploy/.env.example must leave required secrets empty: {filled}"


def test_env_files_are_git_ignored():
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored
    assert ".env" in DOCKERIGNORE.read_text(encoding="utf-8").split()


# --- files referenced from compose and Dockerfile -------------------------------------------------


def test_build_context_and_dockerfile_exist(compose):
    build = compose["x-airflow-common"]["build"]
    context = REPO / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    assert context.is_dir(), context
    assert (context / dockerfile).is_file(), context / dockerfile


def test_bind_mounts_and_env_files_exist(services):
    missing = []
    for name, service in services.items():
        for kind, source, _ in volume_entries(service):
            if kind == "bind" and not (REPO / source).exists():
                missing.append(f"{name}: {source}")
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
            if isinstance(entry, dict):
                if entry.get("required", True) is False:
                    continue
                entry = entry["path"]
            if not (REPO / resolve(entry)).exists():
                missing.append(f"{name}: env_file {entry}")
    assert not missing, f"referenced host files missing from the repository: {missing}"


def test_postgres_init_script_is_mounted(services):
    binds = {
        (REPO / source).resolve(): target
        for kind, source, target in volume_entries(services["postgres"])
        if kind == "bind"
    }
    target = binds.get(INIT_DB_SCRIPT.resolve())
    assert target is not None and target.startswith("/docker-entrypoint-initdb.d/"), binds
    env = env_of(services["postgres"])
    for var in ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "STATIONFLOW_DB_PASSWORD"):
        assert _REQUIRED_REF.fullmatch(env.get(var, "")), var


def test_dockerfile_copy_sources_exist():
    sources = copy_sources()
    assert sources, "no COPY instruction found"
    missing = [s for s in sources if not (REPO / s).exists()]
    assert not missing, f"Dockerfile COPY sources missing from the repository: {missing}"


def test_dockerfile_copy_sources_are_not_dockerignored():
    patterns = [
        p.strip().rstrip("/")
        for p in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if p.strip() and not p.startswith("#")
    ]
    excluded = [
        s for s in copy_sources() if any(fnmatch.fnmatch(s.rstrip("/"), p) for p in patterns)
    ]
    assert not excluded, f".dockerignore hides files the Dockerfile copies: {excluded}"


# --- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_base_image_and_user():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim-bookworm")
    users = [args for instr, args in instructions if instr == "USER"]
    assert users and users[-1] in ("airflow", "50000", "airflow:0", "50000:0"), users
    run = " ".join(args for instr, args in instructions if instr == "RUN")
    useradd = re.search(r"useradd ([^;&]*)", run)
    assert useradd, "no useradd in the Dockerfile"
    assert re.search(r"--uid (\"?\$\{?AIRFLOW_UID\}?\"?|50000)", useradd[1]), useradd[1]
    assert re.search(r"--gid 0\b", useradd[1]), useradd[1]
    assert re.search(r"ARG AIRFLOW_UID=50000", DOCKERFILE.read_text(encoding="utf-8"))


def test_dockerfile_installs_with_the_constraints():
    instructions = dockerfile_instructions()
    runs = [args for instr, args in instructions if instr == "RUN"]
    pinned = [r for r in runs if re.search(r"pip install .*-r requirements\.txt", r)]
    assert pinned, "requirements.txt is not installed"
    assert all(re.search(r"(-c|--constraint) constraints\.txt", r) for r in pinned)
    project = [r for r in runs if re.search(r"pip install .*--no-deps .*-e \.", r)]
    assert project, "the project must be installed with --no-deps -e ."
    # requirements + constraints are copied (and installed) before the project sources
    order = [(i, a) for i, a in instructions if i in {"COPY", "RUN"}]
    first_reqs = next(n for n, (_, a) in enumerate(order) if "-r requirements.txt" in a)
    first_src = next(n for n, (i, a) in enumerate(order) if i == "COPY" and "include" in a)
    assert first_reqs < first_src


def test_dockerfile_environment():
    env = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    assert env["AIRFLOW_HOME"] == "/opt/airflow"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/stationflow/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/stationflow/plugins"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert env["STATIONFLOW_HOME"] == STATIONFLOW_HOME
    assert env["STATIONFLOW_CONFIG"] == "/opt/stationflow/config/stations.yaml"


def test_requirements_cover_the_deployment():
    names = {
        re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
        for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("apache-airflow", "apache-airflow-providers-celery", "psycopg"):
        assert needed in names, f"{needed} missing from requirements.txt"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_pin_every_requirement():
    """`-c constraints.txt` only reproduces the image if every direct dependency is pinned."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith(("-e", "--editable")), f"editable line in constraints: {line}"
        name, sep, version = line.partition("==")
        assert sep and version, f"constraints.txt line is not an exact pin: {line}"
        pins[_normalise(name)] = version
    requirements = [
        re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0]
        for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    unpinned = [r for r in requirements if _normalise(r) not in pins]
    assert not unpinned, f"requirements not pinned by constraints.txt: {unpinned}"


# --- health and start order -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["postgres", "redis", "airflow-apiserver"])
def test_healthchecks_present(services, name):
    test = (services[name].get("healthcheck") or {}).get("test")
    assert test and test not in (["NONE"], "NONE"), f"{name} has no healthcheck"


def test_api_server_healthcheck_uses_the_health_endpoint(services):
    test = " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "localhost:8080/api/v2/monitor/health" in test


def test_airflow_services_wait_for_databases_and_init(services):
    for name in AIRFLOW_SERVICES:
        depends = services[name].get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert depends.get("postgres", {}).get("condition") == "service_healthy", name
        assert depends.get("redis", {}).get("condition") == "service_healthy", name
        if name != "airflow-init":
            condition = depends.get("airflow-init", {}).get("condition")
            assert condition == "service_completed_successfully", name


def test_restart_policies(services):
    assert services["airflow-init"].get("restart") in ("no", None), "one-shot must not restart"
    for name in (n for n in EXPECTED_SERVICES if n != "airflow-init"):
        assert services[name].get("restart") in ("always", "unless-stopped"), name


def test_data_volume_is_mounted_where_tasks_run(compose, services):
    for name in DATA_SERVICES:
        mounts = {target: source for _, source, target in volume_entries(services[name])}
        assert mounts.get(STATIONFLOW_HOME) == "stationflow-data", name
    assert "stationflow-data" in (compose.get("volumes") or {})


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    used = {
        source
        for service in services.values()
        for kind, source, _ in volume_entries(service)
        if kind == "volume" and source
    }
    assert used <= declared, f"undeclared named volumes: {sorted(used - declared)}"


def test_databases_and_broker_are_not_published_on_all_interfaces_by_default(services):
    for name in ("postgres", "redis"):
        for port in services[name].get("ports", []):
            host_ip = resolve(str(port)).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} published on {port}"


# --- deploy/postgres/init-databases.sh -----------------------------------------------------------


def test_init_script_is_executable_and_valid_bash():
    assert INIT_DB_SCRIPT.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash")
    assert os.access(INIT_DB_SCRIPT, os.X_OK), "chmod +x deploy/postgres/init-databases.sh"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    subprocess.run([bash, "-n", str(INIT_DB_SCRIPT)], check=True)


def test_init_script_creates_both_databases_from_env_passwords():
    text = INIT_DB_SCRIPT.read_text(encoding="utf-8")
    for db in ("airflow", "stationflow"):
        assert f"CREATE DATABASE {db} OWNER {db}" in text
        assert f"'CREATE ROLE %I LOGIN PASSWORD %L', '{db}'" in text
    assert "AIRFLOW_DB_PASSWORD" in text and "STATIONFLOW_DB_PASSWORD" in text
    assert "CREATE EXTENSION IF NOT EXISTS postgis" in text
