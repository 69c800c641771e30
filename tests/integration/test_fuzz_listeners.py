"""Fuzzing the live gateway: structured and unstructured garbage from hypothesis at the SMTP,
HTTP and SIP (UDP and TCP) listeners of one `umsg serve` process, and garbage PDUs from a
hostile SMSC at its SMPP client, all over real sockets.

Each input must be answered or hung up on within a bounded time (no hang), HTTP never
answers 5xx, SIP never answers 500, the process never dies and every listener still serves a
good request afterwards (no crash), and every MO message whose deliver_sm the gateway
acknowledged is in the store (nothing acknowledged lost). The inputs tried per listener are
printed (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import os
import select
import smtplib
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers.common import free_port
from serve_proc import LISTENING, clean_env, umsg_command

from channels.sms import pdu as P

# Upper bound for one input to be answered or hung up on (a healthy listener takes milliseconds).
PER_INPUT_SECONDS = 15.0
RCPT = "support@acme.test"
# Inputs per listener; UMSG_FUZZ_SCALE multiplies them all (e.g. 10 for a long run).
SCALE = float(os.environ.get("UMSG_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


TRIED: dict[str, int] = {"smtp": 0, "http": 0, "sip-udp": 0, "sip-tcp": 0, "smpp": 0}


# -- a hostile SMSC ------------------------------------------------------------------------------


@dataclass
class Smsc:
    """Binds the gateway's ESME, then sends what the test injects; records deliver_sm_resp."""

    sock: socket.socket
    port: int
    conn: socket.socket | None = None
    binds: int = 0
    acked: dict[int, str] = field(default_factory=dict)  # our sequence -> text, status 0 answered
    pending: dict[int, str] = field(default_factory=dict)
    sent_on: dict[int, socket.socket] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bound: threading.Condition = field(default_factory=threading.Condition)
    stop: bool = False
    seq: int = 1000

    def serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> tuple[int, int, int, bytes] | None:
        head = b""
        while len(head) < 16:
            chunk = conn.recv(16 - len(head))
            if not chunk:
                return None
            head += chunk
        length, command, status, seq = struct.unpack(">IIII", head)
        body = b""
        while len(body) < length - 16:
            chunk = conn.recv(length - 16 - len(body))
            if not chunk:
                return None
            body += chunk
        return command, status, seq, body

    def _session(self, conn: socket.socket) -> None:
        try:
            while (pdu := self._read(conn)) is not None:
                command, status, seq, _body = pdu
                if command == P.BIND_TRANSCEIVER:
                    conn.sendall(P.Pdu(P.BIND_TRANSCEIVER_RESP, seq, 0, b"SMSC\0").encode())
                    with self.bound:
                        self.conn = conn
                        self.binds += 1
                        self.bound.notify_all()
                elif command == P.ENQUIRE_LINK:
                    conn.sendall(P.Pdu(P.ENQUIRE_LINK | 0x80000000, seq).encode())
                elif command == P.UNBIND:
                    conn.sendall(P.Pdu(P.UNBIND | 0x80000000, seq).encode())
                elif command == P.DELIVER_SM | 0x80000000:
                    with self.lock:
                        text = self.pending.pop(seq, None)
                        self.sent_on.pop(seq, None)
                        if text is not None and status == 0:
                            self.acked[seq] = text
                elif not command & 0x80000000:
                    conn.sendall(P.Pdu(command | 0x80000000, seq, 0, b"1\0").encode())
        except OSError:
            pass
        finally:
            with self.bound:
                if self.conn is conn:
                    self.conn = None
            with self.lock:
                # What was sent on this session and not answered is not acknowledged (an SMSC
                # would send it again later); stop waiting for it.
                for seq in [q for q, c in self.sent_on.items() if c is conn]:
                    self.pending.pop(seq, None)
                    self.sent_on.pop(seq, None)
            conn.close()

    def session(self, timeout: float = PER_INPUT_SECONDS) -> socket.socket:
        with self.bound:
            assert self.bound.wait_for(lambda: self.conn is not None, timeout), "the ESME did not (re)bind"
            assert self.conn is not None
            return self.conn

    def deliver(self, text: str) -> int:
        conn = self.session()
        with self.lock:
            self.seq += 1
            seq = self.seq
            self.pending[seq] = text
            self.sent_on[seq] = conn
        sm = P.ShortMessage(source="447700900123", destination="447700900000", source_ton=1, source_npi=1,
                            short_message=text.encode("ascii"))
        with contextlib.suppress(OSError):
            conn.sendall(P.Pdu(P.DELIVER_SM, seq, 0, sm.encode()).encode())
        return seq

    def inject(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.session().sendall(data)


# -- the gateway ---------------------------------------------------------------------------------


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    http: int
    smtp: int
    sip: int
    smsc: Smsc
    data: Path
    log: Path

    def alive(self) -> None:
        assert self.proc.poll() is None, f"umsg serve died: {self.log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("fuzz")
    listener = socket.create_server(("127.0.0.1", 0))
    smsc = Smsc(listener, listener.getsockname()[1])
    threading.Thread(target=smsc.serve, daemon=True).start()
    smtp, sip = free_port(), free_port()
    config = tmp / "umsg.toml"
    config.write_text(f"""
[channels.mail]
type = "email"
domain = "acme.test"
addresses = ["{RCPT}"]
listen = "127.0.0.1:{smtp}"
parse_workers = 0

[channels.voice]
type = "voicemail"
host = "127.0.0.1"
port = {sip}
[channels.voice.mailboxes."100"]
max_seconds = 3
min_seconds = 0

[channels.sms]
type = "sms"
url = "smpp://esme:pw@127.0.0.1:{smsc.port}?reconnect_min_seconds=0.05&reconnect_max_seconds=0.2&response_timeout_seconds=2"
""")
    log = tmp / "umsg.log"
    with log.open("ab") as err:
        proc = subprocess.Popen([*umsg_command(), "serve", "--config", str(config), "--data-dir", str(tmp / "data"),
                                 "--http-port", "0"], env=clean_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    url = ""
    deadline = time.monotonic() + 60
    while not url and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            line = proc.stdout.readline().decode()
            assert line, f"umsg serve exited: {log.read_text()[-3000:]}"
            if line.startswith(LISTENING):
                url = line[len(LISTENING):].strip()
    assert url, log.read_text()[-3000:]
    threading.Thread(target=lambda: proc.stdout.read() if proc.stdout else None, daemon=True).start()
    gw = Gateway(proc, int(url.rsplit(":", 1)[1]), smtp, sip, smsc, tmp / "data", log)
    try:
        yield gw
    finally:
        print("\nfuzz inputs tried:", ", ".join(f"{k}={v}" for k, v in TRIED.items()))
        smsc.stop = True
        listener.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exchange(sock: socket.socket, data: bytes, half_close_after: float | None = 0.0) -> bytes:
    """Send `data` and read until the peer hangs up; fails after PER_INPUT_SECONDS.

    Our side of the stream is shut after `half_close_after` seconds without an answer (0: at
    once; None: never), so that a listener waiting for more input sees the end of it.
    """
    deadline = time.monotonic() + PER_INPUT_SECONDS
    with contextlib.suppress(OSError):
        sock.sendall(data)
    shut_at = None if half_close_after is None else time.monotonic() + half_close_after
    got = b""
    while True:
        now = time.monotonic()
        if shut_at is not None and now >= shut_at and not got:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            shut_at = None
        left = deadline - now
        assert left > 0, f"no answer or hang-up within {PER_INPUT_SECONDS} s for {data[:200]!r}"
        sock.settimeout(min(left, max(0.01, shut_at - now)) if shut_at is not None else left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return got
        except TimeoutError:
            continue
        if not chunk:
            return got
        got += chunk


# -- SMTP ----------------------------------------------------------------------------------------

_text = st.binary(max_size=300)
_word = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=80)
_smtp_command = st.one_of(
    st.builds(lambda w: f"EHLO {w}", _word), st.builds(lambda w: f"HELO {w}", _word),
    st.builds(lambda w: f"MAIL FROM:{w}", _word), st.builds(lambda w: f"MAIL FROM:<{w}> SIZE={w}", _word),
    st.builds(lambda w: f"RCPT TO:{w}", _word), st.just(f"RCPT TO:<{RCPT}>"), st.just("DATA"), st.just("BDAT 10"),
    st.just("RSET"), st.just("NOOP"), st.just("STARTTLS"), st.builds(lambda w: f"AUTH {w}", _word),
    st.builds(lambda w: f"VRFY {w}", _word), st.just("HELP"), st.builds(lambda w: w, _word),
).map(lambda s: s.encode("utf-8", "surrogatepass"))
_smtp_input = st.one_of(
    _text,
    st.lists(st.one_of(_smtp_command, _text), max_size=12).map(lambda parts: b"\r\n".join(parts)),
    st.tuples(st.lists(_smtp_command, max_size=6), _text).map(
        lambda t: b"\r\n".join([b"EHLO x", b"MAIL FROM:<a@example.com>", f"RCPT TO:<{RCPT}>".encode(), b"DATA",
                                *t[0], t[1]])),
)


def _smtp_good(gw: Gateway) -> None:
    with smtplib.SMTP("127.0.0.1", gw.smtp, timeout=PER_INPUT_SECONDS) as client:
        client.sendmail("customer@example.com", [RCPT], b"From: customer@example.com\r\n\r\nstill here\r\n")


@fuzz(400)
@given(data=_smtp_input)
def test_fuzz_smtp(gateway: Gateway, data: bytes) -> None:
    TRIED["smtp"] += 1
    with socket.create_connection(("127.0.0.1", gateway.smtp), timeout=PER_INPUT_SECONDS) as sock:
        # Whatever state the input left: end a DATA, then QUIT, so a healthy server hangs up.
        answer = _exchange(sock, data + b"\r\n.\r\nQUIT\r\n")
    assert answer.startswith(b"220"), answer[:200]
    gateway.alive()
    if TRIED["smtp"] % 50 == 0:
        _smtp_good(gateway)


# -- HTTP ----------------------------------------------------------------------------------------

_paths = st.one_of(
    st.sampled_from(["/healthz", "/metrics", "/api/v1/conversations", "/api/v1/conversations/1/reply",
                     "/api/v1/events", "/api/v1/auth/sign-in", "/api/v1/messages", "/api/v1/agents/1/queues",
                     "/channels/sms/inbound", "/channels/mail/x", "/inbox/", "/openapi.json", "/"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=120).map(lambda p: "/" + p),
    st.builds(lambda a, b: f"/api/v1/{a}/{b}", st.text(max_size=20), st.text(max_size=40)),
)
_header = st.tuples(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
                            min_size=1, max_size=30),
                    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=100))
_json_ish = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                     max_size=4), max_leaves=20)


