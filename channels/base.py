"""The adapter contract every channel implements.

A channel adapter only translates: its wire protocol into `umsg.model.Inbound`
(handed to the ingest sink, acknowledged to the peer only after the sink
returned) and `umsg.model.Outbound` into its wire protocol (`send` reports a
typed `DeliveryResult`). It declares what it can do (`Capabilities`), what its
peer accepts (`Limits`), the kind of identity it answers on (`identity_kind`) and
its typed `Settings`, which can also be written as one connection URL
(`smpp://user:pass@host:2775`). An adapter object is one configured instance, and
its instance name is the channel: stamped on every `Inbound` (`channel`) and the
name the dispatcher hands it replies by. Anything printed or logged about an
adapter goes through `mask_secrets`.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from umsg.errors import ConfigError
from umsg.model import DeliveryResult, IdentityKind, Inbound, IngestResult, Outbound
from umsg.secrets_mask import mask_secrets as mask_secrets  # the one masking function, re-exported

if TYPE_CHECKING:
    from umsg.services import ChannelServices

InboundSink = Callable[[Inbound], Awaitable[IngestResult]]


@dataclass(frozen=True)
class Capabilities:
    """What a channel can carry; the core consults it before handing over an `Outbound`."""

    inbound: bool = True
    outbound: bool = True
    html: bool = False
    subject: bool = False
    attachments: bool = False
    # Media types accepted as outbound attachments; empty means any (when attachments is true).
    media_types: tuple[str, ...] = ()
    delivery_receipts: bool = False
    # The peer keeps threads we can refer to (email References, a chat session).
    threading: bool = False
    # Customers expect an answer within seconds (chat), not hours (email).
    realtime: bool = False


@dataclass(frozen=True)
class Limits:
    """What the peer accepts; None means no limit is known."""

    max_text_chars: int | None = None
    max_message_bytes: int | None = None
    max_attachments: int | None = None
    max_attachment_bytes: int | None = None
    # SMS concatenation: how many segments one message may be split into.
    max_segments: int | None = None
    max_sends_per_second: float | None = None


class AdapterSettings(BaseModel):
    """Base for adapter settings: unknown keys are errors and settings never change after start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Settings end up in log lines and tracebacks via repr/str: mask them there too.
        for name, value in super().__repr_args__():
            yield name, (mask_secrets(value, name) if name else value)


S = TypeVar("S", bound=BaseModel)


def validation_problems(
    err: ValidationError, model: type[BaseModel], prefix: str = ""
) -> list[tuple[str, str]]:
    """Turn pydantic errors into (dotted key, reason) pairs, suggesting names for unknown keys."""
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        reason = e["msg"]
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:
            guess = difflib.get_close_matches(str(e["loc"][0]), list(model.model_fields), n=1)
            reason = "unknown key" + (f" (did you mean '{guess[0]}'?)" if guess else "")
        problems.append((key, reason))
    return problems


# What a configuration that still sets the removed `channel` key is told.
CHANNEL_KEY_GONE = (
    "the `channel` setting is gone: messages carry the instance's name (the NAME of "
    "[channels.NAME]); rename the instance instead, and move stored messages with "
    "`umsg channels rename OLD NAME`")


@dataclass(frozen=True)
class Listener:
    """A socket an instance binds (for `umsg config check`: two instances cannot share one)."""

    protocol: str  # tcp | udp
    host: str
    port: int


@dataclass(frozen=True)
class ChannelRef:
    """A setting of an instance that names another instance (`notify_channel = "support"`).

    `name` None means "the one configured instance answering on `kind`": `required` says
    whether having none is a problem (several always are). `kind` or `type` is what the
    named instance must answer on or be.
    """

    key: str
    name: str | None
    kind: IdentityKind | None = None
    type: str | None = None
    required: bool = True


