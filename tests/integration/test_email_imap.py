"""The IMAP poller against a real Dovecot: poll, IDLE, a poisoned message, restarts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.common import await_until
from peers.dovecot import Dovecot, available
from sqlalchemy import func, select

from channels.email import EmailChannel, EmailSettings
from channels.email.imap_poller import REJECTED_FLAG, Mailbox
from storage.models import ChannelState, Message
from umsg.errors import TransientError
from umsg.model import Inbound, IngestResult

# Locally a missing package skips; in CI (CI set) the test runs and fails loudly instead.
pytestmark = pytest.mark.skipif(not available() and not os.environ.get("CI"),
                                reason="needs dovecot (apt-get install dovecot-imapd)")
DOMAIN = "acme.test"
NO_SENDER = "no sender address (no usable From, Sender or envelope sender)"


def mail(n: int, sender: str = "customer@example.com") -> bytes:
    return (f"From: {sender}\r\nTo: support@acme.test\r\nSubject: question {n}\r\n"
            f"Message-ID: <imap-{n}@example.com>\r\n\r\nQuestion number {n}\r\n").encode()


@pytest.fixture
async def dovecot() -> AsyncIterator[Dovecot]:
    server = Dovecot()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


def make_channel(core: Any, dovecot: Dovecot, **overrides: Any) -> EmailChannel:
    settings = EmailSettings(domain=DOMAIN, imap=dovecot.url(), imap_timeout_seconds=10, **overrides)
    channel = EmailChannel("mailbox", settings)
    channel.bind(core.channel_services())
    return channel


async def stored(core: Any) -> int:
    async with core.readers() as s:
        return int(await s.scalar(select(func.count()).select_from(Message)) or 0)


async def wait_stored(core: Any, n: int) -> None:
    async def check() -> bool:
        return await stored(core) >= n
    deadline = asyncio.get_running_loop().time() + 30
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {n} stored messages"
        await asyncio.sleep(0.05)  # polling the store for a condition


async def checkpoint(core: Any, dovecot: Dovecot) -> dict[str, Any]:
    async with core.readers() as s:
        key = Mailbox.from_url(dovecot.url()).key
        row = await s.scalar(select(ChannelState).where(ChannelState.key == key))
    return dict(row.value) if row is not None else {}


def flags(dovecot: Dovecot) -> dict[str, str]:
    """Message-ID -> Maildir flags as Dovecot wrote them into the file names (read in a thread)."""
    out = {}
    for sub in ("cur", "new"):
        for path in (dovecot.maildir("support") / sub).iterdir():
            mid = next((line.split(b":", 1)[1].strip().decode() for line in path.read_bytes().splitlines()
                        if line.lower().startswith(b"message-id:")), path.name)
            out[mid] = path.name.split(":2,", 1)[1] if ":2," in path.name else ""
    return out


def keywords(dovecot: Dovecot) -> list[str]:
    path = dovecot.maildir("support") / "dovecot-keywords"
    return path.read_text().split() if path.exists() else []


async def test_poll_idle_seen_after_commit_and_checkpoint(core: Any, dovecot: Dovecot) -> None:
    for n in range(3):
        dovecot.deliver(mail(n))
    # A long poll interval: the fourth message can only arrive this quickly through IDLE.
    channel = make_channel(core, dovecot, imap_poll_seconds=600)
    await channel.start(core.ingest.ingest)
    try:
        await wait_stored(core, 3)
        assert channel.poller is not None
        await await_until(lambda: channel.poller.rounds >= 1, "the first round")  # type: ignore[union-attr]
        state = await checkpoint(core, dovecot)
        assert state["last_uid"] == 3 and state["uidvalidity"]
        seen = await asyncio.to_thread(flags, dovecot)
        assert all("S" in seen[f"<imap-{n}@example.com>"] for n in range(3)), seen

        dovecot.deliver(mail(3))
        await wait_stored(core, 4)
        # the checkpoint follows the commit (and the \Seen flag) a moment later
        await await_until(lambda: channel.poller.rounds >= 2, "the round after IDLE")  # type: ignore[union-attr]
        assert (await checkpoint(core, dovecot))["last_uid"] == 4
    finally:
        await channel.aclose()
    assert core.ingest.stats["duplicates"] == 0


async def test_a_poisoned_message_is_set_aside_and_the_rest_go_on(core: Any, dovecot: Dovecot) -> None:
    dovecot.deliver(mail(1))
    dovecot.deliver(b"Subject: no sender anywhere\r\n\r\nwho am I?\r\n")
    dovecot.deliver(mail(3))
    channel = make_channel(core, dovecot, imap_poll_seconds=600)
    await channel.start(core.ingest.ingest)
    try:
        await wait_stored(core, 2)
        assert channel.poller is not None
        await await_until(lambda: channel.poller.rounds >= 1, "the first round")  # type: ignore[union-attr]
        state = await checkpoint(core, dovecot)
        assert state["last_uid"] == 3
        assert state["set_aside"] == [{"uid": 2, "reason": NO_SENDER}]
    finally:
        await channel.aclose()
    seen = await asyncio.to_thread(flags, dovecot)
    assert "S" in seen["<imap-1@example.com>"] and "S" in seen["<imap-3@example.com>"]
    poisoned = next(v for k, v in seen.items() if not k.startswith("<imap-"))
    assert "S" not in poisoned  # never marked read: a person should look at it
    assert REJECTED_FLAG in await asyncio.to_thread(keywords, dovecot)


async def test_restart_in_the_middle_neither_loses_nor_repeats(core: Any, dovecot: Dovecot) -> None:
    for n in range(5):
        dovecot.deliver(mail(n))
    calls: list[str] = []

    async def crashing_sink(inbound: Inbound) -> IngestResult:
        # The store fails on the third message, as if the process died there.
        if len(calls) == 2:
            raise TransientError("store unavailable")
        calls.append(inbound.dedupe_key)
        result: IngestResult = await core.ingest.ingest(inbound)
        return result

    first = make_channel(core, dovecot, imap_poll_seconds=600)
    await first.start(crashing_sink)
    await wait_stored(core, 2)
    await first.aclose()
    assert (await checkpoint(core, dovecot))["last_uid"] == 2
    assert "S" not in (await asyncio.to_thread(flags, dovecot))["<imap-2@example.com>"]

    second = make_channel(core, dovecot, imap_poll_seconds=600)
    await second.start(core.ingest.ingest)
    try:
        await wait_stored(core, 5)
        assert second.poller is not None
        await await_until(lambda: second.poller.rounds >= 1, "a full round")  # type: ignore[union-attr]
    finally:
        await second.aclose()
    assert await stored(core) == 5
    assert core.ingest.stats["duplicates"] == 0  # nothing was fetched twice
    assert (await checkpoint(core, dovecot))["last_uid"] == 5


async def test_the_server_going_away_is_survived(core: Any, dovecot: Dovecot) -> None:
    dovecot.deliver(mail(1))
    channel = make_channel(core, dovecot, imap_poll_seconds=600)
    await channel.start(core.ingest.ingest)
    try:
        await wait_stored(core, 1)
        await asyncio.to_thread(dovecot.stop)  # BYE / connection lost in the middle of IDLE
        dovecot.deliver(mail(2))
        await asyncio.to_thread(dovecot.start)  # same port, same mailbox
        await wait_stored(core, 2)  # reconnected with back-off and picked up the new mail
    finally:
        await channel.aclose()
    assert (await checkpoint(core, dovecot))["last_uid"] == 2


async def test_a_new_uidvalidity_rescans_instead_of_missing_mail(core: Any, dovecot: Dovecot) -> None:
    # A checkpoint from before the mailbox was recreated: its UIDs mean nothing now.
    key = Mailbox.from_url(dovecot.url()).key
    async with core.sessions() as s:
        s.add(ChannelState(channel="mailbox", key=key, value={"uidvalidity": 1, "last_uid": 99, "set_aside": []}))
        await s.commit()
    for n in range(2):
        dovecot.deliver(mail(n))
    channel = make_channel(core, dovecot, imap_poll_seconds=600)
    await channel.start(core.ingest.ingest)
    try:
        await wait_stored(core, 2)
    finally:
        await channel.aclose()
    state = await checkpoint(core, dovecot)
    assert state["uidvalidity"] != 1 and state["last_uid"] == 2


async def test_a_server_that_never_answers_does_not_hang_the_poller(core: Any) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # accept the connection, never send a greeting

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = EmailSettings(domain=DOMAIN, imap=f"imap://u:p@127.0.0.1:{port}/INBOX", imap_timeout_seconds=0.5)
    channel = EmailChannel("mailbox", settings)
    channel.bind(core.channel_services())
    await channel.start(core.ingest.ingest)
    try:
        # the greeting times out, the poller backs off and tries again
        await await_until(lambda: len(connections) >= 2, "a reconnect after the timeout")
    finally:
        await asyncio.wait_for(channel.aclose(), 10)
        for w in connections:
            w.close()
        server.close()
        await server.wait_closed()
    assert channel.poller is not None and channel.poller.rounds == 0


async def test_processed_mail_can_be_moved_to_a_folder(core: Any, dovecot: Dovecot) -> None:
    dovecot.make_folder("Processed")
    for n in range(2):
        dovecot.deliver(mail(n))
    channel = make_channel(core, dovecot, imap_poll_seconds=600, imap_move_to="Processed")
    await channel.start(core.ingest.ingest)
    try:
        await wait_stored(core, 2)
        assert channel.poller is not None
        await await_until(lambda: channel.poller.rounds >= 1, "the first round")  # type: ignore[union-attr]
    finally:
        await channel.aclose()
    moved = await asyncio.to_thread(dovecot.folder_messages, "Processed")
    assert len(moved) == 2
    assert await asyncio.to_thread(flags, dovecot) == {}  # the INBOX is empty now
