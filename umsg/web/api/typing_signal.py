"""Agent typing: the inbox composer says "typing" / "stopped", the customer's widget shows it.

`POST /api/v1/conversations/{id}/typing` with `{"on": true|false}` writes a
`conversation.typing` event with `who: "agent"`; the web chat notices relay it to
the visitor's open windows (see the README, "Web chat protocol"). Nothing else is
stored. The composer throttles its calls (one "on" every few seconds while keys
are pressed, one "off" when it goes quiet or the reply is sent), so each call is
worth its small transaction. The event is written by `umsg.conversations.Conversations.typing`.
"""

from __future__ import annotations

from functools import partial

from aiohttp import web

from umsg.conversations import Conversations
from umsg.web.auth import ensure_visible
from umsg.web.endpoints import Ctx
from umsg.web.schemas import Body


class TypingIn(Body):
    on: bool = True


async def post_typing(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(TypingIn)
    conversation_id = ctx.path_id("conversation")
    guard = partial(ensure_visible, ctx.me, kind="conversation", ident=conversation_id)
    await Conversations(ctx.core.sessions, ctx.core.events, ctx.core.readers).typing(
        conversation_id, guard, agent_id=ctx.me.agent_id, on=body.on)
    return web.Response(status=204)
