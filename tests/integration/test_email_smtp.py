"""Inbound SMTP against a real client: the corpus, recipient policy, 250-after-commit, limits, TLS, AUTH."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from peers.common import await_until
from sqlalchemy import func, select

from channels.email import EmailChannel, EmailSettings
from storage.models import Conversation, Message
from umsg.model import Inbound, IngestResult

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "email" / "imap_tools"
DOMAIN = "acme.test"
RCPT = "support@acme.test"


async def start_channel(sink: Callable[[Inbound], Any], **overrides: Any) -> EmailChannel:
    settings = EmailSettings(domain=DOMAIN, addresses=[RCPT], listen="127.0.0.1:0", **overrides)
    channel = EmailChannel("mail", settings)
    await channel.start(sink)
    return channel


@pytest.fixture
async def channel(core: Any) -> AsyncIterator[EmailChannel]:
    ch = await start_channel(core.ingest.ingest)
    try:
        yield ch
    finally:
        await ch.aclose()


async def send(port: int, raw: bytes, *, rcpt: str = RCPT, sender: str = "customer@example.com") -> str:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False) as client:
        _errors, response = await client.sendmail(sender, [rcpt], raw)
        return response


async def test_every_corpus_message_is_stored_or_refused_with_a_reason(
    core: Any, channel: EmailChannel
) -> None:
    files = sorted(CORPUS.rglob("*.eml"))
    assert len(files) == 113
    accepted, refused = 0, []
    for path in files:
        try:
            answer = await send(channel.port or 0, path.read_bytes())
        except aiosmtplib.SMTPDataError as exc:
            assert exc.code == 554 and exc.message, path  # a stated, permanent reason
            refused.append((path.name, exc.message))
            continue
        assert answer.startswith("2.0.0 OK: stored as message"), answer
        accepted += 1
    assert accepted + len(refused) == 113
    assert refused == []  # with an envelope sender every corpus message can be stored
    async with core.readers() as s:
        stored = await s.scalar(select(func.count()).select_from(Message).where(Message.channel == "mail"))
    # byte-identical (or relay-header-only) copies in the corpus are one message
    assert stored == 113 - channel.handler.stats["duplicates"]  # type: ignore[union-attr]
    assert channel.handler.stats["failed"] == 0  # type: ignore[union-attr]
    # the listener kept running throughout
    still = await send(channel.port or 0, b"From: a@example.com\r\nSubject: still here\r\n\r\nyes\r\n")
    assert still.startswith("2.0.0")


async def test_250_comes_after_the_commit(core: Any) -> None:
    seen: list[int] = []

    async def sink(inbound: Inbound) -> IngestResult:
        result: IngestResult = await core.ingest.ingest(inbound)
        async with core.readers() as s:  # committed: visible to another session before we answer
            assert await s.get(Message, result.message_id) is not None
        seen.append(result.message_id)
        return result

    ch = await start_channel(sink)
    try:
        raw = b"From: a@example.com\r\nMessage-ID: <c1@example.com>\r\n\r\nhi\r\n"
        answer = await send(ch.port or 0, raw)
        assert answer == f"2.0.0 OK: stored as message {seen[0]}"
    finally:
        await ch.aclose()


async def test_only_our_addresses_are_accepted(channel: EmailChannel) -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as err:
        await send(channel.port or 0, b"From: a@example.com\r\n\r\nrelay me\r\n",
                   rcpt="victim@elsewhere.example")
    refused = err.value.recipients[0]
    assert refused.code == 550 and refused.message.startswith("5.1.1")
    assert (await send(channel.port or 0, b"From: a@example.com\r\n\r\nto a reply address\r\n",
                       rcpt="reply+a1b2c3d4e5f6@acme.test")).startswith("2.0.0")


async def test_internal_failure_is_451_never_a_bounce() -> None:
    async def broken(inbound: Inbound) -> IngestResult:
        raise RuntimeError("database went away")

    ch = await start_channel(broken)
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            await send(ch.port or 0, b"From: a@example.com\r\n\r\nhi\r\n")
        assert err.value.code == 451 and err.value.message.startswith("4.3.0")
    finally:
        await ch.aclose()


async def test_size_limit_is_advertised_and_enforced(core: Any) -> None:
    ch = await start_channel(core.ingest.ingest, max_message_bytes=4096)
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=ch.port or 0, start_tls=False) as client:
            await client.ehlo()
            assert client.supports_extension("size") and client.esmtp_extensions["size"] == "4096"
            big = b"From: a@example.com\r\n\r\n" + b"x" * 8000 + b"\r\n"
            with pytest.raises((aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError)) as err:
                await client.sendmail("a@example.com", [RCPT], big)
            assert err.value.code == 552
    finally:
        await ch.aclose()


async def test_session_limit_and_a_stalled_client_do_not_block_others(core: Any) -> None:
    ch = await start_channel(core.ingest.ingest, max_sessions=2)
    port = ch.port or 0
    try:
        # One client stalls in the middle of DATA, holding a session.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        for line in (b"EHLO slow\r\n", b"MAIL FROM:<slow@example.com>\r\n", f"RCPT TO:<{RCPT}>\r\n".encode(),
                     b"DATA\r\n", b"From: slow@example.com\r\n\r\nhalf a mess"):
            writer.write(line)
        await writer.drain()
        second = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await second.connect()
        # the limit is reached: a third client is turned away with a transient 421
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as err:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False):
                pass
        assert err.value.code == 421
        # ... while the admitted one is served despite the stalled session
        _e, answer = await second.sendmail("b@example.com", [RCPT], b"From: b@example.com\r\n\r\nquick\r\n")
        assert answer.startswith("2.0.0")
        await second.quit()
        writer.close()
        await writer.wait_closed()
        # sessions are counted down when they end; then the next client gets in
        assert ch.handler is not None
        gate = ch.handler.gate
        await await_until(lambda: gate.open == 0, "both sessions to be released")
        assert (await send(port, b"From: c@example.com\r\n\r\nafter\r\n")).startswith("2.0.0")
    finally:
        await ch.aclose()


def _self_signed(tmp: Path) -> tuple[str, str]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=acme.test"], check=True, capture_output=True)
    return str(cert), str(key)


async def test_starttls_and_auth(core: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    ch = await start_channel(core.ingest.ingest, tls_cert=cert, tls_key=key, auth_users={"agent": "hunter2"})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=ch.port or 0, start_tls=False,
                                   tls_context=ctx) as client:
            await client.ehlo()
            assert client.supports_extension("starttls")
            assert not client.supports_extension("auth")  # no AUTH before TLS when TLS is configured
            await client.starttls()
            await client.ehlo()
            assert client.supports_extension("auth")
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.login("agent", "wrong")
            await client.login("agent", "hunter2")
            _e, answer = await client.sendmail("a@example.com", [RCPT], b"From: a@example.com\r\n\r\ntls\r\n")
            assert answer.startswith("2.0.0")
    finally:
        await ch.aclose()


async def test_a_copied_conversation_tag_does_not_pull_a_stranger_in(core: Any, channel: EmailChannel) -> None:
    port = channel.port or 0
    await send(port, b"From: alice@example.com\r\nSubject: lamp\r\nMessage-ID: <t1@example.com>\r\n\r\nbroken\r\n")
    async with core.readers() as s:
        first = (await s.scalars(select(Message).where(Message.provider_id == "<t1@example.com>"))).one()
        token = (await s.get(Conversation, first.conversation_id)).token  # type: ignore[union-attr]
    tagged = f"Subject: Re: lamp [#{token}]\r\n\r\nmore\r\n"
    await send(port, f"From: alice@example.com\r\nMessage-ID: <t2@example.com>\r\n{tagged}".encode())
    await send(port, f"From: mallory@example.net\r\nMessage-ID: <t3@example.com>\r\n{tagged}".encode())
    await send(port, f"From: alice@example.com\r\nTo: reply+{token}@acme.test\r\nMessage-ID: <t4@example.com>\r\n"
                     "Subject: other words\r\n\r\nvia the reply address\r\n".encode(), rcpt=f"reply+{token}@acme.test")
    async with core.readers() as s:
        rows = dict((await s.execute(select(Message.provider_id, Message.conversation_id).where(
            Message.provider_id.in_(["<t2@example.com>", "<t3@example.com>", "<t4@example.com>"])))).all())
    assert rows["<t2@example.com>"] == first.conversation_id  # the customer, by the subject tag
    assert rows["<t4@example.com>"] == first.conversation_id  # the customer, by the reply+ address
    assert rows["<t3@example.com>"] != first.conversation_id  # a stranger with a copied tag: new thread
