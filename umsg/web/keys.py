"""Typed keys for what the web app keeps on its Application and on each request.

Everything the handlers share lives here instead of in module globals, so
several apps (tests build many) never see each other's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from umsg.tokens import Principal

if TYPE_CHECKING:
    from umsg.core import Core
    from umsg.web.endpoints import Endpoint
    from umsg.web.metrics import WebMetrics

CORE: web.AppKey[Core] = web.AppKey("umsg_core")
ADAPTERS: web.AppKey[Mapping[str, object]] = web.AppKey("umsg_adapters")
METRICS: web.AppKey[WebMetrics] = web.AppKey("umsg_metrics")
ENDPOINTS: web.AppKey[tuple[Endpoint, ...]] = web.AppKey("umsg_endpoints")

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("umsg_principal", Principal)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("umsg_request_id", str)
