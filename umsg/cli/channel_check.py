"""`umsg config check` for channel instances and every name that refers to one.

A channel is a configured instance (`[channels.support]`); messages carry its name. This
builds every instance through the registry (reporting what an adapter refuses) and then
reports what is ambiguous or dangling:

- a route's `channel` filter or `forward_channel` naming no configured instance (route
  filters match instance names only; `api`, the channel of messages posted through the
  API, is known too), with "did you mean";
- a forward to an email address without `forward_channel` when it could leave on several
  email instances;
- an instance's setting naming another instance (`notify_channel`, `email_channel`,
  `fax_channel`: `ChannelAdapter.channel_refs`) that is missing, of the wrong kind, or left
  to default where none or several instances could be meant;
- two enabled instances (or an instance and the web server) listening on one socket, or
  claiming one thing only one may own (a mail domain, an address: `ChannelAdapter.claims`);
- a key of `[router] channel_costs` or `channel_caps` that is neither an instance nor the
  adapter type of one (a type's entry covers its instances), so it would never apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from channels.base import ChannelAdapter, ChannelRef, Listener
from channels.registry import ChannelRegistry
from umsg.config import ChannelSettings
from umsg.errors import ConfigError, UmsgError
from umsg.instances import ChannelInstances, Instance
from umsg.model import IdentityKind

Problem = tuple[str, str]

# Messages posted through the REST API carry `api` unless they name a channel.
API_CHANNEL = "api"
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")


def _qualify(prefix: str, key: str) -> str:
    if not key:
        return prefix
    if key == prefix or key.startswith(prefix + "."):
        return key
    return f"{prefix}.{key}"


def _unknown(name: str, instances: ChannelInstances) -> str:
    hint = instances.suggest(name)
    configured = ", ".join(instances.names()) or "none"
    return f"{name!r} is not a configured channel instance" + (f"; {hint}" if hint else f" (configured: {configured})")


def check_channels(raw: Mapping[str, Any], registry: ChannelRegistry | None = None) -> list[Problem]:
    """Every problem of the raw configuration's channels and the names that refer to them."""
    channels = raw.get("channels")
    channels = channels if isinstance(channels, dict) else {}
    registry = registry or ChannelRegistry()
    problems: list[Problem] = []
    built: dict[str, ChannelAdapter[Any]] = {}
    known: list[Instance] = []
    for name, entry in channels.items():
        prefix = f"channels.{name}"
        try:
            channel_settings = ChannelSettings.model_validate(entry)
        except ValidationError:
            continue  # reported by the settings validation
        try:
            cls = registry.class_of(name, channel_settings)
            known.append(Instance(name, channel_settings.type, cls.identity_kind, channel_settings.enabled))
            built[name] = registry.build(name, channel_settings)
        except ConfigError as exc:
            problems.extend((_qualify(prefix, key), reason) for key, reason in exc.problems)
        except (UmsgError, ValueError, TypeError, LookupError) as exc:
            problems.append((prefix, str(exc) or type(exc).__name__))
    instances = ChannelInstances(known)
    routes = raw.get("routes")
    problems += _route_problems(routes if isinstance(routes, list) else [], instances)
    enabled = {n: a for n, a in built.items() if (i := instances.get(n)) is not None and i.enabled}
    for name, adapter in built.items():
        problems += [(f"channels.{name}.{ref.key}", reason)
                     for ref in adapter.channel_refs() if (reason := _ref_problem(ref, instances))]
    problems += _listener_problems(enabled, raw.get("http"))
    problems += _claim_problems(enabled)
    router = raw.get("router")
    problems += _router_problems(router if isinstance(router, dict) else {}, instances)
    return problems


