"""Inbound SMTP against a hostile client on real sockets: one host cannot take every session
slot, NOOP spam cannot hold a session open, and AUTH never travels in the clear."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib
from peers.common import await_until

from channels.email import EmailChannel, EmailSettings
from umsg.model import Inbound

DOMAIN = "acme.test"
RCPT = "support@acme.test"
ATTACKER = "127.0.0.2"  # all of 127.0.0.0/8 is loopback: a second "host" on this machine
GOOD = "127.0.0.1"


async def start_channel(sink: Callable[[Inbound], Any], **overrides: Any) -> EmailChannel:
    settings = EmailSettings(domain=DOMAIN, addresses=[RCPT], listen="127.0.0.1:0", **overrides)
    channel = EmailChannel("mail", settings)
    await channel.start(sink)
    return channel


async def _greeting(port: int, source: str) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    line = await asyncio.wait_for(reader.readline(), 20)
    return line, reader, writer


async def test_one_host_over_its_share_cannot_stop_another_hosts_mail(core: Any) -> None:
    ch = await start_channel(core.ingest.ingest, max_sessions=30, max_sessions_per_peer=5)
    port = ch.port or 0
    held: list[asyncio.StreamWriter] = []
    try:
        greetings = []
        for _ in range(40):  # more than the listener's whole session limit
            line, _r, writer = await _greeting(port, ATTACKER)
            greetings.append(line[:3])
            held.append(writer)
        assert greetings.count(b"220") == 5
        assert greetings.count(b"421") == 35
        # The other host is served while the attacker still holds its five sessions.
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30,
                                   source_address=(GOOD, 0)) as client:
            _e, answer = await client.sendmail("customer@example.com", [RCPT],
                                               b"From: customer@example.com\r\n\r\nhello\r\n")
        assert answer.startswith("2.0.0")
        assert ch.handler is not None
        gate = ch.handler.gate
        assert gate.peers.get(ATTACKER) == 5
    finally:
        for writer in held:
            writer.close()
        await ch.aclose()
    await await_until(lambda: gate.open == 0 and not gate.peers, "every session to be counted down")


async def _noops_until_closed(port: int, limit: int) -> tuple[int, bytes]:
    """Send NOOP (after EHLO) until the server hangs up; returns how many got 250 and the last line."""
    _line, reader, writer = await _greeting(port, ATTACKER)
    writer.write(b"EHLO spammer\r\n")
    while not (line := await reader.readline()).startswith(b"250 "):
        assert line.startswith(b"250-"), line
    answered, last = 0, b""
    try:
        for _ in range(limit):
            writer.write(b"NOOP\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 20)
            if not line.startswith(b"250"):
                last = line
                break
            answered += 1
            await asyncio.sleep(0.2)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
    return answered, last


async def test_noop_spam_is_cut_off_by_count(core: Any) -> None:
    ch = await start_channel(core.ingest.ingest, max_junk_commands=5)
    try:
        answered, last = await _noops_until_closed(ch.port or 0, 50)
        assert answered == 5
        assert last.startswith(b"421")
    finally:
        await ch.aclose()


async def test_noop_does_not_renew_the_idle_timeout(core: Any) -> None:
    # NOOPs every 0.2 s with a 1 s idle timeout: old aiosmtpd behaviour renewed the timer
    # on each, keeping the session for as long as the client liked.
    ch = await start_channel(core.ingest.ingest, session_timeout_seconds=1.0, max_junk_commands=1000)
    try:
        answered, _last = await _noops_until_closed(ch.port or 0, 60)
        assert answered < 30  # closed long before the client gave up
    finally:
        await ch.aclose()


async def test_a_delivered_message_renews_the_allowance(core: Any) -> None:
    ch = await start_channel(core.ingest.ingest, max_junk_commands=3)
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=ch.port or 0, start_tls=False, timeout=30) as client:
            for n in range(3):
                for _ in range(3):
                    code, _m = await client.noop()
                    assert code == 250
                _e, answer = await client.sendmail("c@example.com", [RCPT],
                                                   f"From: c@example.com\r\n\r\nmail {n}\r\n".encode())
                assert answer.startswith("2.0.0")
    finally:
        await ch.aclose()


async def test_auth_is_not_offered_or_accepted_without_tls(core: Any) -> None:
    ch = await start_channel(core.ingest.ingest, auth_users={"agent": "hunter2"})
    try:
        line, reader, writer = await _greeting(ch.port or 0, GOOD)
        assert line.startswith(b"220")
        writer.write(b"EHLO probe\r\n")
        ehlo = []
        while not (line := await reader.readline()).startswith(b"250 "):
            ehlo.append(line.upper())
        ehlo.append(line.upper())
        assert not any(b"AUTH" in line for line in ehlo), ehlo
        # A client that tries anyway gets a permanent refusal and no password check.
        writer.write(b"AUTH PLAIN AGFnZW50AGh1bnRlcjI=\r\n")  # \0agent\0hunter2
        answer = await asyncio.wait_for(reader.readline(), 20)
        assert answer[:1] == b"5", answer
        assert not answer.startswith(b"235")
        writer.close()
    finally:
        await ch.aclose()


def _self_signed(tmp: Path) -> tuple[str, str]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=acme.test"], check=True, capture_output=True)
    return str(cert), str(key)


async def test_auth_before_starttls_is_refused_and_works_after(core: Any, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    ch = await start_channel(core.ingest.ingest, tls_cert=cert, tls_key=key, auth_users={"agent": "hunter2"})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=ch.port or 0, start_tls=False,
                                   tls_context=ctx, timeout=30) as client:
            await client.ehlo()
            assert not client.supports_extension("auth")
            code, message = await client.execute_command(b"AUTH", b"PLAIN", b"AGFnZW50AGh1bnRlcjI=")
            assert code >= 500 and code != 535, (code, message)
            await client.starttls()
            await client.ehlo()
            assert client.supports_extension("auth")
            await client.login("agent", "hunter2")
    finally:
        await ch.aclose()