def _http_request(method: str, path: str, headers: list[tuple[str, str]], body: bytes, auth: bool) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if auth:
        lines.append("Authorization: Bearer " + uuid.uuid4().hex)
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n" + body


_http_input = st.one_of(
    st.builds(_http_request, st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), _paths,
              st.lists(_header, max_size=5), st.one_of(st.binary(max_size=300),
                                                       _json_ish.map(lambda j: repr(j).encode())),
              st.booleans()),
    st.binary(max_size=600),
    st.builds(lambda m, p, junk: f"{m} {p} HTTP/1.1\r\nHost: x\r\n".encode() + junk,
              st.text(max_size=10), _paths, st.binary(max_size=300)),
    st.builds(lambda n, b: (f"POST /api/v1/auth/sign-in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                            f"Content-Type: application/json\r\n\r\n{n}\r\n").encode() + b,
              st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8), st.binary(max_size=100)),
)


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1."):
        return None
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _http_good(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.http), timeout=PER_INPUT_SECONDS) as sock:
        answer = _exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", None)
    assert _status(answer) == 200, answer[:300]


@fuzz(400)
@given(data=_http_input)
def test_fuzz_http(gateway: Gateway, data: bytes) -> None:
    TRIED["http"] += 1
    with socket.create_connection(("127.0.0.1", gateway.http), timeout=PER_INPUT_SECONDS) as sock:
        # aiohttp drops a half-closed connection unanswered: end the head instead, and close
        # our side only when the listener keeps waiting for a body.
        answer = _exchange(sock, data + b"\r\n\r\n", 1.0)
    status = _status(answer)
    assert status is None or status < 500, answer[:500]
    gateway.alive()
    if TRIED["http"] % 50 == 0:
        _http_good(gateway)


