"""What a message implies commits with it: a SIGKILL between the commit and the peer's
acknowledgement loses neither a customer's STOP nor a bounce.

The service runs as a real process with the `kill-after-commit` failpoint (umsg.app.failpoints),
which SIGKILLs it right after the transaction holding the named message commits, before its
channel answers the peer. The peer then sees no acknowledgement and, as it would in life,
delivers again to the restarted service: the retry is a duplicate, and what the first copy
implied (the number opted out, the bounced reply failed and its address failing) is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import textwrap
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import smpp34  # type: ignore[import-untyped]
from peers.common import free_port
from peers.postfix import CUSTOMER_DOMAIN, Postfix
from peers.smsc import Smsc, eventually, running_smsc
from serve_proc import ServeProcess, db_env, run_umsg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import create_engine
from storage.models import Identity, Message

pytestmark = pytest.mark.slow

MO_ID_TLV = 0x1500  # where our SMSC names its own id for a deliver_sm (the dedupe key of a retry)
HANDSET = "447700900123"


@contextlib.asynccontextmanager
async def store(db_config: dict[str, object]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(str(db_config["url"]), schema=db_config.get("schema"))  # type: ignore[arg-type]
    try:
        yield engine
    finally:
        await engine.dispose()


async def scalar(engine: AsyncEngine, stmt: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).scalar()


def service_env(db_config: dict[str, object], config: Path, failpoint: str | None) -> dict[str, str]:
    env = {**db_env(db_config), "UMSG_CONFIG": str(config)}
    if failpoint:
        env["UMSG_FAILPOINTS"] = f"kill-after-commit:{failpoint}"
    return env


# -- SMS: STOP ----------------------------------------------------------------------------


async def deliver(smsc: Smsc, session_id: str, text: bytes, mo_id: bytes) -> int | None:
    """One deliver_sm on the session; the status of its response, None when none came."""
    tlv = smpp34.Tlv(MO_ID_TLV, mo_id + b"\0")  # type: ignore[attr-defined]
    try:
        async with asyncio.timeout(20):
            resp = await smsc.esmes[session_id].deliver_sm(
                "447700900000", text, source_addr=HANDSET, source_addr_ton=1, tlvs=[tlv])
        return int(resp.command_status)
    except Exception:  # noqa: BLE001 - the connection died under the request: no response
        return None


async def new_session(smsc: Smsc, old: set[str]) -> str:
    async def fresh() -> str | None:
        return next((s for s in smsc.esmes if s not in old), None)

    return str(await eventually(fresh, "the service binding to the SMSC", 30))


async def test_a_stop_committed_but_never_acknowledged_is_honoured_after_the_retry(
        db_config: dict[str, object], tmp_path: Path) -> None:
    async with running_smsc(receipts=None) as smsc, store(db_config) as engine:
        config = tmp_path / "umsg.toml"
        config.write_text(textwrap.dedent(f"""
            [channels.sms]
            type = "sms"
            host = "127.0.0.1"
            port = {smsc.port}
            system_id = "umsg"
            password = "secret"
            source_addr = "447700900000"
            reconnect_min_seconds = 0.1
            reconnect_max_seconds = 0.5
            mo_id_tlv = {MO_ID_TLV}
        """))
        first = ServeProcess(tmp_path / "data", service_env(db_config, config, "STOP"), name="first")
        second = ServeProcess(tmp_path / "data", service_env(db_config, config, None), name="second")
        try:
            await first.start()
            session = await new_session(smsc, set())
            assert await deliver(smsc, session, b"hello", b"mo-1") == 0, first.log_tail()
            # The STOP commits, then the failpoint kills the service before its deliver_sm_resp.
            assert await deliver(smsc, session, b"STOP", b"mo-2") is None
            assert await first.wait(30) == -9, first.log_tail()
            stop = select(func.count()).select_from(Message).where(Message.text == "STOP")
            assert await scalar(engine, stop) == 1, "the kill came before the commit"

            await second.start()
            session = await new_session(smsc, {session})
            assert await deliver(smsc, session, b"STOP", b"mo-2") == 0, second.log_tail()  # the SMSC's retry
            assert await scalar(engine, stop) == 1  # a duplicate, not a second message
            opted = select(Identity.opted_out).where(Identity.kind == "phone", Identity.value.like("%7700900123"))
            assert await scalar(engine, opted) is True
            assert await second.terminate() == 0, second.log_tail()
        finally:
            await first.aclose()
            await second.aclose()


# -- email: a DSN ---------------------------------------------------------------------------

CUSTOMER = f"alice@{CUSTOMER_DOMAIN}"
SUPPORT = "support@acme.test"


def submit(port: int, msg: EmailMessage | bytes) -> bool:
    """Hand a message to our SMTP listener; True when it answered 250."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            if isinstance(msg, bytes):
                smtp.sendmail("MAILER-DAEMON@customer.test", [SUPPORT], msg)
            else:
                smtp.send_message(msg)
        return True
    except (smtplib.SMTPException, OSError):
        return False


