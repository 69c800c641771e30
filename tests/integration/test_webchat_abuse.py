"""The web chat as a hostile visitor sees it, on real sockets: rate limits on lines, uploads and
transcript mail, transcripts only to a proven address (counted at a real SMTP sink), hostile
frames and file ids, the per-address socket cap and the idle timeout, and the refusals in the
metrics.

`open_rig` (webchat_abuse_rig.py) serves the app with a web chat and an email channel whose
relay is an aiosmtpd sink on loopback, and counts the mails that reach it. Rate bounds are
computed from the limit and the measured elapsed time (a bucket refills continuously), so they
hold on a slow machine too.
"""

from __future__ import annotations

import re
import time
from email.message import Message as MailMessage
from typing import Any

import aiohttp
import pytest
from webchat_abuse_rig import TIMEOUT, bound, cid, frame, open_rig

from storage.models import Part

# -- rates ------------------------------------------------------------------------------------


async def test_a_message_flood_is_refused_and_the_stored_count_bounded(make_settings: Any) -> None:
    async with open_rig(make_settings, messages_per_minute=10, messages_per_minute_per_address=25) as rig:
        ws, welcome = await rig.connect()
        started = time.monotonic()
        for i in range(60):
            await ws.send_json({"type": "message", "client_id": cid(), "text": f"flood {i}"})
        answers = [await frame(ws) for _ in range(60)]
        acks = [a for a in answers if a["type"] == "ack"]
        refused = [a for a in answers if a["type"] == "error"]
        assert {a["code"] for a in refused} == {"rate_limited"}
        assert all(a["client_id"] and a["retry_after"] >= 1 for a in refused)
        assert 10 <= len(acks) <= bound(10, 60, started)
        assert await rig.stored(from_addr=welcome["visitor_id"]) == len(acks)
        # Ping needs no token: the socket is still usable while limited.
        await ws.send_json({"type": "ping"})
        assert (await frame(ws)) == {"type": "pong"}
        await ws.close()
        # New visitors from the same address share the address's budget.
        started = time.monotonic()
        before = await rig.stored()
        for _ in range(4):
            ws, _ = await rig.connect()
            for i in range(10):
                await ws.send_json({"type": "message", "client_id": cid(), "text": f"more {i}"})
            [await frame(ws) for _ in range(10)]
            await ws.close()
        # 25 per minute per address, of which the first visitor already spent len(acks).
        assert await rig.stored() - before <= bound(25, 60, started) - len(acks)
        refusals = rig.refused()
        assert refusals["message_visitor"] == len(refused) and refusals["message_address"] >= 1


async def test_an_upload_flood_is_refused_with_429(make_settings: Any) -> None:
    async with open_rig(make_settings, uploads_per_hour=3) as rig:
        ws, welcome = await rig.connect()
        statuses = []
        for i in range(10):
            async with rig.client.post(f"/channels/webchat/upload?client_id={cid()}&name=f{i}.txt",
                                       data=f"file {i}".encode(), headers={"Content-Type": "text/plain",
                                                                          "X-Umsg-Visitor": welcome["token"]}) as r:
                statuses.append(r.status)
                body = await r.json()
                if r.status == 429:
                    assert body["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
        assert statuses[:3] == [201] * 3 and statuses[3:] == [429] * 7
        assert await rig.stored(Part, role="attachment") == 3
        assert rig.refused()["upload_visitor"] == 7
        await ws.close()


# -- transcripts ------------------------------------------------------------------------------


async def _ask_transcript(ws: aiohttp.ClientWebSocketResponse, address: str) -> dict[str, Any]:
    await ws.send_json({"type": "prechat", "email": address})
    answer = await frame(ws)
    if answer["type"] == "error":
        return answer
    await ws.send_json({"type": "end", "transcript": True})
    return await frame(ws)


async def test_21_transcript_requests_to_new_addresses_send_at_most_the_configured_number(
        make_settings: Any) -> None:
    async with open_rig(make_settings, messages_per_minute=100) as rig:
        ws, _ = await rig.connect()
        await ws.send_json({"type": "message", "client_id": cid(), "text": "secret order 42"})
        assert (await frame(ws, "ack"))["type"] == "ack"
        answers = [await _ask_transcript(ws, f"victim{i}@elsewhere.test") for i in range(21)]
        confirmed = [a for a in answers if a.get("confirm")]
        assert len(confirmed) == 3  # transcripts_per_hour, by default
        assert all(a["type"] == "error" and a["code"] == "rate_limited" for a in answers[3:])
        mails = await rig.deliver()
        assert len(mails) == 3
        for mail in mails:
            body = mail.get_payload(decode=True)
            assert isinstance(body, bytes)
            # Only the fixed confirmation text: nothing the visitor wrote is relayed.
            assert b"secret order" not in body and b"/channels/webchat/transcript?t=" in body
            assert "confirm your address" in mail["Subject"]
        await ws.close()
        # Other visitors from the same address: the address's budget (5 by default) caps them.
        for i in range(6):
            ws, _ = await rig.connect()
            await ws.send_json({"type": "message", "client_id": cid(), "text": "hi"})
            await frame(ws, "ack")
            await _ask_transcript(ws, f"other{i}@elsewhere.test")
            await ws.close()
        assert len(await rig.deliver()) == 5
        assert rig.refused()["transcript_visitor"] == 18
        assert rig.refused()["transcript_address"] == 4


def _link(mail: MailMessage) -> str:
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = re.search(rb"http://127\.0\.0\.1:\d+(/channels/webchat/transcript\?t=\S+)", body)
    assert found is not None, body
    return found.group(1).decode()


async def test_a_proven_address_gets_the_transcript_once_per_link(make_settings: Any) -> None:
    async with open_rig(make_settings) as rig:
        ws, welcome = await rig.connect()
        await ws.send_json({"type": "message", "client_id": cid(), "text": "my parcel never came"})
        await frame(ws, "ack")
        answer = await _ask_transcript(ws, "kim@customer.test")
        assert answer == {"type": "ok", "for": "end", "transcript": False, "confirm": "kim@customer.test"}
        (confirm,) = await rig.deliver()
        assert confirm["To"] == "kim@customer.test"
        link = _link(confirm)
        # Opening the link (as a mail scanner would) sends nothing yet.
        async with rig.client.get(link) as r:
            page = await r.text()
            assert r.status == 200 and "kim@customer.test" in page and "<form method=post>" in page
        assert len(await rig.deliver()) == 1
        token = link.split("?t=", 1)[1]
        async with rig.client.post("/channels/webchat/transcript", data={"t": token}) as r:
            assert r.status == 200 and "on its way" in await r.text()
        mails = await rig.deliver()
        assert len(mails) == 2
        transcript = mails[1]
        body = transcript.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert transcript["To"] == "kim@customer.test" and b"my parcel never came" in body
        # The same link again: nothing more.
        async with rig.client.post("/channels/webchat/transcript", data={"t": token}) as r:
            assert r.status == 200 and "already sent" in await r.text()
        # A forged or altered token: refused.
        for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "x", "1.2.3.4.5", "." * 900):
            async with rig.client.post("/channels/webchat/transcript", data={"t": bad}) as r:
                assert r.status == 400
        assert len(await rig.deliver()) == 2
        # Proven now: the next transcript goes straight to the address.
        await ws.send_json({"type": "end", "transcript": True})
        assert await frame(ws) == {"type": "ok", "for": "end", "transcript": True}
        assert len(await rig.deliver()) == 3
        # Another visitor typing the same address: proven for Kim's contact only, and the
        # address has had its 2 mails this hour (transcripts_per_hour_per_recipient).
        ws2, _ = await rig.connect()
        await ws2.send_json({"type": "message", "client_id": cid(), "text": "me too"})
        await frame(ws2, "ack")
        again = await _ask_transcript(ws2, "kim@customer.test")
        assert again["code"] == "rate_limited" and "recipient" in again["message"]
        assert len(await rig.deliver()) == 3
        await ws.close()
        await ws2.close()
        assert welcome["features"]["transcript"] is True


