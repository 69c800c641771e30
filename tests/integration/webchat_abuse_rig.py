"""Helpers of the web chat abuse and fuzz tests (no fixtures, no tests here).

`open_rig` serves the app with a web chat and an email channel whose relay is an aiosmtpd sink
on loopback; `Rig.deliver` runs the outbound dispatcher until nothing is due and returns every
mail the sink received; `Rig.refused` reads `umsg_webchat_refused_total` from the app's registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import itertools
import math
import re
import time
from collections.abc import AsyncIterator
from email.message import Message as MailMessage
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller
from peers.common import free_port
from prometheus_client import generate_latest
from sqlalchemy import func, select
from webchat_harness import SECRET

from channels.email import EmailChannel, EmailSettings
from channels.webchat import WebchatChannel, WebchatSettings
from channels.webchat.settings import ChatLimits
from storage.models import Agent, AgentProject, Message
from umsg.core import Core
from umsg.instances import ChannelInstances, Instance
from umsg.model import IdentityKind
from umsg.outbound.outbox import Dispatcher
from umsg.web import create_app
from umsg.web.metrics import METRICS

TIMEOUT = 10.0
_ids = itertools.count(1)


class Sink:
    """The relay: every mail handed to it over SMTP."""

    def __init__(self) -> None:
        self.mails: list[MailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.mails.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@dataclasses.dataclass
class Rig:
    client: TestClient
    core: Core
    adapter: WebchatChannel
    dispatcher: Dispatcher
    sink: Sink

    async def connect(self, token: str | None = None) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
        ws = await self.client.ws_connect("/channels/webchat/ws")
        await ws.send_json({"type": "hello", "token": token})
        welcome = await frame(ws)
        assert welcome["type"] == "welcome", welcome
        return ws, welcome

    async def deliver(self) -> list[MailMessage]:
        """Run the dispatcher until nothing is due; every mail the sink has so far."""
        while await self.dispatcher.run_once():
            pass
        return self.sink.mails

    async def stored(self, model: Any = Message, **where: Any) -> int:
        async with self.core.readers() as s:
            q = select(func.count()).select_from(model)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return int(await s.scalar(q) or 0)

    def refused(self) -> dict[str, float]:
        """`umsg_webchat_refused_total` by reason, as the app's /metrics renders it."""
        text = generate_latest(self.client.server.app[METRICS].registry).decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^umsg_webchat_refused_total\{instance="webchat",reason="([a-z_]+)"\} (\S+)$', text, re.M)}


async def frame(ws: aiohttp.ClientWebSocketResponse, kind: str | None = None) -> dict[str, Any]:
    while True:
        msg = await ws.receive_json(timeout=TIMEOUT)
        assert isinstance(msg, dict)
        if kind is None or msg.get("type") == kind:
            return msg


def cid() -> str:
    return f"a{next(_ids)}"


def bound(per: int, window: float, started: float) -> int:
    """At most this many pass a bucket of `per` per `window` since `started` (full at start)."""
    return per + math.ceil((time.monotonic() - started) * per / window)


@contextlib.asynccontextmanager
async def open_rig(make_settings: Any, **limits: Any) -> AsyncIterator[Rig]:
    port = free_port()
    core = await Core.open(make_settings(), channels=ChannelInstances([
        Instance("webchat", "webchat", IdentityKind.CHAT), Instance("email", "email", IdentityKind.EMAIL)]))
    await core.start()
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    await asyncio.to_thread(smtp.start)
    try:
        pid = await core.ensure_project(core.settings.project)
        async with core.sessions() as s:
            agent = Agent(login="alice", display_name="Alice", state="available")
            s.add(agent)
            await s.flush()
            s.add(AgentProject(agent_id=agent.id, project_id=pid))
            await s.commit()
        settings = WebchatSettings(secret=SECRET, max_upload_bytes=1000, upload_types=["image/*", "text/plain"],
                                   email_channel="email", limits=ChatLimits(**limits))
        adapter = WebchatChannel("webchat", settings)
        # Confirmation links point at the public URL: this server's.
        adapter.bind(dataclasses.replace(core.channel_services(), public_url=f"http://127.0.0.1:{port}"))
        await adapter.start(core.ingest.ingest)
        mail = EmailChannel("email", EmailSettings(domain="acme.test", relay=f"smtp://127.0.0.1:{smtp.port}"))
        dispatcher = Dispatcher(core.sessions, core.events, {"webchat": adapter, "email": mail}, core.instance_id,
                                blobs=core.blobs)
        try:
            async with TestServer(create_app(core, {"webchat": adapter}), host="127.0.0.1", port=port) as server, \
                    TestClient(server) as client:
                yield Rig(client, core, adapter, dispatcher, sink)
        finally:
            await adapter.aclose()
    finally:
        await asyncio.to_thread(smtp.stop)
        await core.aclose()
