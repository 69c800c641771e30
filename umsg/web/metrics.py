"""Prometheus metrics of one web app, in an app-local registry (never the global one).

HTTP requests are counted by method, route template and status by a
middleware. Store-derived values (ingest counters, queue depth by status)
are read when scraped: the handler awaits the database first, hands the
numbers to a custom collector, then renders the text, so collection itself
never blocks the event loop.

`/metrics` is not public by default (queue depths and route names tell an outsider a lot):
a scrape needs `Authorization: Bearer <accounts.metrics_token>` or a live admin API token;
`accounts.metrics_public = true` opens it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterator, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from storage.states import QueueItemStatus
from umsg.tokens import authenticate
from umsg.web.endpoints import Ctx
from umsg.web.errors import unauthorized

log = logging.getLogger(__name__)

# Status recorded when the client went away before an answer (nginx's convention).
CLIENT_CLOSED = "499"


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


class _StoreCollector:
    """Yields the latest snapshot taken by the scrape handler."""

    def __init__(self) -> None:
        self.ingest: Mapping[str, int] = {}
        self.queue: Mapping[str, object] | None = None

    def describe(self) -> list[Metric]:
        # Empty on purpose: the registry would otherwise call collect() at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        for key, value in sorted(self.ingest.items()):
            name = "umsg_ingest" if key == "ingested" else f"umsg_ingest_{key}"
            yield CounterMetricFamily(name, f"ingest pipeline counter '{key}' since start", value=value)
        up = GaugeMetricFamily("umsg_store_up", "1 when the store answered the last scrape")
        up.add_metric([], 0 if self.queue is None else 1)
        yield up
        if self.queue is None:
            return
        depth = GaugeMetricFamily("umsg_queue_items", "queue items by status", labels=["status"])
        for status in QueueItemStatus:
            depth.add_metric([status], _number(self.queue.get(status)))
        yield depth
        oldest = self.queue.get("oldest_waiting_seconds")
        age = GaugeMetricFamily("umsg_queue_oldest_waiting_seconds", "age of the oldest waiting item")
        age.add_metric([], _number(oldest))
        yield age


class WebMetrics:
    """The registry and instruments of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "umsg_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "umsg_http_request_duration_seconds",
            "time to answer an HTTP request",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.store = _StoreCollector()
        self.registry.register(self.store)

    def observe(self, method: str, route: str, status: str, seconds: float) -> None:
        self.requests.labels(method, route, status).inc()
        self.duration.labels(method, route).observe(seconds)

    def render(self, ingest: Mapping[str, int], queue: Mapping[str, object] | None) -> bytes:
        # No await between taking the snapshot and rendering it: concurrent scrapes cannot mix.
        self.store.ingest = dict(ingest)
        self.store.queue = queue
        return generate_latest(self.registry)


METRICS: web.AppKey[WebMetrics] = web.AppKey("umsg_metrics")


def _route_of(request: web.Request) -> str:
    # The route template, not the path: ids in paths would explode the label set.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    metrics = request.app[METRICS]
    try:
        resp = await handler(request)
    except asyncio.CancelledError:
        metrics.observe(request.method, _route_of(request), CLIENT_CLOSED, time.perf_counter() - started)
        raise
    metrics.observe(request.method, _route_of(request), str(resp.status), time.perf_counter() - started)
    return resp


async def _may_scrape(ctx: Ctx) -> bool:
    accounts = ctx.core.settings.accounts
    if accounts.metrics_public:
        return True
    scheme, _, value = ctx.request.headers.get("Authorization", "").partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    if accounts.metrics_token is not None:
        expected = accounts.metrics_token.get_secret_value()
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            return True
    principal = await authenticate(ctx.core.sessions, token)
    return principal is not None and principal.role == "admin" and principal.project_ids is None


async def metrics_text(ctx: Ctx) -> web.StreamResponse:
    if not await _may_scrape(ctx):
        raise unauthorized("/metrics needs 'Authorization: Bearer <token>': the metrics token "
                           "(accounts.metrics_token) or an admin API token")
    queue: Mapping[str, object] | None
    try:
        queue = dict(await ctx.core.queue.stats())
    except Exception:  # a scrape must still answer (with umsg_store_up 0) when the store is down
        log.warning("metrics: the store did not answer", exc_info=True)
        queue = None
    body = ctx.request.app[METRICS].render(ctx.core.ingest.stats, queue)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