# -- hostile frames and ids ------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "[" * 100_000,
    '{"type": "message", "client_id": "x", "text": ' + "[" * 50_000 + "]" * 50_000 + "}",
    '{"type": "ping", "x": ' + '{"a": ' * 900 + "1" + "}" * 900 + "}",
    '{"type": "prechat", "name": ' + "[" * 20 + "]" * 20 + "}",
], ids=["array-100k", "text-50k", "object-900", "array-20"])
async def test_deeply_nested_json_gets_an_error_frame_and_the_socket_works_on(make_settings: Any, raw: str) -> None:
    async with open_rig(make_settings) as rig:
        ws, _ = await rig.connect()
        await ws.send_str(raw)
        answer = await frame(ws)
        assert answer["type"] == "error" and answer["code"] in ("too_deep", "invalid"), answer
        await ws.send_json({"type": "message", "client_id": cid(), "text": "still here"})
        assert (await frame(ws))["type"] == "ack"
        await ws.close()


@pytest.mark.parametrize("part", ["9" * 5000, "99999999999999999999", "9223372036854775808", "0", "00001",
                                  "9223372036854775807", "1" * 19])
async def test_a_huge_or_odd_file_id_is_a_404(make_settings: Any, part: str) -> None:
    async with open_rig(make_settings) as rig:
        ws, welcome = await rig.connect()
        await ws.send_json({"type": "message", "client_id": cid(), "text": "hello"})
        await frame(ws, "ack")  # the visitor has a contact, so the lookup goes to the store
        for token in (welcome["token"], "", "v_x.y"):
            async with rig.client.get(f"/channels/webchat/file/{part}?token={token}") as r:
                assert r.status == 404, (part, r.status)
        await ws.close()


# -- sockets ----------------------------------------------------------------------------------


async def test_sockets_per_address_are_capped_and_idle_ones_closed(make_settings: Any) -> None:
    async with open_rig(make_settings, sockets_per_address=3, idle_timeout_seconds=1.0) as rig:
        socks = [await rig.client.ws_connect("/channels/webchat/ws") for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await rig.client.ws_connect("/channels/webchat/ws")
        assert refused.value.status == 429
        assert rig.refused()["sockets_address"] == 1
        # Said nothing: each is closed after the idle timeout (generous wait), freeing its slot.
        for ws in socks:
            msg = await ws.receive(timeout=TIMEOUT)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4008
        ws, _ = await rig.connect()
        await ws.send_json({"type": "ping"})
        assert await frame(ws) == {"type": "pong"}
        await ws.close()
        assert rig.refused()["idle"] == 3
