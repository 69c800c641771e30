"""The universal queue over HTTP: listing, statistics, claiming and settling items.

The lease owner is derived from the caller, so only the caller that claimed
an item can complete, release or fail it: a token bound to an agent owns as
that agent (any of the agent's sessions may settle the item), any other token
as itself on this instance.
"""

from __future__ import annotations

from aiohttp import web

from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.schemas import ClaimIn, FailIn, QueueQuery


def owner_of(principal: Principal, instance_id: str) -> str:
    if principal.agent_id is not None:
        return f"agent:{principal.agent_id}"
    return f"{principal.token_id}@{instance_id}"


async def list_queue(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(QueueQuery)
    items = await ctx.core.queue.list_items(
        ctx.me.project_ids, status=q.status, limit=q.limit, after_id=q.after_id
    )
    return json_ok(serialize.page([serialize.queue_item(i) for i in items], q.limit))


async def queue_stats(ctx: Ctx) -> web.StreamResponse:
    return json_ok(dict(await ctx.core.queue.stats(ctx.me.project_ids)))


async def claim(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(ClaimIn)
    item = await ctx.core.queue.claim(
        owner_of(ctx.me, ctx.core.instance_id),
        project_ids=ctx.me.project_ids,
        queue=body.queue,
        lease_seconds=body.lease_seconds,
    )
    if item is None:
        return web.Response(status=204)
    return json_ok(serialize.queue_item(item))


async def complete(ctx: Ctx) -> web.StreamResponse:
    item_id = ctx.path_id("queue item")
    # Checked first so an item of another project is a 404, not a lease conflict.
    await ctx.core.queue.get(item_id, project_ids=ctx.me.project_ids)
    item = await ctx.core.queue.complete(item_id, owner_of(ctx.me, ctx.core.instance_id))
    return json_ok(serialize.queue_item(item))


async def release(ctx: Ctx) -> web.StreamResponse:
    item_id = ctx.path_id("queue item")
    await ctx.core.queue.get(item_id, project_ids=ctx.me.project_ids)
    item = await ctx.core.queue.release(item_id, owner_of(ctx.me, ctx.core.instance_id))
    return json_ok(serialize.queue_item(item))


async def fail(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(FailIn)
    item_id = ctx.path_id("queue item")
    await ctx.core.queue.get(item_id, project_ids=ctx.me.project_ids)
    item = await ctx.core.queue.fail(
        item_id, owner_of(ctx.me, ctx.core.instance_id), body.reason, permanent=body.permanent
    )
    return json_ok(serialize.queue_item(item))
