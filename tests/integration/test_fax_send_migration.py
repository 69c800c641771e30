"""Migration 0011: fax sends accepted before the upgrade (old `channel_state` rows) become leased
jobs, and are then sent (or, when the row held its result already, reported without a call).

The dialling is a test double that records calls: under test is the migration and the runner
picking up what it produced, not the telephony (tests/integration/test_fax_send.py calls for real).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from fax_doubles import ok_transmission
from sqlalchemy import select

from channels.fax.outgoing import OutgoingFaxes
from channels.fax.settings import FaxSendSettings
from channels.fax.transmit import Transmission
from storage.db import create_engine
from storage.migrate import alembic_config, current_revision, upgrade
from storage.models import ChannelState, Job, Message
from umsg.core import Core
from umsg.model import Address, IdentityKind, Inbound


async def _to_revision(url: str, schema: str | None, revision: str) -> None:
    engine = create_engine(url, schema=schema)
    try:
        def up(sync_conn: Any) -> None:
            cfg = alembic_config(url, schema)
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)

        async with engine.begin() as conn:
            await conn.run_sync(up)
        assert await current_revision(engine) == revision
    finally:
        await engine.dispose()


async def test_old_fax_send_rows_become_jobs_that_are_sent_or_reported(make_settings: Any) -> None:
    settings = make_settings()
    url, schema = settings.database_url, settings.database.schema_name
    await _to_revision(url, schema, "0010")

    old = await Core.open(settings, migrate=False)
    try:
        seed = await old.ingest.ingest(Inbound(channel="fax", sender=Address(IdentityKind.FAX, "+15550200"),
                                               recipients=("+15550100",), dedupe_key="seed", raw=b"seed",
                                               text="fax me"))
        async with old.readers() as s:
            project_id = await s.scalar(select(Message.project_id).where(Message.id == seed.message_id))
        assert project_id is not None
        pending, finished = [
            (await old.outbox.reply(project_id=project_id, conversation_id=seed.conversation_id, channel="fax",
                                    text=text)).id
            for text in ("to send", "already sent")]
        tiff = await old.blobs.put(b"II*\x00 the document")
        due = (datetime.now(UTC) - timedelta(seconds=5)).timestamp()
        result = {"status": "delivered", "detail": "OK",
                  "extra": {"attempts": 1, "pages": 2, "document_pages": 2, "document_sha256": tiff,
                            "history": [{"at": due, "outcome": "ok", "reason": "OK"}]}}
        async with old.sessions() as s:
            s.add_all([
                ChannelState(channel="fax-send:fax", key=f"send:{pending}", value={
                    "number": "+15550301", "tiff": tiff, "pages": 2, "attempts": 1, "next_at": due,
                    "status": "pending", "history": [{"at": due, "outcome": "busy", "reason": "486 Busy Here"}]}),
                ChannelState(channel="fax-send:fax", key=f"send:{finished}", value={
                    "number": "+15550302", "tiff": tiff, "pages": 2, "attempts": 1, "next_at": due,
                    "status": "finished", "history": result["extra"]["history"], "result": result}),
                ChannelState(channel="fax-send:fax", key="send:987654321", value={  # its message is gone
                    "number": "+15550303", "tiff": tiff, "pages": 1, "attempts": 0, "next_at": due,
                    "status": "pending", "history": []}),
                ChannelState(channel="imap:support", key="INBOX", value={"uidvalidity": 7, "uid": 42}),
            ])
            await s.commit()
    finally:
        await old.aclose()

    engine = create_engine(url, schema=schema)
    try:
        await upgrade(engine, url, schema)
    finally:
        await engine.dispose()

    core = await Core.open(settings)
    calls: list[str] = []

    async def dial(number: str, document: Path) -> Transmission:
        assert await asyncio.to_thread(document.read_bytes) == b"II*\x00 the document"
        calls.append(number)
        return ok_transmission(number)

    send = FaxSendSettings(trunk="sip:{number}@127.0.0.1:9", retry_seconds=[0.05], max_attempts=4)
    runner = OutgoingFaxes("fax", "fax", core.channel_services(), send, dial, lease_seconds=5, poll_seconds=0.05)
    try:
        async with core.readers() as s:
            jobs = {j.payload["message_id"]: j for j in (await s.scalars(select(Job).where(
                Job.kind == "fax-send:fax"))).all()}
            states = (await s.scalars(select(ChannelState))).all()
        assert set(jobs) == {pending, finished}
        assert jobs[pending].status == "pending" and jobs[pending].attempts == 1
        assert jobs[pending].payload["number"] == "+15550301" and "result" not in jobs[pending].payload
        assert jobs[finished].payload["result"] == result
        assert [(c.channel, c.key) for c in states] == [("imap:support", "INBOX")]

        assert await runner.resume() == 2
        deadline = time.monotonic() + 30
        while True:
            async with core.readers() as s:
                done = (await s.scalars(select(Job.status).where(Job.kind == "fax-send:fax"))).all()
            if set(done) == {"done"}:
                break
            assert time.monotonic() < deadline, done
            await asyncio.sleep(0.05)
        assert calls == ["+15550301"]  # the finished one was reported, not called again
        async with core.readers() as s:
            sent = {m.id: m for m in (await s.scalars(select(Message).where(
                Message.id.in_([pending, finished])))).all()}
        assert sent[finished].status == "delivered" and sent[finished].flags["delivery"]["pages"] == 2
        delivery = sent[pending].flags["delivery"]
        assert sent[pending].status == "delivered"
        assert delivery["attempts"] == 2 and [h["outcome"] for h in delivery["history"]] == ["busy", "ok"]
    finally:
        await runner.aclose()
        await core.aclose()
