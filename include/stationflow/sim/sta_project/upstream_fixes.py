"""A fix for a bug of django-ogc-sensorthings 1.2.0, applied when the URLs load.

PATCH ``Locations(id)`` answers 500 (``'LocationPatchBody' object has no attribute
'items'``): its view passes the request's pydantic body to ``update_entity``, where every
other entity's view passes ``body.dict(exclude_unset=True)``. The standard lets a client
PATCH a Location (a station that moved), so the body is converted here the way the other
views do it. Nothing else is changed.
"""

from pydantic import BaseModel
from sensorthings.core.service import SensorThingsService

_update_entity = SensorThingsService.update_entity


async def update_entity(self, entity_type, entity_id, payload, context):
    if isinstance(payload, BaseModel):
        payload = payload.dict(exclude_unset=True)
    return await _update_entity(self, entity_type, entity_id, payload, context)


if not getattr(SensorThingsService.update_entity, "_stationflow_fix", False):
    update_entity._stationflow_fix = True
    SensorThingsService.update_entity = update_entity
