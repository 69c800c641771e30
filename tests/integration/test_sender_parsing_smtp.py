"""Forged and Outlook-style From headers sent by a real SMTP client to the gateway's listener.

Issue 16's findings, as a hostile (and an ordinary Outlook) sender would do it: aiosmtplib
delivers over a loopback socket to the email channel's SMTP listener, the ingest stores the
messages, and the agent API's timeline shows them. The forged display name must not pull the
mail into the impersonated customer's contact, and the agent sees the warning; Outlook's
encoded "Müller, Hans" must be accepted (250), not bounced (554 before the fix). The IMAP
poller (a real Dovecot) and the importer (a Maildir) go through the same parse and must
file and flag the same messages the same way.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from api_harness import Api
from peers.dovecot import Dovecot, available
from sqlalchemy import func, select

from channels.email import EmailChannel, EmailSettings
from channels.email.importer import import_paths
from storage.models import Contact, Identity, Message

DOMAIN = "acme.test"
RCPT = "support@acme.test"
FORGED = "From: =?utf-8?q?Sales_=3Csales=40acme=2Eexample=3E?= <attacker@evil.example>"
OUTLOOK = "From: =?iso-8859-1?Q?M=FCller=2C_Hans?= <hans.mueller@example.de>"


@pytest.fixture
async def port(api: Api) -> AsyncIterator[int]:
    channel = EmailChannel("mail", EmailSettings(domain=DOMAIN, addresses=[RCPT], listen="127.0.0.1:0"))
    await channel.start(api.core.ingest.ingest)
    try:
        yield channel.port or 0
    finally:
        await channel.aclose()


async def send(port: int, from_line: str, msgid: str, *, envelope: str) -> str:
    raw = (f"{from_line}\r\nTo: {RCPT}\r\nSubject: invoice {msgid}\r\nMessage-ID: <{msgid}@example.org>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease pay to the new account.\r\n")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False) as client:
        _errors, response = await client.sendmail(envelope, [RCPT], raw.encode())
        return response


async def stored(api: Api, msgid: str) -> Message:
    async with api.core.readers() as s:
        return (await s.scalars(select(Message).where(Message.provider_id == f"<{msgid}@example.org>"))).one()


async def identities(api: Api, contact_id: int) -> list[str]:
    async with api.core.readers() as s:
        return list((await s.scalars(select(Identity.value).where(Identity.contact_id == contact_id))).all())


async def test_forged_display_name_is_stored_as_the_real_address_and_flagged(api: Api, port: int) -> None:
    # The customer being impersonated has written before.
    assert (await send(port, "From: Sales <sales@acme.example>", "real-1", envelope="sales@acme.example")
            ).startswith("2.0.0")
    customer = await stored(api, "real-1")

    answer = await send(port, FORGED, "forged-1", envelope="attacker@evil.example")
    assert answer.startswith("2.0.0 OK: stored as message")
    forged = await stored(api, "forged-1")
    assert forged.from_addr == "attacker@evil.example"
    assert forged.contact_id != customer.contact_id  # not in sales@acme.example's timeline
    assert forged.conversation_id != customer.conversation_id
    assert forged.flags["sender_warning"] == {
        "reasons": ["display_name_address"], "address": "attacker@evil.example",
        "display_name": "Sales <sales@acme.example>", "claimed": ["sales@acme.example"],
    }
    assert await identities(api, customer.contact_id) == ["sales@acme.example"]
    assert await identities(api, forged.contact_id) == ["attacker@evil.example"]
    async with api.core.readers() as s:
        contact = await s.get(Contact, forged.contact_id)
    assert contact is not None and contact.display_name is None  # not named after the victim

    # The agent's API shows the warning on the message, and the customer's timeline lacks it.
    reply = await api.call("GET", f"/api/v1/contacts/{forged.contact_id}/timeline", who="alice")
    assert reply.status == 200
    [entry] = [m for m in reply.body["items"] if m["id"] == forged.id]
    assert entry["sender_warning"]["claimed"] == ["sales@acme.example"]
    reply = await api.call("GET", f"/api/v1/contacts/{customer.contact_id}/timeline", who="alice")
    assert [m["id"] for m in reply.body["items"]] == [customer.id]
    assert reply.body["items"][0]["sender_warning"] is None


async def test_outlook_last_first_is_accepted_with_its_name(api: Api, port: int) -> None:
    # The envelope sender differs, so only the header can give the address and name.
    answer = await send(port, OUTLOOK, "outlook-1", envelope="bounces@mailer.example.de")
    assert answer.startswith("2.0.0 OK: stored as message")
    msg = await stored(api, "outlook-1")
    assert msg.from_addr == "hans.mueller@example.de"
    assert "sender_warning" not in msg.flags
    async with api.core.readers() as s:
        contact: Any = await s.get(Contact, msg.contact_id)
    assert contact.display_name == "Müller, Hans"
    assert await identities(api, msg.contact_id) == ["hans.mueller@example.de"]


async def test_outlook_base64_form_and_no_envelope_sender(api: Api, port: int) -> None:
    # A null envelope sender (as from a bounce or a forwarding rule): the header alone must do.
    answer = await send(port, "From: =?iso-8859-1?B?TfxsbGVyLCBIYW5z?= <hans.mueller@example.de>", "outlook-2",
                        envelope="")
    assert answer.startswith("2.0.0")
    msg = await stored(api, "outlook-2")
    assert msg.from_addr == "hans.mueller@example.de"


def _raw(from_line: str, msgid: str) -> bytes:
    return (f"{from_line}\r\nTo: {RCPT}\r\nSubject: {msgid}\r\nMessage-ID: <{msgid}@example.org>\r\n"
            "\r\nPlease pay to the new account.\r\n").encode()


async def _check_both(api: Api, prefix: str) -> None:
    forged = await stored(api, f"{prefix}-forged")
    assert forged.from_addr == "attacker@evil.example"
    assert forged.flags["sender_warning"]["claimed"] == ["sales@acme.example"]
    outlook = await stored(api, f"{prefix}-outlook")
    assert outlook.from_addr == "hans.mueller@example.de" and "sender_warning" not in outlook.flags
    async with api.core.readers() as s:
        contact: Any = await s.get(Contact, outlook.contact_id)
    assert contact.display_name == "Müller, Hans"


async def test_the_importer_files_and_flags_the_same_way(api: Api, tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(_raw(FORGED, "import-forged"))
    box.add(_raw(OUTLOOK, "import-outlook"))
    box.close()
    summary = await import_paths([tmp_path / "Maildir"], api.core.ingest.ingest, channel="email")
    assert (summary.ingested, summary.rejected) == (2, [])
    await _check_both(api, "import")


@pytest.mark.skipif(not available() and not os.environ.get("CI"),
                    reason="needs dovecot (apt-get install dovecot-imapd)")
async def test_the_imap_poller_files_and_flags_the_same_way(api: Api) -> None:
    server = Dovecot()
    await asyncio.to_thread(server.start)
    try:
        server.deliver(_raw(FORGED, "imap-forged"))
        server.deliver(_raw(OUTLOOK, "imap-outlook"))
        channel = EmailChannel("mailbox", EmailSettings(domain=DOMAIN, imap=server.url(), imap_timeout_seconds=10))
        channel.bind(api.core.channel_services())
        await channel.start(api.core.ingest.ingest)
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                async with api.core.readers() as s:
                    if await s.scalar(select(func.count()).select_from(Message)) == 2:
                        break
                assert asyncio.get_running_loop().time() < deadline, "the poller stored nothing"
                await asyncio.sleep(0.05)  # polling the store for a condition
        finally:
            await channel.aclose()
    finally:
        await asyncio.to_thread(server.cleanup)
    await _check_both(api, "imap")
