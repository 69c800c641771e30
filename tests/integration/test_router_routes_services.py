"""umsg.router.admin and umsg.routes.admin where the API tests do not reach (both databases).

Offers filtered and guarded, queue memberships refused without a trace or replaced with
their events; route tables hidden like absent ones, saved with the cache forgotten, and
traced with the attributes of the (merged) contact that owns the sender.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from router_driver import T0, add_agent, add_item
from sqlalchemy import delete, select

from storage.models import AgentProject, AgentQueue, Contact, Event, Identity, QueueItem, RouterOffer
from umsg.core import Core
from umsg.errors import ConfigError, Conflict, NotFound
from umsg.router.admin import Membership, NotAgentsProject, OfferFilter, RouterAdmin
from umsg.routes.admin import RouteTables
from umsg.routes.probe import make_sample


def _admin(core: Core) -> RouterAdmin:
    return RouterAdmin(core.sessions, core.readers, core.events)


def _tables(core: Core) -> RouteTables:
    return RouteTables(core.routes, core.sessions, core.readers, core.events)


def _everything(project_id: int) -> bool:
    return True


def _hidden(project_id: int | None) -> None:
    raise NotFound("hidden by the guard")


async def _offer(core: Core, item_id: int, agent_id: int, status: str = "offered") -> int:
    async with core.sessions() as s:
        item = await s.get(QueueItem, item_id)
        assert item is not None
        offer = RouterOffer(project_id=item.project_id, item_id=item_id, conversation_id=item.conversation_id,
                            agent_id=agent_id, status=status, expires_at=T0 + timedelta(seconds=30))
        s.add(offer)
        await s.commit()
        return offer.id


async def _events(core: Core, kind: str) -> list[tuple[int | None, dict[str, Any]]]:
    async with core.readers() as s:
        rows = (await s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))).all()
    return [(e.project_id, e.payload) for e in rows]


async def _memberships(core: Core, agent_id: int) -> list[tuple[int, str, int]]:
    async with core.readers() as s:
        rows = (await s.scalars(select(AgentQueue).where(AgentQueue.agent_id == agent_id)
                                .order_by(AgentQueue.project_id, AgentQueue.queue))).all()
    return [(r.project_id, r.queue, r.rank) for r in rows]


async def test_offers_are_filtered_newest_first_and_guarded(core: Core) -> None:
    default = await core.ensure_project(core.settings.project)
    other = await core.ensure_project("other")
    ann, ben = await add_agent(core, default, "ann"), await add_agent(core, other, "ben")
    first = await _offer(core, await add_item(core, default), ann, status="declined")
    second = await _offer(core, await add_item(core, default), ann)
    theirs = await _offer(core, await add_item(core, other), ben)
    svc = _admin(core)

    assert [o.id for o in await svc.offers(OfferFilter(limit=10))] == [theirs, second, first]
    assert [o.id for o in await svc.offers(OfferFilter(limit=1))] == [theirs]
    assert [o.id for o in await svc.offers(OfferFilter(limit=10, agent_id=ann))] == [second, first]
    assert [o.id for o in await svc.offers(OfferFilter(limit=10, status="offered"))] == [theirs, second]
    assert [o.id for o in await svc.offers(OfferFilter(limit=10, project_ids={other}))] == [theirs]
    assert await svc.offers(OfferFilter(limit=10, project_ids=set())) == []

    seen: list[int | None] = []
    assert (await svc.offer(theirs, seen.append)).agent_id == ben and seen == [other]
    with pytest.raises(NotFound, match="hidden by the guard"):
        await svc.offer(theirs, _hidden)
    with pytest.raises(NotFound, match=f"offer {theirs + 1} not found"):
        await svc.offer(theirs + 1, seen.append)
    assert seen == [other]  # an absent offer never reaches the guard

    assert await svc.works_in(ann, default) and not await svc.works_in(ann, other)


async def test_queue_memberships_are_replaced_with_one_event_per_project_or_refused_untouched(core: Core) -> None:
    default = await core.ensure_project(core.settings.project)
    other = await core.ensure_project("other")
    await core.ensure_project("third")
    ann = await add_agent(core, default, "ann")
    async with core.sessions() as s:
        s.add(AgentProject(agent_id=ann, project_id=other))
        await s.commit()
    svc = _admin(core)

    await svc.set_queues(ann, [Membership("default", "sales", 2), Membership("other", "billing")], _everything)
    assert await _memberships(core, ann) == [(default, "sales", 2), (other, "billing", 0)]
    assert await _events(core, "router.agent") == [(default, {"agent_id": ann, "queues": 2}),
                                                   (other, {"agent_id": ann, "queues": 2})]

    refusals = [
        ([Membership("default", "x"), Membership("nowhere", "y")], _everything, 1, "nowhere"),
        ([Membership("third", "x")], _everything, 0, "third"),  # exists, but ann does not work there
        ([Membership("default", "x"), Membership("other", "y")], lambda pid: pid == default, 1, "other"),
    ]
    for queues, sees, index, slug in refusals:
        with pytest.raises(NotAgentsProject, match=f"agent {ann} does not work in project '{slug}'") as raised:
            await svc.set_queues(ann, queues, sees)
        assert (raised.value.index, raised.value.slug) == (index, slug)
    assert await _memberships(core, ann) == [(default, "sales", 2), (other, "billing", 0)]
    assert len(await _events(core, "router.agent")) == 2

    await svc.set_queues(ann, [], _everything)  # none: every queue again
    assert await _memberships(core, ann) == []
    assert (await _events(core, "router.agent"))[-2:] == [(default, {"agent_id": ann, "queues": 0}),
                                                          (other, {"agent_id": ann, "queues": 0})]

    loner = await add_agent(core, default, "loner")
    async with core.sessions() as s:
        await s.execute(delete(AgentProject).where(AgentProject.agent_id == loner))
        await s.commit()
    with pytest.raises(NotFound, match=f"agent {loner} not found"):
        await svc.set_queues(loner, [], _everything)


async def test_a_hidden_project_is_not_found_like_an_absent_one(core: Core) -> None:
    default = await core.ensure_project(core.settings.project)
    svc = _tables(core)
    assert (await svc.project("default", _everything)).id == default
    for slug, sees in (("default", lambda pid: False), ("absent", _everything)):
        with pytest.raises(NotFound, match=f"project '{slug}' not found"):
            await svc.project(slug, sees)


async def test_save_commits_its_event_and_routes_by_the_new_table_at_once(core: Core) -> None:
    default = await core.ensure_project(core.settings.project)
    svc = _tables(core)
    project = await svc.project("default", _everything)
    async with core.readers() as s:
        assert (await core.routes.table_for(s, default)).names() == ["default"]  # cached from here on

    version, eff = await svc.save(project, [{"name": "vip", "to": "vip@acme.test", "queue": "vip"}], 0, by="test")
    assert (version, eff.version, eff.source) == (1, 1, "stored")
    assert eff.routes == (await svc.effective(project)).routes
    async with core.readers() as s:
        assert (await core.routes.table_for(s, default)).names() == ["vip", "default"]  # no recheck wait
    assert await _events(core, "routes.updated") == [
        (default, {"project": "default", "version": 1, "updated_by": "test", "routes": 1})]

    with pytest.raises(Conflict, match="at version 1, not 0"):
        await svc.save(project, [], 0, by="test")
    with pytest.raises(ConfigError) as raised:
        await svc.save(project, [{"name": "a"}, {"name": "b", "menu": "1"}], 1, by="test")
    assert raised.value.problems[0][0] == "routes[1] (b)"
    assert (await svc.effective(project)).version == 1
    assert len(await _events(core, "routes.updated")) == 1


async def test_trace_follows_a_merged_contact_and_keeps_given_attributes(core: Core) -> None:
    default = await core.ensure_project(core.settings.project)
    async with core.sessions() as s:
        survivor = Contact(project_id=default, attributes={"vip": True})
        s.add(survivor)
        await s.flush()
        merged = Contact(project_id=default, attributes={}, merged_into_id=survivor.id)
        s.add(merged)
        await s.flush()
        s.add(Identity(project_id=default, contact_id=merged.id, kind="email", value="old@example.com"))
        await s.commit()
    svc = _tables(core)
    project = await svc.project("default", _everything)
    await svc.save(project, [{"name": "vip", "contact": "vip = true", "queue": "vip"}], 0, by="test")
    sample = make_sample(channel="email", sender="OLD@example.com", to="support@acme.test", at=T0)

    looked_up = await svc.trace(project, sample, own_attributes=False)
    assert looked_up.explanation.decision.route == "vip" and (looked_up.version, looked_up.source) == (1, "stored")
    assert looked_up.explanation.sample.attributes == {"vip": True}
    assert looked_up.explanation.sample.sender == "old@example.com"

    given = await svc.trace(project, sample)  # the sample's own (empty) attributes are judged
    assert given.explanation.decision.route == "default" and given.explanation.sample.attributes == {}

    candidate = await svc.trace(project, sample, candidate=[{"name": "mail", "channel": "email"}])
    assert (candidate.explanation.decision.route, candidate.version, candidate.source) == ("mail", None, "candidate")
    with pytest.raises(ConfigError) as raised:
        await svc.trace(project, sample, candidate=[{"name": "a"}, {"name": "b", "menu": "1"}])
    assert raised.value.problems[0][0] == "routes[1] (b)"
