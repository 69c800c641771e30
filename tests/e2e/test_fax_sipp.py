"""sipp replays recorded fax calls (G.711 µ-law and T.38) into a running fax channel: the stored
TIFF equals itu1.tif by `tiffcmp -t`, a one-page PDF and a thumbnail are derived, and the
number's owner gets the PDF by email through a real SMTP receiver. The shared scenario files
are used as they are: they accept only an optional 100 before the 200, which a fax number
gives (it answers without 180 Ringing unless its `ringing` setting says otherwise)."""

from __future__ import annotations

import asyncio
import email
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from peers.common import free_port
from sqlalchemy import select

from channels.email import EmailChannel, EmailSettings
from channels.fax import FaxChannel, FaxSettings
from storage.models import Message, Part
from umsg.core import Core
from umsg.outbound.dispatcher import Dispatcher

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[3] / "shared"
CORPUS = SHARED / "corpus" / "fax"
PEERS = SHARED / "peers"


class Receiver:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content)
        return "250 OK"


def prepare(folder: Path, pcap: str) -> None:
    # The shared scenarios name their recording relative to sipp's working folder.
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CORPUS / pcap, folder / pcap)


def error_logs(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.glob("*errors.log"))


async def same_images(a: Path, b: Path) -> bool:
    proc = await asyncio.create_subprocess_exec("tiffcmp", "-t", str(a), str(b), stdout=asyncio.subprocess.DEVNULL)
    return await proc.wait() == 0


async def run_sipp(folder: Path, scenario: str, pcap: str, port: int) -> tuple[int, str]:
    await asyncio.to_thread(prepare, folder, pcap)
    proc = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{port}", "-sf", str(PEERS / scenario), "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()),
        "-mi", "127.0.0.1", "-nostdin", "-timeout", "90s", "-trace_err",
        cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    errors = await asyncio.to_thread(error_logs, folder)
    return proc.returncode or 0, out.decode(errors="replace")[-1500:] + errors[-1500:]


@pytest.mark.parametrize(("scenario", "pcap", "transport"), [
    ("uac_fax_pcap.xml", "fax_itu1_pcmu.pcap", "audio"),
    ("uac_t38_pcap.xml", "fax_itu1_t38.pcap", "t38"),
], ids=["g711", "t38"])
async def test_recorded_fax_call_is_stored_as_itu1_with_pdf_and_mailed(
    make_settings: Any, tmp_path: Path, scenario: str, pcap: str, transport: str
) -> None:
    core = await Core.open(make_settings(converters=["fax-to-pdf", "fax-thumbnail"]))
    await core.start()
    receiver = Receiver()
    smtp = Controller(receiver, hostname="127.0.0.1", port=free_port())
    smtp.start()
    settings = FaxSettings.model_validate({"port": 0, "numbers": {"fax": {"owner_email": "owner@acme.test"}}})
    fax = FaxChannel("fax", settings)
    mail = EmailChannel("email", EmailSettings(domain="acme.test", relay=f"smtp://127.0.0.1:{smtp.port}"))
    fax.bind(core.channel_services())
    await fax.start(core.ingest.ingest)
    try:
        code, out = await run_sipp(tmp_path / "sipp", scenario, pcap, fax.port)

        async def stored() -> Message | None:
            async with core.readers() as s:
                return await s.scalar(select(Message).where(Message.channel == "fax"))

        if code != 0:
            found = await stored()
            raise AssertionError(f"sipp failed: {out}\nstored: {found.flags if found else None}")

        # sipp got its 200 to BYE, which is sent only after the ingest committed: no waiting.
        msg = await stored()
        assert msg is not None
        async with core.readers() as s:
            rows = list(await s.scalars(select(Part).where(Part.message_id == msg.id)))
        parts = {(p.role, p.media_type): p for p in rows}
        assert msg.flags["fax"]["pages"] == 1 and msg.flags["result"] == "complete", msg.flags
        assert msg.flags["fax"]["transport"] == transport
        assert msg.flags["t38"] == ("invite" if transport == "t38" else "none")
        tiff = parts[("document", "image/tiff")]
        assert parts[("raw", "image/tiff")].sha256 == tiff.sha256  # the TIFF is the raw original
        pdf = next(p for p in rows if p.media_type == "application/pdf")
        thumb = next(p for p in rows if p.media_type == "image/png")
        assert pdf.derived_from_id == tiff.id and thumb.derived_from_id == tiff.id
        got = tmp_path / "got.tif"
        await asyncio.to_thread(got.write_bytes, await core.blobs.get(tiff.sha256))
        assert await same_images(CORPUS / "itu1.tif", got)
        pdf_bytes = await core.blobs.get(pdf.sha256)
        assert pdf_bytes.count(b"/Type /Page ") == 1 and pdf.meta.get("pages", 1) == 1

        assert await Dispatcher(core.sessions, core.events, {"email": mail}, "d", blobs=core.blobs).run_once() == 1
        (raw,) = receiver.messages
        note = email.message_from_bytes(raw)
        assert note["To"] == "owner@acme.test" and "Fax from sipp" in note["Subject"]
        (attached,) = [p for p in note.walk() if p.get_content_type() == "application/pdf"]
        assert attached.get_payload(decode=True) == pdf_bytes
        body = next(p for p in note.walk() if p.get_content_type() == "text/plain").get_payload(decode=True)
        assert isinstance(body, bytes) and b"14400 bit/s" in body and b"/inbox/#/conversations/" in body
    finally:
        await fax.aclose()
        smtp.stop()
        await core.aclose()
