"""What a deliver_sm means to us: a receipt for one of our messages, a text, or part of one.

`MoHandler` answers each deliver_sm with the status for its deliver_sm_resp, and only
after what it carried is committed (the receipt applied, the text ingested, the part
stored). SMSC retries of a text carry the same dedupe key: the SMSC's own id when it
sends one (`mo_id_tlv`), else sender, recipient and a hash of the bytes, within
`dedupe_window_seconds`; long messages use the concatenation reference and their bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING

from channels.base import InboundSink
from channels.sms import pdu as P
from channels.sms.concat import segment_of
from channels.sms.inbound import sender_number, sms_inbound
from channels.sms.pdu import ShortMessage
from channels.sms.reassembly import Assembled, Reassembler
from channels.sms.receipts import id_forms, numeric_forms, parse_receipt
from channels.sms.settings import SmppSettings
from channels.sms.text import decode_text
from umsg.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from umsg.services import ChannelServices

log = logging.getLogger(__name__)

RAW_MEDIA_TYPE = "application/vnd.umsg.smpp+json"
RECEIPT_BITS = P.ESM_RECEIPT | P.ESM_INTERMEDIATE
ACK_BITS = 0x08 | 0x10  # SME delivery / manual acknowledgement: nothing for an agent


class MoHandler:
    """Turns deliver_sm into receipts and ingested texts for one channel."""

    def __init__(self, settings: SmppSettings, channel: str, sink: InboundSink, services: ChannelServices) -> None:
        self.settings = settings
        self.channel = channel
        self._sink = sink
        self._reports = services.reports
        self.reassembler = Reassembler(services.state, channel, settings.reassembly_timeout_seconds,
                                       float(settings.dedupe_window_seconds))
        # SMSC ids accepted but maybe not yet bound in the store: a receipt for one waits for its bind.
        self._binding: dict[str, asyncio.Event] = {}
        # Set (and replaced) whenever any id settles: a receipt that found nothing re-looks then.
        self._settled = asyncio.Event()
        self.stats = {"ingested": 0, "parts": 0, "receipts": 0, "unmatched_receipts": 0, "refused": 0}

    def expect(self, smsc_id: str) -> None:
        """Called as a submit_sm_resp is read, before any later PDU of the stream is handled."""
        event = asyncio.Event()
        for form in id_forms(smsc_id):
            self._binding[form] = event

    def settle(self, smsc_id: str) -> None:
        """The id is bound in the store (or never will be): receipts waiting for it go ahead."""
        for form in id_forms(smsc_id):
            event = self._binding.pop(form, None)
            if event is not None:
                event.set()
        self._settled.set()
        self._settled = asyncio.Event()

    async def _find(self, receipt_id: str) -> int | None:
        # Taken before the lookup: a bind committing during it settles (and drops) these events,
        # and a receipt must not then conclude that its message was never ours.
        forms = [receipt_id, *numeric_forms(receipt_id)]
        pending = [self._binding[f] for f in forms if f in self._binding]
        settled = self._settled
        found = await self._lookup(receipt_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.response_timeout_seconds
        # Not found yet: its bind may still be committing, or (on a busy machine) the receipt
        # was handled before our send had even learnt the id. Look again after each bind
        # settles, until the response timeout; only then is the receipt not ours.
        while found is None and (left := deadline - loop.time()) > 0:
            waiter = pending[0] if pending and not pending[0].is_set() else settled
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), left)
            pending = [self._binding[f] for f in forms if f in self._binding]
            settled = self._settled
            found = await self._lookup(receipt_id)
        return found

    async def _lookup(self, receipt_id: str) -> int | None:
        """The message bound to this id exactly, else to the same number in either base."""
        found = await self._reports.find(self.channel, [receipt_id])
        if found is None:
            found = await self._reports.find(self.channel, numeric_forms(receipt_id))
        return found

    async def __call__(self, sm: ShortMessage) -> int:
        try:
            if sm.esm_class & RECEIPT_BITS:
                await self._receipt(sm)
            elif not sm.esm_class & ACK_BITS:
                await self._text(sm)
        except TransientError:
            log.warning("smpp %s: deliver_sm from %s not stored yet; the SMSC will retry",
                        self.channel, sm.source, exc_info=True)
            return P.ESME_RX_T_APPN
        except PermanentError as exc:
            self.stats["refused"] += 1
            log.error("smpp %s: deliver_sm from %s refused: %s", self.channel, sm.source, exc)
            return P.ESME_RX_P_APPN
        return P.ESME_ROK

    async def _receipt(self, sm: ShortMessage) -> None:
        receipt = parse_receipt(sm)
        if receipt is None:
            log.warning("smpp %s: a receipt names no message: %r", self.channel, sm.short_message[:160])
            return
        self.stats["receipts"] += 1
        message_id = await self._find(receipt.message_id)
        if message_id is None:
            self.stats["unmatched_receipts"] += 1
            log.warning("smpp %s: receipt for unknown message id %s (%s)", self.channel,
                        receipt.message_id, receipt.stat)
            return
        detail = receipt.stat + (f" err:{receipt.error}" if receipt.error and receipt.error.strip("0") else "")
        await self._reports.record(channel=self.channel, status=receipt.status, message_id=message_id,
                                   detail=detail, extra={"stat": receipt.stat, "err": receipt.error,
                                                         "done": receipt.done_date})

    async def _text(self, sm: ShortMessage) -> None:
        seg = segment_of(sm)
        source = sender_number(sm.source, self.settings)
        if not seg.is_part:
            text = decode_text(seg.payload, seg.data_coding)
            raw = {"form": seg.form, "data_coding": seg.data_coding, "pdu": sm.encode().hex()}
            await self._ingest(source, sm.destination, text, self._dedupe_key(sm, source, seg.payload), raw,
                               {"data_coding": seg.data_coding, "parts": 1, "form": seg.form})
            return
        self.stats["parts"] += 1
        assembled = await self.reassembler.add(source, sm.destination, seg)
        if assembled is not None:
            await self.ingest_assembled(assembled)

    async def ingest_assembled(self, a: Assembled) -> None:
        """Ingest a reassembled (or timed-out, incomplete) long message, then drop its parts."""
        meta = {"data_coding": a.data_coding, "parts": a.total, "form": a.form}
        if a.missing:
            meta.update(incomplete=True, missing_parts=list(a.missing))
        raw = {"form": a.form, "data_coding": a.data_coding, "parts": a.parts_hex}
        await self._ingest(a.source, a.destination, a.text, a.dedupe_key, raw, meta)
        await self.reassembler.forget(a)

    async def sweep(self) -> int:
        """Store long messages whose missing parts never came; returns how many."""
        done = 0
        for a in await self.reassembler.expired():
            log.warning("smpp %s: long message %s stored incomplete (missing parts %s)",
                        self.channel, a.group, list(a.missing))
            await self.ingest_assembled(a)
            done += 1
        return done

    def _dedupe_key(self, sm: ShortMessage, source: str, payload: bytes) -> str:
        if self.settings.mo_id_tlv is not None and sm.tlvs.get(self.settings.mo_id_tlv):
            return f"smpp:id:{sm.tlv_str(self.settings.mo_id_tlv)}"
        digest = hashlib.sha256(bytes([sm.data_coding]) + payload).hexdigest()[:16]
        bucket = int(time.time() // self.settings.dedupe_window_seconds)
        return f"smpp:{source}|{sm.destination}:{digest}:{bucket}"

    async def _ingest(self, source: str, destination: str, text: str, dedupe_key: str,
                      raw: dict[str, object], meta: dict[str, object]) -> None:
        inbound = sms_inbound(channel=self.channel, settings=self.settings, sender=source,
                              recipient=destination, text=text, dedupe_key=dedupe_key,
                              raw=json.dumps(raw, sort_keys=True).encode(), raw_media_type=RAW_MEDIA_TYPE,
                              meta=meta)
        await self._sink(inbound)
        self.stats["ingested"] += 1
