"""SMPP against the real smpp34 server: MO texts in every encoding and form, MT parts, receipts."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import smpp34
from peers.smsc import Smsc, eventually, running_smsc, smpp_channel
from sqlalchemy import select

from channels.sms import gsm
from storage.models import Message
from umsg.model import Address, IdentityKind, Inbound, Outbound

EMOJI_TEXT = "Grüße 👋🏽 from 北京, ça va? " * 4  # long, non-GSM, with surrogate pairs


async def texts(core: Any) -> list[Message]:
    async with core.readers() as s:
        return list((await s.scalars(select(Message).where(Message.direction == "in").order_by(Message.id))).all())


async def test_mo_single_gsm_is_acknowledged_after_commit(core: Any) -> None:
    async with running_smsc() as smsc, smpp_channel(core, smsc.port, smsc):
        # "€" and "[" are GSM extension characters (escape + code)
        status = await smsc.mo(b"Hello \x1be \x1b< \x00 price", source="447700900123")
        assert status == 0
        stored = await texts(core)  # the resp came after the commit: visible at once
        assert [m.text for m in stored] == ["Hello € [ @ price"]
        assert stored[0].from_addr == "+447700900123"
        assert stored[0].channel == "sms"


@pytest.mark.parametrize(("dc", "text", "encode"), [
    (0, "GSM long text with {braces} and € " * 8, gsm.encode),
    (3, "Latin-1 long: déjà vu, naïve façade, ½ ¾ ÿ " * 5, lambda t: t.encode("latin-1")),
    (8, EMOJI_TEXT, lambda t: t.encode("utf-16-be")),
])
@pytest.mark.parametrize("form", ["udh8", "udh16", "sar", "payload"])
async def test_mo_long_messages_reassemble_in_every_form(core: Any, form: str, dc: int, text: str,
                                                         encode: Any) -> None:
    data = encode(text)
    # Odd cut points on purpose: a sender may split an escape or a surrogate pair.
    chunks = [data[i:i + 67] for i in range(0, len(data), 67)]
    async with running_smsc() as smsc, smpp_channel(core, smsc.port, smsc):
        if form == "payload":
            statuses = [await smsc.mo(b"", data_coding=dc, tlvs=[smpp34.Tlv(smpp34.TLV_MESSAGE_PAYLOAD, data)])]  # type: ignore[attr-defined]
        else:
            statuses = []
            # parts arrive out of order, and one twice (an SMSC retry)
            order = [*range(len(chunks) - 1, -1, -1), 0]
            for i in order:
                statuses.append(await send_part(smsc, form, dc, chunks[i], ref=0x1234, total=len(chunks), seq=i + 1))
        assert set(statuses) == {0}
        stored = await texts(core)
        assert [m.text for m in stored] == [text]
        assert not (stored[0].flags.get("sms") or {}).get("incomplete")


async def send_part(smsc: Smsc, form: str, dc: int, body: bytes, *, ref: int, total: int, seq: int,
                    source: str = "447700900123") -> int:
    if form == "udh8":
        return await smsc.mo(bytes([5, 0, 3, ref & 0xFF, total, seq]) + body, data_coding=dc, esm_class=0x40,
                             source=source)
    if form == "udh16":
        udh = bytes([6, 8, 4]) + struct.pack(">HBB", ref, total, seq)
        return await smsc.mo(udh + body, data_coding=dc, esm_class=0x40, source=source)
    tlvs = [smpp34.Tlv(smpp34.TLV_SAR_MSG_REF_NUM, struct.pack(">H", ref)),  # type: ignore[attr-defined]
            smpp34.Tlv(smpp34.TLV_SAR_TOTAL_SEGMENTS, bytes([total])),  # type: ignore[attr-defined]
            smpp34.Tlv(smpp34.TLV_SAR_SEGMENT_SEQNUM, bytes([seq]))]  # type: ignore[attr-defined]
    return await smsc.mo(body, data_coding=dc, tlvs=tlvs, source=source)


async def test_missing_part_times_out_and_what_arrived_is_stored_incomplete(core: Any) -> None:
    async with running_smsc() as smsc, smpp_channel(core, smsc.port, smsc, reassembly_timeout_seconds=0.5):
        assert await send_part(smsc, "udh8", 0, gsm.encode("first part "), ref=7, total=3, seq=1) == 0
        assert await send_part(smsc, "udh8", 0, gsm.encode("third part"), ref=7, total=3, seq=3) == 0
        rows = await eventually(lambda: texts(core), "the incomplete message")
        assert rows[0].text == "first part  […] third part"
        meta = rows[0].flags.get("sms") or {}
        assert meta.get("incomplete") is True and meta.get("missing_parts") == [2]


async def test_mo_resent_by_the_smsc_is_stored_once(core: Any) -> None:
    async with running_smsc() as smsc, smpp_channel(core, smsc.port, smsc):
        for _ in range(3):
            assert await smsc.mo(b"same text", source="447700900123") == 0
        assert [m.text for m in await texts(core)] == ["same text"]
        assert core.ingest.stats["duplicates"] == 2


async def conversation_with(core: Any, number: str = "+447700900123") -> tuple[int, int]:
    result = await core.ingest.ingest(Inbound(
        channel="sms", sender=Address(IdentityKind.PHONE, number), recipients=("447700900000",),
        dedupe_key=f"seed-{number}", raw=b"seed", text="hi"))
    project_id = await core.ensure_project("default")
    return project_id, result.conversation_id


async def queue_reply(core: Any, text: str, number: str = "+447700900123") -> Outbound:
    project_id, conv = await conversation_with(core, number)
    msg = await core.outbox.reply(project_id=project_id, conversation_id=conv, text=text, channel="sms")
    return Outbound(message_id=msg.id, channel="sms", sender="", recipient=msg.to_addrs[0], text=text)


async def message(core: Any, message_id: int) -> Message:
    async with core.readers() as s:
        msg: Message | None = await s.get(Message, message_id)
        assert msg is not None
        return msg


@pytest.mark.parametrize(("text", "dc", "parts"), [
    ("Your order {42} ships today ~ €5", 0, 1),
    ("x" * 152 + "€" + "y" * 40, 0, 2),  # the escape of € must not end part one
    ("Grüße 👋🏽", 8, 1),
    ("😀" * 40 + "a" * 60, 8, 3),  # 80 surrogate units + 60 = 140 units: never split a pair
])
async def test_mt_is_split_and_arrives_whole_at_the_peer(core: Any, text: str, dc: int, parts: int) -> None:
    async with running_smsc(receipts=None) as smsc, smpp_channel(core, smsc.port, smsc) as channel:
        out = await queue_reply(core, text)
        result = await channel.send(out)
        assert result.status.value == "accepted"
        got = smsc.submitted
        assert len(got) == parts and {g.data_coding for g in got} == {dc}
        assert {g.destination for g in got} == {"447700900123"}
        if parts == 1:
            body = got[0].short_message
        else:
            headers = [g.short_message[:6] for g in got]
            assert [h[5] for h in headers] == list(range(1, parts + 1)) and {h[4] for h in headers} == {parts}
            assert all(g.esm_class & 0x40 for g in got)
            body = b"".join(g.short_message[6:] for g in got)
            for g in got[:-1]:
                piece = g.short_message[6:]
                if dc == 0:
                    assert piece[-1] != 0x1B
                else:
                    assert not 0xD8 <= piece[-2] <= 0xDB
        decoded = gsm.decode(body) if dc == 0 else body.decode("utf-16-be")
        assert decoded == text
        # every SMSC id is bound to the message before send returned
        refs = await core.reports.find("sms", [g.message_id for g in got])
        assert refs == out.message_id


@pytest.mark.parametrize("mode", ["hex", "decimal", "tlv"])
async def test_receipts_match_in_hex_decimal_and_tlv(core: Any, mode: str) -> None:
    async with running_smsc(receipts=mode) as smsc, smpp_channel(core, smsc.port, smsc) as channel:
        out = await queue_reply(core, "receipt please")
        await channel.send(out)
        msg = await _wait_status(core, out.message_id, "delivered")
        assert msg.status_detail and msg.status_detail.startswith("DELIVRD")
        # the SMSC sees our deliver_sm_resp just after the commit the status came from
        assert await eventually(lambda: _acks(smsc), "the receipt's deliver_sm_resp") == [0]


async def _acks(smsc: Smsc) -> list[int]:
    return smsc.receipt_acks


async def test_undeliverable_receipt_fails_the_message_and_marks_the_number(core: Any) -> None:
    from storage.models import Identity

    async with running_smsc(receipt_stat="UNDELIV") as smsc, smpp_channel(core, smsc.port, smsc) as channel:
        out = await queue_reply(core, "to a dead phone")
        await channel.send(out)
        await _wait_status(core, out.message_id, "failed")
        async with core.readers() as s:
            ident = await s.scalar(select(Identity).where(Identity.value == "+447700900123"))
        assert ident is not None and ident.failing


async def _wait_status(core: Any, message_id: int, status: str) -> Message:
    import asyncio

    async with asyncio.timeout(10):
        while True:
            msg: Message = await message(core, message_id)
            if msg.status == status:
                return msg
            await core.events.wait(0.2)


async def test_stop_over_smpp_opts_the_number_out(core: Any) -> None:
    from storage.models import Identity

    async with running_smsc() as smsc, smpp_channel(core, smsc.port, smsc):
        assert await smsc.mo(b"STOP", source="447700900777") == 0
        async with core.readers() as s:
            ident = await s.scalar(select(Identity).where(Identity.value == "+447700900777"))
        assert ident is not None and ident.opted_out
