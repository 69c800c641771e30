"""The outbound authority's rules, one by one, on a core with configured instances (both databases).

Projects alpha and beta; instances `alpha_mail` (alpha, help@support.alpha.test), `beta_mail`
(beta) and `beta_fax` (a fax instance with no project: the gateway's default). Each rule is shown
by what the outbox refuses (nothing queued) and what it lets through: replies, new outbound
conversations, route forwards and auto-replies, notifications, explicit senders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from channels.registry import ChannelRegistry
from storage.models import Conversation, Identity, Job, Message
from umsg.config import Settings
from umsg.core import Core
from umsg.instances import ChannelInstances, Instance
from umsg.model import Address, IdentityKind, Inbound
from umsg.outbound.authority import ChannelNotInProject, OutboundRefused, RecipientNotContact, SenderNotChannels

CHANNELS: dict[str, dict[str, Any]] = {
    "alpha_mail": {"type": "email", "project": "alpha", "domain": "support.alpha.test",
                   "addresses": ["help@support.alpha.test"]},
    "beta_mail": {"type": "email", "project": "beta", "domain": "support.beta.test"},
    "beta_fax": {"type": "fax", "project": "beta", "numbers": {"*": {}, "+4930111": {"project": "gamma"}}},
    "anywhere": {"type": "fax"},
}


@pytest.fixture
async def core(make_settings: Callable[..., Settings]) -> AsyncIterator[Core]:
    settings = make_settings(channels=CHANNELS)
    c = await Core.open(settings, channels=ChannelRegistry().instances(settings.channels, settings.project))
    await c.start()
    try:
        yield c
    finally:
        await c.aclose()


def test_the_registry_tells_each_instance_whom_it_serves() -> None:
    from umsg.config import load_settings

    settings = load_settings(None, environ={}, overrides={"project": "main", "channels": CHANNELS})
    instances = ChannelRegistry().instances(settings.channels, settings.project)
    alpha, fax, anywhere = instances.get("alpha_mail"), instances.get("beta_fax"), instances.get("anywhere")
    assert alpha is not None and fax is not None and anywhere is not None
    assert (alpha.projects, fax.projects) == (frozenset({"alpha"}), frozenset({"beta", "gamma"}))
    assert anywhere.projects == frozenset({"main"})
    assert alpha.sends_as("help@support.alpha.test") and alpha.sends_as("reply+t0k@support.alpha.test")
    assert alpha.sends_as("help@support.beta.test") is False and fax.sends_as("+4930111") is None
    # Without the gateway's project an unset one is not guessed: that instance is not restricted.
    assert ChannelRegistry().instances(settings.channels).get("anywhere") == Instance(
        "anywhere", "fax", IdentityKind.FAX, projects=None)
    # A core given no instances (embedded, tests) has nothing to compare projects with.
    assert ChannelInstances().get("email") is None


async def _mail(core: Core, project: str, sender: str, key: str, channel: str, **kw: Any) -> Any:
    await core.ensure_project(project)
    return await core.ingest.ingest(Inbound(
        channel=channel, sender=Address(IdentityKind.EMAIL, sender), recipients=("help@support.alpha.test",),
        dedupe_key=key, raw=b"x", raw_media_type="text/plain", subject="Help", text="hello", project=project, **kw))


async def _queued(core: Core) -> int:
    async with core.readers() as s:
        out = await s.scalar(select(func.count()).select_from(Message).where(Message.direction == "out"))
        jobs = await s.scalar(select(func.count()).select_from(Job))
    assert out == jobs
    return int(out or 0)


async def test_replies_stay_in_their_project_and_go_to_the_contact(core: Core) -> None:
    beta = await _mail(core, "beta", "carol@customer.test", "b1", "beta_mail")
    pid = await core.ensure_project("beta")
    reply = core.outbox.reply
    with pytest.raises(ChannelNotInProject):
        await reply(project_id=pid, conversation_id=beta.conversation_id, text="x", channel="alpha_mail")
    with pytest.raises(RecipientNotContact):
        await reply(project_id=pid, conversation_id=beta.conversation_id, text="x", to="eve@evil.test")
    with pytest.raises(RecipientNotContact):  # the customer wrote: not a new conversation, whoever asks
        await reply(project_id=pid, conversation_id=beta.conversation_id, text="x", to="eve@evil.test",
                    may_start=True)
    with pytest.raises(SenderNotChannels):
        await reply(project_id=pid, conversation_id=beta.conversation_id, text="x",
                    sender="help@support.alpha.test")
    assert await _queued(core) == 0
    ok = await reply(project_id=pid, conversation_id=beta.conversation_id, text="x", to="CAROL@customer.test")
    # The customer wrote to alpha's address on beta's instance: beta answers as itself.
    assert ok.channel == "beta_mail" and ok.from_addr == "" and await _queued(core) == 1
    own = await reply(project_id=pid, conversation_id=beta.conversation_id, text="x",
                      sender="orders@support.beta.test")
    assert own.from_addr == "orders@support.beta.test"


async def test_a_new_outbound_conversation_records_its_address(core: Core) -> None:
    pid = await core.ensure_project("beta")
    first = await _mail(core, "beta", "dan@customer.test", "b2", "beta_mail")
    other = await _mail(core, "beta", "fay@customer.test", "b3", "beta_mail")
    # A conversation the customer has not written in (an agent starts it): only `may_start` may
    # name a new address, and it becomes the contact's.
    async with core.sessions() as s:
        started_conv = Conversation(project_id=pid, contact_id=first.contact_id, channel="beta_mail",
                                    subject="Your order", token="t-new-outbound")
        s.add(started_conv)
        await s.commit()
        conv = started_conv.id
    with pytest.raises(RecipientNotContact):
        await core.outbox.reply(project_id=pid, conversation_id=conv, text="x", to="dan.new@customer.test")
    with pytest.raises(RecipientNotContact, match="another contact"):
        await core.outbox.reply(project_id=pid, conversation_id=conv, text="x", to="fay@customer.test",
                                may_start=True)
    started = await core.outbox.reply(project_id=pid, conversation_id=conv, text="x", to="dan.new@customer.test",
                                      may_start=True)
    async with core.readers() as s:
        values = set((await s.scalars(select(Identity.value).where(Identity.contact_id == first.contact_id))).all())
    assert started.to_addrs == ["dan.new@customer.test"] and "dan.new@customer.test" in values
    assert other.contact_id != first.contact_id


async def test_system_messages(core: Core) -> None:
    alpha = await _mail(core, "alpha", "gil@customer.test", "a1", "alpha_mail")
    pid = await core.ensure_project("alpha")
    # A notification goes to our own people on the operator's channel: not refused for its project.
    note = await core.outbox.notify(project_id=pid, conversation_id=alpha.conversation_id, channel="beta_mail",
                                    to="owner@acme.test", text="voicemail")
    assert note.to_addrs == ["owner@acme.test"]
    with pytest.raises(SenderNotChannels):
        await core.outbox.notify(project_id=pid, conversation_id=alpha.conversation_id, channel="beta_mail",
                                 to="owner@acme.test", text="x", sender="ceo@support.alpha.test")
    # A forward (flags forward_of) goes where its route says, but only through the project's channels.
    with pytest.raises(ChannelNotInProject):
        await core.outbox.reply(project_id=pid, conversation_id=alpha.conversation_id, text="fwd",
                                channel="beta_fax", to="+4930999", automatic=True, flags={"forward_of": 1})
    fwd = await core.outbox.reply(project_id=pid, conversation_id=alpha.conversation_id, text="fwd",
                                  channel="alpha_mail", to="desk@partner.test", automatic=True,
                                  flags={"forward_of": alpha.message_id})
    assert fwd.to_addrs == ["desk@partner.test"]
    # A transcript or auto-reply is for the customer: the contact's address only.
    with pytest.raises(OutboundRefused):
        await core.outbox.reply(project_id=pid, conversation_id=alpha.conversation_id, text="t",
                                to="anyone@evil.test", automatic=True, flags={"transcript": True})


async def test_a_route_forward_through_another_projects_channel_is_skipped_not_sent(
        make_settings: Callable[..., Settings]) -> None:
    routes = [{"name": "fwd", "action": "forward", "forward_to": "desk@partner.test",
               "forward_channel": "alpha_mail"}]
    settings = make_settings(channels=CHANNELS, routes=routes)
    core = await Core.open(settings, channels=ChannelRegistry().instances(settings.channels, settings.project))
    await core.start()
    try:
        # [[routes]] are the gateway's project's ("default"), which alpha's instance does not serve.
        res = await _mail(core, "default", "hal@customer.test", "b9", "beta_mail")
        async with core.readers() as s:
            msg = await s.get(Message, res.message_id)
        assert msg is not None and msg.flags["forwarded"].startswith("skipped: channel 'alpha_mail' does not serve")
        assert await _queued(core) == 0
    finally:
        await core.aclose()


async def test_a_heartbeat_for_some_projects_renews_only_their_items(core: Core) -> None:
    from datetime import timedelta

    from storage.models import QueueItem
    from storage.types import utcnow
    from umsg.router.store import agent_owner

    items: dict[str, int] = {}
    for project in ("alpha", "beta"):
        await core.ensure_project(project)
        res = await core.ingest.ingest(Inbound(
            channel="api", sender=Address(IdentityKind.EMAIL, f"c@{project}.test"), recipients=(),
            dedupe_key=f"hb-{project}", raw=b"x", text="help", project=project))
        assert res.queue_item_id is not None
        items[project] = res.queue_item_id
        await core.queue.claim_item(res.queue_item_id, agent_owner(77), lease_seconds=5)
    async with core.readers() as s:
        before = {i.id: i.lease_until for i in (await s.scalars(select(QueueItem))).all()}
        alpha = await s.scalar(select(QueueItem.project_id).where(QueueItem.id == items["alpha"]))
    assert alpha is not None
    assert await core.router.heartbeat(77, {alpha}) == 1  # a supervisor of alpha only
    async with core.readers() as s:
        after = {i.id: i.lease_until for i in (await s.scalars(select(QueueItem))).all()}
    assert after[items["alpha"]] > utcnow() + timedelta(seconds=60)
    assert after[items["beta"]] == before[items["beta"]]  # beta's lease is not the supervisor's to keep
    assert await core.router.heartbeat(77) == 2  # the agent itself, or an admin: all of them
