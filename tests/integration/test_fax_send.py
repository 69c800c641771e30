"""Sending faxes over live SIP calls: an agent's reply (text and a PDF) is rendered, accepted at
once, called through the trunk by the gateway's own sending side to its own receiving number
(a second fax instance) and arrives page for page (`tiffcmp -t`), over T.38 and G.711; T.38
refused with 488 (to the INVITE or to our re-INVITE) falls back to G.711 and the fax still
arrives; a busy line is retried on the schedule, then the message fails with the reason."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from peers import sipp
from reportlab.pdfgen import canvas  # type: ignore[import-untyped]
from sqlalchemy import select

from channels.fax import FaxChannel, FaxSettings
from storage.models import Message, Part
from umsg.core import Core
from umsg.model import Address, IdentityKind, Inbound, InboundPart, OutboundPart
from umsg.outbound.dispatcher import Dispatcher
from umsg.outbound.outbox import Outbox

pytestmark = pytest.mark.slow
OURS = "+15550100"
THEIRS = "+15550200"
CALL_SECONDS = 240


def one_page_pdf() -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.setFont("Helvetica", 18)
    c.drawString(72, 720, "Invoice 2026-118: 3 items, total 420.00 EUR")
    c.rect(72, 500, 300, 150)
    c.showPage()
    c.save()
    return buf.getvalue()


async def same_images(a: Path, b: Path) -> bool:
    proc = await asyncio.create_subprocess_exec("tiffcmp", "-t", str(a), str(b), stdout=asyncio.subprocess.DEVNULL)
    return await proc.wait() == 0


async def fax_conversation(core: Core) -> tuple[int, int]:
    """A conversation with the customer's fax number known: (project id, conversation id)."""
    res = await core.ingest.ingest(Inbound(channel="fax", sender=Address(IdentityKind.FAX, THEIRS),
                                           recipients=(OURS,), dedupe_key="seed-fax", raw=b"seed",
                                           text="Please fax me the invoice"))
    async with core.readers() as s:
        project_id = await s.scalar(select(Message.project_id).where(Message.id == res.message_id))
    assert project_id is not None
    return project_id, res.conversation_id


async def start_pair(core: Core, send: dict[str, Any], box: dict[str, Any]) -> tuple[FaxChannel, FaxChannel]:
    """The receiving number's instance, and the sending instance whose trunk points at it."""
    receiving = FaxChannel("faxin", FaxSettings.model_validate({"port": 0, "numbers": {THEIRS: box}}))
    receiving.bind(core.channel_services())
    await receiving.start(core.ingest.ingest)
    trunk = f"sip:{{number}}@127.0.0.1:{receiving.port}"
    sending = FaxChannel("fax", FaxSettings.model_validate(
        {"port": 0, "send": {"trunk": trunk, "ident": OURS, "retry_seconds": [0.05], **send}}))
    sending.bind(core.channel_services())
    await sending.start(core.ingest.ingest)
    return receiving, sending


async def message(core: Core, message_id: int) -> Message:
    async with core.readers() as s:
        msg = await s.get(Message, message_id)
    assert msg is not None
    return msg


@pytest.mark.parametrize(("send", "box", "transport", "t38"), [
    ({"t38": "invite"}, {}, "t38", "invite"),
    ({"t38": "off"}, {}, "audio", "none"),
    ({"t38": "reinvite"}, {"t38": False}, "audio", "refused"),
    ({"t38": "invite"}, {"t38": False}, "audio", "none"),
], ids=["t38", "g711", "reinvite-488-g711", "invite-488-g711"])
async def test_reply_is_faxed_to_our_own_number_and_arrives_intact(
    core: Core, tmp_path: Path, send: dict[str, Any], box: dict[str, Any], transport: str, t38: str
) -> None:
    project_id, conversation_id = await fax_conversation(core)
    receiving, sending = await start_pair(core, send, box)
    try:
        reply = await Outbox(core.sessions, core.events, blobs=core.blobs).reply(
            project_id=project_id, conversation_id=conversation_id, channel="fax", text="Invoice attached.",
            attachments=[OutboundPart("application/pdf", one_page_pdf(), "invoice.pdf")])
        assert reply.to_addrs == [THEIRS]
        dispatcher = Dispatcher(core.sessions, core.events, {"fax": sending}, "d", blobs=core.blobs)
        assert await dispatcher.run_once() == 1  # accepted at once; the call runs in the background
        assert sending.outgoing is not None
        result = await asyncio.wait_for(sending.outgoing.finished(reply.id), CALL_SECONDS)

        msg = await message(core, reply.id)
        assert msg.status == "delivered", (msg.status_detail, result)
        delivery = msg.flags["delivery"]
        assert delivery["pages"] == delivery["document_pages"] == 2  # the text page and the PDF
        assert delivery["transport"] == transport and delivery["t38"] == t38
        assert delivery["g711_fallback"] is (send["t38"] == "invite" and box.get("t38") is False)
        assert delivery["bit_rate"] >= 9600 and delivery["attempts"] == 1

        async with core.readers() as s:
            received = (await s.scalars(select(Message).where(Message.direction == "in"))).all()
            got = next((m for m in received if m.flags.get("result") == "complete"), None)
            assert got is not None, [m.flags for m in received]
            tiff = await s.scalar(select(Part).where(Part.message_id == got.id, Part.role == "document"))
        assert tiff is not None and got.flags["fax"]["pages"] == 2
        assert got.flags["fax"]["transport"] == transport
        sent_path, got_path = tmp_path / "sent.tif", tmp_path / "got.tif"
        sent_path.write_bytes(await core.blobs.get(delivery["document_sha256"]))
        got_path.write_bytes(await core.blobs.get(tiff.sha256))
        assert await same_images(sent_path, got_path)
    finally:
        await sending.aclose()
        await receiving.aclose()


