"""Agent typing: the inbox's `POST /conversations/{id}/typing` reaches the visitor's widget."""

from __future__ import annotations

from webchat_harness import Chat, client_id, receive

from storage.models import Agent, AgentProject
from umsg.tokens import create_token


async def test_agent_typing_reaches_the_visitor_and_stays_in_its_project(chat: Chat) -> None:
    ws, _ = await chat.connect()
    await ws.send_json({"type": "message", "client_id": client_id(), "text": "anyone there?"})
    conv = (await receive(ws, "ack"))["conversation_id"]
    token = await create_token(chat.core.sessions, "agent", agent_id=chat.agent_id)
    headers = {"Authorization": f"Bearer {token}"}

    async with chat.client.post(f"/api/v1/conversations/{conv}/typing", json={"on": True}, headers=headers) as r:
        assert r.status == 204
    assert await receive(ws, "typing") == {"type": "typing", "on": True}
    async with chat.client.post(f"/api/v1/conversations/{conv}/typing", json={"on": False}, headers=headers) as r:
        assert r.status == 204
    assert await receive(ws, "typing") == {"type": "typing", "on": False}
    log = [e for e in await chat.core.events.since(0, None, 1000) if e.kind == "conversation.typing"]
    assert [(e.payload["who"], e.payload["on"], e.payload.get("agent_id")) for e in log][-2:] == [
        ("agent", True, chat.agent_id), ("agent", False, chat.agent_id)]

    async with chat.client.post("/api/v1/conversations/999999/typing", json={"on": True}, headers=headers) as r:
        assert r.status == 404
    # An agent of another project is told the conversation does not exist.
    other = await chat.core.ensure_project("other")
    async with chat.core.sessions() as s:
        bob = Agent(login="bob", display_name="Bob", state="available")
        s.add(bob)
        await s.flush()
        s.add(AgentProject(agent_id=bob.id, project_id=other))
        await s.commit()
        bob_id = bob.id
    outsider = await create_token(chat.core.sessions, "agent", agent_id=bob_id)
    async with chat.client.post(f"/api/v1/conversations/{conv}/typing", json={"on": True},
                                headers={"Authorization": f"Bearer {outsider}"}) as r:
        assert r.status == 404
    async with chat.client.post(f"/api/v1/conversations/{conv}/typing", json={"on": "yes please"},
                                headers=headers) as r:
        assert r.status == 422
    await ws.close()
