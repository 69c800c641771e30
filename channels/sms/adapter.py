"""The SMPP adapter: several bound transceivers per channel, MO in, MT out, receipts applied."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any, ClassVar

from channels.base import Capabilities, ChannelAdapter, InboundSink, Limits
from channels.sms import pdu as P
from channels.sms.concat import sar_tlvs, with_udh
from channels.sms.inbound import sender_number
from channels.sms.link import SmppLink, SmppPool
from channels.sms.mo import MoHandler
from channels.sms.pdu import ShortMessage
from channels.sms.receipts import id_forms
from channels.sms.settings import SmppSettings
from channels.sms.text import encode_text
from umsg.errors import PermanentError, TransientError
from umsg.model import DeliveryResult, DeliveryStatus, IdentityKind, Outbound
from umsg.services import ChannelServices

log = logging.getLogger(__name__)


class SmsChannel(ChannelAdapter[SmppSettings]):
    name: ClassVar[str] = "sms"
    capabilities: ClassVar[Capabilities] = Capabilities(delivery_receipts=True, realtime=True)
    limits: ClassVar[Limits] = Limits(max_text_chars=153 * 10, max_segments=10)
    Settings: ClassVar[type[SmppSettings]] = SmppSettings
    url_schemes: ClassVar[tuple[str, ...]] = ("smpp",)
    identity_kind: ClassVar[IdentityKind | None] = IdentityKind.PHONE
    legacy_channel_name: ClassVar[str | None] = "sms"

    def __init__(self, instance_name: str, settings: SmppSettings) -> None:
        super().__init__(instance_name, settings)
        self.services: ChannelServices | None = None
        self.mo: MoHandler | None = None
        self.links: list[SmppLink] = []
        self.pool: SmppPool | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def bind(self, services: ChannelServices) -> None:
        self.services = services

    async def start(self, sink: InboundSink) -> None:
        if self.services is None:
            raise TransientError("the SMPP channel needs the core's services: call bind() before start()")
        self._stop.clear()
        self.mo = MoHandler(self.settings, self.channel, sink, self.services)
        self.links = [SmppLink(self.settings, f"{self.instance_name}#{i}", self.mo, self.mo.expect)
                      for i in range(self.settings.connections)]
        self.pool = SmppPool(self.links, self.settings)
        self._tasks = [asyncio.create_task(link.run(self._stop), name=f"smpp-link-{link.label}")
                       for link in self.links]
        self._tasks.append(asyncio.create_task(self._sweep(), name=f"smpp-sweep-{self.instance_name}"))

    async def wait_bound(self, seconds: float = 10.0) -> None:
        """Until every connection is bound (for tests and start-up checks)."""
        await asyncio.wait_for(asyncio.gather(*(link.up.wait() for link in self.links)), seconds)

    async def _sweep(self) -> None:
        assert self.mo is not None
        interval = min(1.0, self.settings.reassembly_timeout_seconds / 4)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            try:
                await self.mo.sweep()
            except Exception:  # noqa: BLE001 - the sweeper must outlive a bad moment of the store
                log.exception("smpp %s: sweeping incomplete messages failed", self.instance_name)

    def pdus_for(self, outbound: Outbound) -> list[ShortMessage]:
        """The submit_sm bodies of one outgoing text, split as the settings say."""
        s = self.settings
        enc = encode_text(outbound.text)
        pieces = len(enc.parts)
        if pieces > s.max_segments:
            raise PermanentError(f"the text needs {pieces} SMS parts; this channel allows {s.max_segments}")
        dest = sender_number(outbound.recipient, s).removeprefix("+")
        if dest.startswith("alnum:"):
            raise PermanentError(f"{outbound.recipient!r} is not a number a text can be sent to")
        source = outbound.sender or s.source_addr
        alnum = bool(source) and not source.lstrip("+").isdigit()
        base = ShortMessage(source=source.lstrip("+"), destination=dest, data_coding=enc.data_coding,
                            registered_delivery=1 if s.registered_delivery else 0,
                            source_ton=5 if alnum else s.source_ton, source_npi=0 if alnum else s.source_npi,
                            dest_ton=s.dest_ton, dest_npi=s.dest_npi)
        if pieces == 1:
            return [_with(base, short_message=enc.parts[0])]
        ref = outbound.message_id  # stable across retries of the same message
        if s.concat == "payload":
            return [_with(base, tlvs={P.TLV_MESSAGE_PAYLOAD: enc.whole})]
        if s.concat == "sar":
            return [_with(base, short_message=body, tlvs=sar_tlvs(ref, pieces, i))
                    for i, body in enumerate(enc.parts, start=1)]
        bodies = with_udh(enc.parts, ref, sixteen_bit=s.concat == "udh16")
        return [_with(base, short_message=b, esm_class=P.ESM_UDHI) for b in bodies]

    async def send(self, outbound: Outbound) -> DeliveryResult:
        if self.pool is None or self.services is None:
            raise TransientError(f"SMPP channel {self.instance_name!r} is not started")
        pdus = self.pdus_for(outbound)
        reports = self.services.reports
        accepted = await self._accepted_before(outbound)
        for index, sm in enumerate(pdus):
            if index in accepted:
                continue  # the SMSC took this part on an earlier attempt: never twice
            smsc_id = await self.pool.submit(sm)
            accepted[index] = smsc_id
            # Before the next part and before anything else: the receipt for this id can arrive
            # milliseconds from now (it waits in MoHandler until this bind committed), and a crash
            # after this point must not make a retry submit the part again.
            try:
                await reports.bind(outbound.message_id, self.channel, id_forms(smsc_id),
                                   part=index if len(pdus) > 1 else None)
            finally:
                if self.mo is not None:
                    self.mo.settle(smsc_id)
        ids = [accepted[i] for i in range(len(pdus))]
        return DeliveryResult(DeliveryStatus.ACCEPTED, provider_id=ids[0],
                              detail=f"{len(ids)} part(s): {' '.join(ids)}")

    async def _accepted_before(self, outbound: Outbound) -> dict[int, str]:
        """Parts of this message the SMSC accepted on earlier attempts (as bound in the store).

        The dispatcher says which attempt this is; a first attempt cannot have any, which
        saves a read per message. Without that word we look (a direct or repeated call).
        """
        assert self.services is not None
        if outbound.meta.get("attempt") == 0:
            return {}
        return await self.services.reports.accepted_parts(outbound.message_id, self.channel)

    async def aclose(self) -> None:
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            try:
                await asyncio.wait_for(task, 15)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:  # noqa: BLE001
                log.exception("smpp task ended with an error")


def _with(base: ShortMessage, **changes: Any) -> ShortMessage:
    return replace(base, **changes)
