"""`create_app`: the aiohttp application serving the API, health and metrics.

Middlewares, outermost first: metrics (sees the final status of everything,
errors included), errors (every failure becomes the JSON error shape), auth
(bearer token for `/api/` routes). All state lives on the Application.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from aiohttp import web
from prometheus_client.registry import Collector

from umsg.web.api.media import PAGE_RENDERS, PageRenders
from umsg.web.auth import auth_middleware
from umsg.web.endpoints import ENDPOINTS, register
from umsg.web.errors import error_middleware
from umsg.web.inbox_static import mount_inbox
from umsg.web.keys import ADAPTERS, CORE
from umsg.web.metrics import METRICS, WebMetrics, metrics_middleware
from umsg.web.passwords import HASHER, PasswordHasher
from umsg.web.table import ENDPOINTS as TABLE
from umsg.web.ws import OPEN_SOCKETS, close_sockets

if TYPE_CHECKING:
    from umsg.core import Core


def create_app(core: Core, adapters: Mapping[str, object] | None = None) -> web.Application:
    """Build the web app for `core`; `adapters` are the running channel adapters by name."""
    app = web.Application(
        client_max_size=core.settings.http.max_body_bytes,
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
    )
    app[CORE] = core
    app[ADAPTERS] = dict(adapters or {})
    app[METRICS] = WebMetrics()
    app[HASHER] = PasswordHasher(core.settings.accounts.hash_concurrency)
    app[ENDPOINTS] = TABLE
    app[OPEN_SOCKETS] = weakref.WeakSet()
    app[PAGE_RENDERS] = PageRenders()
    register(app, TABLE)
    _mount_channel_routes(app, adapters or {})
    _register_channel_metrics(app, adapters or {})
    mount_inbox(app)
    app.on_shutdown.append(close_sockets)
    return app


CHANNELS_PREFIX = "/channels"


@runtime_checkable
class ServesWeb(Protocol):
    """An adapter with routes of its own (`channels.base.ChannelAdapter.web_routes`); the web app
    sees adapters only through this, so that nothing but the service wiring imports `channels`."""

    def web_routes(self) -> Sequence[web.RouteDef]: ...


@runtime_checkable
class HasMetrics(Protocol):
    """An adapter with Prometheus metrics of its own (the web chat's abuse refusals): a
    collector the app's registry reads when scraped."""

    def metrics_collector(self) -> Collector: ...


def _register_channel_metrics(app: web.Application, adapters: Mapping[str, object]) -> None:
    for adapter in adapters.values():
        if isinstance(adapter, HasMetrics):
            app[METRICS].registry.register(adapter.metrics_collector())


def _mount_channel_routes(app: web.Application, adapters: Mapping[str, object]) -> None:
    """Serve each adapter's own routes under `/channels/<instance>/` (the adapter authenticates)."""
    for name, adapter in adapters.items():
        routes = adapter.web_routes() if isinstance(adapter, ServesWeb) else ()
        for route in routes:
            path = f"{CHANNELS_PREFIX}/{name}/{route.path.lstrip('/')}"
            web.RouteDef(route.method, path, route.handler, route.kwargs).register(app.router)
