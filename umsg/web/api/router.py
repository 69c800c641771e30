"""The router over HTTP: offers (list, accept, decline), transfers, explain, heartbeat, queues.

An agent token acts as its own agent (it may only settle its own offers and
send its own heartbeat); staff tokens may act for any agent they can see.
These commands change the store by compare-and-swap in whichever process
serves the request; the router leader learns of them from the event outbox.
The other reads and the queue memberships are `umsg.router.admin.RouterAdmin`;
this module parses, authorises and serialises.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, model_validator

from storage.models import RouterOffer
from umsg.agents import Agents
from umsg.conversations import Guard
from umsg.router.admin import Membership, NotAgentsProject, OfferFilter, RouterAdmin
from umsg.tokens import Principal
from umsg.web.auth import ensure_visible
from umsg.web.endpoints import API, STAFF, Ctx, Endpoint, json_ok
from umsg.web.errors import forbidden, invalid
from umsg.web.schemas import Body, Id, QueueName, Slug
from umsg.web.serialize import queue_item, ts


class DeclineIn(Body):
    reason: str | None = Field(default=None, max_length=100)


class TransferIn(Body):
    """Exactly one target: an agent (the item waits for that agent first) or a queue."""

    agent_id: Id | None = None
    queue: QueueName | None = None

    @model_validator(mode="after")
    def _one(self) -> TransferIn:
        if (self.agent_id is None) == (self.queue is None):
            raise ValueError("give exactly one of agent_id or queue")
        return self


class OfferQuery(Body):
    agent_id: Id | None = None
    status: str | None = Field(default="offered", pattern="^(offered|accepted|declined|timed_out|revoked)$")
    limit: int = Field(default=50, ge=1, le=500)


class QueueMembership(Body):
    project: Slug
    queue: QueueName
    rank: int = Field(default=0, ge=0, le=1_000_000)


class QueuesIn(Body):
    """The agent's complete queue memberships (replaces them); none means every queue."""

    queues: Annotated[list[QueueMembership], Field(max_length=500)]


def _offer(o: RouterOffer) -> dict[str, Any]:
    return {"id": o.id, "item_id": o.item_id, "agent_id": o.agent_id, "project_id": o.project_id,
            "conversation_id": o.conversation_id, "status": o.status, "reason": o.reason, "why": o.why,
            "created_at": ts(o.created_at), "expires_at": ts(o.expires_at), "decided_at": ts(o.decided_at)}


def _acting_agent(ctx: Ctx) -> int | None:
    """The agent an agent token stands for; None for staff (they may act for anyone they see)."""
    return ctx.me.agent_id if ctx.me.role == "agent" else None


def _admin(ctx: Ctx) -> RouterAdmin:
    return RouterAdmin(ctx.core.sessions, ctx.core.readers, ctx.core.events)


def _visible_to(principal: Principal, offer_id: int) -> Guard:
    def guard(project_id: int | None) -> None:
        ensure_visible(principal, project_id, "offer", offer_id)
    return guard


async def _visible_offer(ctx: Ctx) -> int:
    offer_id = ctx.path_id("offer")
    await _admin(ctx).offer(offer_id, _visible_to(ctx.me, offer_id))
    return offer_id


async def list_offers(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(OfferQuery)
    offers = await _admin(ctx).offers(OfferFilter(
        limit=q.limit, agent_id=_acting_agent(ctx) or q.agent_id, status=q.status,
        project_ids=ctx.me.project_ids,
    ))
    return json_ok({"items": [_offer(o) for o in offers]})


async def accept_offer(ctx: Ctx) -> web.StreamResponse:
    offer_id = await _visible_offer(ctx)
    return json_ok(_offer(await ctx.core.router.accept(offer_id, _acting_agent(ctx))))


async def decline_offer(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(DeclineIn)
    offer_id = await _visible_offer(ctx)
    return json_ok(_offer(await ctx.core.router.decline(offer_id, _acting_agent(ctx), body.reason)))


async def transfer_item(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(TransferIn)
    item_id = ctx.path_id("queue item")
    item = await ctx.core.queue.get(item_id, project_ids=ctx.me.project_ids)
    if body.agent_id is not None and not await _admin(ctx).works_in(body.agent_id, item.project_id):
        raise invalid([{"field": "body.agent_id", "message": "the agent does not work in the item's project"}])
    if ctx.me.role == "agent" and item.agent_id != ctx.me.agent_id:
        raise forbidden("an agent may only transfer items it holds")
    moved = await ctx.core.router.transfer(item_id, agent_id=body.agent_id, queue=body.queue)
    return json_ok(queue_item(moved))


async def explain_item(ctx: Ctx) -> web.StreamResponse:
    item = await ctx.core.queue.get(ctx.path_id("queue item"), project_ids=ctx.me.project_ids)
    return json_ok(await ctx.core.router.explain(item))


async def heartbeat(ctx: Ctx) -> web.StreamResponse:
    agent_id = ctx.path_id("agent")
    if ctx.me.role == "agent" and ctx.me.agent_id != agent_id:
        raise forbidden("an agent token may only send its own heartbeat")
    # Staff renew only agents they see (colleagues in one of their projects): NotFound otherwise.
    await Agents(ctx.core.sessions, ctx.core.events).get(agent_id, ctx.me)
    renewed = await ctx.core.router.heartbeat(agent_id, ctx.me.project_ids)
    return json_ok({"agent_id": agent_id, "renewed": renewed})


async def put_agent_queues(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(QueuesIn)
    agent_id = ctx.path_id("agent")
    memberships = [Membership(project=m.project, queue=m.queue, rank=m.rank) for m in body.queues]
    try:
        await _admin(ctx).set_queues(agent_id, memberships, ctx.me.sees)
    except NotAgentsProject as exc:
        raise invalid([{"field": f"body.queues[{exc.index}].project", "message": str(exc)}]) from exc
    return json_ok({"agent_id": agent_id, "queues": [m.model_dump() for m in body.queues]})


NOT_FOUND = "no such object in the caller's projects"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", f"{API}/offers", list_offers, "List offers (an agent token sees its own)", "router",
             query=OfferQuery),
    Endpoint("POST", f"{API}/offers/{{id}}/accept", accept_offer, "Accept an offer", "router",
             responses={200: "the accepted offer; the item is leased to the agent", 404: NOT_FOUND,
                        409: "the offer expired, was settled, or is another agent's"}),
    Endpoint("POST", f"{API}/offers/{{id}}/decline", decline_offer, "Decline an offer", "router",
             body=DeclineIn, responses={200: "the declined offer; the item waits again", 404: NOT_FOUND,
                                        409: "the offer was already settled"}),
    Endpoint("POST", f"{API}/queue/{{id}}/transfer", transfer_item, "Transfer to an agent or a queue",
             "router", body=TransferIn,
             responses={200: "the item, waiting again with its original age", 404: NOT_FOUND,
                        409: "the item is finished or changed meanwhile"}),
    Endpoint("GET", f"{API}/queue/{{id}}/explain", explain_item, "Why an item waits or where it went",
             "router", responses={200: "the explanation", 404: NOT_FOUND}),
    Endpoint("POST", f"{API}/agents/{{id}}/heartbeat", heartbeat, "Renew the agent's item leases",
             "router", responses={200: "how many leases were renewed", 403: "another agent's (agent token)",
                                  404: NOT_FOUND}),
    Endpoint("PUT", f"{API}/agents/{{id}}/queues", put_agent_queues, "Set an agent's queue memberships",
             "router", roles=STAFF, body=QueuesIn, responses={200: "the memberships", 404: NOT_FOUND}),
)