class ChannelAdapter(ABC, Generic[S]):
    """One configured channel instance (one SMTP listener, one SMPP bind, one webhook).

    Its instance name (`[channels.NAME]`) is the channel: it is stamped on everything the
    instance ingests (`channel`) and the dispatcher hands it exactly the replies on that name.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    limits: ClassVar[Limits]
    Settings: ClassVar[type[BaseModel]]
    # URL schemes `settings_from_url` accepts; empty means just the adapter's name.
    url_schemes: ClassVar[tuple[str, ...]] = ()
    # The kind of identity this channel answers on: a reply on it goes to the contact's
    # identity of this kind. None: no fixed kind, answer whoever wrote last (an API channel).
    identity_kind: ClassVar[IdentityKind | None] = None
    # The name this type stamped on messages before channels were named by instance; the
    # service moves stored rows of that name onto the type's one configured instance.
    legacy_channel_name: ClassVar[str | None] = None

    def __init__(self, instance_name: str, settings: S) -> None:
        if not isinstance(settings, self.Settings):
            raise TypeError(
                f"{type(self).__name__} needs {self.Settings.__name__}, got {type(settings).__name__}"
            )
        self.instance_name = instance_name
        self.settings: S = settings

    @property
    def channel(self) -> str:
        """The channel name stamped on what this instance ingests: its instance name."""
        return self.instance_name

    # -- settings -------------------------------------------------------------------------

    @classmethod
    def validate_settings(cls, data: Mapping[str, Any], prefix: str = "") -> BaseModel:
        """Validate raw settings; problems are reported as ConfigError keyed `prefix.<key>`."""
        data = dict(data)
        problems: list[tuple[str, str]] = []
        if "channel" in data and "channel" not in cls.Settings.model_fields:
            data.pop("channel")
            problems.append((".".join(p for p in (prefix, "channel") if p), CHANNEL_KEY_GONE))
        try:
            validated = cls.Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(problems + validation_problems(exc, cls.Settings, prefix)) from exc
        if problems:
            raise ConfigError(problems)
        return validated

    @classmethod
    def url_fields(cls, url: str) -> dict[str, Any]:
        """Split a connection URL into raw setting values (not yet validated).

        The default maps user, password, host, port and path onto settings of
        those names (or their common synonyms) and every query parameter onto
        the setting it names. Adapters with other URL shapes override this.
        """
        parts = urlsplit(url)
        schemes = cls.url_schemes or (cls.name,)
        if not parts.scheme or parts.scheme not in schemes:
            raise ConfigError([("url", f"expected a {' or '.join(s + '://' for s in schemes)} URL")])
        fields = cls.Settings.model_fields
        out: dict[str, Any] = {}

        def put(names: tuple[str, ...], value: Any, what: str) -> None:
            for n in names:
                if n in fields:
                    out[n] = value
                    return
            raise ConfigError([("url", f"the URL gives {what}, but {cls.name} has no setting for it")])

        if "scheme" in fields:
            out["scheme"] = parts.scheme
        if parts.username:
            put(("username", "user", "system_id", "login"), unquote(parts.username), "a user name")
        if parts.password is not None:
            put(("password", "secret"), unquote(parts.password), "a password")
        if parts.hostname:
            put(("host", "hostname"), parts.hostname, "a host")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError([("url", f"bad port: {exc}")]) from exc
        if port is not None:
            put(("port",), port, "a port")
        path = unquote(parts.path).removeprefix("/")
        if path:
            put(("path", "mailbox", "folder"), path, "a path")
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            out[key] = values[0] if len(values) == 1 else values
        return out

    @classmethod
    def settings_from_url(cls, url: str) -> BaseModel:
        """Parse a connection URL into this adapter's validated settings."""
        return cls.validate_settings(cls.url_fields(url))

    # -- lifecycle ------------------------------------------------------------------------

    def bind(self, services: ChannelServices) -> None:  # noqa: B027 - optional hook, not abstract
        """Receive the core's services (umsg/services.py) before `start`.

        Adapters that keep durable channel state (`services.state`: IMAP checkpoints, SMS
        long-message parts), queue mail, read stored messages or blobs, consult routes or
        report deliveries override this and keep what they need; most need nothing.
        """

    def bind_peers(self, adapters: Mapping[str, ChannelAdapter[Any]]) -> None:  # noqa: B027 - optional hook
        """Receive every configured adapter by instance name, after all were built and before
        `start`: for the rare channel that hands work to another (a voicemail number passing
        a fax machine to the fax channel). Raise ConfigError when a named peer is missing."""

    def listeners(self) -> Sequence[Listener]:
        """The sockets this instance will bind, from its settings (port 0: any free port)."""
        return ()

    def claims(self) -> Sequence[str]:
        """What only one instance may own, in words (`mail domain acme.example`): two
        instances claiming one are ambiguous (`umsg config check` reports them)."""
        return ()

    def channel_refs(self) -> Sequence[ChannelRef]:
        """The settings that name other instances and are in use (`umsg config check`)."""
        return ()

    def web_routes(self) -> Sequence[web.RouteDef]:
        """HTTP routes the adapter serves itself (provider webhooks, chat websockets).

        The web app mounts them under `/channels/<instance>/` outside the API's token auth:
        the adapter authenticates its own callers (a provider signature, a visitor token).
        Most adapters serve nothing here.
        """
        return ()

    @abstractmethod
    async def start(self, sink: InboundSink) -> None:
        """Begin receiving; every inbound message goes to `sink` before the peer is acknowledged."""

    @abstractmethod
    async def send(self, outbound: Outbound) -> DeliveryResult:
        """Deliver one message; peer refusals are results, not exceptions.

        May raise `TransientError` or `PermanentError` for failures it
        classifies itself; anything else is treated as transient by the caller.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Stop receiving and release connections; safe to call twice."""

    # -- presentation ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What this instance is, with secrets masked (for logs, `umsg channels`, the admin API)."""
        return {
            "instance": self.instance_name,
            "type": self.name,
            "identity_kind": self.identity_kind.value if self.identity_kind is not None else None,
            "capabilities": asdict(self.capabilities),
            "limits": asdict(self.limits),
            "settings": mask_secrets(self.settings.model_dump(mode="json")),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.instance_name!r} {self.describe()['settings']}>"