def bounce_of(original_id: str) -> bytes:
    """A DSN (RFC 3464) from the customer's server: the mailbox does not exist."""
    return textwrap.dedent(f"""\
        From: MAILER-DAEMON@{CUSTOMER_DOMAIN}
        To: {SUPPORT}
        Subject: Undelivered Mail Returned to Sender
        Message-ID: {make_msgid(domain=CUSTOMER_DOMAIN)}
        Auto-Submitted: auto-replied
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

        --b1
        Content-Type: text/plain

        Your message could not be delivered to alice.

        --b1
        Content-Type: message/delivery-status

        Reporting-MTA: dns; mx.{CUSTOMER_DOMAIN}

        Final-Recipient: rfc822; {CUSTOMER}
        Action: failed
        Status: 5.1.1
        Diagnostic-Code: smtp; 550 5.1.1 <{CUSTOMER}>: mailbox unknown

        --b1
        Content-Type: text/rfc822-headers

        From: {SUPPORT}
        To: {CUSTOMER}
        Message-ID: {original_id}
        Subject: Re: order

        --b1--
        """).replace("\n", "\r\n").encode()


async def test_a_bounce_committed_but_never_acknowledged_fails_the_reply_after_the_retry(
        db_config: dict[str, object], tmp_path: Path) -> None:
    listen = free_port()
    postfix = Postfix()
    postfix.routes = {"acme.test": listen}
    await asyncio.to_thread(postfix.start)
    config = tmp_path / "umsg.toml"
    config.write_text(textwrap.dedent(f"""
        [channels.email]
        type = "email"
        domain = "acme.test"
        addresses = ["{SUPPORT}"]
        listen = "127.0.0.1:{listen}"
        relay = "smtp://127.0.0.1:{postfix.port}"
    """))
    first = ServeProcess(tmp_path / "data", service_env(db_config, config, "Undelivered Mail"), name="first")
    second = ServeProcess(tmp_path / "data", service_env(db_config, config, None), name="second")
    try:
        async with store(db_config) as engine:
            url = await first.start()
            status, token, err = await run_umsg(["token", "create", "--role", "admin"], first.env)
            assert status == 0, err
            mail = EmailMessage()
            mail["From"], mail["To"], mail["Subject"] = CUSTOMER, SUPPORT, "order"
            mail["Message-ID"] = make_msgid(domain=CUSTOMER_DOMAIN)
            mail.set_content("Where is my order?")
            assert await asyncio.to_thread(submit, listen, mail), first.log_tail()
            conv = await scalar(engine, select(Message.conversation_id).where(Message.subject == "order"))
            headers = {"Authorization": f"Bearer {token.strip()}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                async with http.post(f"{url}/api/v1/conversations/{conv}/reply", json={"text": "On its way."}) as r:
                    assert r.status in (200, 201, 202), await r.text()
                    reply_id = (await r.json())["id"]

            async def delivered() -> list[bytes]:
                return await asyncio.to_thread(postfix.messages, "alice")

            [sent] = await eventually(delivered, "the reply in the customer's mailbox", 30)
            original_id = next(line.split(b":", 1)[1].strip().decode() for line in sent.splitlines()
                               if line.lower().startswith(b"message-id:"))
            reply_status = select(Message.status).where(Message.id == reply_id)

            async def sent_status() -> bool:
                return await scalar(engine, reply_status) == "sent"

            await eventually(sent_status, "the reply marked sent", 30)

            dsn = bounce_of(original_id)
            # The DSN commits, then the failpoint kills the service before its 250.
            assert not await asyncio.to_thread(submit, listen, dsn)
            assert await first.wait(30) == -9, first.log_tail()
            bounces = select(func.count()).select_from(Message).where(
                Message.subject == "Undelivered Mail Returned to Sender")
            assert await scalar(engine, bounces) == 1, "the kill came before the commit"

            await second.start()
            assert await asyncio.to_thread(submit, listen, dsn), second.log_tail()  # the sender's retry
            assert await scalar(engine, bounces) == 1  # a duplicate, not a second message
            assert await scalar(engine, reply_status) == "failed"
            failing = select(Identity.failing).where(Identity.kind == "email", Identity.value == CUSTOMER)
            assert await scalar(engine, failing) is True
            assert await second.terminate() == 0, second.log_tail()
    finally:
        await first.aclose()
        await second.aclose()
        await asyncio.to_thread(postfix.stop)