async def test_busy_line_is_retried_on_schedule_then_fails_with_the_reason(core: Core, tmp_path: Path) -> None:
    project_id, conversation_id = await fax_conversation(core)
    proc, port = await sipp.start_uas(tmp_path / "sipp", "-m", "3", scenario="busy")
    sending = FaxChannel("fax", FaxSettings.model_validate({"port": 0, "send": {
        "trunk": f"sip:{{number}}@127.0.0.1:{port}", "ident": OURS, "retry_seconds": [0.05, 0.1],
        "max_attempts": 3}}))
    sending.bind(core.channel_services())
    await sending.start(core.ingest.ingest)
    try:
        reply = await Outbox(core.sessions, core.events, blobs=core.blobs).reply(
            project_id=project_id, conversation_id=conversation_id, channel="fax", text="Your order ships today.")
        assert await Dispatcher(core.sessions, core.events, {"fax": sending}, "d", blobs=core.blobs).run_once() == 1
        assert sending.outgoing is not None
        result = await asyncio.wait_for(sending.outgoing.finished(reply.id), 60)
    finally:
        await sending.aclose()
    code, out = await sipp.finish(proc)
    assert code == 0, out  # three INVITEs, each 486 ACKed
    msg = await message(core, reply.id)
    assert msg.status == "failed" and result["status"] == "failed"
    assert msg.status_detail is not None and "busy: 486" in msg.status_detail and "3 attempts" in msg.status_detail
    delivery = msg.flags["delivery"]
    assert delivery["attempts"] == 3 and delivery["pages"] == 0
    assert [h["outcome"] for h in delivery["history"]] == ["busy", "busy", "busy"]
    gaps = [b["at"] - a["at"] for a, b in zip(delivery["history"], delivery["history"][1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # the schedule, in order


async def test_unrenderable_attachment_fails_at_once(core: Core) -> None:
    project_id, conversation_id = await fax_conversation(core)
    sending = FaxChannel("fax", FaxSettings.model_validate(
        {"port": 0, "send": {"trunk": "sip:{number}@127.0.0.1:9", "ident": OURS}}))
    sending.bind(core.channel_services())
    await sending.start(core.ingest.ingest)
    try:
        reply = await Outbox(core.sessions, core.events, blobs=core.blobs).reply(
            project_id=project_id, conversation_id=conversation_id, channel="fax", text="",
            attachments=[OutboundPart("application/zip", b"PK\x03\x04", "x.zip")])
        assert await Dispatcher(core.sessions, core.events, {"fax": sending}, "d", blobs=core.blobs).run_once() == 1
    finally:
        await sending.aclose()
    msg = await message(core, reply.id)
    assert msg.status == "failed" and "cannot fax" in (msg.status_detail or "")


async def test_email_to_fax_route_faxes_the_mail_and_its_pdf(make_settings: Any, tmp_path: Path) -> None:
    # Staff mail fax+<number>@acme.test; the route forwards the text and the PDF to that number.
    route = {"name": "email-to-fax", "channel": "email", "to": r"re:fax\+\d+@acme\.test",
             "sender": r"re:.*@acme\.test",
             "action": "forward", "forward_to": "+{recipient_detail}", "forward_channel": "fax"}
    core = await Core.open(make_settings(routes=[route]))
    await core.start()
    receiving, sending = await start_pair(core, {"t38": "invite"}, {})
    try:
        pdf = one_page_pdf()
        res = await core.ingest.ingest(Inbound(
            channel="email", sender=Address(IdentityKind.EMAIL, "clerk@acme.test", "Clerk"),
            recipients=(f"fax+{THEIRS.lstrip('+')}@acme.test",), dedupe_key="<e2f-1@acme.test>", raw=b"mail",
            subject="Invoice", text="Invoice attached.",
            parts=(InboundPart("application/pdf", pdf, "invoice.pdf"),)))
        assert res.route == "email-to-fax" and res.queue_item_id is None
        async with core.readers() as s:
            out = (await s.scalars(select(Message).where(Message.direction == "out"))).one()
        assert (out.channel, out.to_addrs, out.flags["forward_of"]) == ("fax", [THEIRS], res.message_id)
        dispatcher = Dispatcher(core.sessions, core.events, {"fax": sending}, "d", blobs=core.blobs)
        assert await dispatcher.run_once() == 1
        assert sending.outgoing is not None
        await asyncio.wait_for(sending.outgoing.finished(out.id), CALL_SECONDS)
        sent = await message(core, out.id)
        assert sent.status == "delivered", sent.status_detail
        assert sent.flags["delivery"]["pages"] == 2  # the mail's text and the PDF's page
        async with core.readers() as s:
            got = (await s.scalars(select(Message).where(Message.direction == "in"))).all()
        assert [m.channel for m in got] == ["email", "faxin"]  # the mail, then the fax it became
        assert got[1].flags["fax"]["pages"] == 2 and got[1].flags["result"] == "complete"
    finally:
        await sending.aclose()
        await receiving.aclose()
        await core.aclose()
