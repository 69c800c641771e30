"""Typed keys for what the web app keeps on its Application and on each request.

Everything the handlers share lives here (or, for the endpoint table and the metrics,
beside their types in `endpoints` and `metrics`) instead of in module globals, so
several apps (tests build many) never see each other's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from umsg.tokens import Principal

if TYPE_CHECKING:
    from umsg.core import Core

CORE: web.AppKey[Core] = web.AppKey("umsg_core")
ADAPTERS: web.AppKey[Mapping[str, object]] = web.AppKey("umsg_adapters")

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("umsg_principal", Principal)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("umsg_request_id", str)
