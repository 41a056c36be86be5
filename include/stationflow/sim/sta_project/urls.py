"""The STA v1.1 API under /sensorthings/: service root <STA_SERVICE_URL>/v1.1."""

import upstream_fixes  # noqa: F401  (PATCH Locations: see the module)
from django.urls import include, path

urlpatterns = [path("sensorthings/", include("sensorthings.versions.v1_1.urls"))]