# -- SIP -----------------------------------------------------------------------------------------

_sip_methods = st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "X", ""])
_sip_header_names = st.sampled_from(["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length",
                                     "Content-Type", "Max-Forwards", "v", "f", "t", "i", "l", "Record-Route"])
_sdp = st.builds(
    lambda c, m, a: f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc={c}\r\nt=0 0\r\nm={m}\r\n{a}\r\n",
    st.one_of(st.just("IN IP4 127.0.0.1"), st.text(max_size=30)),
    st.one_of(st.just("audio 40000 RTP/AVP 0 8 101"), st.just("image 40000 udptl t38"), st.text(max_size=40)),
    st.one_of(st.just("a=rtpmap:101 telephone-event/8000"), st.text(max_size=60)))


def _sip_request(method: str, user: str, extra: list[tuple[str, str]], body: str, keep: list[bool],
                 proto: str) -> bytes:
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    base = [("Via", f"SIP/2.0/{proto} 127.0.0.1:5999;branch={branch}"), ("From", "<sip:f@127.0.0.1>;tag=ft"),
            ("To", f"<sip:{user}@127.0.0.1>"), ("Call-ID", uuid.uuid4().hex), ("CSeq", f"1 {method}"),
            ("Max-Forwards", "70"), ("Content-Type", "application/sdp")]
    headers = [h for h, k in zip(base, keep + [True] * len(base), strict=False) if k] + extra
    encoded = body.encode("utf-8", "surrogatepass")
    head = f"{method} sip:{user}@127.0.0.1 SIP/2.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("utf-8", "surrogatepass") + f"Content-Length: {len(encoded)}\r\n\r\n".encode() + encoded


