"""Uploads with size and type limits, downloads only for the visitor, and live agent notices."""

from __future__ import annotations

from webchat_harness import Chat, client_id, receive

from storage.models import Conversation

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def _upload(chat: Chat, token: str, data: bytes, media_type: str, cid: str, name: str = "a.png",
                  origin: str | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Content-Type": media_type, "X-Umsg-Visitor": token}
    if origin:
        headers["Origin"] = origin
    async with chat.client.post("/channels/webchat/upload", data=data, headers=headers,
                                params={"client_id": cid, "name": name}) as resp:
        return resp.status, await resp.json()


async def test_upload_limits_and_dedupe(chat: Chat) -> None:
    ws, welcome = await chat.connect()
    token = welcome["token"]
    status, body = await _upload(chat, token, PNG, "image/png", "u1", name="../../etc/<img src=x onerror=alert(1)>.png")
    assert status == 201 and body["type"] == "ack" and body["duplicate"] is False
    assert body["message"]["files"][0]["name"] == "<img src=x onerror=alert(1)>.png"  # path stripped; text stays text
    pushed = await receive(ws, "message")
    assert pushed["id"] == body["id"] and pushed["files"][0]["type"] == "image/png"
    again = await _upload(chat, token, PNG, "image/png", "u1")
    assert again[0] == 201 and again[1]["duplicate"] is True and again[1]["id"] == body["id"]
    assert (await _upload(chat, token, b"x" * 1001, "image/png", "u2"))[0] == 413
    assert (await _upload(chat, token, b"MZ", "application/x-msdownload", "u3"))[0] == 415
    assert (await _upload(chat, token + "x", PNG, "image/png", "u4"))[0] == 401
    assert (await _upload(chat, token, PNG, "image/png", "bad id"))[0] == 400
    assert (await _upload(chat, token, PNG, "image/png", "u5", origin="https://evil.example"))[0] == 403

    part_id = body["message"]["files"][0]["id"]
    async with chat.client.get(f"/channels/webchat/file/{part_id}", params={"token": token}) as resp:
        assert resp.status == 200 and await resp.read() == PNG
        assert resp.headers["Content-Disposition"].startswith("attachment")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    ws2, other = await chat.connect()
    async with chat.client.get(f"/channels/webchat/file/{part_id}", params={"token": other["token"]}) as resp:
        assert resp.status == 404  # another visitor cannot fetch it
    await ws.close()
    await ws2.close()


async def test_agent_joined_left_typing_and_closed_notices(chat: Chat) -> None:
    ws, _ = await chat.connect()
    await ws.send_json({"type": "message", "client_id": client_id(), "text": "hi"})
    conv = (await receive(ws, "ack"))["conversation_id"]
    await ws.send_json({"type": "typing", "on": True})
    # Frames on one socket are handled in order, so the pong proves the typing frame was stored.
    await ws.send_json({"type": "ping"})
    await receive(ws, "pong")
    events = chat.core.events

    async def emit(kind: str, payload: dict) -> None:  # type: ignore[type-arg]
        async with chat.core.sessions() as s:
            events.add(s, chat.project_id, kind, payload)
            await s.commit()
        events.notify()

    await emit("conversation.updated", {"conversation_id": conv,
                                        "changes": {"assignee_id": {"from": None, "to": chat.agent_id}}})
    assert await receive(ws, "agent") == {"type": "agent", "event": "joined", "name": "Alice"}
    await emit("conversation.typing", {"conversation_id": conv, "who": "agent", "on": True})
    assert await receive(ws, "typing") == {"type": "typing", "on": True}
    await emit("queue.released", {"conversation_id": conv, "owner": f"agent:{chat.agent_id}"})
    assert (await receive(ws, "agent"))["event"] == "left"
    await emit("conversation.updated", {"conversation_id": conv, "changes": {"status": {"from": "open",
                                                                                       "to": "resolved"}}})
    assert (await receive(ws, "closed"))["conversation_id"] == conv
    # The visitor's own typing reached the log for the agents.
    log = await events.since(0, None, 1000)
    assert any(e.kind == "conversation.typing" and e.payload["who"] == "customer" for e in log)
    async with chat.core.readers() as s:
        assert (await s.get(Conversation, conv)) is not None
    await ws.close()


async def test_assets_are_served(chat: Chat) -> None:
    for name, kind in (("widget.js", "text/javascript"), ("widget.css", "text/css")):
        async with chat.client.get(f"/channels/webchat/{name}") as resp:
            assert resp.status == 200 and resp.content_type == kind and len(await resp.read()) > 500
    async with chat.client.get("/channels/webchat/widget.html") as resp:
        assert resp.status == 404
