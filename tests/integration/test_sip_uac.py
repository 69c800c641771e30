"""Outgoing calls (`channels.telephony.uac`) against sipp as the called party: answered calls
over UDP and TCP, busy, ring timeout with CANCEL, digest authentication, and an unreachable peer
(RFC 2617's own example checks the digest arithmetic)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from peers import sipp
from peers.common import free_port

from channels.telephony import digest
from channels.telephony.transactions import Timers
from channels.telephony.transport import Source
from channels.telephony.uac import AuthFailed, Busy, ClientConfig, NoAnswer, Rejected, SipClient, Unreachable
from channels.telephony.uas import ServerConfig, SipServer

pytestmark = pytest.mark.slow


@pytest.fixture
async def client() -> AsyncIterator[SipClient]:
    c = await SipClient.open(config=ClientConfig(from_user="+4930111", display_name="Fax Desk",
                                                 credentials=digest.Credentials("alice", "secret")))
    try:
        yield c
    finally:
        await c.aclose()


def test_digest_matches_rfc2617_example() -> None:
    challenge = digest.parse_challenge('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                                       'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                                       'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    value = digest.authorization(challenge, "GET", "/dir/index.html", digest.Credentials("Mufasa", "Circle Of Life"),
                                 cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "secret" not in repr(digest.Credentials("alice", "secret"))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_answered_by_sipp_uas_then_hung_up(client: SipClient, tmp_path: Path, transport: str) -> None:
    extra = ("-t", "t1") if transport == "tcp" else ()
    proc, port = await sipp.start_uas(tmp_path / "sipp", "-m", "1", *extra)
    progress: list[int] = []
    call = await client.call(f"sip:+4930999@127.0.0.1:{port};transport={transport}",
                             on_progress=lambda r: progress.append(r.status))
    assert call.outgoing and call.answered and call.dialled == "+4930999"
    assert 180 in progress
    assert call.audio_choice is not None and call.audio_choice.payload_type == 0
    assert await call.play(b"\x00\x00" * 1600)  # 200 ms of audio towards sipp
    await call.hangup()
    code, out = await sipp.finish(proc)
    assert code == 0, out
    assert call.ended.is_set() and call.end_reason == "local hangup"
    assert client.server.active_calls == 0


async def test_busy_is_a_typed_error(client: SipClient, tmp_path: Path) -> None:
    proc, port = await sipp.start_uas(tmp_path / "sipp", "-m", "1", scenario="busy")
    with pytest.raises(Busy) as err:
        await client.call(f"sip:100@127.0.0.1:{port}")
    assert err.value.status == 486 and err.value.outcome == "busy"
    code, out = await sipp.finish(proc)  # sipp saw our ACK for the 486
    assert code == 0, out


async def test_ring_timeout_cancels(client: SipClient, tmp_path: Path) -> None:
    proc, port = await sipp.start_uas(tmp_path / "sipp", "-m", "1", scenario="ring")
    with pytest.raises(NoAnswer) as err:
        await client.call(f"sip:100@127.0.0.1:{port}", ring_seconds=1.0)
    assert err.value.status == 487
    code, out = await sipp.finish(proc)  # CANCEL answered, 487 ACKed
    assert code == 0, out


async def test_digest_challenge_is_answered(client: SipClient, tmp_path: Path) -> None:
    proc, port = await sipp.start_uas(tmp_path / "sipp", "-m", "1", scenario="auth")
    call = await client.call(f"sip:100@127.0.0.1:{port}")
    assert (call.invite.get("authorization") or "").startswith('Digest username="alice"')
    await call.hangup()
    code, out = await sipp.finish(proc)
    assert code == 0, out


async def test_wrong_password_is_auth_failed(tmp_path: Path) -> None:
    bad = await SipClient.open(config=ClientConfig(credentials=digest.Credentials("alice", "wrong")))
    proc, port = await sipp.start_uas(tmp_path / "sipp", "-m", "1", scenario="auth")
    try:
        with pytest.raises(Rejected) as err:  # the retry with wrong credentials is refused 403
            await bad.call(f"sip:100@127.0.0.1:{port}")
        assert err.value.status == 403
    finally:
        await bad.aclose()
    code, out = await sipp.finish(proc)
    assert code == 0, out


async def test_challenge_without_credentials_is_auth_failed(tmp_path: Path) -> None:
    plain = await SipClient.open()
    proc, port = await sipp.start_uas(tmp_path / "sipp", "-m", "1", scenario="auth", seconds=5)
    try:
        with pytest.raises(AuthFailed):
            await plain.call(f"sip:100@127.0.0.1:{port}")
    finally:
        await plain.aclose()
        proc.terminate()
        await sipp.finish(proc)


async def test_silent_peer_is_unreachable_after_timer_b() -> None:
    # Fast timers so Timer B (64·T1) fires in 0.64 s; the port has no listener.
    server = SipServer(ServerConfig("127.0.0.1", 0), lambda _n: None, timers=Timers(t1=0.01, t2=0.04))
    await server.start()
    sent: list[bytes] = []
    client = SipClient(server)
    real = server.listeners.udp_source

    def spy(addr: tuple[str, int]) -> Source:
        src = real(addr)

        def send(data: bytes) -> None:
            sent.append(data)
            src.send(data)

        return Source(src.proto, src.addr, send, src.local)

    server.listeners.udp_source = spy  # type: ignore[method-assign]
    try:
        with pytest.raises(Unreachable):
            await client.call(f"sip:100@127.0.0.1:{free_port()}", ring_seconds=5)
    finally:
        await client.aclose()
        await server.aclose()
    invites = [d for d in sent if d.startswith(b"INVITE")]
    assert len(invites) >= 6  # Timer A: retransmitted with doubling intervals
