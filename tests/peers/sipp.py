"""sipp as a SIP caller: the built-in `uac_pcap` scenario (PCMA audio + DTMF "1") and
scenarios of our own, run as asyncio subprocesses."""

from __future__ import annotations

import asyncio
from pathlib import Path

from peers.common import await_until, free_port

PCAP_DIR = Path("/usr/share/sip-tester")


def _prepare(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / "pcap"
    if not link.exists():
        link.symlink_to(PCAP_DIR)


async def run(workdir: Path, target: str, *args: str, seconds: float = 60) -> tuple[int, str]:
    """Run sipp in `workdir` (holding a `pcap` link to the shipped recordings); (exit code, log)."""
    await asyncio.to_thread(_prepare, workdir)
    proc = await asyncio.create_subprocess_exec(
        "sipp", target, *args, "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1",
        "-nostdin", "-timeout", str(int(seconds)), "-timeout_error",
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    return proc.returncode or 0, out.decode("utf-8", "replace")[-3000:]


# sipp as the called party (UAS) in scenarios of our own; `[...]` are sipp's keywords.
_HEAD = "[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]SIPpTag01[call_number]\n[last_Call-ID:]\n"
_SDP = ("Content-Type: application/sdp\nContent-Length: [len]\n\nv=0\no=- 1 1 IN IP[media_ip_type] [media_ip]\n"
        "s=-\nc=IN IP[media_ip_type] [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 0\n"
        "a=rtpmap:0 PCMU/8000\n")


def _send(text: str) -> str:
    return f"  <send><![CDATA[\n\n{text}\n]]></send>\n"


def _scenario(name: str, body: str) -> str:
    return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n{body}</scenario>\n'


SCENARIOS = {
    # Busy: 486 to the INVITE, then its ACK.
    "busy": _scenario("busy", '  <recv request="INVITE"/>\n'
                      + _send(f"SIP/2.0 486 Busy Here\n{_HEAD}[last_CSeq:]\nContent-Length: 0\n")
                      + '  <recv request="ACK"/>\n'),
    # Rings until the caller CANCELs: 200 to the CANCEL, 487 to the INVITE, its ACK.
    "ring": _scenario("ring", '  <recv request="INVITE"/>\n'
                      + _send(f"SIP/2.0 180 Ringing\n{_HEAD}[last_CSeq:]\nContent-Length: 0\n")
                      + '  <recv request="CANCEL"/>\n'
                      + _send(f"SIP/2.0 200 OK\n{_HEAD}[last_CSeq:]\nContent-Length: 0\n")
                      + _send(f"SIP/2.0 487 Request Terminated\n{_HEAD}CSeq: 1 INVITE\nContent-Length: 0\n")
                      + '  <recv request="ACK"/>\n'),
    # Digest: 401, then the retried INVITE must carry valid credentials for alice/secret.
    "auth": _scenario("auth", '  <recv request="INVITE"/>\n'
                      + _send(f"SIP/2.0 401 Unauthorized\n{_HEAD}[last_CSeq:]\n"
                              'WWW-Authenticate: Digest realm="umsg.test", nonce="4f1a2b3c", qop="auth", '
                              "algorithm=MD5\nContent-Length: 0\n")
                      + '  <recv request="ACK"/>\n'
                      + '  <recv request="INVITE"><action><verifyauth assign_to="ok" username="alice" '
                        'password="secret"/></action></recv>\n'
                      + '  <nop next="good" test="ok"/>\n'
                      + _send(f"SIP/2.0 403 Forbidden\n{_HEAD}[last_CSeq:]\nContent-Length: 0\n")
                      + '  <recv request="ACK" next="end"/>\n'
                      + '  <label id="good"/>\n'
                      + _send(f"SIP/2.0 200 OK\n{_HEAD}[last_CSeq:]\nContact: <sip:[local_ip]:[local_port]>\n{_SDP}")
                      + '  <recv request="ACK"/>\n  <recv request="BYE"/>\n'
                      + _send(f"SIP/2.0 200 OK\n{_HEAD}[last_CSeq:]\nContent-Length: 0\n")
                      + '  <label id="end"/>\n'),
}


def bound(port: int, proto: str) -> bool:
    """Whether something listens on 127.0.0.1:`port` (read from /proc, no packet sent)."""
    want = f"0100007F:{port:04X}"
    with open(f"/proc/net/{proto}") as f:
        return any(line.split()[1] == want for line in f.read().splitlines()[1:])


async def start_uas(workdir: Path, *args: str, scenario: str | None = None,
                    seconds: float = 60) -> tuple[asyncio.subprocess.Process, int]:
    """sipp answering calls on a free port (`-sn uas`, or one of `SCENARIOS`) until `-m` calls
    are done; returns once it listens: (process, port). Collect it with `finish`."""
    await asyncio.to_thread(_prepare, workdir)
    if scenario is not None:
        path = workdir / f"{scenario}.xml"
        path.write_text(SCENARIOS[scenario])
        args = ("-sf", str(path), *args)
    else:
        args = ("-sn", "uas", *args)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "sipp", *args, "-i", "127.0.0.1", "-p", str(port), "-mi", "127.0.0.1", "-nostdin",
        "-timeout", str(int(seconds)), "-timeout_error",
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    proto = "tcp" if "t1" in args else "udp"
    await await_until(lambda: bound(port, proto), f"sipp listening on {proto} {port}")
    return proc, port


async def finish(proc: asyncio.subprocess.Process, seconds: float = 60) -> tuple[int, str]:
    out, _ = await asyncio.wait_for(proc.communicate(), seconds)
    return proc.returncode or 0, out.decode("utf-8", "replace")[-3000:]
