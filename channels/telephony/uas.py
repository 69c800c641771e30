"""The SIP server of the telephony front door: requests in, calls out to applications.

Answers INVITE (100, 180 unless `ringing` says not, then the app answers), ACK, BYE (200
only after the app's `run` returned), CANCEL (200, and 487 to an unanswered INVITE), OPTIONS,
in-dialog re-INVITE (see `call.Call.reinvite_received`); 481 for requests in unknown dialogs,
486 over `max_calls`, 404 for numbers `app_for` does not know, 400 for malformed requests we
can still address (anything else malformed is dropped), 405 for other methods. Retransmitted requests are answered
from the response cache, never processed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from channels.telephony import sdp, sipmsg
from channels.telephony.call import Call, CallApp, CallError
from channels.telephony.dialog import Dialog
from channels.telephony.sipmsg import SipMessage, SipParseError, response_to
from channels.telephony.transactions import ClientTransactions, ResponseCache, Timers
from channels.telephony.transport import SipListeners, Source, TcpLimits
from umsg.errors import PermanentError
from umsg.identity import normalise_phone

log = logging.getLogger(__name__)

AppLookup = Callable[[str], CallApp | None]
BYE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    tcp: bool = True
    max_calls: int = 50
    # Address put in Contact and SDP; defaults to the listening host.
    public_address: str | None = None
    default_region: str | None = None
    # Caps and time-outs of accepted SIP-over-TCP connections.
    tcp_limits: TcpLimits = TcpLimits()


@dataclass
class _Entry:
    call: Call
    task: asyncio.Task[None] | None = None


class SipServer:
    """One SIP front door; `app_for(dialled)` picks the application (None: 404)."""

    def __init__(self, config: ServerConfig, app_for: AppLookup, *, fax_app_for: AppLookup | None = None,
                 timers: Timers | None = None, ringing: Callable[[str], bool] | None = None) -> None:
        self.config = config
        self.app_for = app_for
        self.fax_app_for = fax_app_for
        # Whether a call to the dialled number gets 180 Ringing before the app answers (default:
        # always). Fax numbers answer at once, and some callers expect no 180.
        self.ringing = ringing
        self.timers = timers or Timers()
        self.transactions = ClientTransactions(self.timers)
        self._cache = ResponseCache(self.timers)
        self._calls: dict[str, _Entry] = {}  # by Call-ID
        self._listeners = SipListeners(self._handle, config.tcp_limits)
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"malformed": 0, "calls": 0, "rejected": 0}
        # Responses no transaction waits for (a retransmitted final to an INVITE we sent, which
        # must be ACKed again): `uac.SipClient` listens here.
        self.response_hooks: list[Callable[[SipMessage, Source], None]] = []

    async def start(self) -> None:
        await self._listeners.start(self.config.host, self.config.port, tcp=self.config.tcp)

    @property
    def port(self) -> int:
        return self._listeners.udp_port

    @property
    def tcp_port(self) -> int | None:
        return self._listeners.tcp_port

    @property
    def listeners(self) -> SipListeners:
        return self._listeners

    def adopt(self, call: Call) -> None:
        """Route in-dialog requests (BYE, re-INVITE) of an outgoing call to it until it ends."""
        entry = _Entry(call)
        self._calls[call.call_id] = entry
        self._spawn(self._forget_when_ended(entry))

    async def _forget_when_ended(self, entry: _Entry) -> None:
        await entry.call.ended.wait()
        entry.call.close_media()
        if self._calls.get(entry.call.call_id) is entry:
            del self._calls[entry.call.call_id]

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    @property
    def address(self) -> str:
        return self.config.public_address or self.config.host

    def _spawn(self, coro: asyncio.Future[None] | asyncio.Task[None] | object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- dispatch ---------------------------------------------------------------------------

    def _handle(self, data: bytes, source: Source) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            msg = sipmsg.parse(data, stream=source.reliable)
        except SipParseError as exc:
            self.stats["malformed"] += 1
            self._answer_malformed(data, source, str(exc))
            return
        if not msg.is_request:
            if not self.transactions.response(msg):
                for hook in self.response_hooks:
                    hook(msg, source)
            return
        seen, last = self._cache.seen(msg)
        if seen and msg.method != "ACK":
            if last is not None:
                source.send(last)
            return
        if msg.method != "ACK":
            self._cache.remember(msg, None)
        handler = {"INVITE": self._invite, "ACK": self._ack, "BYE": self._bye, "CANCEL": self._cancel,
                   "OPTIONS": self._options}.get(msg.method or "")
        if handler is None:
            self._reply(msg, source, response_to(msg, 405))
            return
        handler(msg, source)

    def _reply(self, req: SipMessage, source: Source, resp: SipMessage) -> None:
        if resp.status >= 200 or req.method == "INVITE":
            self._cache.remember(req, resp.to_bytes())
        source.send(resp.to_bytes())

    def _answer_malformed(self, data: bytes, source: Source, reason: str) -> None:
        """400 when the request still names Via, From, To, Call-ID and CSeq; otherwise drop it."""
        try:
            text = data[: sipmsg.MAX_MESSAGE_BYTES].decode("utf-8", "replace")
            first, _, rest = text.replace("\r\n", "\n").partition("\n")
            if first.startswith("SIP/2.0") or first.count(" ") < 2:
                return
            req = SipMessage(method=first.split(" ", 1)[0][:20], uri="sip:x")
            for line in rest.split("\n\n", 1)[0].split("\n")[: sipmsg.MAX_HEADERS]:
                name, colon, value = line.partition(":")
                if colon and name.strip() and " " not in name.strip():
                    req.headers.append((sipmsg.canonical(name.strip()), value.strip()))
            if all(req.get(h) for h in ("via", "from", "to", "call-id", "cseq")) and req.method != "ACK":
                source.send(response_to(req, 400, reason[:80]).to_bytes())
        except Exception:  # noqa: BLE001 - never let garbage reach the listener
            log.debug("dropped unparseable SIP from %s", source.addr)

    # -- methods ----------------------------------------------------------------------------

    def _options(self, req: SipMessage, source: Source) -> None:
        resp = response_to(req, 200, to_tag=sipmsg.new_tag())
        resp.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")
        resp.add("Accept", "application/sdp")
        self._reply(req, source, resp)

    def _invite(self, req: SipMessage, source: Source) -> None:
        to_tag = sipmsg.parse_name_addr(req.get("to") or "").tag
        if to_tag:
            entry = self._calls.get(req.call_id)
            if entry is None or entry.call.dialog.local_tag != to_tag:
                self._reply(req, source, response_to(req, 481))
                return
            self._spawn(self._reinvite(entry.call, req, source))
            return
        if req.call_id in self._calls:
            return  # a retransmission that outlived the cache
        source.send(response_to(req, 100).to_bytes())
        dialled = sipmsg.uri_user(req.uri) or sipmsg.parse_name_addr(req.get("to") or "").user
        app = self.app_for(dialled)
        if app is None:
            self.stats["rejected"] += 1
            self._reply(req, source, response_to(req, 404, to_tag=sipmsg.new_tag()))
            return
        if len(self._calls) >= self.config.max_calls:
            self.stats["rejected"] += 1
            self._reply(req, source, response_to(req, 486, to_tag=sipmsg.new_tag()))
            return
        try:
            offer = sdp.parse(req.body)
        except sdp.SdpError:
            self._reply(req, source, response_to(req, 488, to_tag=sipmsg.new_tag()))
            return
        call = self._new_call(req, source, offer, dialled)
        entry = _Entry(call)
        self._calls[req.call_id] = entry
        self.stats["calls"] += 1
        if self.ringing is None or self.ringing(dialled):
            ringing = call._response(180)  # noqa: SLF001 - the server owns the INVITE transaction
            source.send(ringing.to_bytes())
        entry.task = self._spawn(self._run(entry, app))

    def _new_call(self, req: SipMessage, source: Source, offer: sdp.SessionDescription, dialled: str) -> Call:
        frm = sipmsg.parse_name_addr(req.get("from") or "")
        # P-Asserted-Identity is what a trusted trunk vouches for; prefer it to From.
        pai = req.get("p-asserted-identity")
        who = sipmsg.parse_name_addr(pai) if pai else frm
        caller = who.user or "anonymous"
        with contextlib.suppress(PermanentError):
            number = normalise_phone(caller, self.config.default_region)
            caller = caller if number.startswith("alnum:") else number
        host = self.address
        contact = f"<sip:{dialled or 'umsg'}@{host}:{source.local[1]};transport={source.proto}>"
        dialog = Dialog.from_invite(req, sipmsg.new_tag(), contact, f"{host}:{source.local[1]}",
                                    source.proto.upper())
        fax_app = self.fax_app_for(dialled) if self.fax_app_for else None
        return Call(req.call_id, caller, who.display or frm.display, dialled, offer, req, dialog, source,
                    self.config.host, self.timers, self.transactions, fax_app=fax_app)

    async def _run(self, entry: _Entry, app: CallApp) -> None:
        call = entry.call
        try:
            await app.run(call)
        except CallError as exc:
            # The caller's side of the protocol failed (no ACK for our 200, an offer we cannot
            # answer): routine on a phone network, one line, no traceback.
            log.warning("call %s ended: %s", call.call_id, exc,
                        extra={"kv": {"call_id": call.call_id, "reason": str(exc)}})
        except Exception:  # noqa: BLE001 - an app failure ends its call, never the server
            log.exception("call app failed on call %s", call.call_id)
        finally:
            try:
                if not call.answered:
                    call.reject(480 if not call.ended.is_set() else 487)
                elif not call.ended.is_set():
                    await call.hangup()
            finally:
                call.close_media()
                self._calls.pop(call.call_id, None)

    def _ack(self, req: SipMessage, source: Source) -> None:
        entry = self._calls.get(req.call_id)
        if entry is not None:
            entry.call.ack_received()

    def _bye(self, req: SipMessage, source: Source) -> None:
        entry = self._calls.get(req.call_id)
        to_tag = sipmsg.parse_name_addr(req.get("to") or "").tag
        if entry is None or entry.call.dialog.local_tag != to_tag:
            self._reply(req, source, response_to(req, 481))
            return
        entry.call.remote_bye()
        self._spawn(self._bye_after_app(entry, req, source))

    async def _bye_after_app(self, entry: _Entry, req: SipMessage, source: Source) -> None:
        # The 200 tells the caller the message is safe: only after the app committed it.
        if entry.task is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(entry.task), BYE_WAIT_SECONDS)
        self._reply(req, source, response_to(req, 200))

    def _cancel(self, req: SipMessage, source: Source) -> None:
        entry = self._calls.get(req.call_id)
        if entry is None or entry.call.invite.branch != req.branch:
            self._reply(req, source, response_to(req, 481))
            return
        self._reply(req, source, response_to(req, 200))
        if entry.call.cancelled() and entry.task is not None:
            entry.task.cancel()

    async def _reinvite(self, call: Call, req: SipMessage, source: Source) -> None:
        resp = await call.reinvite_received(req)
        self._reply(req, source, resp)

    async def aclose(self) -> None:
        await self._listeners.aclose()
        for entry in list(self._calls.values()):
            entry.call.remote_bye()
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=10)
            for t in pending:
                t.cancel()
