"""A channel is the configured instance: what every adapter stamps, the identity kind it
answers on, what the core does with a name it does not know, and `umsg config check`'s
reports of names that point nowhere or could mean several instances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from channels.base import CHANNEL_KEY_GONE, ChannelRef
from channels.registry import ChannelRegistry
from umsg.channel_rename import _renamed_routes, legacy_renames
from umsg.cli import main
from umsg.cli.main import config_problems
from umsg.config import ChannelSettings, load_settings
from umsg.errors import ConfigError, PermanentError
from umsg.instances import ChannelInstances, Instance
from umsg.model import IdentityKind
from umsg.router.settings import RouterSettings
from umsg.routes.actions import forward_channel

# One buildable configuration per built-in type: (type, settings, identity kind, old stamped name).
TYPES: list[tuple[str, dict[str, Any], IdentityKind | None, str | None]] = [
    ("email", {"domain": "support.alpha.test"}, IdentityKind.EMAIL, "email"),
    ("sms", {"url": "smpp://esme:pw@127.0.0.1:2775"}, IdentityKind.PHONE, "sms"),
    ("twilio", {"account_sid": "AC1", "auth_token": "t"}, IdentityKind.PHONE, "sms"),
    ("fax", {"port": 0}, IdentityKind.FAX, "fax"),
    ("voicemail", {"port": 0}, IdentityKind.PHONE, "voicemail"),
    ("webchat", {"secret": "0123456789abcdef"}, IdentityKind.CHAT, None),
    ("webhook", {"callback_url": "https://hooks.test/x", "secret": "s"}, None, None),
]
IDS = [t[0] for t in TYPES]


def configured(type_name: str, settings: dict[str, Any]) -> ChannelSettings:
    return ChannelSettings.model_validate({"type": type_name, **settings})


@pytest.mark.parametrize(("type_name", "settings", "kind", "legacy"), TYPES, ids=IDS)
def test_every_adapter_declares_its_identity_kind_and_stamps_its_instance_name(
        type_name: str, settings: dict[str, Any], kind: IdentityKind | None, legacy: str | None) -> None:
    registry = ChannelRegistry(use_entry_points=False)
    adapter = registry.build("front-desk", configured(type_name, settings))
    assert type(adapter).identity_kind == kind
    assert type(adapter).legacy_channel_name == legacy
    assert adapter.channel == "front-desk"  # never the type's name
    assert adapter.describe()["identity_kind"] == (kind.value if kind else None)


@pytest.mark.parametrize(("type_name", "settings", "kind", "legacy"), TYPES, ids=IDS)
def test_the_removed_channel_setting_is_a_clear_error(
        type_name: str, settings: dict[str, Any], kind: IdentityKind | None, legacy: str | None) -> None:
    registry = ChannelRegistry(use_entry_points=False)
    with pytest.raises(ConfigError) as err:
        registry.build("front-desk", configured(type_name, {**settings, "channel": "mail"}))
    assert err.value.problems == [("channels.front-desk.channel", CHANNEL_KEY_GONE)]


def test_the_registry_hands_the_core_every_instance_with_its_kind() -> None:
    settings = load_settings(None, environ={}, overrides={"channels": {
        "support": {"type": "email", "domain": "support.alpha.test"},
        "sales": {"type": "email", "domain": "sales.alpha.test", "enabled": False},
        "texts": {"type": "sms", "url": "smpp://esme:pw@127.0.0.1:2775"},
        "shop": {"type": "webhook", "callback_url": "https://hooks.test/x", "secret": "s"}}})
    registry = ChannelRegistry(use_entry_points=False)
    instances = registry.instances(settings.channels)
    assert instances.names() == ["sales", "shop", "support", "texts"]
    assert instances.kind("support") == IdentityKind.EMAIL and instances.kind("texts") == IdentityKind.PHONE
    assert instances.kind("shop") is None
    assert instances.get("sales") == Instance("sales", "email", IdentityKind.EMAIL, enabled=False,
                                              projects=frozenset({"default"}),
                                              senders=("@sales.alpha.test", "reply@sales.alpha.test"))
    assert instances.answering(IdentityKind.EMAIL) == ["support"]  # enabled ones only
    assert registry.legacy_claims(settings.channels) == [
        ("support", "email"), ("sales", "email"), ("texts", "sms"), ("shop", None)]


def test_a_core_knows_type_names_only_while_nothing_is_configured() -> None:
    bare = ChannelInstances()
    assert bare.kind("email") == IdentityKind.EMAIL and bare.kind("sms") == IdentityKind.PHONE
    assert bare.kind("webchat") == IdentityKind.CHAT and bare.kind("api") is None
    assert bare.one_answering(IdentityKind.EMAIL, "x") == "email"
    some = ChannelInstances([Instance("support", "email", IdentityKind.EMAIL)])
    # Once instances are configured a name means an instance: `email` is none of them.
    assert some.kind("support") == IdentityKind.EMAIL and some.kind("email") is None
    assert some.one_answering(IdentityKind.EMAIL, "x") == "support"


def test_one_answering_refuses_to_guess() -> None:
    two = ChannelInstances([Instance("support", "email", IdentityKind.EMAIL),
                            Instance("sales", "email", IdentityKind.EMAIL)])
    with pytest.raises(PermanentError, match=r"several channels answer on email \(sales, support\)"):
        two.one_answering(IdentityKind.EMAIL, "the notification's channel")
    with pytest.raises(PermanentError, match="no channel answering on fax"):
        two.one_answering(IdentityKind.FAX, "x")


def test_suggestions_name_instances_for_a_type_or_a_typo() -> None:
    instances = ChannelInstances([Instance("texts", "sms", IdentityKind.PHONE),
                                  Instance("support", "email", IdentityKind.EMAIL)])
    assert instances.suggest("sms") == "'sms' is a channel type, not an instance; did you mean 'texts'?"
    assert instances.suggest("suport") == "did you mean 'support'?"
    assert instances.suggest("zzz") == ""


@pytest.mark.parametrize(("named", "to", "own", "expected"), [
    ("fax", "+4930123", "support", "fax"),  # the route says so
    (None, "+4930123", "texts", "texts"),  # a number: the message's own channel
    (None, "desk@partner.test", "support", "support"),  # an email instance forwards mail itself
    (None, "desk@partner.test", "texts", "support"),  # else the one email instance
])
def test_forward_channel(named: str | None, to: str, own: str, expected: str) -> None:
    instances = ChannelInstances([Instance("texts", "sms", IdentityKind.PHONE),
                                  Instance("support", "email", IdentityKind.EMAIL)])
    assert forward_channel(named, to, own, instances) == expected


def test_forward_to_an_address_with_two_email_instances_must_name_one() -> None:
    two = ChannelInstances([Instance("support", "email", IdentityKind.EMAIL),
                            Instance("sales", "email", IdentityKind.EMAIL),
                            Instance("texts", "sms", IdentityKind.PHONE)])
    assert forward_channel(None, "desk@partner.test", "sales", two) == "sales"
    with pytest.raises(PermanentError, match="forward_channel must name one"):
        forward_channel(None, "desk@partner.test", "texts", two)


@pytest.mark.parametrize(("claims", "configured", "plan"), [
    ([("support", "email")], ["support"], {"email": "support"}),
    ([("support", "email"), ("sales", "email")], ["support", "sales"], {}),  # which one? the operator says
    ([("email", "email")], ["email"], {}),  # already named like the type
    ([("support", "email"), ("email", None)], ["support", "email"], {}),  # `email` is an instance
    ([("texts", "sms"), ("cloud", "sms")], ["texts", "cloud"], {}),  # SMPP and Twilio both stamped sms
    ([("texts", "sms"), ("chat", None), ("vm", "voicemail")], ["texts", "chat", "vm"],
     {"sms": "texts", "voicemail": "vm"}),
])
def test_legacy_renames(claims: list[tuple[str, str | None]], configured: list[str], plan: dict[str, str]) -> None:
    assert legacy_renames(claims, configured) == plan


def test_stored_route_tables_follow_a_rename() -> None:
    routes = [{"name": "a", "channel": "email"}, {"name": "b", "channel": ["sms", "email", "support"]},
              {"name": "c", "action": "forward", "forward_to": "x@y.test", "forward_channel": "email"},
              {"name": "d", "channel": "sms"}]
    assert _renamed_routes(routes, "email", "support") == [
        {"name": "a", "channel": "support"}, {"name": "b", "channel": ["sms", "support"]},
        {"name": "c", "action": "forward", "forward_to": "x@y.test", "forward_channel": "support"},
        {"name": "d", "channel": "sms"}]
    assert _renamed_routes([{"name": "d", "channel": "sms"}], "email", "support") is None


# -- umsg config check --------------------------------------------------------------------------

TWO_EMAIL = """
[channels.support]
type = "email"
domain = "support.alpha.test"
listen = "127.0.0.1:2525"
relay = "smtp://127.0.0.1:2587"

