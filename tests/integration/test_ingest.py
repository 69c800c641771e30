"""The ingest pipeline against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from sqlalchemy import func, select

from converters.base import Converted
from storage.models import Blob, Contact, Conversation, Event, Identity, Message, Part, QueueItem
from umsg.core import Core
from umsg.errors import PermanentError
from umsg.ingest.prepare import INLINE_BLOB_BYTES
from umsg.model import Address, IdentityKind, Inbound, InboundPart, ThreadHints


def inbound(key: str, *, sender: str = "alice@example.com", kind: IdentityKind = IdentityKind.EMAIL,
            channel: str = "email", **kw: Any) -> Inbound:
    kw.setdefault("recipients", ("support@acme.test",))
    kw.setdefault("raw", f"raw bytes of {key}".encode())
    kw.setdefault("text", f"hello {key}")
    return Inbound(channel=channel, sender=Address(kind, sender), dedupe_key=key, **kw)


async def count(core: Core, model: Any, *where: Any) -> int:
    async with core.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_ingest_stores_message_contact_conversation_raw_and_queue_item(core: Core) -> None:
    res = await core.ingest.ingest(inbound("m1", subject="Invoice", sender="Alice@Example.com"))
    assert not res.duplicate and res.queue_item_id is not None and res.route == "default"
    async with core.sessions() as s:
        msg = await s.get(Message, res.message_id)
        assert msg is not None and msg.from_addr == "alice@example.com" and msg.subject == "Invoice"
        ident = await s.scalar(select(Identity).where(Identity.contact_id == res.contact_id))
        assert ident is not None and ident.value == "alice@example.com"
        parts = (await s.scalars(select(Part).where(Part.message_id == res.message_id))).all()
        assert [p.role for p in parts] == ["raw"]
        assert await core.blobs.get(parts[0].sha256) == b"raw bytes of m1"
        item = await s.get(QueueItem, res.queue_item_id)
        assert item is not None and item.status == "waiting" and item.conversation_id == res.conversation_id
        kinds = (await s.scalars(select(Event.kind).order_by(Event.id))).all()
    assert {"conversation.created", "message.created", "queue.enqueued"} <= set(kinds)


async def test_retry_of_same_message_is_a_duplicate_and_changes_nothing(core: Core) -> None:
    first = await core.ingest.ingest(inbound("same"))
    again = await core.ingest.ingest(inbound("same", text="changed"))
    assert again.duplicate and again.message_id == first.message_id
    assert await count(core, Message) == 1
    assert await count(core, QueueItem) == 1


async def test_concurrent_retries_store_exactly_one(core: Core) -> None:
    results = await asyncio.gather(*(core.ingest.ingest(inbound("race")) for _ in range(12)))
    assert len({r.message_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert await count(core, Message) == 1


async def test_concurrent_ingest_shares_commits(core: Core) -> None:
    results = await asyncio.gather(*(core.ingest.ingest(inbound(f"k{i}", sender=f"c{i}@x.test"))
                                     for i in range(60)))
    assert len({r.message_id for r in results}) == 60
    assert await count(core, Message) == 60
    # Group commit: the 60 messages went through in fewer transactions than messages.
    assert core.ingest.stats["batches"] < 60


async def test_same_number_on_sms_and_voicemail_is_one_contact(core: Core) -> None:
    sms = await core.ingest.ingest(inbound("s1", sender="+44 20 7946 0958", kind=IdentityKind.PHONE,
                                           channel="sms", recipients=("+15550100",)))
    vm = await core.ingest.ingest(inbound("v1", sender="00442079460958", kind=IdentityKind.PHONE,
                                          channel="voicemail", recipients=("+15550100",)))
    assert sms.contact_id == vm.contact_id
    assert sms.conversation_id != vm.conversation_id  # different channels, no thread hint
    assert await count(core, Contact) == 1


async def test_threading_by_reference_token_and_sticky(core: Core) -> None:
    a = await core.ingest.ingest(inbound("a1", thread=ThreadHints(own=("<a1@mail>",))))
    reply = await core.ingest.ingest(inbound("a2", thread=ThreadHints(own=("<a2@mail>",), refs=("<a1@mail>",))))
    assert reply.conversation_id == a.conversation_id
    async with core.sessions() as s:
        conv = await s.get(Conversation, a.conversation_id)
        assert conv is not None
        token = conv.token
    mine = await core.ingest.ingest(inbound("a3", thread=ThreadHints(conversation_token=token)))
    assert mine.conversation_id == a.conversation_id
    # A stranger quoting the token does not join someone else's conversation.
    stranger = await core.ingest.ingest(inbound("b1", sender="mallory@evil.test",
                                                thread=ThreadHints(conversation_token=token)))
    assert stranger.conversation_id != a.conversation_id
    # Chat/SMS-like channels continue the open conversation.
    c1 = await core.ingest.ingest(inbound("c1", channel="sms", kind=IdentityKind.PHONE, sender="+15550111",
                                          thread=ThreadHints(sticky=True)))
    c2 = await core.ingest.ingest(inbound("c2", channel="sms", kind=IdentityKind.PHONE, sender="+15550111",
                                          thread=ThreadHints(sticky=True)))
    assert c1.conversation_id == c2.conversation_id
    # Only one queue item per waiting conversation.
    assert c2.queue_item_id is None and reply.queue_item_id is None


async def test_sticky_sender_of_a_merged_contact_continues_the_survivors_conversation(core: Core) -> None:
    """The sender's identity still names a contact merged one link deep, then two links deep (a chain
    a concurrent merge can leave): the message continues the open conversation of the last one."""
    def sms(key: str, number: str) -> Inbound:
        return inbound(key, channel="sms", kind=IdentityKind.PHONE, sender=number, thread=ThreadHints(sticky=True))

    a, b, c = [await core.ingest.ingest(sms(f"m{n}", f"+1555020{n}")) for n in (1, 2, 3)]
    assert len({a.conversation_id, b.conversation_id, c.conversation_id}) == 3
    async with core.sessions() as s, s.begin():
        first = await s.get(Contact, a.contact_id)
        assert first is not None
        first.merged_into_id = b.contact_id  # the identity stays on the first contact
    one_link = await core.ingest.ingest(sms("m4", "+15550201"))
    assert one_link.conversation_id == b.conversation_id
    async with core.sessions() as s, s.begin():
        second = await s.get(Contact, b.contact_id)
        assert second is not None
        second.merged_into_id = c.contact_id
    two_links = await core.ingest.ingest(sms("m5", "+15550201"))
    assert two_links.conversation_id == c.conversation_id


async def test_closed_conversation_is_not_reopened_resolved_is(core: Core) -> None:
    first = await core.ingest.ingest(inbound("r1", channel="sms", kind=IdentityKind.PHONE, sender="+15550122",
                                             thread=ThreadHints(sticky=True, own=("r1",))))
    async with core.sessions() as s, s.begin():
        conv = await s.get(Conversation, first.conversation_id)
        assert conv is not None
        conv.status = "resolved"
    again = await core.ingest.ingest(inbound("r2", channel="sms", kind=IdentityKind.PHONE, sender="+15550122",
                                             thread=ThreadHints(refs=("r1",))))
    assert again.conversation_id == first.conversation_id
    async with core.sessions() as s, s.begin():
        conv = await s.get(Conversation, first.conversation_id)
        assert conv is not None and conv.status == "open"
        conv.status = "closed"
    later = await core.ingest.ingest(inbound("r3", channel="sms", kind=IdentityKind.PHONE, sender="+15550122",
                                             thread=ThreadHints(refs=("r1",))))
    assert later.conversation_id != first.conversation_id


async def test_html_part_gets_a_linked_derived_text_part(core: Core) -> None:
    html = b"<p>Hello <b>there</b></p><script>alert(1)</script>"
    res = await core.ingest.ingest(inbound("h1", text=None, html=html.decode(),
                                           parts=(InboundPart("text/html", html, "body.html", role="body"),)))
    async with core.sessions() as s:
        msg = await s.get(Message, res.message_id)
        parts = {p.role: p for p in (await s.scalars(select(Part).where(Part.message_id == res.message_id)))}
    assert msg is not None and msg.text == "Hello there" and "script" not in (msg.html or "")
    assert set(parts) == {"raw", "body", "derived"}
    assert parts["derived"].derived_from_id == parts["body"].id
    assert parts["derived"].converter == "html-to-text"
    assert await core.blobs.get(parts["body"].sha256) == html  # the original is kept


class Exploding:
    name: ClassVar[str] = "exploding"
    accepts: ClassVar[frozenset[str]] = frozenset({"application/x-boom"})
    produces: ClassVar[str] = "text/plain"

    def convert(self, data: bytes, filename: str | None) -> Converted:
        raise ValueError("cannot read this file")


async def test_converter_failure_keeps_the_message_and_records_the_error(core: Core) -> None:
    core.converters.add(Exploding())
    res = await core.ingest.ingest(inbound("x1", parts=(InboundPart("application/x-boom", b"\x00\x01", "a.boom"),)))
    assert res.conversion_errors and "cannot read this file" in res.conversion_errors[0]
    async with core.sessions() as s:
        msg = await s.get(Message, res.message_id)
        roles = sorted((await s.scalars(select(Part.role).where(Part.message_id == res.message_id))).all())
    assert msg is not None and "cannot read this file" in msg.flags["conversion_errors"][0]
    assert roles == ["attachment", "raw"]


@pytest.mark.parametrize("bad, reason", [
    (dict(sender="not-an-address"), "not an email address"),
    (dict(sender="   "), "empty"),
    (dict(raw=b"x" * 2_000_000), "limit"),
])
async def test_input_that_can_never_be_stored_is_refused_with_a_reason(make_settings: Any, bad: dict[str, Any],
                                                                      reason: str) -> None:
    core = await Core.open(make_settings(ingest={"max_message_bytes": 1_000_000}))
    await core.start()
    try:
        with pytest.raises(PermanentError, match=reason):
            await core.ingest.ingest(inbound("bad", **bad))
        ok = await core.ingest.ingest(inbound("good"))  # the pipeline keeps working
        assert not ok.duplicate
    finally:
        await core.aclose()


async def test_unknown_project_is_refused(core: Core) -> None:
    with pytest.raises(PermanentError, match="unknown project"):
        await core.ingest.ingest(inbound("p1", project="nope"))


async def test_projects_keep_their_own_contacts(core: Core) -> None:
    await core.ensure_project("other")
    a = await core.ingest.ingest(inbound("same-key"))
    b = await core.ingest.ingest(inbound("same-key", project="other"))
    assert not b.duplicate and a.contact_id != b.contact_id


async def test_drop_route_stores_but_does_not_enqueue(make_settings: Any) -> None:
    core = await Core.open(make_settings(routes=[{"name": "blocklist", "sender": "spam@*", "action": "drop"},
                                                 {"name": "vip", "to": "vip@acme.test", "queue": "vip",
                                                  "priority": 5, "sla_minutes": 30}]))
    await core.start()
    try:
        dropped = await core.ingest.ingest(inbound("d1", sender="spam@junk.test"))
        vip = await core.ingest.ingest(inbound("d2", recipients=("VIP@acme.test",)))
        assert dropped.queue_item_id is None and dropped.route == "blocklist"
        assert vip.route == "vip"
        async with core.sessions() as s:
            msg = await s.get(Message, dropped.message_id)
            item = await s.get(QueueItem, vip.queue_item_id)
            conv = await s.get(Conversation, vip.conversation_id)
        assert msg is not None and msg.flags["dropped_by_route"] == "blocklist"
        assert item is not None and item.queue == "vip" and item.priority == 5
        assert conv is not None and conv.sla_due_at is not None
    finally:
        await core.aclose()


async def test_a_blob_that_cannot_be_written_fails_only_its_message_and_commits_nothing_of_it(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    # Messages above the inline size write their blobs as files before the writer; small ones
    # keep theirs in the database. A file that cannot be written fails only its message.
    real = core.blobs.put_many_sync

    def flaky(blobs: list[bytes]) -> list[str]:
        if any(b"poison" in b for b in blobs):
            raise OSError(28, "No space left on device")
        return real(blobs)

    monkeypatch.setattr(core.blobs, "put_many_sync", flaky)
    big = INLINE_BLOB_BYTES + 1
    messages = [inbound(f"b{i}", raw=(b"poison" if i == 2 else f"raw of b{i}".encode()).ljust(big, b".")
                        if i % 2 == 0 else f"raw of b{i}".encode()) for i in range(5)]
    results = await asyncio.gather(*(core.ingest.ingest(m) for m in messages), return_exceptions=True)
    assert isinstance(results[2], OSError)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 2)
    assert await count(core, Message, Message.dedupe_key == "b2") == 0
    async with core.sessions() as s:
        shas = (await s.scalars(select(Part.sha256).join(Message, Part.message_id == Message.id)
                                .order_by(Message.dedupe_key))).all()
        inline = set((await s.scalars(select(Blob.sha256))).all())
    assert len(shas) == 4
    # b0 and b4 are files; b1 and b3 are rows of `blob`, with no file.
    assert [core.blobs.exists(sha) for sha in shas] == [True, False, False, True]
    assert [sha in inline for sha in shas] == [False, True, True, False]
    for sha, m in zip(shas, [messages[0], messages[1], messages[3], messages[4]], strict=True):
        assert await core.blobs.get(sha) == m.raw


async def test_small_blobs_are_database_rows_written_once_and_copied_to_a_file_on_demand(core: Core) -> None:
    same = b"%PDF-1.4 the same small attachment in two messages"
    parts = (InboundPart("application/pdf", same, "a.pdf", role="attachment"),)
    first = await core.ingest.ingest(inbound("s1", parts=parts))
    both = await asyncio.gather(core.ingest.ingest(inbound("s2", parts=parts)),
                                core.ingest.ingest(inbound("s3", parts=parts)))
    async with core.sessions() as s:
        rows = (await s.scalars(select(Part).where(Part.role == "attachment").order_by(Part.id))).all()
        stored = (await s.scalars(select(Blob.data).where(Blob.sha256 == rows[0].sha256))).all()
    assert [r.message_id for r in rows] == [first.message_id, *(r.message_id for r in both)]
    assert len({r.sha256 for r in rows}) == 1 and stored == [same]  # one row for the same bytes
    assert not core.blobs.exists(rows[0].sha256)
    path = await core.blobs.local_path(rows[0].sha256)  # tools that need a file get one
    assert path.read_bytes() == same and core.blobs.exists(rows[0].sha256)
    with pytest.raises(FileNotFoundError):
        await core.blobs.get("0" * 64)
