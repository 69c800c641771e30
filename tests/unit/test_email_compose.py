"""Outgoing mail, automatic-mail detection, delivery reports and the channel's settings."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from channels.email.adapter import EmailChannel
from channels.email.compose import compose
from channels.email.dsn import parse_report
from channels.email.parse import parse_bytes, to_inbound
from channels.email.settings import EmailSettings
from channels.email.thread_hints import outbound_message_id
from channels.registry import ChannelRegistry
from umsg.config import ChannelSettings
from umsg.errors import ConfigError
from umsg.model import Outbound, OutboundPart, ThreadHints

DOMAIN = "acme.test"
SETTINGS = EmailSettings(domain=DOMAIN, addresses=["support@acme.test", "@help.acme.test"])


def _outbound(**kw: object) -> Outbound:
    base: dict[str, object] = dict(
        message_id=42, channel="email", sender="support@acme.test", recipient="c@example.com",
        text="Your lamp is on its way.", subject="Re: Broken lamp",
        thread=ThreadHints(refs=("<first@example.com>", "webhook:abc", "<second@example.com>"),
                           conversation_token="a1b2c3d4e5f6"))
    base.update(kw)
    return Outbound(**base)  # type: ignore[arg-type]


def test_reply_headers_thread() -> None:
    msg = compose(_outbound(), SETTINGS)
    assert msg["Message-ID"] == "<umsg.42.a1b2c3d4e5f6@acme.test>"
    assert msg["In-Reply-To"] == "<second@example.com>"
    assert msg["References"] == "<first@example.com> <second@example.com>"  # other channels' keys left out
    assert msg["Subject"] == "Re: Broken lamp [#a1b2c3d4e5f6]"
    assert msg["Reply-To"] == "reply+a1b2c3d4e5f6@acme.test"
    assert msg["Auto-Submitted"] is None
    assert compose(_outbound(), SETTINGS)["Message-ID"] == msg["Message-ID"]  # stable across retries


def test_mime_structure_and_automatic_mail() -> None:
    out = _outbound(html="<p>Your lamp</p>", automatic=True,
                    parts=(OutboundPart("application/pdf", b"%PDF", "label.pdf"),))
    msg = message_from_bytes(compose(out, SETTINGS).as_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(("html",))
    assert body is not None and "Your lamp" in body.get_content()
    attachments = list(msg.iter_attachments())
    assert [(a.get_filename(), a.get_content()) for a in attachments] == [("label.pdf", b"%PDF")]


def test_our_own_automatic_mail_is_recognised_when_it_comes_back() -> None:
    raw = compose(_outbound(automatic=True), SETTINGS).as_bytes()
    inbound = to_inbound(raw, channel="email", own_domain=DOMAIN)
    assert inbound.meta["auto_submitted"] is True


OUT_OF_OFFICE = (
    "From: Customer <c@example.com>\r\nTo: support@acme.test\r\nSubject: Out of office: Re: lamp\r\n"
    "Message-ID: <ooo-1@example.com>\r\nIn-Reply-To: <umsg.42.a1b2c3d4e5f6@acme.test>\r\n{extra}\r\n"
    "I am away until Monday.\r\n")


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: auto-replied\r\n",
        "Auto-Submitted: auto-generated\r\n",
        "Precedence: bulk\r\n",
        "Precedence: junk\r\n",
        "Precedence: list\r\n",
        "X-Autoreply: yes\r\n",
        "X-Auto-Response-Suppress: All\r\n",
        "List-Unsubscribe: <mailto:leave@list.example>\r\n",
    ],
)
def test_automatic_and_bulk_mail_is_flagged(extra: str) -> None:
    inbound = to_inbound(OUT_OF_OFFICE.format(extra=extra).encode(), channel="email", own_domain=DOMAIN)
    assert inbound.meta["auto_submitted"] is True
    assert inbound.meta["auto_submitted_reason"]
    assert inbound.thread.conversation_token == "a1b2c3d4e5f6"  # still threads with our auto-reply


def test_a_person_is_not_flagged() -> None:
    for extra in ("", "Auto-Submitted: no\r\n", "Precedence: normal\r\n"):
        inbound = to_inbound(OUT_OF_OFFICE.format(extra=extra).encode(), channel="email", own_domain=DOMAIN)
        assert "auto_submitted" not in inbound.meta


DSN = """\
From: MAILER-DAEMON@relay.example (Mail Delivery System)
To: support@acme.test
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
Message-ID: <dsn-1@relay.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example
Arrival-Date: Sun, 22 Nov 2026 10:00:00 +0000

