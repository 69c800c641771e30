"""The voicemail adapter: a SIP front door whose mailboxes turn calls into items and emails.

Which numbers are answered: exactly the mailboxes configured on the adapter (`mailboxes`,
keyed by dialled number; `*` is a catch-all), 404 for anything else. A mailbox carries what
the call needs (greeting, limits, owner) that a route cannot; where the item goes afterwards
(queue, skills, priority) is the channel routes' job, filtering on `to` (the dialled number)
and on `meta` (e.g. `dtmf`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from channels.base import Capabilities, ChannelAdapter, ChannelRef, InboundSink, Limits, Listener
from channels.telephony.call import Call, CallApp
from channels.telephony.uas import AppLookup, ServerConfig, SipServer
from channels.voicemail.audio import load_greeting, to_wav
from channels.voicemail.flow import Recording, VoicemailApp
from channels.voicemail.notify import DEFAULT_TEMPLATE, render
from channels.voicemail.settings import MailboxSettings, VoicemailSettings
from umsg.errors import ConfigError, PermanentError
from umsg.model import Address, DeliveryResult, IdentityKind, Inbound, InboundPart, Outbound

if TYPE_CHECKING:
    from umsg.services import ChannelServices

log = logging.getLogger(__name__)


class FaxApps(Protocol):
    """What the hand-over needs of a fax channel (`channels.fax.FaxChannel.app_for`)."""

    def app_for(self, dialled: str) -> CallApp | None: ...


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


class VoicemailChannel(ChannelAdapter[VoicemailSettings]):
    name: ClassVar[str] = "voicemail"
    capabilities: ClassVar[Capabilities] = Capabilities(outbound=False, attachments=True)
    limits: ClassVar[Limits] = Limits()
    Settings: ClassVar[type[VoicemailSettings]] = VoicemailSettings
    url_schemes: ClassVar[tuple[str, ...]] = ("voicemail", "sip")
    # Callers are known by their number; the channel itself cannot send (`send`), so an agent
    # answers on an SMS or email instance, picked in the reply.
    identity_kind: ClassVar[IdentityKind | None] = IdentityKind.PHONE
    legacy_channel_name: ClassVar[str | None] = "voicemail"

    def __init__(self, instance_name: str, settings: VoicemailSettings) -> None:
        super().__init__(instance_name, settings)
        self.server: SipServer | None = None
        self._services: ChannelServices | None = None
        self._sink: InboundSink | None = None
        self._apps: dict[str, VoicemailApp] = {}
        self._fax_apps: AppLookup | None = None

    def bind(self, services: ChannelServices) -> None:
        self._services = services

    def set_fax_apps(self, lookup: AppLookup) -> None:
        """The fax hand-over hook: which fax application takes a call to `number` (before start)."""
        self._fax_apps = lookup

    def bind_peers(self, adapters: Mapping[str, ChannelAdapter[Any]]) -> None:
        """Resolve `fax_channel` to the fax adapter a CNG-detected call is handed to."""
        name = self.settings.fax_channel
        if name is None:
            return
        fax = adapters.get(name)
        if fax is None or not callable(getattr(fax, "app_for", None)):
            raise ConfigError([(f"channels.{self.instance_name}.fax_channel",
                                f"no fax channel instance named {name!r}")])
        self.set_fax_apps(self._fax_lookup(fax))  # type: ignore[arg-type]

    def _fax_lookup(self, fax: FaxApps) -> AppLookup:
        def lookup(dialled: str) -> CallApp | None:
            # Resolved per call: the fax channel builds its apps when it starts.
            box = self.mailbox_for(dialled)
            number = self.settings.mailboxes[box].fax_number if box is not None else None
            return fax.app_for(number or dialled)
        return lookup

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def listeners(self) -> list[Listener]:
        s = self.settings
        return [Listener("udp", s.host, s.port), *([Listener("tcp", s.host, s.port)] if s.tcp else [])]

    def channel_refs(self) -> list[ChannelRef]:
        s, refs = self.settings, []
        if s.fax_channel is not None:
            refs.append(ChannelRef("fax_channel", s.fax_channel, type="fax"))
        if s.notify_channel is not None or any(b.owner_email for b in s.mailboxes.values()):
            refs.append(ChannelRef("notify_channel", s.notify_channel, kind=IdentityKind.EMAIL))
        return refs

    def mailbox_for(self, dialled: str) -> str | None:
        boxes = self.settings.mailboxes
        if dialled in boxes:
            return dialled
        want = _digits(dialled)
        found = next((k for k in boxes if want and _digits(k) == want), None)
        return found or ("*" if "*" in boxes else None)

    def _app_for(self, dialled: str) -> CallApp | None:
        box = self.mailbox_for(dialled)
        return self._apps.get(box) if box is not None else None

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink
        for number, box in self.settings.mailboxes.items():
            greeting = await load_greeting(box.greeting)
            self._apps[number] = VoicemailApp(number, box, greeting, self.settings.silence_threshold, self._deliver)
        s = self.settings
        config = ServerConfig(s.host, s.port, s.tcp, s.max_calls, s.public_address, s.default_region,
                              s.sip_tcp.limits())
        self.server = SipServer(config, self._app_for, fax_app_for=self._fax_apps)
        await self.server.start()
        log.info("voicemail channel %s listening for SIP on port %s", self.instance_name, self.server.port)

    def _project(self, box: MailboxSettings) -> str:
        default = self._services.default_project if self._services else "default"
        return box.project or self.settings.project or default

    def to_inbound(self, call: Call, rec: Recording) -> Inbound:
        box = self.settings.mailboxes[rec.mailbox]
        missed = rec.seconds < box.min_seconds
        who = call.caller + (f" ({call.caller_name})" if call.caller_name else "")
        meta = {"dtmf": rec.digits, "missed_call": missed, "duration_seconds": round(rec.seconds, 3),
                "ended_by": rec.ended_by, "mailbox": rec.mailbox, "fax_tone": rec.fax_tone,
                "rtp": rec.stats, "sip_call_id": call.call_id}
        parts: tuple[InboundPart, ...] = ()
        if missed:
            text = f"Missed call from {who} to {call.dialled}"
        else:
            text = f"Voicemail from {who} to {call.dialled}, {rec.seconds:.1f} s"
            parts = (InboundPart("audio/wav", to_wav(rec.pcm), "voicemail.wav", role="recording"),)
        return Inbound(channel=self.channel, sender=Address(IdentityKind.PHONE, call.caller, call.caller_name),
                       recipients=(call.dialled,), dedupe_key=f"sip:{call.call_id}", raw=call.invite.to_bytes(),
                       raw_media_type="message/sip", subject=text, text=text, parts=parts,
                       provider_id=call.call_id, sent_at=rec.started_at, project=self._project(box), meta=meta)

    async def _deliver(self, call: Call, rec: Recording) -> None:
        assert self._sink is not None
        inbound = self.to_inbound(call, rec)
        result = await self._sink(inbound)
        box = self.settings.mailboxes[rec.mailbox]
        if result.duplicate or inbound.meta["missed_call"] or not box.owner_email or self._services is None:
            return
        try:
            await self._notify(call, rec, box, result.message_id, result.conversation_id)
        except Exception:  # noqa: BLE001 - the voicemail is stored; the mail is a courtesy
            log.exception("voicemail-to-email failed for message %s", result.message_id)

    async def _notify(self, call: Call, rec: Recording, box: MailboxSettings, message_id: int,
                      conversation_id: int) -> None:
        services = self._services
        assert services is not None and box.owner_email is not None
        stored = await services.messages.get(message_id)
        if stored is None:
            return
        mp3_ids = [p.id for p in stored.parts if p.media_type == "audio/mpeg"]
        values = {"caller": call.caller, "caller_name": call.caller_name or "", "number": call.dialled,
                  "time": rec.started_at.isoformat(timespec="seconds"), "duration": f"{rec.seconds:.1f}",
                  "digits": rec.digits, "link": services.conversation_link(conversation_id)}
        await services.outbox.notify(
            project_id=stored.project_id, conversation_id=conversation_id, channel=self.settings.notify_channel,
            to=box.owner_email, subject=render(box.email_subject, values),
            text=render(box.email_template or DEFAULT_TEMPLATE, values), attach_part_ids=mp3_ids)

    async def send(self, outbound: Outbound) -> DeliveryResult:
        raise PermanentError("the voicemail channel cannot send; answer the caller by SMS or email")

    async def aclose(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.aclose()
        self._sink = None
