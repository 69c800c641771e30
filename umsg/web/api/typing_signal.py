"""Agent typing: the inbox composer says "typing" / "stopped", the customer's widget shows it.

`POST /api/v1/conversations/{id}/typing` with `{"on": true|false}` writes a
`conversation.typing` event with `who: "agent"`; the web chat notices relay it to
the visitor's open windows (see the README, "Web chat protocol"). Nothing else is
stored. The composer throttles its calls (one "on" every few seconds while keys
are pressed, one "off" when it goes quiet or the reply is sent), so each call is
worth its small transaction.
"""

from __future__ import annotations

from aiohttp import web

from storage.models import Conversation
from umsg.errors import NotFound
from umsg.web.auth import ensure_visible
from umsg.web.endpoints import Ctx
from umsg.web.schemas import Body


class TypingIn(Body):
    on: bool = True


async def post_typing(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(TypingIn)
    conversation_id = ctx.path_id("conversation")
    async with ctx.core.sessions() as s:
        conv = await s.get(Conversation, conversation_id)
        if conv is None:
            raise NotFound(f"conversation {conversation_id} not found")
        ensure_visible(ctx.me, conv.project_id, "conversation", conversation_id)
        ctx.core.events.add(s, conv.project_id, "conversation.typing",
                            {"conversation_id": conversation_id, "who": "agent", "agent_id": ctx.me.agent_id,
                             "on": body.on})
        await s.commit()
    ctx.core.events.notify()
    return web.Response(status=204)