Final-Recipient: rfc822; gone@example.com
Original-Recipient: rfc822;gone@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address
    rejected: User unknown

--B
Content-Type: text/rfc822-headers

From: support@acme.test
To: gone@example.com
Subject: Re: lamp
Message-ID: <umsg.42.a1b2c3d4e5f6@acme.test>

--B--
"""


def test_delivery_report_is_linked_to_our_message() -> None:
    inbound = to_inbound(DSN.replace("\n", "\r\n").encode(), channel="email", own_domain=DOMAIN)
    report = inbound.meta["delivery_report"]
    assert report["original_message_id"] == "<umsg.42.a1b2c3d4e5f6@acme.test>"
    assert report["outbound_message_id"] == 42
    assert report["failed"] == ["gone@example.com"]
    assert report["recipients"][0]["status"] == "5.1.1"
    assert report["recipients"][0]["diagnostic"] == (
        "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown")
    assert inbound.meta["auto_submitted"] is True
    assert "<umsg.42.a1b2c3d4e5f6@acme.test>" in inbound.thread.refs


def test_a_normal_message_has_no_report() -> None:
    assert parse_report(parse_bytes(b"From: a@b.example\r\n\r\nhi")) is None


# -- settings ---------------------------------------------------------------------------------------


def test_owned_addresses() -> None:
    assert SETTINGS.owns("support@acme.test") and SETTINGS.owns("<Support@ACME.test>")
    assert SETTINGS.owns("support+orders@acme.test")
    assert SETTINGS.owns("anyone@help.acme.test")
    assert SETTINGS.owns("reply+a1b2c3d4e5f6@acme.test")
    assert not SETTINGS.owns("sales@acme.test")
    assert not SETTINGS.owns("victim@elsewhere.example")
    assert not SETTINGS.owns("no-at-sign")
    assert EmailSettings(domain=DOMAIN).owns("whoever@acme.test")


def test_settings_from_url_and_registry() -> None:
    s = EmailChannel.settings_from_url(
        "email://127.0.0.1:2525?domain=acme.test&addresses=support@acme.test,@help.acme.test"
        "&relay=smtp://u:p@relay.example:587")
    assert isinstance(s, EmailSettings)
    assert s.listen == "127.0.0.1:2525" and s.addresses == ["support@acme.test", "@help.acme.test"]
    adapter = ChannelRegistry(use_entry_points=False).build("mail", ChannelSettings.model_validate(
        {"type": "email", "url": "email://0.0.0.0:25?domain=acme.test", "relay": "smtp://u:pw@relay:25",
         "auth_users": {"agent": "hunter2"}}))
    assert isinstance(adapter, EmailChannel)
    shown = str(adapter.describe())
    assert "hunter2" not in shown and ":pw@" not in shown


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"domain": "not a domain"}, "domain"),
        ({"domain": DOMAIN, "addresses": ["nobody"]}, "addresses"),
        ({"domain": DOMAIN, "listen": "nohost"}, "listen"),
        ({"domain": DOMAIN, "relay": "http://x"}, "relay"),
        ({"domain": DOMAIN, "tls_cert": "/c.pem"}, ""),
        ({"domain": DOMAIN, "lisen": "x:1"}, "lisen"),
    ],
)
def test_bad_settings_are_config_errors(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        EmailChannel.validate_settings(data)
    assert any(k == key for k, _ in err.value.problems), err.value.problems


def test_outbound_message_id_format() -> None:
    assert outbound_message_id(7, None, DOMAIN) == "<umsg.7.x@acme.test>"
