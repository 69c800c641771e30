"""umsg.contacts where the API tests do not reach: list scoping and merged contacts, guards on merges."""

from __future__ import annotations

import pytest

from storage.models import Contact, Identity
from umsg.contacts import ContactFilter, Contacts
from umsg.core import Core
from umsg.errors import NotFound


async def _contact(core: Core, project_id: int, *values: str) -> int:
    async with core.sessions() as s:
        contact = Contact(project_id=project_id, display_name=values[0])
        s.add(contact)
        await s.flush()
        s.add_all(Identity(project_id=project_id, contact_id=contact.id, kind="email", value=v) for v in values)
        await s.commit()
        return contact.id


def _open(project_id: int | None) -> None:
    return None


def _hidden(project_id: int | None) -> None:
    raise NotFound("hidden")


async def test_page_scopes_lists_identities_and_merged_contacts_on_request(core: Core) -> None:
    default = await core.ensure_project(core.settings.project)
    other = await core.ensure_project("other")
    a = await _contact(core, default, "a1@x", "a2@x")
    b = await _contact(core, default, "b@x")
    c = await _contact(core, other, "c@x")
    svc = Contacts(core.sessions, core.events)

    def ids(rows: list[tuple[Contact, list[Identity]]]) -> list[int]:
        return [contact.id for contact, _ in rows]

    rows = await svc.page(ContactFilter(after_id=0, limit=50))
    assert ids(rows) == [a, b, c]
    assert [[i.value for i in idents] for _, idents in rows] == [["a1@x", "a2@x"], ["b@x"], ["c@x"]]
    assert ids(await svc.page(ContactFilter(after_id=0, limit=50, project_ids={other}))) == [c]
    assert ids(await svc.page(ContactFilter(after_id=0, limit=50, identity="a2@x"))) == [a]

    record = await svc.merge(a, _open, b, _open, by="test", reason=None)
    assert ids(await svc.page(ContactFilter(after_id=0, limit=50))) == [b, c]
    assert ids(await svc.page(ContactFilter(after_id=0, limit=50, include_merged=True))) == [a, b, c]
    contact, identities = await svc.get(b, _open)
    assert contact.id == b and sorted(i.value for i in identities) == ["a1@x", "a2@x", "b@x"]

    with pytest.raises(NotFound, match="hidden"):
        await svc.unmerge(record.id, _hidden, by="test")
    assert (await svc.get(a, _open))[0].merged_into_id == b
    undone = await svc.unmerge(record.id, _open, by="test")
    assert undone.undone_at is not None and (await svc.get(a, _open))[0].merged_into_id is None


async def test_a_hidden_target_is_not_found_and_nothing_moves(core: Core) -> None:
    default = await core.ensure_project(core.settings.project)
    a = await _contact(core, default, "a@x")
    b = await _contact(core, default, "b@x")
    svc = Contacts(core.sessions, core.events)
    with pytest.raises(NotFound, match="hidden"):
        await svc.merge(a, _open, b, _hidden, by="test", reason=None)
    with pytest.raises(NotFound, match="contact 424242 not found"):
        await svc.merge(a, _open, 424242, _open, by="test", reason=None)
    assert [i.value for i in (await svc.get(a, _open))[1]] == ["a@x"]