[channels.sales]
type = "email"
domain = "sales.alpha.test"
listen = "127.0.0.1:2526"
relay = "smtp://127.0.0.1:2588"
"""


def problems(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return config_problems(path)


def test_two_email_instances_with_their_own_domains_and_ports_are_fine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(TWO_EMAIL + '\n[[routes]]\nname = "sales"\nchannel = ["sales", "api"]\nqueue = "sales"\n')
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "ok"


@pytest.mark.parametrize(("extra", "expected"), [
    ('[[routes]]\nname = "r"\nchannel = "email"\nqueue = "q"\n',
     ("routes.0.channel", "'email' is not a configured channel instance; 'email' is a channel type, not an "
                          "instance; did you mean 'sales' or 'support'?")),
    ('[[routes]]\nname = "r"\nchannel = ["support", "suport"]\nqueue = "q"\n',
     ("routes.0.channel", "'suport' is not a configured channel instance; did you mean 'support'?")),
    ('[[routes]]\nname = "r"\naction = "forward"\nforward_to = "+4930123"\nforward_channel = "fax"\n',
     ("routes.0.forward_channel", "'fax' is not a configured channel instance (configured: sales, support)")),
    ('[[routes]]\nname = "r"\naction = "forward"\nforward_to = "desk@partner.test"\n',
     ("routes.0.forward_channel", "forward_to is an email address and several email channels are configured "
                                  "(sales, support): set forward_channel")),
    ('[channels.vm]\ntype = "voicemail"\nport = 0\nfax_channel = "sales"\n',
     ("channels.vm.fax_channel", "'sales' is a channel of type email; this needs one of type fax")),
    ('[channels.vm]\ntype = "voicemail"\nport = 0\nfax_channel = "telefax"\n',
     ("channels.vm.fax_channel", "'telefax' is not a configured channel instance (configured: sales, support, vm)")),
    ('[channels.fax]\ntype = "fax"\nport = 0\n[channels.fax.numbers."+4930123"]\nowner_email = "o@x.test"\n',
     ("channels.fax.notify_channel", "several channels send to email addresses (sales, support): "
                                     "set notify_channel to one of them")),
    ('[channels.chat]\ntype = "webchat"\nsecret = "0123456789abcdef"\n',
     ("channels.chat.email_channel", "several channels send to email addresses (sales, support): "
                                     "set email_channel to one of them")),
    ('[channels.chat]\ntype = "webchat"\nsecret = "0123456789abcdef"\nemail_channel = "support"\n'
     '[channels.vm]\ntype = "voicemail"\nport = 0\nnotify_channel = "chat"\n',
     ("channels.vm.notify_channel", "'chat' is a channel of type webchat; this needs one that sends to email "
                                    "addresses")),
    ('[channels.copy]\ntype = "email"\ndomain = "support.alpha.test"\n',
     ("channels.copy", "mail domain support.alpha.test is also claimed by channels.support: two instances "
                       "cannot share it")),
    ('[channels.copy]\ntype = "email"\ndomain = "copy.alpha.test"\nlisten = "0.0.0.0:2526"\n',
     ("channels.copy", "listens on tcp 0.0.0.0:2526, as channels.sales does")),
    ('[channels.copy]\ntype = "email"\ndomain = "copy.alpha.test"\nlisten = "127.0.0.1:8080"\n',
     ("channels.copy", "listens on tcp 127.0.0.1:8080, as the web server (http) does")),
    ('[channels.vm]\ntype = "voicemail"\n[channels.fax]\ntype = "fax"\n',  # both default to port 5060
     ("channels.fax", "listens on udp 127.0.0.1:5060, as channels.vm does")),
    ('[channels.support2]\ntype = "email"\ndomain = "x.alpha.test"\nchannel = "email"\n',
     ("channels.support2.channel", CHANNEL_KEY_GONE)),
    ('[channels.Support]\ntype = "email"\ndomain = "x.alpha.test"\n',
     ("channels.Support", "a channel instance's name is 1-32 lower-case letters, digits, '-' or '_', "
                          "starting with a letter")),
    ('[router.channel_costs]\nemial = 5\n',
     ("router.channel_costs.emial", "'emial' is not a configured channel instance (configured: sales, support); "
                                    "nor is it the type of one, so it never applies")),
], ids=["type-as-filter", "typo", "forward-channel", "forward-ambiguous", "fax-channel-kind",
        "fax-channel-missing", "notify-ambiguous", "email-channel-ambiguous", "notify-kind", "shared-domain",
        "shared-port", "web-port", "sip-ports", "removed-key", "bad-name", "router-cost"])
def test_config_check_reports_dangling_and_ambiguous_names(
        tmp_path: Path, extra: str, expected: tuple[str, str]) -> None:
    found = problems(tmp_path, TWO_EMAIL + "\n" + extra)
    assert expected in found, found


def test_router_costs_may_name_instances_or_their_types(tmp_path: Path) -> None:
    given = '[router.channel_costs]\nemail = 10\nsales = 30\n[router.channel_caps]\nsupport = 2\n'
    assert problems(tmp_path, TWO_EMAIL + "\n" + given) == []


def test_router_costs_and_caps_are_read_per_instance() -> None:
    settings = RouterSettings(channel_costs={"email": 10, "sales": 30, "webchat": 34}, default_cost=20,
                              channel_caps={"email": 3})
    resolved = settings.for_instances({"support": "email", "sales": "email", "chat": "webchat", "fax1": "fax"})
    assert [resolved.cost(n) for n in ("support", "sales", "chat", "fax1", "email")] == [10, 30, 34, 20, 10]
    assert resolved.channel_caps == {"email": 3, "support": 3, "sales": 3}
    assert settings.cost("support") == 20  # before: an instance named nowhere fell to the default


def test_a_route_on_an_email_instance_may_forward_mail_without_naming_a_channel(tmp_path: Path) -> None:
    route = '[[routes]]\nname = "r"\nchannel = "sales"\naction = "forward"\nforward_to = "desk@partner.test"\n'
    assert problems(tmp_path, TWO_EMAIL + "\n" + route) == []


def test_a_setting_defaulting_to_the_one_email_instance_is_fine_with_one(tmp_path: Path) -> None:
    one = TWO_EMAIL.split("[channels.sales]")[0]
    text = one + ('[channels.vm]\ntype = "voicemail"\nport = 0\n'
                  '[channels.vm.mailboxes."100"]\nowner_email = "o@x.test"\n')
    assert problems(tmp_path, text) == []


def test_refs_are_declared_only_when_used() -> None:
    registry = ChannelRegistry(use_entry_points=False)
    idle = registry.build("fax", configured("fax", {"port": 0}))
    assert list(idle.channel_refs()) == []
    mailing = registry.build("fax", configured("fax", {"port": 0, "numbers": {"1": {"owner_email": "o@x.test"}}}))
    assert list(mailing.channel_refs()) == [ChannelRef("notify_channel", None, kind=IdentityKind.EMAIL)]


async def test_the_core_routes_with_costs_per_instance(make_settings: Any) -> None:
    from umsg.core import Core

    instances = ChannelInstances([Instance("site", "webchat", IdentityKind.CHAT),
                                  Instance("support", "email", IdentityKind.EMAIL)])
    core = await Core.open(make_settings(router={"channel_costs": {"webchat": 40, "email": 15}}), channels=instances)
    try:
        # A chat on `site` weighs what a chat weighs, in the router and on the wall alike.
        assert core.settings.router.cost("site") == 40 and core.settings.router.cost("support") == 15
        assert core.router.settings.cost("site") == 40
    finally:
        await core.aclose()


@pytest.mark.parametrize("kind", ["voicemail", "fax"])
def test_sip_tcp_limits_are_configured_per_instance(kind: str) -> None:
    from channels.telephony.transport import TcpLimits

    registry = ChannelRegistry(use_entry_points=False)
    adapter = registry.build("phone", configured(kind, {"port": 0, "sip_tcp": {"max_per_peer": 4,
                                                                             "idle_seconds": 600}}))
    settings = adapter.settings
    assert settings.sip_tcp.limits() == TcpLimits(max_per_peer=4, idle_seconds=600)
    assert registry.build("phone", configured(kind, {"port": 0})).settings.sip_tcp.limits() == TcpLimits()
    with pytest.raises(ConfigError):
        registry.build("phone", configured(kind, {"port": 0, "sip_tcp": {"max_per_pier": 4}}))
