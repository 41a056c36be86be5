"""Django settings of the STA v1.1 server (django-ogc-sensorthings 1.2.0), run in .venv-sta.

Not part of the stationflow package: ``stationflow.sim.sta_server.StaServer`` runs
``manage.py`` and ``uvicorn asgi:application`` with this folder as the working directory and
passes everything through the environment:

- ``STA_DATABASE_URL``: ``postgresql://user:password@host:port/dbname``; a Unix-socket folder
  (and the port) may also come as query parameters: ``postgresql://postgres@/sta?host=/run/pg&port=5432``.
- ``STA_SERVICE_URL``: the service base as clients reach it, e.g. ``http://127.0.0.1:8123/sensorthings``;
  used verbatim in selfLinks, navigationLinks, nextLinks and ``Location`` headers.
- ``STA_SECRET_KEY``: Django's signing key (nothing here signs anything that outlives the process).

See docs/sta-server.md for what this server does and does not support.
"""

import os
import secrets
from urllib.parse import parse_qsl, unquote, urlsplit
from uuid import UUID


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name} is not set (see the docstring of this settings.py)")
    return value


def database_from_url(url: str) -> dict:
    """Django's DATABASES["default"] for a libpq-style ``postgresql://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"STA_DATABASE_URL must be postgresql://, not {parts.scheme!r}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    known = {key: query.pop(key, "") for key in ("dbname", "user", "password", "host", "port")}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or known["dbname"],
        "USER": unquote(parts.username or "") or known["user"],
        "PASSWORD": unquote(parts.password or "") or known["password"],
        # the host of the netloc (TCP), else ?host= (a Unix-socket folder or a host name)
        "HOST": unquote(parts.hostname or "") or known["host"],
        "PORT": str(parts.port or known["port"]),
        # anything else (sslmode, connect_timeout, ...) goes to libpq as is
        "OPTIONS": query,
    }


SERVICE_URL = _required("STA_SERVICE_URL").rstrip("/")

SECRET_KEY = os.environ.get("STA_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = sorted({urlsplit(SERVICE_URL).hostname or "127.0.0.1", "127.0.0.1", "localhost"})

# Only the STA apps: contenttypes/auth are not needed (checked in the research).
INSTALLED_APPS = [
    "sensorthings.versions.v1_1",  # label sensorthings_v1_1
    "sensorthings.versions.v1_1.backends.django",  # models + migrations
    "sensorthings.versions.v1_1.extensions.dataarray",  # CreateObservations, dataArray
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": database_from_url(_required("STA_DATABASE_URL"))}

SENSORTHINGS_V1_1_SERVICE_URL = SERVICE_URL
SENSORTHINGS_V1_1_BACKEND_ADAPTER = (
    "sensorthings.versions.v1_1.backends.django.adapter.DjangoBackendAdapter"
)
# Required with the Django backend: its primary keys are UUIDs (the default ID_TYPE is int).
SENSORTHINGS_V1_1_ID_TYPE = UUID
# Ids in URLs are quoted: Things('01a2...').
SENSORTHINGS_V1_1_ID_DELIMITER = "'"
