"""The channel registry, the adapter contract's settings handling, and the webhook channel's pure parts."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint
from typing import ClassVar

import pytest
from pydantic import SecretStr

import channels.registry as registry_module
from channels.base import AdapterSettings, Capabilities, ChannelAdapter, InboundSink, Limits, mask_secrets
from channels.registry import BUILTINS, ENTRY_POINT_GROUP, ChannelRegistry
from channels.webhook import InboundPayload, WebhookChannel, WebhookSettings, sign, verify
from channels.webhook.inbound import parse_payload, to_inbound
from umsg.config import ChannelSettings
from umsg.errors import ConfigError, PermanentError
from umsg.model import DeliveryResult, DeliveryStatus, IdentityKind, Outbound


class FakeSettings(AdapterSettings):
    host: str
    port: int = 2775
    username: str | None = None
    password: SecretStr | None = None
    system_type: str = ""
    window: int = 1


class FakeSmpp(ChannelAdapter[FakeSettings]):
    name: ClassVar[str] = "fakesmpp"
    capabilities: ClassVar[Capabilities] = Capabilities(delivery_receipts=True)
    limits: ClassVar[Limits] = Limits(max_text_chars=160, max_segments=8)
    Settings: ClassVar[type[FakeSettings]] = FakeSettings
    url_schemes: ClassVar[tuple[str, ...]] = ("smpp",)

    async def start(self, sink: InboundSink) -> None:
        self.sink = sink

    async def send(self, outbound: Outbound) -> DeliveryResult:
        return DeliveryResult(DeliveryStatus.ACCEPTED, provider_id="1")

    async def aclose(self) -> None:
        return None


def isolated(**kw: object) -> ChannelRegistry:
    """A registry that ignores whatever happens to be installed in this environment."""
    return ChannelRegistry(use_entry_points=False, **kw)  # type: ignore[arg-type]


def webhook_config(**extra: object) -> ChannelSettings:
    return ChannelSettings.model_validate({"type": "webhook", **extra})


# -- lookup ----------------------------------------------------------------------------------


def test_builtin_webhook_is_found() -> None:
    reg = isolated()
    assert reg.get("webhook") is WebhookChannel
    assert reg.names() == sorted(BUILTINS)


def test_builtins_are_imported_only_when_asked_for() -> None:
    reg = isolated(builtins={"ghost": "no_such_module_for_umsg:Adapter"})
    assert reg.names() == ["ghost"]  # listing does not import
    with pytest.raises(ConfigError, match="'ghost' from the built-in table cannot be loaded"):
        reg.get("ghost")


@pytest.mark.parametrize(
    ("asked", "suggestion"),
    [("webhok", "did you mean 'webhook'"), ("web-hook", "did you mean 'webhook'"), ("pager", "known: ")],
)
def test_unknown_name_suggests(asked: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown channel type '{asked}'") as err:
        isolated().get(asked)
    assert suggestion in str(err.value)


def test_register_refuses_duplicates_and_non_adapters() -> None:
    reg = isolated()
    reg.register("fakesmpp", FakeSmpp)
    assert reg.get("fakesmpp") is FakeSmpp
    with pytest.raises(ConfigError, match="'fakesmpp' is already registered by register()"):
        reg.register("fakesmpp", FakeSmpp)
    with pytest.raises(ConfigError, match="'webhook' is already registered by the built-in table"):
        reg.register("webhook", FakeSmpp)
    with pytest.raises(ConfigError, match="not a ChannelAdapter subclass"):
        reg.register("other", dict)  # type: ignore[arg-type]


def test_entry_points_are_discovered(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("umsg_fake_channel_pkg")
    module.FakeSmpp = FakeSmpp  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    eps = [
        EntryPoint("fakesmpp", f"{module.__name__}:FakeSmpp", ENTRY_POINT_GROUP),
        # A package may re-declare one of our built-ins unchanged.
        EntryPoint("webhook", "channels.webhook:WebhookChannel", ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(
        registry_module, "entry_points", lambda group: eps if group == ENTRY_POINT_GROUP else []
    )
    reg = ChannelRegistry()
    assert reg.names() == sorted({"fakesmpp", *BUILTINS})
    assert reg.get("fakesmpp") is FakeSmpp
    with pytest.raises(ConfigError, match="already registered by entry point"):
        reg.register("fakesmpp", FakeSmpp)


@pytest.mark.parametrize(
    "clash",
    [
        [EntryPoint("webhook", "elsewhere:Hook", ENTRY_POINT_GROUP)],
        [EntryPoint("sms", "a:Sms", ENTRY_POINT_GROUP), EntryPoint("sms", "b:Sms", ENTRY_POINT_GROUP)],
    ],
)
def test_entry_point_name_clash_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, clash: list[EntryPoint]
) -> None:
    monkeypatch.setattr(registry_module, "entry_points", lambda group: clash)
    reg = ChannelRegistry()
    for _ in range(2):  # and keeps failing, rather than half-registering on the first try
        with pytest.raises(ConfigError, match="is declared twice"):
            reg.names()


# -- building configured instances --------------------------------------------------------------


def test_build_webhook_from_keys() -> None:
    adapter = isolated().build(
        "partner", webhook_config(callback_url="https://hooks.example/in", secret="s3cret", timeout_seconds=3)
    )
    assert isinstance(adapter, WebhookChannel)
    assert adapter.instance_name == "partner" and adapter.channel == "partner"
    assert adapter.settings.timeout_seconds == 3
    assert adapter.settings.secret.get_secret_value() == "s3cret"


def test_build_from_url_with_keys_overriding_it() -> None:
    adapter = isolated().build(
        "partner",
        webhook_config(url="webhook+https://hooks.example/in?secret=a&timeout_seconds=9", secret="b"),
    )
    assert isinstance(adapter, WebhookChannel)
    assert adapter.settings.callback_url == "https://hooks.example/in"
    assert adapter.settings.timeout_seconds == 9
    assert adapter.settings.secret.get_secret_value() == "b"


@pytest.mark.parametrize(
    ("config", "key", "reason"),
    [
        ({"callback_url": "https://h/x"}, "channels.hooks.secret", "Field required"),
        ({"callback_url": "https://h/x", "secret": "s", "secrte": "s"}, "channels.hooks.secrte", "'secret'"),
        ({"callback_url": "ftp://h/x", "secret": "s"}, "channels.hooks.callback_url", "http:// or https://"),
        ({"url": "smtp://h/x", "secret": "s"}, "channels.hooks.url", "webhook://"),
        ({"url": 5, "secret": "s"}, "channels.hooks.url", "must be a string"),
        (
            {"callback_url": "https://h/x", "secret": "s", "timeout_seconds": 0},
            "channels.hooks.timeout_seconds",
            "greater than",
        ),
    ],
)
def test_build_reports_problems_by_key(config: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        isolated().build("hooks", webhook_config(**config))
    keys = [k for k, _ in err.value.problems]
    assert key in keys, err.value.problems
    assert reason in dict(err.value.problems)[key]


def test_build_unknown_type_names_the_type_key() -> None:
    with pytest.raises(ConfigError) as err:
        isolated().build("support", ChannelSettings(type="webhooks"))
    [(key, reason)] = err.value.problems
    assert key == "channels.support.type" and "did you mean 'webhook'" in reason


# -- settings from URLs -----------------------------------------------------------------------


def test_default_url_parsing_maps_parts_onto_settings() -> None:
    settings = FakeSmpp.settings_from_url(
        "smpp://esme%40x:p%3Ass@SMSC.example:2776?system_type=VMA&window=10"
    )
    assert isinstance(settings, FakeSettings)
    assert (settings.host, settings.port, settings.username) == ("smsc.example", 2776, "esme@x")
    assert settings.password is not None and settings.password.get_secret_value() == "p:ss"
    assert (settings.system_type, settings.window) == ("VMA", 10)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://smsc:2775", "expected a smpp:// URL"),
        ("smpp://smsc:2775/inbox", "gives a path, but fakesmpp has no setting for it"),
        ("smpp://smsc:99999", "bad port"),
        ("smpp://smsc?windw=3", "did you mean 'window'"),
    ],
)
def test_default_url_parsing_problems(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        FakeSmpp.settings_from_url(url)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("url", "callback", "extra"),
    [
        ("webhook+https://h.example/p?secret=s&x=1", "https://h.example/p?x=1", {}),
        ("webhooks://h.example/p?secret=s", "https://h.example/p", {}),
        ("webhook://h.example:8080/p?secret=s&project=shop", "http://h.example:8080/p", {"project": "shop"}),
        ("https://u:pw@h.example/p?secret=s", "https://u:pw@h.example/p", {}),
    ],
)
def test_webhook_url_forms(url: str, callback: str, extra: dict[str, str]) -> None:
    settings = WebhookChannel.settings_from_url(url)
    assert isinstance(settings, WebhookSettings)
    assert settings.callback_url == callback
    assert settings.secret.get_secret_value() == "s"
    for key, value in extra.items():
        assert getattr(settings, key) == value


# -- secrets never shown ----------------------------------------------------------------------


def test_describe_and_repr_mask_secrets() -> None:
    adapter = isolated().build(
        "partner", webhook_config(callback_url="https://bob:hunter2@h.example/in", secret="topsecret")
    )
    described = adapter.describe()
    assert described["type"] == "webhook" and described["instance"] == "partner"
    assert described["capabilities"]["outbound"] is True
    assert described["settings"]["secret"] == "***"
    assert described["settings"]["callback_url"] == "https://bob:***@h.example/in"
    for text in (str(described), repr(adapter), str(adapter.settings)):
        assert "topsecret" not in text and "hunter2" not in text


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ({"password": "x", "host": "h"}, {"password": "***", "host": "h"}),
        (
            {"api_key": "k", "auth_token": "", "nested": {"client_secret": "c"}},
            {"api_key": "***", "auth_token": "", "nested": {"client_secret": "***"}},
        ),
        ({"url": "smpp://u:p@h:1/x"}, {"url": "smpp://u:***@h:1/x"}),
        ({"urls": ["imap://a@h", "imap://a:b@h"]}, {"urls": ["imap://a:***@h", "imap://a:***@h"]}),
    ],
)
def test_mask_secrets(value: dict[str, object], masked: dict[str, object]) -> None:
    assert mask_secrets(value) == masked


# -- webhook pure parts ------------------------------------------------------------------------


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"message_id":1}'
    header = sign("k", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    verify("k", body, header)
    for bad_body, bad_header in [
        (body + b" ", header),
        (body, sign("other", body)),
        (body, None),
        (body, "md5=1"),
    ]:
        with pytest.raises(PermanentError):
            verify("k", bad_body, bad_header)


@pytest.mark.parametrize(
    ("status", "answer", "expected", "provider_id", "detail"),
    [
        (200, b'{"id": 77}', DeliveryStatus.ACCEPTED, "77", "HTTP 200"),
        (202, b"queued", DeliveryStatus.ACCEPTED, None, "HTTP 202"),
        (204, b"", DeliveryStatus.ACCEPTED, None, "HTTP 204"),
        (429, b"slow down", DeliveryStatus.TRANSIENT_FAILURE, None, "HTTP 429: slow down"),
        (503, b"<h1>\n busy \n</h1>", DeliveryStatus.TRANSIENT_FAILURE, None, "HTTP 503: <h1> busy </h1>"),
        (400, b'{"error":"unknown recipient"}', DeliveryStatus.PERMANENT_FAILURE, None, "unknown recipient"),
        (404, b"", DeliveryStatus.PERMANENT_FAILURE, None, "HTTP 404"),
        (302, b"", DeliveryStatus.PERMANENT_FAILURE, None, "HTTP 302"),
    ],
)
def test_webhook_classifies_answers(
    status: int, answer: bytes, expected: DeliveryStatus, provider_id: str | None, detail: str
) -> None:
    result = WebhookChannel._result(status, answer)
    assert (result.status, result.provider_id) == (expected, provider_id)
    assert detail in result.detail


def test_inbound_payload_becomes_an_inbound() -> None:
    body = b'{"id": "m-1", "sender": "+4930123", "sender_kind": "phone", "text": "hi", "refs": ["m-0"]}'
    inbound = to_inbound(parse_payload(body), channel="app", project="acme", raw=body)
    assert (inbound.channel, inbound.project, inbound.dedupe_key, inbound.text) == (
        "app",
        "acme",
        "m-1",
        "hi",
    )
    assert inbound.sender.kind is IdentityKind.PHONE and inbound.sender.value == "+4930123"
    assert inbound.thread.own == ("app:m-1",) and inbound.thread.refs == ("app:m-0",)
    assert inbound.raw == body and inbound.raw_media_type == "application/json"
    assert InboundPayload.model_validate({"id": "x", "sender": "v", "html": "<p>h</p>"}).sticky is True


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"id": "1", "sender": "v"}', "needs text or html"),
        (b'{"id": "1", "text": "t"}', "sender: Field required"),
        (b'{"id": "1", "sender": "v", "text": "t", "colour": "red"}', "colour"),
    ],
)
def test_invalid_inbound_payloads(body: bytes, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        parse_payload(body)
