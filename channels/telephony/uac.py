"""Outgoing calls: a SIP user agent client that hands back the same `Call` incoming calls use.

`await client.call("sip:+4930123@gw.example:5060", t38=False)` sends an INVITE offering G.711
(PCMU, PCMA, telephone-event; or `m=image udptl t38` with `t38=True`), retransmits it over UDP
on RFC 3261 Timer A (T1 doubling) until a provisional response, gives up after Timer B (64·T1)
without any response, follows 100/180/183 (early-media SDP re-points RTP), answers a 401/407
once per challenge with digest credentials, ACKs every final response (again when the peer
retransmits it) and returns an answered `Call` on 2xx. After `ring_seconds` of ringing it sends
CANCEL; a 200 crossing the CANCEL is ACKed and hung up at once.

Failures are typed (`DialError` subclasses): `Busy` (486, 600), `NoAnswer` (ring timeout, 408,
480, 487), `Unreachable` (no response, connection refused), `AuthFailed` (401/407 without usable
credentials, or refused again), `Rejected` (any other final error, e.g. 404 or 488).

The client shares a `SipServer`'s sockets (one SIP port for both directions, so the peer's
in-dialog BYE and re-INVITE reach the call), or opens its own with `SipClient.open`, which
answers any incoming INVITE 404. Not handled: Record-Route/Route sets (direct peers only),
challenges to in-dialog requests, DNS SRV (the target's host is used as given).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from channels.telephony import digest, sdp, sipmsg
from channels.telephony.call import Call, CallError
from channels.telephony.dialog import Dialog
from channels.telephony.rtp import RtpSession, open_session
from channels.telephony.sipmsg import SipMessage
from channels.telephony.transport import Source
from channels.telephony.uas import ServerConfig, SipServer

log = logging.getLogger(__name__)

Progress = Callable[[SipMessage], None]
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
# A peer that keeps sending fresh (or "stale") nonces is refusing us, not re-keying.
MAX_CHALLENGES = 3


class DialError(CallError):
    """An outgoing call was not answered; `status` is the final SIP status (0: none arrived)."""

    outcome = "failed"

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{self.outcome}: {status} {reason}".strip())
        self.status = status
        self.reason = reason


class Busy(DialError):
    outcome = "busy"


class NoAnswer(DialError):
    outcome = "no-answer"


class Unreachable(DialError):
    outcome = "unreachable"


class AuthFailed(DialError):
    outcome = "auth-failed"


class Rejected(DialError):
    outcome = "rejected"


def error_for(status: int, reason: str) -> DialError:
    """The typed error a final non-2xx status stands for."""
    if status in (486, 600):
        return Busy(status, reason)
    if status in (408, 480, 487):
        return NoAnswer(status, reason)
    if status in (401, 407):
        return AuthFailed(status, reason)
    return Rejected(status, reason)


@dataclass(frozen=True)
class ClientConfig:
    """Who we call as, and how long a call may ring."""

    from_user: str = "umsg"
    display_name: str | None = None
    credentials: digest.Credentials | None = None
    ring_seconds: float = 60.0


@dataclass(frozen=True)
class Target:
    uri: str
    host: str
    port: int
    proto: str  # udp | tcp

    @classmethod
    def parse(cls, target: str, transport: str | None = None) -> Target:
        uri = target if target.startswith(("sip:", "sips:")) else f"sip:{target}"
        host, port = sipmsg.uri_hostport(uri)
        proto = transport or sipmsg.header_param(uri, "transport") or "udp"
        if not host:
            raise CallError(f"no host in {target!r}")
        return cls(uri, host, port or 5060, proto.lower())


class SipClient:
    """Places outgoing calls through a `SipServer`'s sockets; see the module docstring."""

    def __init__(self, server: SipServer, config: ClientConfig | None = None, *, owns_server: bool = False) -> None:
        self.server = server
        self.config = config or ClientConfig()
        self._owns_server = owns_server
        # ACKs to re-send when a final response to our INVITE is retransmitted: (Call-ID, CSeq).
        self._acks: dict[tuple[str, int], tuple[float, bytes]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        server.response_hooks.append(self._stray_response)

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0, *, tcp: bool = True,
                   config: ClientConfig | None = None) -> SipClient:
        """A client with sockets of its own (incoming INVITEs are answered 404)."""
        server = SipServer(ServerConfig(host, port, tcp), lambda _number: None)
        await server.start()
        return cls(server, config, owns_server=True)

    async def aclose(self) -> None:
        with contextlib.suppress(ValueError):
            self.server.response_hooks.remove(self._stray_response)
        for task in list(self._closers):
            task.cancel()
        await asyncio.gather(*self._closers, return_exceptions=True)
        if self._owns_server:
            await self.server.aclose()

    # -- placing a call ---------------------------------------------------------------------

    async def call(self, target: str, *, t38: bool = False, transport: str | None = None,
                   ring_seconds: float | None = None, on_progress: Progress | None = None,
                   t38_attributes: tuple[str, ...] = sdp.T38_DEFAULT_ATTRIBUTES) -> Call:
        """Dial `target` (a SIP URI or `user@host:port`); an answered `Call`, or a `DialError`."""
        dest = Target.parse(target, transport)
        source = await self._source(dest)
        host = self.server.address
        rtp: RtpSession | None = None
        try:
            rtp = await open_session(self.server.config.host, None, sdp.PCMU, 101, 20)
            offer = (sdp.image_description(host, rtp.local_port, sdp.new_session_id(), attributes=t38_attributes)
                     if t38 else sdp.audio_offer(host, rtp.local_port, sdp.new_session_id()))
            invite = self._invite(dest, source, offer)
            invite, resp = await self._until_final(invite, source, ring_seconds, on_progress, rtp)
            return await self._establish(invite, resp, source, dest, offer, rtp)
        except BaseException:
            if rtp is not None:
                rtp.close()
            if source.close is not None:
                source.close()  # our own TCP connection, used by no other call
            raise

    async def _source(self, dest: Target) -> Source:
        listeners = self.server.listeners
        if dest.proto == "tcp":
            try:
                return await listeners.connect_tcp((dest.host, dest.port))
            except OSError as exc:
                raise Unreachable(0, f"TCP connect to {dest.host}:{dest.port} failed: {exc}") from exc
        if dest.proto != "udp":
            raise CallError(f"transport {dest.proto!r} is not supported")
        return listeners.udp_source((dest.host, dest.port))

    def _sent_by(self, source: Source) -> str:
        port = self.server.tcp_port if source.reliable and self.server.tcp_port else self.server.port
        return f"{self.server.address}:{port}"

    def _contact(self, source: Source) -> str:
        return f"<sip:{self.config.from_user}@{self._sent_by(source)};transport={source.proto}>"

    def _invite(self, dest: Target, source: Source, offer: sdp.SessionDescription) -> SipMessage:
        cfg = self.config
        msg = SipMessage(method="INVITE", uri=dest.uri)
        msg.add("Via", f"SIP/2.0/{source.proto.upper()} {self._sent_by(source)};rport;branch={sipmsg.new_branch()}")
        msg.add("Max-Forwards", "70")
        display = f'"{cfg.display_name}" ' if cfg.display_name else ""
        msg.add("From", f"{display}<sip:{cfg.from_user}@{self.server.address}>;tag={sipmsg.new_tag()}")
        msg.add("To", f"<{dest.uri.split(';', 1)[0]}>")
        msg.add("Call-ID", f"{secrets.token_hex(12)}@{self.server.address}")
        msg.add("CSeq", "1 INVITE")
        msg.add("Contact", self._contact(source))
        msg.add("Allow", ALLOW)
        msg.add("User-Agent", "umsg")
        msg.add("Content-Type", "application/sdp")
        msg.body = offer.to_bytes()
        return msg

    async def _until_final(self, invite: SipMessage, source: Source, ring_seconds: float | None,
                           on_progress: Progress | None, rtp: RtpSession) -> tuple[SipMessage, SipMessage]:
        """Send the INVITE (again with credentials after a challenge) until a 2xx: (the INVITE
        that got it, the 2xx); other outcomes raise typed errors."""
        answered_challenges: set[str] = set()
        while True:
            resp = await self._transaction(invite, source, ring_seconds, on_progress, rtp)
            if 200 <= resp.status < 300:
                return invite, resp
            self._ack_failure(invite, resp, source)
            retry = self._authorised(invite, resp, answered_challenges)
            if retry is None:
                raise error_for(resp.status, resp.reason)
            invite = retry

    def _authorised(self, invite: SipMessage, resp: SipMessage, answered: set[str]) -> SipMessage | None:
        """The INVITE again with credentials for a 401/407, or None when we cannot answer it."""
        header = {401: "www-authenticate", 407: "proxy-authenticate"}.get(resp.status)
        creds = self.config.credentials
        if header is None or creds is None or len(answered) >= MAX_CHALLENGES:
            return None
        for value in resp.get_all(header):
            try:
                challenge = digest.parse_challenge(value)
                # The same nonce twice means the credentials were refused, not that it went stale.
                if challenge["nonce"] in answered and challenge.get("stale", "").lower() != "true":
                    continue
                auth = digest.authorization(challenge, "INVITE", invite.uri, creds)
            except digest.DigestError as exc:
                log.info("cannot answer challenge from %s: %s", invite.uri, exc)
                continue
            answered.add(challenge["nonce"])
            # A new transaction: fresh branch and the next CSeq, every other header in its place.
            via = (invite.get("via") or "").split(";branch=", 1)[0] + f";branch={sipmsg.new_branch()}"
            fresh = {"Via": via, "CSeq": f"{invite.cseq[0] + 1} INVITE"}
            retry = SipMessage(method="INVITE", uri=invite.uri, body=invite.body,
                               headers=[(n, fresh.get(n, v)) for n, v in invite.headers
                                        if n not in ("Authorization", "Proxy-Authorization")])
            retry.add("Authorization" if resp.status == 401 else "Proxy-Authorization", auth)
            return retry
        return None

    async def _transaction(self, invite: SipMessage, source: Source, ring_seconds: float | None,
                           on_progress: Progress | None, rtp: RtpSession) -> SipMessage:
        timers = self.server.timers
        ring = self.config.ring_seconds if ring_seconds is None else ring_seconds
        progressed = asyncio.Event()

        def provisional(resp: SipMessage) -> None:
            progressed.set()
            if resp.status == 183 and resp.body:
                with contextlib.suppress(sdp.SdpError):
                    _point_media(rtp, sdp.parse(resp.body))  # early media: hear the announcement
            if on_progress is not None:
                on_progress(resp)

        task = asyncio.create_task(self.server.transactions.request(
            invite, source.send, reliable=source.reliable, provisional=provisional,
            wait_seconds=ring + timers.timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ring
        try:
            # Timer B: without any response within 64·T1 the peer is not there.
            done, _ = await asyncio.wait({task}, timeout=min(ring, timers.timeout))
            if not done and not progressed.is_set():
                raise Unreachable(0, "no response") if ring >= timers.timeout else NoAnswer(0, "no response")
            if not done:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
            if not done:
                return await self._cancel(invite, source, task)
            return task.result()
        except TimeoutError as exc:
            raise Unreachable(0, str(exc)) from exc
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await task

    async def _cancel(self, invite: SipMessage, source: Source, task: asyncio.Task[SipMessage]) -> SipMessage:
        """Ringing too long: CANCEL, then the INVITE's own final (487, or a 200 that crossed)."""
        cancel = SipMessage(method="CANCEL", uri=invite.uri)
        for name in ("Via", "From", "To", "Call-ID"):
            cancel.add(name, invite.get(name) or "")
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        cancel.add("Max-Forwards", "70")
        with contextlib.suppress(TimeoutError):
            await self.server.transactions.request(cancel, source.send, reliable=source.reliable)
        try:
            resp = await asyncio.wait_for(asyncio.shield(task), self.server.timers.timeout)
        except TimeoutError as exc:
            raise NoAnswer(0, "no final response after CANCEL") from exc
        if 200 <= resp.status < 300:
            # The callee picked up as we gave up: complete the dialog and end it at once.
            late = Dialog.from_response(invite, resp, self._contact(source), self._sent_by(source),
                                        source.proto.upper())
            self._send_ack(late.request("ACK", cseq=invite.cseq[0]), invite, source)
            with contextlib.suppress(TimeoutError):
                await self.server.transactions.request(late.request("BYE"), source.send, reliable=source.reliable)
            raise NoAnswer(487, "answered as we cancelled; hung up")
        return resp

    async def _close_after(self, call: Call, close: Callable[[], None]) -> None:
        """Close the call's own TCP connection once it ended and its BYE transaction is over."""
        try:
            await call.ended.wait()
            await asyncio.sleep(self.server.timers.timeout)  # 64·T1 bounds the BYE transaction
        finally:
            close()

    # -- ACKs -------------------------------------------------------------------------------

    def _ack_failure(self, invite: SipMessage, resp: SipMessage, source: Source) -> None:
        """ACK a non-2xx final: same branch as the INVITE, To with the response's tag (§17.1.1.3)."""
        ack = SipMessage(method="ACK", uri=invite.uri)
        ack.add("Via", invite.get("via") or "")
        ack.add("Max-Forwards", "70")
        for name in ("From", "Call-ID"):
            ack.add(name, invite.get(name) or "")
        ack.add("To", resp.get("to") or invite.get("to") or "")
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        self._send_ack(ack, invite, source)

    def _send_ack(self, ack: SipMessage, invite: SipMessage, source: Source) -> None:
        data = ack.to_bytes()
        source.send(data)
        now = time.monotonic()
        self._acks = {k: v for k, v in self._acks.items() if now - v[0] < self.server.timers.timeout}
        self._acks[(invite.call_id, invite.cseq[0])] = (now, data)

    def _stray_response(self, resp: SipMessage, source: Source) -> None:
        num, method = resp.cseq
        if method == "INVITE" and resp.status >= 200:
            entry = self._acks.get((resp.call_id, num))
            if entry is not None:
                source.send(entry[1])

    # -- the answered call ------------------------------------------------------------------

    async def _establish(self, invite: SipMessage, resp: SipMessage, source: Source, dest: Target,
                   offer: sdp.SessionDescription, rtp: RtpSession) -> Call:
        dialog = Dialog.from_response(invite, resp, self._contact(source), self._sent_by(source),
                                      source.proto.upper())
        self._send_ack(dialog.request("ACK", cseq=invite.cseq[0]), invite, source)
        call = Call(invite.call_id, self.config.from_user, self.config.display_name,
                    sipmsg.uri_user(dest.uri), _empty_answer(), invite, dialog, source,
                    self.server.config.host, self.server.timers, self.server.transactions)
        try:
            answer = sdp.parse(resp.body)
            choice = _point_media(rtp, answer)
        except sdp.SdpError as exc:
            call.established(rtp, offer, None)
            await call.hangup()
            raise Rejected(488, f"unusable SDP answer: {exc}") from exc
        call.offer = answer
        call.established(rtp, offer, choice)
        self.server.adopt(call)
        if source.close is not None:
            task = asyncio.create_task(self._close_after(call, source.close))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)
        log.info("outgoing call %s to %s answered", call.call_id, dest.uri)
        return call


def _point_media(rtp: RtpSession, desc: sdp.SessionDescription) -> sdp.AudioChoice | None:
    """Send our media where the peer's description says; the audio choice when it is audio."""
    image = sdp.t38_offered(desc)
    if image is not None:
        rtp.relatch((desc.address_for(image), image.port))
        return None
    choice = sdp.choose_audio(desc)
    rtp.set_codec(choice.payload_type, choice.event_pt)
    rtp.ptime = choice.ptime
    rtp.relatch((choice.remote_address, choice.remote_port))
    return choice


def _empty_answer() -> sdp.SessionDescription:
    return sdp.SessionDescription("0.0.0.0", None, [])  # noqa: S104 - a placeholder, never sent