def _sip_input(proto: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(_sip_request, _sip_methods, st.one_of(st.just("100"), st.just("404"), st.text(max_size=20)),
                  st.lists(st.tuples(_sip_header_names, st.text(max_size=80)), max_size=4),
                  st.one_of(_sdp, st.text(max_size=200)), st.lists(st.booleans(), max_size=7), st.just(proto)),
        st.binary(max_size=800),
        st.builds(lambda first, rest: first.encode("utf-8", "surrogatepass") + b"\r\n" + rest,
                  st.text(max_size=60), st.binary(max_size=400)),
    )


def _sip_options(gw: Gateway) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(PER_INPUT_SECONDS)
        s.sendto(_sip_request("OPTIONS", "100", [], "", [], "UDP"), ("127.0.0.1", gw.sip))
        return s.recv(65535)


def _sip_status(answer: bytes) -> int | None:
    if not answer.startswith(b"SIP/2.0 "):
        return None
    try:
        return int(answer[8:11])
    except ValueError:
        return None


@fuzz(200)
@given(data=_sip_input("UDP"))
def test_fuzz_sip_udp(gateway: Gateway, data: bytes) -> None:
    TRIED["sip-udp"] += 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", gateway.sip))
        s.settimeout(0.05)
        with contextlib.suppress(TimeoutError):
            while True:  # every answer the input drew (none for garbage)
                assert _sip_status(s.recv(65535)) != 500
    # Liveness after each input: an OPTIONS is answered 200.
    assert _sip_status(_sip_options(gateway)) == 200
    gateway.alive()


@fuzz(400)
@given(data=_sip_input("TCP"))
def test_fuzz_sip_tcp(gateway: Gateway, data: bytes) -> None:
    TRIED["sip-tcp"] += 1
    with socket.create_connection(("127.0.0.1", gateway.sip), timeout=PER_INPUT_SECONDS) as sock:
        answer = _exchange(sock, data)
    for line in answer.split(b"\r\n"):
        assert _sip_status(line) != 500, answer[:300]
    gateway.alive()
    if TRIED["sip-tcp"] % 25 == 0:
        assert _sip_status(_sip_options(gateway)) == 200


