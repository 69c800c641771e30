"""The fax adapter: a SIP front door whose fax numbers turn calls into items and emails.

Numbers answered: exactly those configured in `numbers` (`*` is a catch-all), 404 otherwise.
Each received fax becomes an item whose raw original and `document` part is the TIFF (G4,
as SpanDSP wrote it); the `fax-to-pdf` and `fax-thumbnail` converters (enable them in the
`converters` setting) derive the PDF and the page-1 thumbnail. The number's owner gets the
PDF by email with the transfer details. A call that delivered no page is stored as a failed
fax attempt (no parts) so the caller still shows up in the queue.

Sending (with a `send` table): `send` renders the message (`compose.py`), stores a durable job
and answers ACCEPTED at once; the call through the trunk runs in the background
(`outgoing.py`, `transmit.py`, on the same SIP port) and its result reaches the message
through the delivery reports. `app_for` is also what a voicemail channel with
`fax_channel` set hands a fax machine to (`bind_peers` there).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from channels.base import Capabilities, ChannelAdapter, ChannelRef, InboundSink, Limits, Listener
from channels.fax.compose import render_outbound
from channels.fax.notify import DEFAULT_TEMPLATE, render
from channels.fax.outgoing import OutgoingFaxes
from channels.fax.receive import FaxReceiveApp, Reception
from channels.fax.settings import FaxNumberSettings, FaxSettings
from channels.fax.transmit import Transmission, transmit
from channels.telephony import digest
from channels.telephony.call import Call, CallApp
from channels.telephony.spandsp import SpanDsp
from channels.telephony.uac import ClientConfig, SipClient
from channels.telephony.uas import ServerConfig, SipServer
from umsg.errors import ConversionError, PermanentError
from umsg.identity import normalise_phone
from umsg.model import Address, DeliveryResult, DeliveryStatus, IdentityKind, Inbound, InboundPart, Outbound

if TYPE_CHECKING:
    from umsg.services import ChannelServices

log = logging.getLogger(__name__)


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def _sender(call: Call, station_id: str, region: str | None) -> Address:
    """The caller's fax identity: the SIP caller number, else the station id the machine sent.

    A caller that is neither (a SIP user name, `anonymous`) is kept as a `sip:` chat-style id
    so the fax is still stored; an agent then answers it by another channel.
    """
    for candidate in (call.caller, station_id):
        try:
            number = normalise_phone(candidate, region)
        except PermanentError:
            continue
        # An SMS-style alphanumeric id ("alnum:sipp") is no number a fax can be sent back to.
        if not number.startswith("alnum:"):
            return Address(IdentityKind.FAX, number, call.caller_name)
    return Address(IdentityKind.CHAT, f"sip:{call.caller}", call.caller_name)


def _result_word(reception: Reception) -> str:
    return "complete" if reception.outcome.ok else "partial" if reception.outcome.partial else "failed"


class FaxChannel(ChannelAdapter[FaxSettings]):
    name: ClassVar[str] = "fax"
    capabilities: ClassVar[Capabilities] = Capabilities(
        outbound=True, attachments=True, media_types=("application/pdf", "image/tiff", "image/png",
                                                       "image/jpeg", "text/plain"))
    limits: ClassVar[Limits] = Limits(max_attachment_bytes=20 * 1024 * 1024)
    Settings: ClassVar[type[FaxSettings]] = FaxSettings
    url_schemes: ClassVar[tuple[str, ...]] = ("fax",)
    identity_kind: ClassVar[IdentityKind | None] = IdentityKind.FAX
    legacy_channel_name: ClassVar[str | None] = "fax"

    def __init__(self, instance_name: str, settings: FaxSettings) -> None:
        super().__init__(instance_name, settings)
        self.server: SipServer | None = None
        self._services: ChannelServices | None = None
        self._sink: InboundSink | None = None
        self._apps: dict[str, FaxReceiveApp] = {}
        self._dsp: SpanDsp | None = None
        self.client: SipClient | None = None
        self.outgoing: OutgoingFaxes | None = None

    def bind(self, services: ChannelServices) -> None:
        self._services = services

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def listeners(self) -> list[Listener]:
        s = self.settings
        return [Listener("udp", s.host, s.port), *([Listener("tcp", s.host, s.port)] if s.tcp else [])]

    def channel_refs(self) -> list[ChannelRef]:
        s = self.settings
        if s.notify_channel is not None or any(n.owner_email for n in s.numbers.values()):
            return [ChannelRef("notify_channel", s.notify_channel, kind=IdentityKind.EMAIL)]
        return []

    def number_for(self, dialled: str) -> str | None:
        numbers = self.settings.numbers
        if dialled in numbers:
            return dialled
        want = _digits(dialled)
        found = next((k for k in numbers if want and _digits(k) == want), None)
        return found or ("*" if "*" in numbers else None)

    def app_for(self, dialled: str) -> CallApp | None:
        """The fax application for a dialled number (also the voicemail channel's CNG hand-over)."""
        number = self.number_for(dialled)
        return self._apps.get(number) if number is not None else None

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink
        self._dsp = SpanDsp.load()
        for number, box in self.settings.numbers.items():
            self._apps[number] = FaxReceiveApp(number, box, self.settings, self._dsp, self._deliver)
        s = self.settings
        config = ServerConfig(s.host, s.port, s.tcp, s.max_calls, s.public_address, s.default_region,
                              s.sip_tcp.limits())
        self.server = SipServer(config, self.app_for, fax_app_for=self.app_for, ringing=self._rings)
        await self.server.start()
        log.info("fax channel %s listening for SIP on port %s", self.instance_name, self.server.port)
        if s.send is not None and self._services is not None:
            creds = digest.Credentials(s.send.username, s.send.password or "") if s.send.username else None
            caller = s.send.caller or "".join(ch for ch in s.send.ident if ch.isdigit() or ch == "+") or "umsg"
            self.client = SipClient(self.server, ClientConfig(from_user=caller, credentials=creds,
                                                              ring_seconds=s.send.ring_seconds))
            self.outgoing = OutgoingFaxes(self.instance_name, self.channel, self._services, s.send, self._dial)
            resumed = await self.outgoing.resume()
            if resumed:
                log.info("fax channel %s resumed %d unfinished send job(s)", self.instance_name, resumed)

    def _rings(self, dialled: str) -> bool:
        number = self.number_for(dialled)
        return number is not None and self.settings.numbers[number].ringing

    async def _dial(self, number: str, tiff: Path) -> Transmission:
        s = self.settings
        assert self.client is not None and self._dsp is not None and s.send is not None
        return await transmit(self.client, self._dsp, s.send, number, tiff, ecm=s.ecm,
                              max_seconds=s.max_call_seconds, request_delay=s.t38_request_delay_seconds)

    def _project(self, box: FaxNumberSettings) -> str:
        default = self._services.default_project if self._services else "default"
        return box.project or self.settings.project or default

    def to_inbound(self, call: Call, reception: Reception) -> Inbound:
        box = self.settings.numbers[reception.number]
        out = reception.outcome
        word = _result_word(reception)
        station = f" ({out.remote_id})" if out.remote_id else ""
        meta = {"fax": out.as_dict(), "result": word, "t38": reception.t38, "udptl": reception.udptl,
                "sip_call_id": call.call_id, "fax_number": reception.number}
        if reception.tiff is not None:
            text = f"Fax from {call.caller}{station} to {call.dialled}: {out.pages} page(s), {word}"
            if word != "complete":
                text += f" ({out.reason})"
            parts: tuple[InboundPart, ...] = (InboundPart("image/tiff", reception.tiff, "fax.tif", role="document"),)
            raw, raw_type = reception.tiff, "image/tiff"
        else:
            text = f"Failed fax from {call.caller}{station} to {call.dialled}: {out.reason}"
            parts, raw, raw_type = (), call.invite.to_bytes(), "message/sip"
        sender = _sender(call, out.remote_id, self.settings.default_region)
        return Inbound(channel=self.channel, sender=sender,
                       recipients=(call.dialled,), dedupe_key=f"sip:{call.call_id}", raw=raw,
                       raw_media_type=raw_type, subject=text, text=text, parts=parts, provider_id=call.call_id,
                       sent_at=reception.started_at, project=self._project(box), meta=meta)

    async def _deliver(self, call: Call, reception: Reception) -> None:
        assert self._sink is not None
        inbound = self.to_inbound(call, reception)
        result = await self._sink(inbound)
        box = self.settings.numbers[reception.number]
        if result.duplicate or reception.tiff is None or not box.owner_email or self._services is None:
            return
        try:
            await self._notify(call, reception, box, result.message_id, result.conversation_id)
        except Exception:  # noqa: BLE001 - the fax is stored; the mail is a courtesy
            log.exception("fax-to-email failed for message %s", result.message_id)

    async def _notify(self, call: Call, reception: Reception, box: FaxNumberSettings, message_id: int,
                      conversation_id: int) -> None:
        services = self._services
        assert services is not None and box.owner_email is not None
        stored = await services.messages.get(message_id)
        if stored is None:
            return
        # The PDF when the converter made one; the TIFF itself otherwise.
        attach = [p.id for p in stored.parts if p.media_type == "application/pdf"] or \
                 [p.id for p in stored.parts if p.media_type == "image/tiff"][:1]
        out = reception.outcome
        values = {"sender": call.caller, "station": out.remote_id, "number": call.dialled,
                  "time": reception.started_at.isoformat(timespec="seconds"), "pages": out.pages,
                  "result": _result_word(reception), "reason": out.reason, "rate": out.bit_rate,
                  "ecm": "yes" if out.ecm else "no", "resolution": f"{out.x_dpi}x{out.y_dpi}",
                  "transport": out.transport, "link": services.conversation_link(conversation_id)}
        await services.outbox.notify(
            project_id=stored.project_id, conversation_id=conversation_id, channel=self.settings.notify_channel,
            to=box.owner_email, subject=render(box.email_subject, values),
            text=render(box.email_template or DEFAULT_TEMPLATE, values), attach_part_ids=attach)

    async def send(self, outbound: Outbound) -> DeliveryResult:
        """Render, store the job, answer ACCEPTED; the call and its report follow in the background."""
        if self.settings.send is None or self.outgoing is None:
            raise PermanentError(f"fax channel {self.instance_name} has no `send` settings (SIP trunk)")
        try:
            rendered = await render_outbound(self.settings.send, outbound, await self._flags(outbound.message_id))
        except ConversionError as exc:
            return DeliveryResult(DeliveryStatus.PERMANENT_FAILURE, detail=f"cannot fax this: {exc}")
        await self.outgoing.submit(outbound.message_id, outbound.recipient, rendered.tiff, rendered.pages,
                                   project_id=int(outbound.meta["project_id"]))
        return DeliveryResult(DeliveryStatus.ACCEPTED, detail=f"{rendered.pages} page(s) queued for calling")

    async def _flags(self, message_id: int) -> dict[str, Any]:
        if self._services is None:
            return {}
        stored = await self._services.messages.get(message_id, parts=False)
        return stored.flags if stored is not None else {}

    async def aclose(self) -> None:
        if self.outgoing is not None:
            outgoing, self.outgoing = self.outgoing, None
            await outgoing.aclose()
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()
        if self.server is not None:
            server, self.server = self.server, None
            await server.aclose()
        self._sink = None
