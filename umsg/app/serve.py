"""Run the gateway as a service: store, pipeline, channel adapters, background work, web app.

`run_service` owns one process's lifecycle. It opens the core (migrating an
empty store on first run) with the configured channel instances and the identity
kind each answers on, moves stored rows named after an adapter type onto that
type's one instance (umsg/channel_rename.py), starts every enabled channel adapter with the
ingest pipeline as its sink, keeps the background loops (queue lease sweeper,
outbound dispatcher) alive under a supervisor that restarts a crashed loop,
serves the web app, and on SIGTERM/SIGINT (or when `stop` is set) shuts down
in the order that loses nothing: stop accepting HTTP and drain in-flight
requests, stop the background loops, close the adapters, close the core.

Logs are single `key=value` lines on stderr; the one line meant for machines
and people alike, `umsg listening on http://HOST:PORT`, also goes to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from channels.base import ChannelAdapter
from channels.registry import ChannelRegistry
from umsg.app import accept_errors
from umsg.app.failpoints import after_commit_from
from umsg.channel_rename import adopt_legacy_names, legacy_renames, unconfigured_deliveries
from umsg.config import Settings
from umsg.core import Core
from umsg.outbound.outbox import Dispatcher
from umsg.secrets_mask import mask_secrets
from umsg.web import create_app
from umsg.web.connections import ConnectionLimits, GuardedSite, QuietProtocolErrors, default_total

log = logging.getLogger(__name__)

# How long each shutdown step may take before the next one goes ahead anyway;
# a stuck peer must not keep a SIGTERM from ending the process.
SHUTDOWN_STEP_SECONDS = 10.0
# Restart back-off for a crashed background loop: doubling, capped.
RESTART_MIN_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0


class KeyValueFormatter(logging.Formatter):
    """One record per line as `ts=... level=... logger=... msg="..." key=value ...`.

    Extra fields come from `extra={"kv": {...}}`. Every line goes through the one masking
    function (umsg.secrets_mask): a library may log a connection string, a webhook URL with
    `?secret=` or a bearer token that never passed through `Settings.masked()`.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        kv = getattr(record, "kv", None)
        if isinstance(kv, Mapping):
            fields.update(kv)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        masked: str = mask_secrets(line)
        return masked


