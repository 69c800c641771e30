"""Contacts: listing, reading with identities, merging two contacts and undoing a merge."""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Contact, ContactMerge, Identity
from umsg import contacts_merge
from umsg.errors import NotFound
from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.auth import actor, ensure_visible, scoped
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.schemas import ContactQuery, MergeIn


async def _load(s: AsyncSession, principal: Principal, contact_id: int) -> Contact:
    contact = await s.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} not found")
    ensure_visible(principal, contact.project_id, "contact", contact_id)
    return contact


async def list_contacts(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(ContactQuery)
    stmt = select(Contact).where(Contact.id > q.after_id).order_by(Contact.id).limit(q.limit)
    stmt = scoped(stmt, Contact.project_id, ctx.me)
    if not q.include_merged:
        stmt = stmt.where(Contact.merged_into_id.is_(None))
    if q.identity is not None:
        stmt = stmt.where(Contact.id.in_(select(Identity.contact_id).where(Identity.value == q.identity)))
    async with ctx.core.sessions() as s:
        contacts = (await s.scalars(stmt)).all()
        by_contact: dict[int, list[Identity]] = defaultdict(list)
        if contacts:
            rows = await s.scalars(
                select(Identity)
                .where(Identity.contact_id.in_([c.id for c in contacts]))
                .order_by(Identity.id)
            )
            for i in rows:
                by_contact[i.contact_id].append(i)
    return json_ok(serialize.page([serialize.contact(c, by_contact[c.id]) for c in contacts], q.limit))


async def get_contact(ctx: Ctx) -> web.StreamResponse:
    async with ctx.core.sessions() as s:
        contact = await _load(s, ctx.me, ctx.path_id("contact"))
        identities = (
            await s.scalars(select(Identity).where(Identity.contact_id == contact.id).order_by(Identity.id))
        ).all()
    return json_ok(serialize.contact(contact, identities))


async def merge_contact(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(MergeIn)
    me = ctx.me
    source_id = ctx.path_id("contact")
    async with ctx.core.sessions() as s:
        source = await _load(s, me, source_id)
        # A target the caller cannot see is "not found", not "in another project".
        await _load(s, me, body.into_id)
        record = await contacts_merge.merge(
            s,
            project_id=source.project_id,
            source_id=source_id,
            target_id=body.into_id,
            actor=actor(me),
            reason=body.reason,
        )
        await s.commit()
    ctx.core.events.notify()
    return json_ok(serialize.contact_merge(record))


async def unmerge_contact(ctx: Ctx) -> web.StreamResponse:
    me = ctx.me
    merge_id = ctx.path_id("contact merge")
    async with ctx.core.sessions() as s:
        record = await s.get(ContactMerge, merge_id)
        if record is None:
            raise NotFound(f"contact merge {merge_id} not found")
        ensure_visible(me, record.project_id, "contact merge", merge_id)
        record = await contacts_merge.unmerge(s, merge_id=merge_id, actor=actor(me))
        await s.commit()
    ctx.core.events.notify()
    return json_ok(serialize.contact_merge(record))