# -- SMPP: a hostile SMSC ------------------------------------------------------------------------

_command_ids = st.one_of(st.sampled_from([P.DELIVER_SM, P.SUBMIT_SM, P.ENQUIRE_LINK, P.UNBIND, P.GENERIC_NACK,
                                          P.BIND_TRANSCEIVER, 0x80000005, 0x80000015, 0x00000103, 0x00000102]),
                         st.integers(0, 2**32 - 1))
_smpp_garbage = st.one_of(
    # A well-framed PDU with any command and any body.
    st.builds(lambda c, s, q, b: P.Pdu(c, q, s, b).encode(), _command_ids, st.integers(0, 2**32 - 1),
              st.integers(0, 2**31 - 1), st.binary(max_size=300)),
    # A deliver_sm whose body is cut or mangled.
    st.builds(lambda cut, junk: P.Pdu(P.DELIVER_SM, 7, 0, P.ShortMessage(
        source="447700900123", destination="447700900000", short_message=b"mangled").encode()[:cut] + junk).encode(),
        st.integers(0, 60), st.binary(max_size=40)),
    # A header announcing an impossible or lying length.
    st.builds(lambda n, rest: struct.pack(">I", n) + rest, st.integers(0, 2**32 - 1), st.binary(max_size=60)),
    st.binary(min_size=1, max_size=200),
)


@fuzz(100)
@given(garbage=_smpp_garbage, before=st.booleans())
def test_fuzz_smpp_client(gateway: Gateway, garbage: bytes, before: bool) -> None:
    TRIED["smpp"] += 1
    smsc = gateway.smsc
    text = f"mo-{uuid.uuid4().hex[:12]}"
    if before:
        seq = smsc.deliver(text)
        smsc.inject(garbage)
    else:
        smsc.inject(garbage)
        # The garbage may end the session: the ESME must bind again and take the message.
        time.sleep(0.02)
        seq = smsc.deliver(text)
    deadline = time.monotonic() + PER_INPUT_SECONDS
    while time.monotonic() < deadline:
        with smsc.lock:
            if seq in smsc.acked or seq not in smsc.pending:
                break
        time.sleep(0.01)
    gateway.alive()
    smsc.session()  # bound (again) within the bound: the client survived


def test_fuzz_smpp_lost_nothing_acknowledged(gateway: Gateway) -> None:
    """Runs after the SMPP fuzz (file order): every acknowledged MO message is stored."""
    smsc = gateway.smsc
    # A last good message, to know the client still works after all the garbage (the last
    # garbage may still end the session it is sent on: then it is sent again, as an SMSC would).
    deadline = time.monotonic() + 2 * PER_INPUT_SECONDS
    seq = smsc.deliver("mo-final-check")
    while seq not in smsc.acked:
        assert time.monotonic() < deadline, "the final deliver_sm was never acknowledged"
        with smsc.lock:
            dropped = seq not in smsc.pending and seq not in smsc.acked
        if dropped:
            seq = smsc.deliver("mo-final-check")
        time.sleep(0.02)
    with smsc.lock:
        acked = set(smsc.acked.values())
    db = sqlite3.connect(gateway.data / "umsg.db")
    try:
        stored = {row[0] for row in db.execute("SELECT text FROM message WHERE channel = 'sms'")}
    finally:
        db.close()
    assert acked <= stored, sorted(acked - stored)[:10]
    assert TRIED["smpp"] == 0 or smsc.binds >= 1
    # The log holds no traceback from a listener or the SMPP client.
    tracebacks = [line for line in gateway.log.read_text(errors="replace").splitlines() if "Traceback" in line]
    assert not tracebacks, tracebacks[:3]
    print(f"\nsmpp: {len(acked)} MO messages acknowledged and stored, {smsc.binds} binds")


def test_fuzz_listeners_still_serve(gateway: Gateway) -> None:
    """After everything: each listener answers a good request, and nothing answered 5xx."""
    _http_good(gateway)
    _smtp_good(gateway)
    assert _sip_status(_sip_options(gateway)) == 200
    gateway.alive()
    assert os.path.exists(gateway.data / "umsg.db")
