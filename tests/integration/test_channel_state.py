"""The channel state API (`ChannelServices.state`) and stored-message reads (`ChannelServices.messages`)
on the real store: what channels keep between restarts without seeing a table or a session."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select

from storage.models import ChannelState
from umsg.channel_state import StateItem
from umsg.core import Core
from umsg.model import Address, IdentityKind, Inbound, InboundPart


async def test_put_get_and_delete_are_scoped_by_channel(core: Core) -> None:
    state = core.channel_services().state
    assert await state.get("mail", "INBOX") is None
    await state.put("mail", "INBOX", {"uidvalidity": 7, "last_uid": 3})
    await state.put("other", "INBOX", {"last_uid": 99})
    assert await state.get("mail", "INBOX") == {"uidvalidity": 7, "last_uid": 3}
    await state.put("mail", "INBOX", {"uidvalidity": 7, "last_uid": 4, "set_aside": [{"uid": 2}]})
    assert await state.get("mail", "INBOX") == {"uidvalidity": 7, "last_uid": 4, "set_aside": [{"uid": 2}]}
    async with core.sessions() as s:  # one row per (channel, key): an update, not a second row
        rows = (await s.scalars(select(ChannelState).where(ChannelState.key == "INBOX"))).all()
    assert sorted(r.channel for r in rows) == ["mail", "other"]
    await state.delete("mail", "INBOX")
    await state.delete("mail", "INBOX")  # gone already: nothing happens
    assert await state.get("mail", "INBOX") is None
    assert await state.get("other", "INBOX") == {"last_uid": 99}


async def test_add_keeps_the_first_value(core: Core) -> None:
    state = core.channel_services().state
    assert await state.add("sms", "mo:g:001", {"hex": "aa"}) is True
    assert await state.add("sms", "mo:g:001", {"hex": "bb"}) is False
    assert await state.get("sms", "mo:g:001") == {"hex": "aa"}


async def test_items_take_the_prefix_literally(core: Core) -> None:
    state = core.channel_services().state
    for key in ("mo:a_1:002", "mo:a_1:001", "mo:ab1:001", "done:a_1", "mo:a%1:001"):
        await state.put("sms", key, {"k": key})
    await state.put("sms2", "mo:a_1:003", {"k": "elsewhere"})
    assert await state.items("sms", "mo:a_1:") == [StateItem("mo:a_1:001", {"k": "mo:a_1:001"}),
                                                    StateItem("mo:a_1:002", {"k": "mo:a_1:002"})]
    assert [i.key for i in await state.items("sms", "mo:a%")] == ["mo:a%1:001"]
    assert [i.key for i in await state.items("sms")] == ["done:a_1", "mo:a%1:001", "mo:a_1:001", "mo:a_1:002",
                                                         "mo:ab1:001"]


async def test_change_deletes_and_puts_in_one_commit(core: Core) -> None:
    state = core.channel_services().state
    for key in ("mo:g_1:001", "mo:g_1:002", "mo:gx1:001", "done:old", "done:older"):
        await state.put("sms", key, {"k": key})
    await state.put("sms", "done:g_1", {"v": 1})
    await state.change("sms", delete_prefixes=["mo:g_1:"], delete=["done:old", "done:missing"],
                       put={"done:g_1": {"v": 2}, "done:new": {"v": 3}})
    assert [i.key for i in await state.items("sms")] == ["done:g_1", "done:new", "done:older", "mo:gx1:001"]
    assert await state.get("sms", "done:g_1") == {"v": 2}
    await state.change("sms")  # nothing to do


async def test_concurrent_puts_of_one_new_key_leave_one_row(core: Core) -> None:
    state = core.channel_services().state
    await asyncio.gather(*(state.put("mail", "race", {"n": n}) for n in range(6)))
    value = await state.get("mail", "race")
    assert value is not None and value["n"] in range(6)
    async with core.sessions() as s:
        rows = (await s.scalars(select(ChannelState).where(ChannelState.key == "race"))).all()
    assert len(rows) == 1


async def test_stored_messages_read_project_flags_and_parts(core: Core) -> None:
    messages = core.channel_services().messages
    assert await messages.get(10**9) is None
    result = await core.ingest.ingest(Inbound(
        channel="fax", sender=Address(IdentityKind.FAX, "+441234567890"), recipients=("+442000000000",),
        dedupe_key=f"fax:{uuid.uuid4().hex}", raw=b"II*\x00tiff", raw_media_type="image/tiff",
        parts=(InboundPart("image/tiff", b"II*\x00tiff", "fax.tif", role="document"),
               InboundPart("application/pdf", b"%PDF-1.4\n", "fax.pdf", role="attachment"))))
    stored = await messages.get(result.message_id)
    assert stored is not None
    assert stored.project_id == await core.ensure_project(core.settings.project)
    assert (stored.id, stored.conversation_id, stored.channel) == (result.message_id, result.conversation_id, "fax")
    assert isinstance(stored.flags, dict)
    kinds = [(p.media_type, p.role, p.filename) for p in stored.parts if p.filename]
    assert kinds == [("image/tiff", "document", "fax.tif"), ("application/pdf", "attachment", "fax.pdf")]
    assert [p.id for p in stored.parts] == sorted(p.id for p in stored.parts)
    assert next(p.size for p in stored.parts if p.filename == "fax.pdf") == len(b"%PDF-1.4\n")
    bare = await messages.get(result.message_id, parts=False)
    assert bare is not None and bare.parts == () and bare.project_id == stored.project_id


async def test_add_unless_reads_its_guard_in_the_same_transaction(core: Core) -> None:
    state = core.channel_services().state
    await state.put("sms", "done:g1", {"parts": {"1": "abc"}})

    def same_part(done: dict[str, object]) -> bool:
        return done.get("parts") == {"1": "abc"}

    assert await state.add("sms", "mo:g1:001", {"hex": "00"}, unless=("done:g1", same_part)) is None
    assert await state.get("sms", "mo:g1:001") is None  # refused: nothing stored
    assert await state.add("sms", "mo:g2:001", {"hex": "00"}, unless=("done:g2", same_part)) is True
    assert await state.add("sms", "mo:g2:001", {"hex": "01"}, unless=("done:g2", same_part)) is False
    assert await state.get("sms", "mo:g2:001") == {"hex": "00"}
