"""Which adapter class a configured channel `type` names, and building configured instances.

Built-in channels are an alias table (`name -> "module:Class"`, imported only
when used, so a deployment without SIP never imports the telephony stack).
Other packages add channels through the `umsg.channels` entry-point group. A
name claimed twice is a configuration error, never a silent override; an
unknown name is answered with the closest known ones.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from channels.base import ChannelAdapter
from umsg.config import ChannelSettings
from umsg.errors import ConfigError
from umsg.instances import ChannelInstances, Instance

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "umsg.channels"

BUILTINS: Mapping[str, str] = MappingProxyType(
    {
        "webhook": "channels.webhook:WebhookChannel",
        "email": "channels.email:EmailChannel",
        "voicemail": "channels.voicemail:VoicemailChannel",
        "webchat": "channels.webchat:WebchatChannel",
        "sms": "channels.sms:SmsChannel",
        "twilio": "channels.sms.twilio:TwilioChannel",
        "fax": "channels.fax:FaxChannel",
    }
)

AdapterClass = type[ChannelAdapter[Any]]


def _check_class(name: str, obj: object, origin: str) -> AdapterClass:
    if not (isinstance(obj, type) and issubclass(obj, ChannelAdapter)):
        raise ConfigError([("", f"channel type {name!r} from {origin} is not a ChannelAdapter subclass")])
    missing = [a for a in ("name", "capabilities", "limits", "Settings") if not hasattr(obj, a)]
    if missing:
        raise ConfigError(
            [("", f"channel type {name!r} from {origin} does not declare {', '.join(missing)}")]
        )
    return obj


def _qualified(prefix: str, exc: ConfigError) -> ConfigError:
    return ConfigError(
        [
            (f"{prefix}.{key}" if key and not key.startswith(prefix) else key or prefix, r)
            for key, r in exc.problems
        ]
    )


class ChannelRegistry:
    """The channel types this process knows, by name."""

    def __init__(self, builtins: Mapping[str, str] = BUILTINS, *, use_entry_points: bool = True) -> None:
        self._targets: dict[str, str] = dict(builtins)
        self._origins: dict[str, str] = {n: "the built-in table" for n in builtins}
        self._entry_points: dict[str, EntryPoint] = {}
        self._classes: dict[str, AdapterClass] = {}
        # Discovery reads installed package metadata once, on first use.
        self._discovered = not use_entry_points

    def _discover(self) -> None:
        if self._discovered:
            return
        found: dict[str, EntryPoint] = {}
        origins: dict[str, str] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            origin = f"entry point {ep.value!r}" + (f" of {ep.dist.name}" if ep.dist else "")
            if self._targets.get(ep.name) == ep.value:
                continue  # a package re-declaring one of our own built-ins
            earlier = self._origins.get(ep.name) or origins.get(ep.name)
            if earlier is not None:
                # Not remembered as discovered: every later use fails just as loudly.
                message = f"channel type {ep.name!r} is declared twice: by {earlier} and {origin}"
                raise ConfigError([("", message)])
            found[ep.name] = ep
            origins[ep.name] = origin
        self._entry_points.update(found)
        self._origins.update(origins)
        self._discovered = True

    def names(self) -> list[str]:
        """Every known channel type name, sorted."""
        self._discover()
        return sorted(self._origins)

    def register(self, name: str, cls: AdapterClass) -> None:
        """Add a channel type in code (tests, embedding applications)."""
        self._discover()
        if name in self._origins:
            raise ConfigError([("", f"channel type {name!r} is already registered by {self._origins[name]}")])
        self._classes[name] = _check_class(name, cls, "register()")
        self._origins[name] = "register()"

    def get(self, name: str) -> AdapterClass:
        """The adapter class for `name`, importing it on first use."""
        self._discover()
        if name in self._classes:
            return self._classes[name]
        origin = self._origins.get(name)
        if origin is None:
            guesses = difflib.get_close_matches(name, list(self._origins), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else ""
            known = ", ".join(sorted(self._origins)) or "none"
            raise ConfigError([("", f"unknown channel type {name!r}{hint} (known: {known})")])
        try:
            if name in self._entry_points:
                obj = self._entry_points[name].load()
            else:
                module_name, _, attr = self._targets[name].partition(":")
                obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError([("", f"channel type {name!r} from {origin} cannot be loaded: {exc}")]) from exc
        cls = _check_class(name, obj, origin)
        self._classes[name] = cls
        return cls

    def class_of(self, instance_name: str, settings: ChannelSettings) -> AdapterClass:
        """The adapter class of one configured instance; problems keyed `channels.<instance>.type`."""
        try:
            return self.get(settings.type)
        except ConfigError as exc:
            raise _qualified(f"channels.{instance_name}.type", exc) from exc

    def instances(self, channels: Mapping[str, ChannelSettings],
                  default_project: str | None = None) -> ChannelInstances:
        """The configured instances as the core sees them: name, type, the identity kind its
        adapter answers on (disabled ones too: their messages are still stored), the projects it
        carries messages of and the addresses it sends as (for the outbound authority).

        `default_project` is the gateway's `project`: where an adapter whose `project` is unset
        (fax, voicemail) puts what it receives. Not given, such an instance is not restricted
        (`projects` None): it was never told whom it works for.
        """
        out = []
        for name, cs in channels.items():
            cls = self.class_of(name, cs)
            try:
                validated = self._validated(name, cs)[1]
            except ConfigError:
                # Such an instance cannot be built, so sends nothing; `config check` reports it.
                out.append(Instance(name, cs.type, cls.identity_kind, cs.enabled, projects=frozenset()))
                continue
            out.append(Instance(name, cs.type, cls.identity_kind, cs.enabled,
                                projects=served_projects(validated, default_project),
                                senders=own_senders(validated)))
        return ChannelInstances(out)

    def legacy_claims(self, channels: Mapping[str, ChannelSettings]) -> list[tuple[str, str | None]]:
        """(instance, the name its type stamped before channels were named by instance)."""
        return [(name, self.class_of(name, cs).legacy_channel_name) for name, cs in channels.items()]

    def build(self, instance_name: str, settings: ChannelSettings) -> ChannelAdapter[Any]:
        """Validate one configured channel's settings and construct (not start) its adapter.

        Problems are reported as ConfigError keyed `channels.<instance>.<key>`.
        A `url` key is parsed with the adapter's `url_fields`; keys given
        beside it override what the URL says.
        """
        cls, validated = self._validated(instance_name, settings)
        adapter = cls(instance_name, validated)
        log.debug("channel built: %s", adapter.describe())
        return adapter

    def _validated(self, instance_name: str, settings: ChannelSettings) -> tuple[AdapterClass, BaseModel]:
        prefix = f"channels.{instance_name}"
        cls = self.class_of(instance_name, settings)
        data: dict[str, Any] = dict(settings.model_extra or {})
        url = data.pop("url", None) if "url" not in cls.Settings.model_fields else None
        if url is not None:
            if not isinstance(url, str):
                raise ConfigError([(f"{prefix}.url", "must be a string")])
            try:
                data = {**cls.url_fields(url), **data}
            except ConfigError as exc:
                raise _qualified(prefix, exc) from exc
        return cls, cls.validate_settings(data, prefix)


def served_projects(settings: BaseModel, default_project: str | None) -> frozenset[str] | None:
    """The project slugs an adapter's settings put messages in: its `project`, or, where it has
    per-number boxes (fax `numbers`, voicemail `mailboxes`), each box's `project` falling back
    to the instance's, then to the gateway's default project (None when that is not known:
    not restricted)."""
    own = getattr(settings, "project", None)
    own = own if isinstance(own, str) and own else default_project
    boxes = [box for value in vars(settings).values() if isinstance(value, dict)
             for box in value.values() if isinstance(box, BaseModel) and "project" in type(box).model_fields]
    slugs = [getattr(box, "project", None) or own for box in boxes] if boxes else [own]
    if any(slug is None for slug in slugs):
        return None
    return frozenset(str(slug) for slug in slugs)


def own_senders(settings: BaseModel) -> tuple[str, ...]:
    """The addresses an adapter may send as, where its settings declare them: an email
    instance's `owned` addresses and domains plus its `reply@domain` threading address, a
    Twilio-compatible instance's `from_number`. Empty: not declared (SMPP source addresses
    follow the number the customer wrote to)."""
    owned = getattr(settings, "owned", None)
    domain = getattr(settings, "domain", None)
    if isinstance(owned, list) and isinstance(domain, str):
        return (*(str(o) for o in owned), f"reply@{domain}")
    number = getattr(settings, "from_number", None)
    if isinstance(number, str) and number and getattr(settings, "messaging_service_sid", None) is None:
        return (number,)
    return ()
