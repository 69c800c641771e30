"""Contact merge and its exact undo, on both stores."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from storage.models import Contact, ContactMerge, Conversation, Identity, Message
from umsg.contacts_merge import merge, unmerge
from umsg.core import Core
from umsg.errors import Conflict, NotFound


@dataclass
class Seeded:
    contact: int
    identities: list[int]
    conversations: list[int]
    messages: list[int]


async def seed_contact(
    core: Core, pid: int, name: str, *, addresses: int = 2, conversations: int = 2
) -> Seeded:
    async with core.sessions() as s:
        contact = Contact(project_id=pid, display_name=name)
        s.add(contact)
        await s.flush()
        idents = [
            Identity(
                project_id=pid,
                contact_id=contact.id,
                kind="email",
                value=f"{name}{n}-{uuid.uuid4().hex[:6]}@x",
            )
            for n in range(addresses)
        ]
        s.add_all(idents)
        convs = [
            Conversation(project_id=pid, contact_id=contact.id, channel="email", token=uuid.uuid4().hex)
            for _ in range(conversations)
        ]
        s.add_all(convs)
        await s.flush()
        msgs = [
            Message(
                project_id=pid,
                conversation_id=c.id,
                contact_id=contact.id,
                direction="in",
                channel="email",
                from_addr=idents[0].value,
                dedupe_key=uuid.uuid4().hex,
            )
            for c in convs
            for _ in range(2)
        ]
        s.add_all(msgs)
        await s.commit()
        return Seeded(contact.id, [i.id for i in idents], [c.id for c in convs], [m.id for m in msgs])


async def owned_by(core: Core, contact_id: int) -> tuple[list[int], list[int], list[int]]:
    async with core.sessions() as s:
        out = []
        for model in (Identity, Conversation, Message):
            rows = await s.scalars(select(model.id).where(model.contact_id == contact_id).order_by(model.id))
            out.append(list(rows.all()))
        return out[0], out[1], out[2]


async def do_merge(core: Core, pid: int, source: int, target: int, reason: str | None = None) -> ContactMerge:
    async with core.sessions() as s:
        audit = await merge(
            s, project_id=pid, source_id=source, target_id=target, actor="sup:eve", reason=reason
        )
        await s.commit()
    core.events.notify()
    return audit


async def do_unmerge(core: Core, merge_id: int, actor: str = "sup:eve") -> ContactMerge:
    async with core.sessions() as s:
        audit = await unmerge(s, merge_id=merge_id, actor=actor)
        await s.commit()
    return audit


async def test_merge_moves_everything_and_records_exactly_what(core: Core) -> None:
    pid = await core.ensure_project("default")
    src = await seed_contact(core, pid, "ann")
    dst = await seed_contact(core, pid, "ann-other", addresses=1, conversations=1)

    audit = await do_merge(core, pid, src.contact, dst.contact, reason="same person")
    assert (audit.identity_ids, audit.conversation_ids, audit.message_ids) == (
        src.identities,
        src.conversations,
        src.messages,
    )
    assert (audit.actor, audit.reason, audit.undone_at) == ("sup:eve", "same person", None)

    assert await owned_by(core, src.contact) == ([], [], [])
    idents, convs, msgs = await owned_by(core, dst.contact)
    assert idents == sorted(dst.identities + src.identities)
    assert convs == sorted(dst.conversations + src.conversations)
    assert msgs == sorted(dst.messages + src.messages)
    async with core.sessions() as s:
        source = await s.get(Contact, src.contact)
        assert source is not None and source.merged_into_id == dst.contact

    [event] = [e for e in await core.events.since(0, [pid]) if e.kind == "contact.merged"]
    assert event.payload["merge_id"] == audit.id
    assert (event.payload["identities"], event.payload["conversations"], event.payload["messages"]) == (
        2,
        2,
        4,
    )


async def test_unmerge_moves_back_exactly_the_merged_rows(core: Core) -> None:
    pid = await core.ensure_project("default")
    src = await seed_contact(core, pid, "bo")
    dst = await seed_contact(core, pid, "bo-other", addresses=1, conversations=1)
    audit = await do_merge(core, pid, src.contact, dst.contact)
    # After the merge the target gains a conversation of its own: it must stay with the target.
    later = await seed_contact(core, pid, "bo-later", addresses=1, conversations=1)
    async with core.sessions() as s:
        conv = await s.get(Conversation, later.conversations[0])
        assert conv is not None
        conv.contact_id = dst.contact
        await s.commit()

    undone = await do_unmerge(core, audit.id, actor="sup:max")
    assert undone.undone_by == "sup:max" and undone.undone_at is not None
    assert await owned_by(core, src.contact) == (src.identities, src.conversations, src.messages)
    _, dst_convs, _ = await owned_by(core, dst.contact)
    assert dst_convs == sorted(dst.conversations + later.conversations)
    async with core.sessions() as s:
        source = await s.get(Contact, src.contact)
        assert source is not None and source.merged_into_id is None
    kinds = [e.kind for e in await core.events.since(0, [pid]) if e.kind.startswith("contact.")]
    assert kinds == ["contact.merged", "contact.unmerged"]

    with pytest.raises(Conflict, match="already undone by sup:max"):
        await do_unmerge(core, audit.id)
    # Undone merges can be redone.
    again = await do_merge(core, pid, src.contact, dst.contact)
    assert again.id != audit.id and again.message_ids == src.messages


async def test_merge_refusals(core: Core) -> None:
    pid = await core.ensure_project("default")
    other_pid = await core.ensure_project("other")
    a = await seed_contact(core, pid, "a", addresses=1, conversations=0)
    b = await seed_contact(core, pid, "b", addresses=1, conversations=0)
    c = await seed_contact(core, pid, "c", addresses=1, conversations=0)
    foreign = await seed_contact(core, other_pid, "f", addresses=1, conversations=0)

    with pytest.raises(Conflict, match="into itself"):
        await do_merge(core, pid, a.contact, a.contact)
    with pytest.raises(Conflict, match="different projects"):
        await do_merge(core, pid, a.contact, foreign.contact)
    with pytest.raises(NotFound):
        await do_merge(core, pid, a.contact, 10_000_000)
    with pytest.raises(NotFound):  # both exist, but not in the caller's project
        await do_merge(core, other_pid, a.contact, b.contact)

    await do_merge(core, pid, a.contact, b.contact)
    with pytest.raises(Conflict, match=f"contact {a.contact} was already merged"):
        await do_merge(core, pid, a.contact, c.contact)
    with pytest.raises(Conflict, match=f"contact {a.contact} was already merged"):
        await do_merge(core, pid, c.contact, a.contact)
    with pytest.raises(NotFound):
        await do_unmerge(core, 10_000_000)
    assert await owned_by(core, c.contact) == (c.identities, [], [])


async def test_unmerge_refuses_when_the_target_was_merged_on(core: Core) -> None:
    pid = await core.ensure_project("default")
    a = await seed_contact(core, pid, "a", addresses=1, conversations=1)
    b = await seed_contact(core, pid, "b", addresses=1, conversations=0)
    c = await seed_contact(core, pid, "c", addresses=1, conversations=0)
    first = await do_merge(core, pid, a.contact, b.contact)
    second = await do_merge(core, pid, b.contact, c.contact)
    assert second.identity_ids == sorted(a.identities + b.identities)

    with pytest.raises(Conflict, match="undo that merge first"):
        await do_unmerge(core, first.id)
    await do_unmerge(core, second.id)
    await do_unmerge(core, first.id)
    for seeded in (a, b, c):
        assert await owned_by(core, seeded.contact) == (
            seeded.identities,
            seeded.conversations,
            seeded.messages,
        )


async def test_nothing_happens_unless_the_caller_commits(core: Core) -> None:
    pid = await core.ensure_project("default")
    a = await seed_contact(core, pid, "a")
    b = await seed_contact(core, pid, "b")
    async with core.sessions() as s:
        await merge(s, project_id=pid, source_id=a.contact, target_id=b.contact, actor="x")
        await s.rollback()
    assert await owned_by(core, a.contact) == (a.identities, a.conversations, a.messages)
    async with core.sessions() as s:
        assert (await s.scalars(select(ContactMerge))).all() == []
    assert [e for e in await core.events.since(0, [pid]) if e.kind == "contact.merged"] == []
