"""Fuzzing the web chat as a stranger would: generated frames on the customer websocket and
generated requests to its HTTP routes (upload, file download, transcript link, preflight,
assets), against a running app on a real loopback port.

The corpus is generated from a seeded `random.Random` (reproducible; a failure prints the seed
and the input): mutated valid frames (every type, wrong types and values, unknown fields, lone
surrogates, control characters, huge numbers and strings), truncated and garbage JSON, deep
nesting, binary frames, frames before `hello`; HTTP requests with random ids, tokens, query
values, media types and bodies. After each frame a `ping` must be answered (else: a hang), no
`internal` error frame may come back and the socket must stay open (else: a crash); every HTTP
answer must come within the timeout and be below 500. Errors logged by our code count as
crashes too. A frame over MAX_FRAME_BYTES is refused by the websocket layer (close 1009).
Each backend gets `SECONDS` of fuzzing; the counts are printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from webchat_abuse_rig import Rig, open_rig

from channels.webchat.protocol import MAX_FRAME_BYTES

SECONDS = 28.0
TIMEOUT = 10.0
SEED = 16_05

TYPES = ["hello", "prechat", "message", "typing", "leave_message", "rate", "end", "ping"]
FIELDS = ["type", "token", "page", "name", "email", "client_id", "text", "on", "score", "comment", "transcript",
          "x", "__proto__", "constructor"]
NASTY = ["", " ", "\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "a@b.c", "<script>alert(1)</script>",
         "' OR 1=1 --", "%s%n", "../../etc/passwd", "\r\n\r\n", "v_" + "A" * 22, "😀" * 50, "\\", '"',
         "null", "NaN", "-0", "1e309", "9" * 400]


def _value(r: random.Random, depth: int = 0) -> Any:
    pick = r.randrange(12)
    if pick == 0:
        return r.choice(NASTY)
    if pick == 1:
        return "".join(chr(r.randrange(0, 0x3000)) for _ in range(r.randrange(0, 40)))
    if pick == 2:
        return r.choice([0, -1, 1, 5, 6, 2**31, 2**63, -(2**63) - 1, 10**30, 1.5, float("inf")])
    if pick == 3:
        return r.choice([True, False, None])
    if pick == 4 and depth < 4:
        return [_value(r, depth + 1) for _ in range(r.randrange(0, 4))]
    if pick == 5 and depth < 4:
        return {r.choice(FIELDS): _value(r, depth + 1) for _ in range(r.randrange(0, 4))}
    if pick == 6:
        return "x" * r.choice([100, 4001, 70_000])
    if pick == 7:
        return f"{r.choice(['kim', 'a', ''])}@{r.choice(['example.com', 'x', 'a.b', ''])}"
    if pick == 8:
        return r.choice(TYPES)
    return "".join(r.choice("abcAZ09_-. @") for _ in range(r.randrange(1, 30)))


def _frame(r: random.Random) -> str | bytes:
    pick = r.randrange(10)
    if pick == 0:  # deep nesting, of arrays or objects, sometimes unbalanced
        n = r.choice([10, 500, 5000, 100_000])
        body = "[" * n + "]" * (n if r.random() < 0.5 else n // 2) if r.random() < 0.5 \
            else '{"a":' * n + "1" + "}" * n
        return body if r.random() < 0.5 else '{"type": "message", "client_id": "c1", "text": ' + body + "}"
    if pick == 1:  # garbage or truncated JSON
        good = json.dumps({"type": r.choice(TYPES), "text": "hi", "client_id": "c1"})
        return r.choice([good[: r.randrange(len(good))], "".join(chr(r.randrange(1, 0x500)) for _ in range(50)),
                         "1" * 5000, "[]", "null", '"string"', "{}", '{"type": null}', "\x00"])
    if pick == 2:
        return bytes(r.randrange(256) for _ in range(r.randrange(0, 64)))
    frame: dict[str, Any] = {"type": r.choice(TYPES) if r.random() < 0.9 else _value(r)}
    for _ in range(r.randrange(0, 5)):
        frame[r.choice(FIELDS)] = _value(r)
    if frame["type"] in ("message", "leave_message") and r.random() < 0.6:
        frame.setdefault("client_id", f"f{r.randrange(10**6)}")
        frame.setdefault("text", _value(r))
    return json.dumps(frame, allow_nan=True)


def _request(r: random.Random, token: str) -> tuple[str, str, dict[str, str], dict[str, str], bytes | None]:
    """method, path, query, headers, body"""
    tok = r.choice([token, "", "x", token[:-1] + "A", token + "." + token, "v_" + "A" * 22 + ".x"])
    pick = r.randrange(6)
    if pick == 0:
        part = r.choice(["1", "0", "9" * r.choice([19, 20, 400, 5000]), str(r.randrange(10**6)), "١٢٣", "-1"])
        return "GET", f"/channels/webchat/file/{quote(part, safe='')}", {"token": tok}, {}, None
    if pick == 1:
        headers = {"Content-Type": r.choice(["text/plain", "image/png", "application/x-evil", "text/plain; charset=x",
                                             "", "*/*", "image/", "multipart/form-data; boundary=x"]),
                   "X-Umsg-Visitor": tok}
        if r.random() < 0.3:
            headers["Origin"] = r.choice(["http://evil.test", "null", "http://127.0.0.1"])
        query = {"client_id": str(_value(r))[:80] if r.random() < 0.5 else f"u{r.randrange(10**6)}",
                 "name": str(_value(r))[:300]}
        body = bytes(r.randrange(256) for _ in range(r.choice([0, 1, 10, 999, 1001, 5000])))
        return "POST", "/channels/webchat/upload", query, headers, body
    if pick == 2:
        t = r.choice([str(_value(r)), tok, "1.2.3.4.5", "." * 2000, "1.1." + "9" * 30 + ".eA.sig"])
        return "GET", "/channels/webchat/transcript", {"t": t}, {}, None
    if pick == 3:
        t = r.choice([str(_value(r)), "1.2.3.4.5", "x" * 5000])
        return "POST", "/channels/webchat/transcript", {}, {"Content-Type": "application/x-www-form-urlencoded"}, \
            ("t=" + quote(t)).encode()
    if pick == 4:
        return "OPTIONS", "/channels/webchat/upload", {}, {"Origin": r.choice(["http://evil.test", "null"])}, None
    return "GET", r.choice(["/channels/webchat/widget.js", "/channels/webchat/widget.css", "/channels/webchat/ws",
                            "/channels/webchat/widget.jsx", "/channels/webchat/file/", "/channels/webchat/%00"]), \
        {}, {}, None


class Tally:
    def __init__(self) -> None:
        self.frames = self.requests = self.crashes = self.hangs = self.server_errors = self.too_big = 0
        self.failures: list[str] = []

    def fail(self, kind: str, what: object) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.failures) < 10:
            self.failures.append(f"{kind}: {what!r}"[:500])


async def _pong(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Frames up to the answer of a ping (raises TimeoutError on a hang)."""
    await ws.send_json({"type": "ping"})
    seen = []
    while True:
        msg = await ws.receive(timeout=TIMEOUT)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {msg.type} {msg.data!r}")
        f = json.loads(msg.data)
        if f.get("type") == "pong":
            return seen
        seen.append(f)


