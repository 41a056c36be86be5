"""ASGI entry point: ``uvicorn asgi:application`` run from this folder (see settings.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
