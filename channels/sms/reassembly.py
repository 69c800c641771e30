"""Durable reassembly of long MO messages whose parts arrive as separate deliver_sm.

Each part is written to `ChannelState` (key `mo:<group>:<seq>`) and committed before
its deliver_sm_resp, so an acknowledged part survives a crash. When the last part is
in, the whole text is ingested and the parts deleted, leaving a `done:` marker so a
part the SMSC resends (it missed our resp) is recognised. Parts still incomplete after
`timeout` are ingested as they are, flagged `incomplete`, by `sweep`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from channels.sms.concat import Segment, assemble
from storage.db import SessionFactory
from storage.models import ChannelState


@dataclass(frozen=True)
class Assembled:
    """A long message ready for ingest (complete, or what arrived before the timeout)."""

    group: str
    source: str
    destination: str
    text: str
    total: int
    missing: tuple[int, ...]
    parts_hex: dict[str, str]
    data_coding: int
    form: str

    @property
    def dedupe_key(self) -> str:
        body = "".join(self.parts_hex[k] for k in sorted(self.parts_hex, key=int))
        digest = hashlib.sha256(body.encode()).hexdigest()[:16]
        return f"smpp:{self.group}:{digest}" + (":incomplete" if self.missing else "")


def _digest(hex_payload: str) -> str:
    return hashlib.sha256(hex_payload.encode()).hexdigest()[:16]


def group_of(source: str, destination: str, seg: Segment) -> str:
    return f"{source}|{destination}|{seg.form}|{seg.ref}|{seg.total}"


class Reassembler:
    """Stores parts of one channel's long messages and says when a message is whole."""

    def __init__(self, sessions: SessionFactory, channel: str, timeout: float, done_ttl: float) -> None:
        self._sessions = sessions
        self._channel = channel
        self.timeout = timeout
        self._done_ttl = done_ttl

    async def add(self, source: str, destination: str, seg: Segment) -> Assembled | None:
        """Store one part (committed on return); the whole message once every part is stored.

        Returns None while parts are missing, or when this message was already assembled.
        """
        group = group_of(source, destination, seg)
        now = time.time()
        async with self._sessions() as s:
            done = await s.scalar(select(ChannelState).where(
                ChannelState.channel == self._channel, ChannelState.key == f"done:{group}"))
            if done is not None and done.value.get("parts", {}).get(str(seg.seq)) == _digest(seg.payload.hex()):
                return None  # a resend of a part we already assembled and acknowledged
            s.add(ChannelState(channel=self._channel, key=f"mo:{group}:{seg.seq:03d}", value={
                "hex": seg.payload.hex(), "dc": seg.data_coding, "src": source, "dst": destination,
                "total": seg.total, "seq": seg.seq, "form": seg.form, "at": now}))
            try:
                await s.commit()
            except IntegrityError:
                await s.rollback()  # the same part again: stored already
        rows = await self._parts(f"mo:{group}:")
        if len(rows) < seg.total:
            return None
        return await self._finish(group, rows)

    async def _parts(self, prefix: str) -> list[ChannelState]:
        async with self._sessions() as s:
            return list((await s.scalars(select(ChannelState).where(
                ChannelState.channel == self._channel,
                ChannelState.key.startswith(prefix, autoescape=True)))).all())

    async def _finish(self, group: str, rows: list[ChannelState]) -> Assembled:
        first = rows[0].value
        parts = {int(r.value["seq"]): bytes.fromhex(r.value["hex"]) for r in rows}
        total = int(first["total"])
        text, missing = assemble(parts, total, int(first["dc"]))
        return Assembled(group, str(first["src"]), str(first["dst"]), text, total, tuple(missing),
                         {str(k): v.hex() for k, v in parts.items()}, int(first["dc"]), str(first["form"]))

    async def forget(self, assembled: Assembled) -> None:
        """After the ingest committed: drop the parts and remember the group as done."""
        async with self._sessions() as s:
            await s.execute(delete(ChannelState).where(
                ChannelState.channel == self._channel,
                ChannelState.key.startswith(f"mo:{assembled.group}:", autoescape=True)))
            # References recycle (8 bits): the marker knows each part's bytes, so only a true resend matches.
            marker = {"at": time.time(), "parts": {k: _digest(v) for k, v in assembled.parts_hex.items()}}
            row = await s.scalar(select(ChannelState).where(
                ChannelState.channel == self._channel, ChannelState.key == f"done:{assembled.group}"))
            if row is None:
                s.add(ChannelState(channel=self._channel, key=f"done:{assembled.group}", value=marker))
            else:
                row.value = marker
            try:
                await s.commit()
            except IntegrityError:
                await s.rollback()

    async def expired(self) -> list[Assembled]:
        """Groups whose first part is older than the timeout, as incomplete messages; prunes done markers."""
        now = time.time()
        groups: dict[str, list[ChannelState]] = {}
        for row in await self._parts("mo:"):
            groups.setdefault(row.key[3:].rsplit(":", 1)[0], []).append(row)
        out = []
        for group, rows in groups.items():
            if min(float(r.value["at"]) for r in rows) + self.timeout <= now:
                out.append(await self._finish(group, rows))
        async with self._sessions() as s:
            stale = [r.id for r in await self._parts("done:") if float(r.value["at"]) + self._done_ttl <= now]
            if stale:
                await s.execute(delete(ChannelState).where(ChannelState.id.in_(stale)))
                await s.commit()
        return out