async def _fuzz_socket(rig: Rig, r: random.Random, tally: Tally, deadline: float) -> None:
    ws = await rig.client.ws_connect("/channels/webchat/ws")
    if r.random() < 0.85:
        await ws.send_json({"type": "hello"})
    try:
        for _ in range(r.randrange(5, 40)):
            if time.monotonic() > deadline:
                break
            raw = _frame(r)
            tally.frames += 1
            await (ws.send_bytes(raw) if isinstance(raw, bytes) else ws.send_str(raw))
            if len(raw.encode() if isinstance(raw, str) else raw) > MAX_FRAME_BYTES:
                # Refused by the websocket layer itself: closed with 1009 (message too big).
                msg = await ws.receive(timeout=TIMEOUT)
                while msg.type == aiohttp.WSMsgType.TEXT:  # answers to earlier frames (welcome)
                    msg = await ws.receive(timeout=TIMEOUT)
                if msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009:
                    tally.too_big += 1
                else:
                    tally.fail("crashes", (msg.type, raw[:200]))
                return
            try:
                seen = await _pong(ws)
            except TimeoutError:
                tally.fail("hangs", raw[:200])
                return
            except ConnectionError as exc:
                tally.fail("crashes", (str(exc), raw[:200]))
                return
            for f in seen:
                if f.get("type") == "error" and f.get("code") == "internal":
                    tally.fail("crashes", raw[:200])
    finally:
        await ws.close()


async def _fuzz_http(rig: Rig, r: random.Random, tally: Tally, token: str) -> None:
    try:
        method, path, query, headers, body = _request(r, token)
    except UnicodeEncodeError:
        return  # a lone surrogate cannot be put into a URL at all
    tally.requests += 1
    try:
        async with asyncio.timeout(TIMEOUT):
            async with rig.client.request(method, path, params=query, headers=headers, data=body) as resp:
                await resp.read()
                if resp.status >= 500:
                    tally.fail("server_errors", (method, path, query, resp.status))
    except TimeoutError:
        tally.fail("hangs", (method, path, query))
    except (ValueError, aiohttp.InvalidURL):
        tally.requests -= 1  # the client refused to send it (e.g. a control character in a header)


async def test_fuzz_the_chat_socket_and_its_http_routes(make_settings: Any, db_backend: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    limits = {"messages_per_minute": 10_000, "messages_per_minute_per_address": 100_000,
              "uploads_per_hour": 10_000, "uploads_per_hour_per_address": 100_000,
              "connects_per_minute_per_address": 100_000, "sockets_per_address": 1000}
    r = random.Random(f"{SEED}-{db_backend}")
    tally = Tally()
    caplog.set_level(logging.ERROR)
    async with open_rig(make_settings, **limits) as rig:
        _, welcome = await rig.connect()
        token = welcome["token"]
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            if r.random() < 0.5:
                await _fuzz_socket(rig, r, tally, deadline)
            else:
                await asyncio.gather(*(_fuzz_http(rig, r, tally, token) for _ in range(10)))
        # Still serving a normal visitor afterwards.
        ws, _ = await rig.connect(token)
        await ws.send_json({"type": "message", "client_id": "after-fuzz", "text": "still fine"})
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] in ("ack", "message")
        await ws.close()
    # Ours only: aiohttp's parser logs the URLs over 8190 bytes it answered 400 to.
    logged = [rec for rec in caplog.records
              if rec.levelno >= logging.ERROR and rec.name.startswith(("channels", "umsg"))]
    tally.crashes += len(logged)
    print(json.dumps({"backend": db_backend, "seed": SEED, "seconds": SECONDS, "ws_frames": tally.frames,
                      "http_requests": tally.requests, "crashes": tally.crashes, "hangs": tally.hangs,
                      "http_5xx": tally.server_errors,
                      "closed_1009_over_256k": tally.too_big}))
    assert tally.frames > 100 and tally.requests > 100
    assert (tally.crashes, tally.hangs, tally.server_errors) == (0, 0, 0), \
        tally.failures + [rec.getMessage()[:300] for rec in logged[:5]]
