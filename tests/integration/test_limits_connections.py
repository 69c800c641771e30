"""Connection floods against `umsg serve` under `ulimit -n 1024`, as a hostile client on real
sockets: idle connections never take HTTP or SMTP down, and running out of descriptors
writes a bounded amount of log and recovers once they are free."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest
from peers.common import free_port
from serve_proc import LISTENING, clean_env, umsg_command

GOOD = "127.0.0.1"
# All of 127.0.0.0/8 is loopback: the flood comes from these "hosts".
FLOODERS = [f"127.0.0.{n}" for n in range(2, 13)]
RCPT = "support@acme.test"


def _limit_files(n: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


class Gateway:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, log: Path, smtp_port: int) -> None:
        self.proc = proc
        self.url = url
        self.log = log
        self.smtp_port = smtp_port

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, nofile: int, http: str = "") -> AsyncIterator[Gateway]:
    smtp_port = free_port()
    config = tmp_path / "umsg.toml"
    config.write_text(f'[http]\n{http}\n[channels.mail]\ntype = "email"\ndomain = "acme.test"\n'
                      f'addresses = ["{RCPT}"]\nlisten = "127.0.0.1:{smtp_port}"\nparse_workers = 0\n')
    log = tmp_path / "umsg.log"
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *umsg_command(), "serve", "--config", str(config), "--data-dir", str(tmp_path / "data"),
            "--http-port", "0", env=clean_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=err, preexec_fn=_limit_files(nofile))  # noqa: PLW1509
    assert proc.stdout is not None
    url = ""
    try:
        while not url:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, f"umsg serve exited: {log.read_text()[-3000:]}"
            if line.startswith(LISTENING):
                url = line[len(LISTENING):].strip()
        yield Gateway(proc, url, log, smtp_port)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _flood(port: int, count: int, sources: list[str], wait: float = 10) -> list[asyncio.StreamWriter]:
    """Open `count` idle connections spread over `sources`; keep whatever the server leaves open."""
    held: list[asyncio.StreamWriter] = []

    async def one(i: int) -> None:
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            _r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(sources[i % len(sources)], 0)), wait)
            held.append(w)

    for start in range(0, count, 100):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 100))))
    return held


async def _healthz(url: str, wait: float = 20) -> int:
    connector = aiohttp.TCPConnector(local_addr=(GOOD, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=wait)) as http, \
            http.get(f"{url}/healthz") as resp:
        return resp.status


async def _mail(port: int, text: str) -> str:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30,
                               source_address=(GOOD, 0)) as client:
        _e, answer = await client.sendmail("customer@example.com", [RCPT],
                                           f"From: customer@example.com\r\nSubject: {text}\r\n\r\n{text}\r\n")
        return answer


def _raise_own_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


async def test_1100_idle_connections_to_http_and_smtp_under_ulimit_1024(tmp_path: Path) -> None:
    _raise_own_limit(4096)
    async with gateway(tmp_path, 1024) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        http_held = await _flood(port, 1100, FLOODERS)
        smtp_held = await _flood(gw.smtp_port, 1100, FLOODERS[:1])
        try:
            # With every flooding socket still open on our side:
            assert await _healthz(gw.url) == 200
            assert (await _mail(gw.smtp_port, "through the flood")).startswith("2.0.0")
            assert await _healthz(gw.url) == 200
        finally:
            for w in http_held + smtp_held:
                w.close()
        log = gw.log_text()
        assert "Traceback" not in log, log[-3000:]
        assert len(log) < 1_000_000


async def test_running_out_of_descriptors_logs_once_per_interval_and_recovers(tmp_path: Path) -> None:
    _raise_own_limit(4096)
    # Caps far above the descriptor limit, so that accept() itself fails with EMFILE.
    limits = "max_connections = 100000\nmax_connections_per_peer = 100000\nidle_timeout_seconds = 600"
    async with gateway(tmp_path, 256, limits) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        held = await _flood(port, 600, FLOODERS, wait=2)
        started = time.monotonic()
        try:
            # Keep knocking for a few seconds while the process has no descriptor left.
            while time.monotonic() - started < 5:
                held += await _flood(port, 20, FLOODERS, wait=1)
        finally:
            for w in held:
                w.close()
        # Descriptors free again: the listener accepts without a restart.
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                if await _healthz(gw.url, wait=3) == 200:
                    break
            assert time.monotonic() < deadline, gw.log_text()[-3000:]
        log = gw.log_text()
        lines = [line for line in log.splitlines() if "accept" in line]
        assert any("cannot accept connections" in line for line in lines), log[-3000:]
        # One line per 10 s interval, never one per attempt or per second (asyncio alone
        # wrote thousands a second here).
        stamps = [datetime.fromisoformat(line.split(" ", 1)[0][3:]) for line in lines]
        gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
        assert all(gap >= 9 for gap in gaps), gaps
        assert "Traceback" not in log
        assert len(log) < 200_000


pytestmark = pytest.mark.timeout(300)


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """What the server sends before it hangs up (bounded generously)."""
    try:
        return await asyncio.wait_for(reader.read(), 20)
    except ConnectionError:
        return b""


async def test_http_per_address_cap_and_dribbled_heads(tmp_path: Path) -> None:
    limits = "max_connections = 40\nmax_connections_per_peer = 5\nidle_timeout_seconds = 1"
    async with gateway(tmp_path, 1024, limits) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        held = []
        try:
            # One host over its share: the sixth and later connections get 503 at once.
            conns = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0)) for _ in range(8)]
            held += [w for _r, w in conns]
            refused = [await _answer(r) for r, _w in conns[5:]]
            assert all(a.startswith(b"HTTP/1.1 503") for a in refused), refused
            # Another host is served meanwhile.
            assert await _healthz(gw.url) == 200
            # A head dribbled a byte at a time is cut off by the idle timeout, long before it ends.
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
            held.append(writer)
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
            sent = 0
            with contextlib.suppress(ConnectionError):
                for byte in request:
                    if reader.at_eof():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    sent += 1
                    with contextlib.suppress(asyncio.TimeoutError):
                        if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                            break
            assert sent < len(request) // 2, (sent, len(request))
            # The idle connections of the first host were closed too, so it may connect again.
            assert all([await _answer(r) == b"" for r, _w in conns[:5]])
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http, http.get(f"{gw.url}/healthz") as resp:
                assert resp.status == 200
        finally:
            for w in held:
                w.close()