def _names(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [i.strip().lower() for i in items if isinstance(i, str) and i.strip()]


def _route_problems(routes: list[Any], instances: ChannelInstances) -> list[Problem]:
    problems: list[Problem] = []
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        filtered = _names(route.get("channel"))
        for name in filtered:
            if name not in instances and name != API_CHANNEL:
                problems.append((f"routes.{i}.channel", _unknown(name, instances)))
        forward = route.get("forward_channel")
        if isinstance(forward, str) and forward not in instances:
            problems.append((f"routes.{i}.forward_channel", _unknown(forward, instances)))
        to = route.get("forward_to")
        if route.get("action") == "forward" and isinstance(to, str) and "@" in to and not forward:
            # The forward leaves on the message's own channel when that is an email instance.
            if filtered and all(instances.kind(n) == IdentityKind.EMAIL for n in filtered):
                continue
            found = instances.answering(IdentityKind.EMAIL) if instances else ["email"]
            if len(found) != 1:
                which = f"several email channels are configured ({', '.join(found)})" if found \
                    else "no email channel is configured"
                problems.append((f"routes.{i}.forward_channel",
                                 f"forward_to is an email address and {which}: set forward_channel"))
    return problems


def _ref_problem(ref: ChannelRef, instances: ChannelInstances) -> str:
    if ref.name is not None:
        found = instances.get(ref.name)
        if found is None:
            return _unknown(ref.name, instances)
        if ref.type is not None and found.type != ref.type:
            return f"{ref.name!r} is a channel of type {found.type}; this needs one of type {ref.type}"
        if ref.kind is not None and found.identity_kind != ref.kind:
            return (f"{ref.name!r} is a channel of type {found.type}; this needs one that sends to "
                    f"{ref.kind.value} addresses")
        return ""
    if ref.kind is None or not instances:
        return ""
    found_names = instances.answering(ref.kind)
    if len(found_names) > 1:
        return (f"several channels send to {ref.kind.value} addresses ({', '.join(found_names)}): "
                f"set {ref.key} to one of them")
    if not found_names and ref.required:
        return f"no channel that sends to {ref.kind.value} addresses is configured: configure one or set {ref.key}"
    return ""


def _router_problems(router: Mapping[str, Any], instances: ChannelInstances) -> list[Problem]:
    if not instances:
        return []
    types = {i.type for i in instances.all()}
    problems: list[Problem] = []
    for setting in ("channel_costs", "channel_caps"):
        given = router.get(setting)
        for name in given if isinstance(given, dict) else {}:
            if name not in instances and name not in types and name != API_CHANNEL:
                problems.append((f"router.{setting}.{name}",
                                 _unknown(name, instances) + "; nor is it the type of one, so it never applies"))
    return problems


def _overlap(a: Listener, b: Listener) -> bool:
    if a.protocol != b.protocol or a.port == 0 or a.port != b.port:
        return False
    return a.host == b.host or a.host in _WILDCARD_HOSTS or b.host in _WILDCARD_HOSTS


def _listener_problems(adapters: Mapping[str, ChannelAdapter[Any]], http: Any) -> list[Problem]:
    http = http if isinstance(http, dict) else {}
    web_port = http.get("port", 8080)
    taken: list[tuple[str, Listener]] = []
    if isinstance(web_port, int):
        taken.append(("http", Listener("tcp", str(http.get("host", "127.0.0.1")), web_port)))
    problems: list[Problem] = []
    for name, adapter in adapters.items():
        for listener in adapter.listeners():
            clash = next((owner for owner, other in taken if _overlap(listener, other)), None)
            if clash is not None:
                where = "the web server (http)" if clash == "http" else f"channels.{clash}"
                problems.append((f"channels.{name}", f"listens on {listener.protocol} {listener.host}:"
                                                     f"{listener.port}, as {where} does"))
            taken.append((name, listener))
    return problems


def _claim_problems(adapters: Mapping[str, ChannelAdapter[Any]]) -> list[Problem]:
    owners: dict[str, str] = {}
    problems: list[Problem] = []
    for name, adapter in adapters.items():
        for claim in adapter.claims():
            if claim in owners:
                problems.append((f"channels.{name}", f"{claim} is also claimed by channels.{owners[claim]}: "
                                                     "two instances cannot share it"))
            else:
                owners[claim] = name
    return problems
