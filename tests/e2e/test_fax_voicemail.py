"""A fax machine dialling a voicemail number: the voicemail flow hears CNG and hands the call to
the fax channel named by its `fax_channel` setting (`bind_peers`), which receives the fax.
sipp replays the recorded G.711 fax call into the voicemail channel (the shared scenario, in a
copy that also accepts the 180 Ringing a voicemail number sends); the stored TIFF equals
itu1.tif by `tiffcmp -t`, and no voicemail item is made."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from peers.common import free_port
from sqlalchemy import select

from channels.base import ChannelAdapter
from channels.fax import FaxChannel, FaxSettings
from channels.voicemail.adapter import VoicemailChannel
from channels.voicemail.settings import VoicemailSettings
from storage.models import Message, Part
from umsg.core import Core
from umsg.errors import ConfigError

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[3] / "shared"
CORPUS = SHARED / "corpus" / "fax"
PCAP = "fax_itu1_pcmu.pcap"


async def same_images(a: Path, b: Path) -> bool:
    proc = await asyncio.create_subprocess_exec("tiffcmp", "-t", str(a), str(b), stdout=asyncio.subprocess.DEVNULL)
    return await proc.wait() == 0


def test_unknown_fax_channel_is_a_config_error() -> None:
    vm = VoicemailChannel("vm", VoicemailSettings.model_validate({"fax_channel": "nofax"}))
    with pytest.raises(ConfigError, match="nofax"):
        vm.bind_peers({"vm": vm})


async def test_fax_machine_calling_voicemail_is_received_as_a_fax(make_settings: Any, tmp_path: Path) -> None:
    core = await Core.open(make_settings())
    await core.start()
    fax = FaxChannel("faxdesk", FaxSettings.model_validate({"port": 0, "numbers": {"+15550300": {}}}))
    # The shared scenario dials `fax`: here that is a voicemail mailbox, not a fax number.
    vm = VoicemailChannel("vm", VoicemailSettings.model_validate(
        {"port": 0, "fax_channel": "faxdesk", "mailboxes": {"fax": {"fax_number": "+15550300"}}}))
    adapters: dict[str, ChannelAdapter[Any]] = {"faxdesk": fax, "vm": vm}
    for adapter in adapters.values():
        adapter.bind(core.channel_services())
    for adapter in adapters.values():
        adapter.bind_peers(adapters)  # what serve does once every adapter is built
    await fax.start(core.ingest.ingest)
    await vm.start(core.ingest.ingest)
    folder = tmp_path / "sipp"
    folder.mkdir()
    shutil.copy(CORPUS / PCAP, folder / PCAP)
    scenario = (SHARED / "peers" / "uac_fax_pcap.xml").read_text().replace(
        '<recv response="100" optional="true"/>',
        '<recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>')
    (folder / "uac_fax_pcap.xml").write_text(scenario)
    try:
        proc = await asyncio.create_subprocess_exec(
            "sipp", f"127.0.0.1:{vm.port}", "-sf", "uac_fax_pcap.xml", "-m", "1",
            "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1", "-nostdin", "-timeout", "90s",
            cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        async with core.readers() as s:
            rows = list(await s.scalars(select(Message)))
        assert proc.returncode == 0, (out.decode(errors="replace")[-1500:], [m.flags for m in rows])
        (msg,) = [m for m in rows if m.channel == "faxdesk"]
        assert msg.flags["result"] == "complete" and msg.flags["fax_number"] == "+15550300", msg.flags
        assert not [m for m in rows if m.channel == "vm"]  # no voicemail item for the fax call
        async with core.readers() as s:
            tiff = await s.scalar(select(Part).where(Part.message_id == msg.id, Part.role == "document"))
        assert tiff is not None
        got = tmp_path / "got.tif"
        got.write_bytes(await core.blobs.get(tiff.sha256))
        assert await same_images(CORPUS / "itu1.tif", got)
    finally:
        await vm.aclose()
        await fax.aclose()
        await core.aclose()
