"""The customer websocket against a real app: acks after commit, resends, history, replies, errors."""

from __future__ import annotations

from sqlalchemy import func, select
from webchat_harness import Chat, client_id, receive

from storage.models import Conversation, Identity, Message


async def _count(chat: Chat, **where: object) -> int:
    async with chat.core.readers() as s:
        q = select(func.count()).select_from(Message)
        for k, v in where.items():
            q = q.where(getattr(Message, k) == v)
        return int(await s.scalar(q) or 0)


async def test_hello_gives_a_signed_identity_and_ack_comes_after_commit(chat: Chat) -> None:
    ws, welcome = await chat.connect()
    assert welcome["visitor_id"].startswith("v_") and welcome["token"].startswith(welcome["visitor_id"] + ".")
    assert welcome["history"] == [] and welcome["status"] == {"online": True, "reason": "open"}
    cid = client_id()
    await ws.send_json({"type": "message", "client_id": cid, "text": "Hello there"})
    ack = await receive(ws, "ack")
    assert ack["client_id"] == cid and ack["duplicate"] is False
    # The ack names a row that is already committed: a fresh reader sees it.
    async with chat.core.readers() as s:
        msg = await s.get(Message, ack["id"])
        assert msg is not None and msg.text == "Hello there" and msg.from_addr == welcome["visitor_id"]
        ident = await s.scalar(select(Identity).where(Identity.value == welcome["visitor_id"]))
        assert ident is not None and ident.kind == "chat"
    await ws.close()


async def test_a_resend_after_reconnect_is_stored_once(chat: Chat) -> None:
    ws, welcome = await chat.connect()
    cid = client_id()
    await ws.send_json({"type": "message", "client_id": cid, "text": "only once"})
    first = await receive(ws, "ack")
    await ws.close()
    ws2, again = await chat.connect(welcome["token"])
    assert again["visitor_id"] == welcome["visitor_id"]
    await ws2.send_json({"type": "message", "client_id": cid, "text": "only once"})
    second = await receive(ws2, "ack")
    assert second["id"] == first["id"] and second["duplicate"] is True
    assert await _count(chat, text="only once") == 1
    await ws2.close()


async def test_history_reloads_and_a_forged_token_gets_a_fresh_visitor(chat: Chat) -> None:
    ws, welcome = await chat.connect()
    for text in ("one", "two", "three"):
        await ws.send_json({"type": "message", "client_id": client_id(), "text": text})
        await receive(ws, "ack")
    await ws.close()
    ws2, back = await chat.connect(welcome["token"])
    assert [m["text"] for m in back["history"]] == ["one", "two", "three"]
    assert all(m["direction"] == "in" and m["client_id"] for m in back["history"])
    await ws2.close()
    forged = welcome["visitor_id"] + ".AAAA" + welcome["token"].split(".")[1][4:]
    ws3, stranger = await chat.connect(forged)
    assert stranger["visitor_id"] != welcome["visitor_id"] and stranger["history"] == []
    await ws3.close()


async def test_agent_reply_is_pushed_and_marked_delivered(chat: Chat) -> None:
    ws, _ = await chat.connect()
    await ws.send_json({"type": "message", "client_id": client_id(), "text": "anyone?"})
    ack = await receive(ws, "ack")
    sent = await chat.core.channel_services().outbox.reply(
        project_id=chat.project_id, conversation_id=ack["conversation_id"], text="Hi, Alice here",
        agent_id=chat.agent_id)
    pushed = await receive(ws, "message")
    assert pushed["id"] == sent.id and pushed["direction"] == "out"
    assert pushed["text"] == "Hi, Alice here" and pushed["author"] == "Alice"
    for _ in range(100):  # the dispatcher records the result right after send() returned
        async with chat.core.readers() as s:
            status = await s.scalar(select(Message.status).where(Message.id == sent.id))
        if status == "delivered":
            break
        await chat.core.events.wait(0.1)
    assert status == "delivered"
    await ws.close()


