"""SMPP faults against the real server: throttling, the SMSC going away mid-stream, a malformed PDU."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import pytest
from peers.smsc import Proxy, Smsc, eventually, running_smsc, smpp_channel
from sqlalchemy import select

from channels.sms import gsm
from storage.models import Message
from umsg.errors import TransientError
from umsg.model import Address, IdentityKind, Inbound, Outbound
from umsg.outbound.dispatcher import Dispatcher


async def seed(core: Any, number: str = "+447700900123") -> tuple[int, int]:
    result = await core.ingest.ingest(Inbound(
        channel="sms", sender=Address(IdentityKind.PHONE, number), recipients=("447700900000",),
        dedupe_key=f"seed-{number}", raw=b"seed", text="hi"))
    return await core.ensure_project("default"), result.conversation_id


async def test_throttling_backs_off_and_retries(core: Any) -> None:
    async with running_smsc(receipts=None) as smsc, smpp_channel(core, smsc.port, smsc) as channel:
        project, conv = await seed(core)
        msg = await core.outbox.reply(project_id=project, conversation_id=conv, text="slow down", channel="sms")
        smsc.throttle_next = 4
        result = await channel.send(Outbound(message_id=msg.id, channel="sms", sender="",
                                             recipient=msg.to_addrs[0], text="slow down"))
        assert result.status.value == "accepted"
        assert smsc.throttled == 4
        assert [gsm.decode(s.short_message) for s in smsc.submitted] == ["slow down"]


async def test_smsc_going_away_mid_stream_loses_nothing_and_sends_nothing_twice(core: Any) -> None:
    async with running_smsc(receipts=None) as smsc:
        proxy = Proxy(smsc.port)  # lets the SMSC vanish abruptly, mid-conversation
        await proxy.start()
        try:
            async with smpp_channel(core, proxy.port, smsc, connections=2) as channel:
                await _outage(core, smsc, proxy, channel)
        finally:
            await proxy.aclose()
        texts = [gsm.decode(s.short_message) for s in smsc.submitted]
        assert sorted(texts) == sorted([f"before {i}" for i in range(3)] + [f"during {i}" for i in range(4)])


async def _outage(core: Any, smsc: Smsc, proxy: Proxy, channel: Any) -> None:
    project, conv = await seed(core)
    stop = asyncio.Event()
    dispatcher = Dispatcher(core.sessions, core.events, {"sms": channel}, "test", blobs=core.blobs,
                            idle_seconds=0.1)
    runner = asyncio.create_task(dispatcher.run(stop))
    try:
        first = [await core.outbox.reply(project_id=project, conversation_id=conv, text=f"before {i}",
                                         channel="sms") for i in range(3)]
        await eventually(lambda: _all_sent(core, [m.id for m in first]), "the first texts sent")
        smsc.hold = True  # the next submits reach the SMSC but are never answered...
        later = [await core.outbox.reply(project_id=project, conversation_id=conv, text=f"during {i}",
                                         channel="sms") for i in range(4)]
        await eventually(_held(smsc, 2), "submits held by the SMSC")
        await proxy.drop()  # ...and then it goes away without a word
        await smsc.stop()
        assert not await _all_sent(core, [m.id for m in later])
        smsc.hold = False
        await smsc.start()
        await proxy.start()
        await eventually(lambda: _all_sent(core, [m.id for m in first + later]), "every text sent", 30)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)
    assert min(link.binds for link in channel.links) >= 2


def _held(smsc: Smsc, count: int) -> Any:
    async def check() -> bool:
        return len(smsc._held) >= count  # noqa: SLF001 - the peer's own bookkeeping

    return check


async def _all_sent(core: Any, ids: list[int]) -> bool:
    async with core.readers() as s:
        rows = (await s.scalars(select(Message.status).where(Message.id.in_(ids)))).all()
    return len(rows) == len(ids) and all(r in ("sent", "delivered") for r in rows)


async def test_a_long_text_cut_off_mid_way_resends_only_its_missing_parts(core: Any) -> None:
    """The connection dies after the SMSC accepted 2 of 3 parts; a retry (a fresh process) sends part 3 only."""
    text = "Part of a long reply that needs three SMS parts to reach the customer. " * 5  # 355 GSM chars
    async with running_smsc(receipts=None, hold_after=2) as smsc:
        project, conv = await seed(core)
        msg = await core.outbox.reply(project_id=project, conversation_id=conv, text=text, channel="sms")
        outbound = Outbound(message_id=msg.id, channel="sms", sender="", recipient=msg.to_addrs[0], text=text,
                            meta={"attempt": 0})
        proxy = Proxy(smsc.port)
        await proxy.start()
        try:
            async with smpp_channel(core, proxy.port, smsc, send_timeout_seconds=1.0) as channel:
                assert len(channel.pdus_for(outbound)) == 3
                sending = asyncio.create_task(channel.send(outbound))
                await eventually(_held(smsc, 1), "the third part held by the SMSC")
                await proxy.drop()  # the connection dies with part 3 unanswered
                with pytest.raises(TransientError):
                    await sending
        finally:
            await proxy.aclose()
        first_try = [(s.short_message[5], s.message_id) for s in smsc.submitted]
        assert [seq for seq, _ in first_try] == [1, 2]
        smsc.drop_held()
        # A new channel instance: nothing of the first attempt survives in memory, only in the store.
        async with smpp_channel(core, smsc.port, smsc) as channel:
            result = await channel.send(replace(outbound, meta={"attempt": 1}))
        assert result.status.value == "accepted"
        assert [s.short_message[5] for s in smsc.submitted] == [1, 2, 3]  # part 3 once, parts 1-2 never again
        assert result.provider_id == first_try[0][1]
        assert result.detail.split(": ", 1)[1].split() == [mid for _, mid in first_try] + [smsc.submitted[2].message_id]
        assert "".join(gsm.decode(s.short_message[6:]) for s in smsc.submitted) == text


async def test_malformed_pdu_closes_that_session_only(core: Any) -> None:
    async with running_smsc(receipts=None) as smsc:
        proxy = Proxy(smsc.port)
        await proxy.start()
        try:
            async with smpp_channel(core, proxy.port, smsc, connections=2) as channel:
                victim = next(link for link in channel.links if link.session is not None)
                other = next(link for link in channel.links if link is not victim)
                index = [link.session.label for link in channel.links if link.session].index(victim.session.label)
                survivor = other.session
                # The proxy's connections are in the order the links connected; find the victim's by label order.
                proxy.inject(index, b"\x00\x00\x00\x05\xff")  # a PDU shorter than its own header
                await eventually(lambda: _binds(victim, 2), "the victim rebinding")
                assert "malformed PDU" in victim.last_error
                assert survivor is other.session and not survivor.closed.is_set()
                await smsc.wait_sessions(2)
                for i in range(len(smsc.esmes)):
                    assert await smsc.mo(f"still here {i}".encode(), source=f"4477009001{i:02d}", session=i) == 0
                async with core.readers() as s:
                    got = (await s.scalars(select(Message.text).where(Message.direction == "in"))).all()
                assert sorted(got) == ["still here 0", "still here 1"]
        finally:
            with contextlib.suppress(Exception):
                await proxy.aclose()


async def _binds(link: Any, n: int) -> bool:
    return bool(link.binds >= n and link.session is not None)


async def test_a_submit_the_smsc_never_answers_fails_transiently_and_the_session_is_replaced(core: Any) -> None:
    async with running_smsc(receipts=None) as smsc, \
            smpp_channel(core, smsc.port, smsc, response_timeout_seconds=0.3, send_timeout_seconds=1.0) as channel:
        project, conv = await seed(core)
        msg = await core.outbox.reply(project_id=project, conversation_id=conv, text="anyone?", channel="sms")
        out = Outbound(message_id=msg.id, channel="sms", sender="", recipient=msg.to_addrs[0], text="anyone?",
                       meta={"attempt": 0})
        link = channel.links[0]
        smsc.hold = True
        # Each unanswered submit ends its session; the part is tried on the next one until the send's deadline.
        with pytest.raises(TransientError, match="no response in time"):
            await channel.send(out)
        assert "no response" in link.last_error and link.binds >= 2
        smsc.drop_held()  # that submit is never answered; the session that sent it is gone
        await eventually(lambda: _binds(link, 2), "the link rebinding")
        result = await channel.send(replace(out, meta={}))
        assert result.status.value == "accepted"
        assert [gsm.decode(s.short_message) for s in smsc.submitted] == ["anyone?"]
