"""Reading an existing company mailbox over IMAP (aioimaplib): poll, then IDLE.

Per round: fetch every UID above the checkpoint (BODY.PEEK, so nothing is
marked read early), hand each message to the sink, and only after the
commit set `\\Seen` (or move it to the `imap_move_to` folder) and advance
the checkpoint (UIDVALIDITY + UID, `ChannelServices.state` under the mailbox's key). A crash
between commit and checkpoint refetches one message,
which the dedupe key absorbs. A message that can never be stored is set
aside: flagged `$UmsgRejected`, its UID and reason kept in the checkpoint,
and the round goes on. Every IMAP step runs under a timeout (aioimaplib's
IDLE can hang when the server says BYE); IDLE is re-issued well inside the
29 minutes RFC 2177 allows; any failure reconnects with doubling back-off.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aioimaplib

from channels.base import InboundSink
from channels.email.parse import Envelope, to_inbound
from channels.email.settings import EmailSettings
from umsg.errors import PermanentError
from umsg.model import Inbound

if TYPE_CHECKING:
    from umsg.channel_state import ChannelStateStore

log = logging.getLogger(__name__)

REJECTED_FLAG = "$UmsgRejected"
IDLE_RENEW_SECONDS = 25 * 60
BACKOFF_MIN, BACKOFF_MAX = 1.0, 300.0
_KEEP_SET_ASIDE = 200
MAX_TRIES = 5
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FETCH_UID = re.compile(rb"UID (\d+)")


class ImapError(Exception):
    """An IMAP command failed or the connection broke; the poller reconnects."""


@dataclass(frozen=True)
class Mailbox:
    host: str
    port: int
    user: str
    password: str
    folder: str
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Mailbox:
        parts = urlsplit(url)
        tls = parts.scheme == "imaps"
        return cls(parts.hostname or "127.0.0.1", parts.port or (993 if tls else 143),
                   unquote(parts.username or ""), unquote(parts.password or ""),
                   unquote(parts.path.lstrip("/")) or "INBOX", tls)

    @property
    def key(self) -> str:
        return f"imap:{self.user}@{self.host}:{self.port}/{self.folder}"


def _ok(resp: Any, what: str) -> Any:
    if resp.result != "OK":
        raise ImapError(f"{what}: {resp.result} {b' '.join(bytes(x) for x in resp.lines[-1:])!r}")
    return resp


class ImapPoller:
    def __init__(self, settings: EmailSettings, channel: str, sink: InboundSink, state: ChannelStateStore,
                 *, on_set_aside: Callable[[int, str], None] | None = None) -> None:
        if settings.imap is None:
            raise ValueError("no imap URL configured")
        self.settings = settings
        self.channel = channel
        self.sink = sink
        self.state = state
        self.mailbox = Mailbox.from_url(settings.imap)
        self.on_set_aside = on_set_aside
        self.rounds = 0  # completed poll rounds, for tests and health checks
        self.round_done = asyncio.Event()
        self._client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()

    # -- connection ---------------------------------------------------------------------------

    async def _step(self, aw: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(aw, self.settings.imap_timeout_seconds)
        except TimeoutError as exc:
            raise ImapError(f"{what} timed out") from exc

    async def _connect(self) -> tuple[aioimaplib.IMAP4, int]:
        mb, timeout = self.mailbox, self.settings.imap_timeout_seconds
        lost = self._lost = asyncio.Event()

        def on_lost(exc: Exception | None) -> None:
            lost.set()  # a dropped connection says nothing during IDLE: wake the waiter

        client: aioimaplib.IMAP4
        if mb.tls:
            client = aioimaplib.IMAP4_SSL(mb.host, mb.port, timeout=timeout, conn_lost_cb=on_lost,
                                          ssl_context=ssl.create_default_context())
        else:
            client = aioimaplib.IMAP4(mb.host, mb.port, timeout=timeout, conn_lost_cb=on_lost)
        self._client = client
        await self._step(client.wait_hello_from_server(), "greeting")
        _ok(await self._step(client.login(mb.user, mb.password), "LOGIN"), "LOGIN")
        resp = _ok(await self._step(client.select(mb.folder), "SELECT"), "SELECT")
        for line in resp.lines:
            m = _UIDVALIDITY.search(bytes(line))
            if m:
                return client, int(m.group(1))
        raise ImapError("SELECT gave no UIDVALIDITY")

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.has_pending_idle():
                client.idle_done()
            await asyncio.wait_for(client.logout(), 5)
        except Exception:  # noqa: BLE001 - the connection is going away regardless
            pass

    # -- one round ----------------------------------------------------------------------------

    async def poll_once(self, client: aioimaplib.IMAP4, uidvalidity: int) -> int:
        """Ingest every new message; returns how many were handed over."""
        state = await self.state.get(self.channel, self.mailbox.key) or {}
        if state.get("uidvalidity") != uidvalidity:
            # A new UIDVALIDITY means old UIDs mean nothing: rescan; dedupe drops what we have.
            state = {"uidvalidity": uidvalidity, "last_uid": 0, "set_aside": []}
            await self.state.put(self.channel, self.mailbox.key, state)
        last = int(state.get("last_uid", 0))
        resp = _ok(await self._step(client.uid_search(f"UID {last + 1}:*", charset=None), "SEARCH"), "SEARCH")
        uids = sorted({int(t) for line in resp.lines[:-1] for t in bytes(line).split() if t.isdigit()})
        uids = [u for u in uids if u > last][: self.settings.imap_batch]
        for uid in uids:
            await self._one(client, uid, state)
        return len(uids)

    async def _one(self, client: aioimaplib.IMAP4, uid: int, state: dict[str, Any]) -> None:
        resp = _ok(await self._step(client.uid("fetch", str(uid), "(UID BODY.PEEK[])"), "FETCH"), "FETCH")
        raw = next((bytes(x) for x in resp.lines if isinstance(x, bytearray)), None)
        reason: str | None = None
        inbound: Inbound | None = None
        if raw is None:
            reason = "FETCH returned no message body"
        else:
            try:
                inbound = to_inbound(raw, channel=self.channel, project=self.settings.project,
                                     own_domain=self.settings.domain, envelope=Envelope())
            except PermanentError as exc:
                reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - a parser bug on one message must not stop the mailbox
                log.exception("imap message uid=%s could not be parsed", uid)
                reason = f"parse failed: {type(exc).__name__}: {exc}"
        if inbound is not None:
            try:
                await self.sink(inbound)
            except PermanentError as exc:
                reason = str(exc)
            except Exception as exc:
                # Usually the store is away: reconnect and retry the same UID. A message that
                # fails every time is set aside after a few tries instead of blocking the mailbox.
                failures = dict(state.get("failures") or {})
                failures[str(uid)] = failures.get(str(uid), 0) + 1
                state["failures"] = failures
                await self.state.put(self.channel, self.mailbox.key, state)
                if failures[str(uid)] < MAX_TRIES:
                    raise
                reason = f"ingest failed {MAX_TRIES} times: {type(exc).__name__}: {exc}"
        if reason is None and self.settings.imap_move_to:
            folder = self.settings.imap_move_to
            _ok(await self._step(client.uid("move", str(uid), folder), "MOVE"), f"MOVE to {folder}")
        elif reason is None:
            _ok(await self._step(client.uid("store", str(uid), "+FLAGS.SILENT (\\Seen)"), "STORE"), "STORE")
        else:
            log.warning("imap message uid=%s set aside: %s", uid, reason)
            await self._step(client.uid("store", str(uid), f"+FLAGS.SILENT ({REJECTED_FLAG})"), "STORE")
            aside = list(state.get("set_aside") or [])[-_KEEP_SET_ASIDE + 1:]
            aside.append({"uid": uid, "reason": reason})
            state["set_aside"] = aside
            if self.on_set_aside is not None:
                self.on_set_aside(uid, reason)
        state["last_uid"] = uid
        state.get("failures", {}).pop(str(uid), None)
        await self.state.put(self.channel, self.mailbox.key, state)

    # -- waiting --------------------------------------------------------------------------------

    async def _wait_for_mail(self, client: aioimaplib.IMAP4, stop: asyncio.Event) -> None:
        if not (self.settings.imap_idle and client.has_capability("IDLE")):
            try:
                await asyncio.wait_for(stop.wait(), self.settings.imap_poll_seconds)
            except TimeoutError:
                pass
            return
        renew = min(IDLE_RENEW_SECONDS, self.settings.imap_poll_seconds)
        idle = await self._step(client.idle_start(timeout=renew), "IDLE")
        stopper = asyncio.ensure_future(stop.wait())
        dropped = asyncio.ensure_future(self._lost.wait())
        pusher = asyncio.ensure_future(
            client.wait_server_push(timeout=renew + self.settings.imap_timeout_seconds))
        try:
            await asyncio.wait({stopper, dropped, pusher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stopper, dropped, pusher):
                waiter.cancel()
        if self._lost.is_set():
            raise ImapError("connection lost during IDLE")
        client.idle_done()
        try:
            await self._step(idle, "IDLE end")
        except ImapError:
            raise
        except Exception as exc:  # noqa: BLE001 - a BYE during IDLE surfaces here
            raise ImapError(f"IDLE ended: {exc}") from exc

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop`; reconnects after any failure with doubling back-off."""
        delay = BACKOFF_MIN
        while not stop.is_set():
            try:
                client, uidvalidity = await self._connect()
                delay = BACKOFF_MIN
                while not stop.is_set():
                    while await self.poll_once(client, uidvalidity) >= self.settings.imap_batch:
                        pass  # a full batch: there may be more right away
                    self.rounds += 1
                    self.round_done.set()
                    await self._wait_for_mail(client, stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect on anything; the loop must live
                log.warning("imap %s: %s; reconnecting in %.1fs", self.mailbox.key, exc, delay)
            finally:
                await self._disconnect()
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, BACKOFF_MAX)
