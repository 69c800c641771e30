"""The web service: the JSON API under `/api/v1`, its event websocket, health and metrics.

`create_app(core, adapters)` builds the aiohttp application; the route
table (`umsg.web.table`) both registers the routes and generates the
OpenAPI document served at `/api/v1/openapi.json`.
"""

from umsg.web.app import create_app

__all__ = ["create_app"]
