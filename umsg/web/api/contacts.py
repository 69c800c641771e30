"""Contacts: listing, reading with identities, merging two contacts and undoing a merge.

The queries and writes are `umsg.contacts.Contacts`; this module parses, authorises
(`ensure_visible`) and serialises.
"""

from __future__ import annotations

from aiohttp import web

from umsg.contacts import ContactFilter, Contacts
from umsg.conversations import Guard
from umsg.tokens import Principal
from umsg.web import serialize
from umsg.web.auth import actor, ensure_visible
from umsg.web.endpoints import Ctx, json_ok
from umsg.web.schemas import ContactQuery, MergeIn


def _contacts(ctx: Ctx) -> Contacts:
    return Contacts(ctx.core.sessions, ctx.core.events)


def _visible_to(principal: Principal, kind: str, ident: int) -> Guard:
    def guard(project_id: int | None) -> None:
        ensure_visible(principal, project_id, kind, ident)
    return guard


async def list_contacts(ctx: Ctx) -> web.StreamResponse:
    q = ctx.query_as(ContactQuery)
    rows = await _contacts(ctx).page(ContactFilter(
        after_id=q.after_id, limit=q.limit, project_ids=ctx.me.project_ids,
        include_merged=q.include_merged, identity=q.identity,
    ))
    return json_ok(serialize.page([serialize.contact(c, identities) for c, identities in rows], q.limit))


async def get_contact(ctx: Ctx) -> web.StreamResponse:
    contact_id = ctx.path_id("contact")
    contact, identities = await _contacts(ctx).get(contact_id, _visible_to(ctx.me, "contact", contact_id))
    return json_ok(serialize.contact(contact, identities))


async def merge_contact(ctx: Ctx) -> web.StreamResponse:
    body = ctx.body_as(MergeIn)
    me = ctx.me
    source_id = ctx.path_id("contact")
    # A target the caller cannot see is "not found", not "in another project".
    record = await _contacts(ctx).merge(
        source_id, _visible_to(me, "contact", source_id),
        body.into_id, _visible_to(me, "contact", body.into_id),
        by=actor(me), reason=body.reason,
    )
    return json_ok(serialize.contact_merge(record))


async def unmerge_contact(ctx: Ctx) -> web.StreamResponse:
    me = ctx.me
    merge_id = ctx.path_id("contact merge")
    record = await _contacts(ctx).unmerge(merge_id, _visible_to(me, "contact merge", merge_id), by=actor(me))
    return json_ok(serialize.contact_merge(record))