async def test_bad_frames_get_error_frames_and_the_socket_stays_usable(chat: Chat) -> None:
    ws = await chat.client.ws_connect("/channels/webchat/ws")
    await ws.send_str("not json")
    assert (await receive(ws))["code"] == "bad_json"
    await ws.send_json({"type": "message", "client_id": "x1", "text": "too early"})
    err = await receive(ws)
    assert err["code"] == "hello_first" and err["client_id"] == "x1"
    await ws.send_json({"type": "hello"})
    await receive(ws, "welcome")
    for frame, code in [
        ({"type": "launch"}, "unknown_type"),
        ({"type": "message", "client_id": "bad id!", "text": "x"}, "invalid"),
        ({"type": "message", "client_id": "c", "text": "x" * 5000}, "too_long"),
        ({"type": "rate", "score": 9}, "invalid"),
        ({"type": "rate", "score": 5}, "no_conversation"),
        ([1, 2], "bad_frame"),
    ]:
        await ws.send_json(frame)
        assert (await receive(ws))["code"] == code, frame
    await ws.send_bytes(b"\x00\x01")
    assert (await receive(ws))["code"] == "binary"
    await ws.send_json({"type": "ping"})
    assert (await receive(ws))["type"] == "pong"
    await ws.close()


async def test_disallowed_origin_is_refused(chat: Chat) -> None:
    resp = await chat.client.get("/channels/webchat/ws", headers={"Origin": "https://evil.example"})
    assert resp.status == 403


async def test_offline_leave_message_continues_by_email(chat: Chat) -> None:
    await chat.set_agent_state("offline")
    ws, welcome = await chat.connect()
    assert welcome["status"] == {"online": False, "reason": "no_agent"}
    await ws.send_json({"type": "leave_message", "client_id": client_id(), "email": "Pat@Example.com",
                        "name": "Pat", "text": "Call me back"})
    ack = await receive(ws, "ack")
    async with chat.core.readers() as s:
        conv = await s.get(Conversation, ack["conversation_id"])
        assert conv is not None and conv.channel == "email"
        emails = (await s.scalars(select(Identity.value).where(
            Identity.contact_id == conv.contact_id, Identity.kind == "email"))).all()
        assert list(emails) == ["pat@example.com"]
    # The agent's reply now defaults to the email channel and the visitor's address.
    reply = await chat.core.channel_services().outbox.reply(
        project_id=chat.project_id, conversation_id=ack["conversation_id"], text="We'll call")
    assert reply.channel == "email" and reply.to_addrs == ["pat@example.com"]
    await ws.close()


async def test_rating_and_transcript(chat: Chat) -> None:
    ws, _ = await chat.connect()
    await ws.send_json({"type": "prechat", "name": "Kim", "email": "kim@example.com"})
    assert (await receive(ws))["for"] == "prechat"
    await ws.send_json({"type": "message", "client_id": client_id(), "text": "thanks"})
    ack = await receive(ws, "ack")
    await ws.send_json({"type": "rate", "score": 4, "comment": "quick"})
    assert (await receive(ws))["for"] == "rate"
    assert await chat.adapter.runtime.store.rating(ack["conversation_id"]) == {
        "conversation_id": ack["conversation_id"], "score": 4, "comment": "quick",
        "at": (await chat.adapter.runtime.store.rating(ack["conversation_id"]) or {})["at"]}
    events = await chat.core.events.since(0, None, 1000)
    assert any(e.kind == "conversation.updated" and e.payload.get("rating", {}).get("score") == 4 for e in events)
    # Without a public URL no confirmation link can be mailed, so no transcript goes to a typed
    # address (the confirmation flow: test_webchat_abuse.py).
    await ws.send_json({"type": "end", "transcript": True})
    refused = await receive(ws, "error")
    assert refused["code"] == "disabled"
    async with chat.core.readers() as s:
        mail = await s.scalar(select(Message).where(Message.channel == "email", Message.direction == "out"))
        assert mail is None
    await ws.close()