def _quote(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\r\t\\'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, value


@contextlib.contextmanager
def logging_to_stderr(level: str) -> Iterator[None]:
    """Send every log record to stderr as key=value lines while the service runs.

    The handler is removed again on exit so that an in-process caller (a test)
    is left with the logging setup it had.
    """
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log at INFO is one line per request: noise under load.
    access = logging.getLogger("aiohttp.access")
    old_access = access.level
    access.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        access.setLevel(old_access)


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def supervise(name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run a background loop until `stop`, restarting it (with back-off) whenever it crashes.

    One bad item or a lost database connection must never end the service, so
    every exception is logged and the loop started again.
    """
    loop = asyncio.get_running_loop()
    delay = RESTART_MIN_SECONDS
    while not stop.is_set():
        started = loop.time()
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task crashed; restarting", extra={"kv": {"task": name, "in_s": delay}})
        else:
            if stop.is_set():
                return
            log.warning("background task ended early; restarting",
                        extra={"kv": {"task": name, "in_s": delay}})
        if loop.time() - started > 2 * RESTART_MAX_SECONDS:
            delay = RESTART_MIN_SECONDS  # it ran fine for a while: this is a fresh failure
        if await _wait_or_stop(stop, delay):
            return
        delay = min(delay * 2, RESTART_MAX_SECONDS)


async def sweep_leases(core: Core, stop: asyncio.Event) -> None:
    """Give expired queue leases back to the queue, every `queue.sweep_seconds`."""
    while not stop.is_set():
        recovered = await core.queue.recover_expired()
        if recovered:
            log.info("recovered expired leases", extra={"kv": {"items": recovered}})
        if await _wait_or_stop(stop, core.settings.queue.sweep_seconds):
            return


def _install_signal_handlers(stop: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def _on_signal(sig: signal.Signals) -> None:
        log.info("signal received; stopping", extra={"kv": {"signal": sig.name}})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or a platform without signals
        installed.append(sig)
    return installed


async def _bounded(what: str, aw: Awaitable[Any]) -> None:
    """Await one shutdown step, logging (not raising) a failure or a time-out."""
    try:
        await asyncio.wait_for(aw, SHUTDOWN_STEP_SECONDS)
    except TimeoutError:
        log.warning("shutdown step timed out", extra={"kv": {"step": what}})
    except Exception:
        log.exception("shutdown step failed", extra={"kv": {"step": what}})


async def adopt_channel_names(core: Core, registry: ChannelRegistry, settings: Settings) -> None:
    """Before anything starts: stored rows named after an adapter type (`email`) move to that
    type's one configured instance (umsg/channel_rename.py), and queued deliveries on a name
    no instance has are reported."""
    plan = legacy_renames(registry.legacy_claims(settings.channels), settings.channels.keys())
    await adopt_legacy_names(core.sessions, plan)
    stale = await unconfigured_deliveries(core.readers, settings.channels.keys())
    for name, count in stale.items():
        log.warning("queued deliveries name a channel that is not configured; they will fail until it is "
                    "(rename the instance, or move them: umsg channels rename OLD NEW)",
                    extra={"kv": {"channel": name, "deliveries": count,
                                  "configured": ",".join(sorted(settings.channels)) or "none"}})


async def _start_adapters(core: Core, settings: Settings,
                          registry: ChannelRegistry | None = None) -> dict[str, ChannelAdapter[Any]]:
    registry = registry or ChannelRegistry()
    built: dict[str, ChannelAdapter[Any]] = {}
    for name, channel_settings in settings.channels.items():
        if not channel_settings.enabled:
            log.info("channel disabled", extra={"kv": {"channel": name}})
            continue
        adapter = registry.build(name, channel_settings)
        adapter.bind(core.channel_services())
        built[name] = adapter
    # Every adapter exists before any starts, so one may hand calls to another (voicemail → fax).
    for adapter in built.values():
        adapter.bind_peers(built)
    adapters: dict[str, ChannelAdapter[Any]] = {}
    try:
        for name, adapter in built.items():
            await adapter.start(core.ingest.ingest)
            adapters[name] = adapter
            log.info("channel started", extra={"kv": {"channel": name, "type": adapter.name}})
    except BaseException:
        for adapter in reversed(list(adapters.values())):
            await _bounded("close adapter", adapter.aclose())
        raise
    return adapters


def _bound_url(runner: web.AppRunner, host: str) -> str:
    addresses = runner.addresses
    if not addresses:
        raise RuntimeError("the web server is not listening on any address")
    bound_host, port = addresses[0][0], addresses[0][1]
    shown = host if host else bound_host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


async def run_service(
    settings: Settings,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the gateway until `stop` is set (or, when no `stop` is given, SIGTERM/SIGINT).

    `ready` is called with the base URL once everything is started and the web
    server listens (its port may have been chosen by the OS when 0 was asked).
    """
    with logging_to_stderr(settings.log_level):
        own_stop = stop is None
        stop = stop if stop is not None else asyncio.Event()
        installed = _install_signal_handlers(stop) if own_stop else []
        restore_handler = accept_errors.install()
        try:
            await _run(settings, stop, ready)
        finally:
            restore_handler()
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)


async def _run(settings: Settings, stop: asyncio.Event, ready: Callable[[str], None] | None) -> None:
    log.info("starting", extra={"kv": dict(_flatten(settings.masked()))})
    registry = ChannelRegistry()
    # The core learns each instance's identity kind here; it never imports the adapters.
    instances = registry.instances(settings.channels, settings.project)
    core = await Core.open(settings, after_commit=after_commit_from(os.environ), channels=instances)
    try:
        await adopt_channel_names(core, registry, settings)
        await core.start()
        adapters = await _start_adapters(core, settings, registry)
        try:
            await _serve(core, adapters, stop, ready)
        finally:
            for name, adapter in reversed(list(adapters.items())):
                await _bounded(f"close channel {name}", adapter.aclose())
    finally:
        await _bounded("close core", core.aclose())
        log.info("stopped")


async def _serve(
    core: Core,
    adapters: dict[str, ChannelAdapter[Any]],
    stop: asyncio.Event,
    ready: Callable[[str], None] | None,
) -> None:
    settings = core.settings
    dispatcher = Dispatcher(core.sessions, core.events, adapters, core.instance_id, blobs=core.blobs,
                            readers=core.readers)
    tasks = [
        asyncio.create_task(supervise("lease-sweeper", lambda: sweep_leases(core, stop), stop)),
        asyncio.create_task(supervise("dispatcher", lambda: dispatcher.run(stop), stop)),
        asyncio.create_task(supervise("router", lambda: core.router.run(stop), stop)),
    ]
    # keepalive_timeout also closes a connection that never completes a request head (aiohttp >= 3.10).
    runner = web.AppRunner(create_app(core, adapters), shutdown_timeout=SHUTDOWN_STEP_SECONDS,
                           keepalive_timeout=settings.http.idle_timeout_seconds, logger=QuietProtocolErrors())
    try:
        await runner.setup()
        limits = ConnectionLimits(default_total(settings.http.max_connections), settings.http.max_connections_per_peer)
        site = GuardedSite(runner, settings.http.host, settings.http.port, limits)
        await site.start()
        url = _bound_url(runner, settings.http.host)
        log.info(f"umsg listening on {url}", extra={"kv": {"instance": core.instance_id}})
        print(f"umsg listening on {url}", flush=True)
        if ready is not None:
            ready(url)
        await stop.wait()
        log.info("stopping: draining requests")
    finally:
        stop.set()
        # Stop accepting and let in-flight requests (each waiting on its commit) finish.
        await _bounded("stop web server", runner.cleanup())
        _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_STEP_SECONDS)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("background task failed at shutdown", exc_info=result)
