"""Durable reassembly of long MO messages whose parts arrive as separate deliver_sm.

Each part is written to the channel state (`ChannelServices.state`, key `mo:<group>:<seq>`)
and committed before its deliver_sm_resp, so an acknowledged part survives a crash. When the
last part is in, the whole text is ingested, then the parts are deleted and a `done:` marker
left in one commit, so a part the SMSC resends (it missed our resp) is recognised. Parts still incomplete after
`timeout` are ingested as they are, flagged `incomplete`, by `sweep`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from channels.sms.concat import Segment, assemble

if TYPE_CHECKING:
    from umsg.channel_state import ChannelStateStore, StateItem


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

    def __init__(self, state: ChannelStateStore, channel: str, timeout: float, done_ttl: float) -> None:
        self._state = state
        self._channel = channel
        self.timeout = timeout
        self._done_ttl = done_ttl

    async def add(self, source: str, destination: str, seg: Segment) -> Assembled | None:
        """Store one part (committed on return); the whole message once every part is stored.

        Returns None while parts are missing, or when this message was already assembled.
        """
        group = group_of(source, destination, seg)
        digest = _digest(seg.payload.hex())

        def assembled_already(done: dict[str, Any]) -> bool:
            return bool(done.get("parts", {}).get(str(seg.seq)) == digest)

        # The marker is read in the part's own transaction, so a `forget` committing meanwhile
        # cannot make a resent part of a finished message look like the start of a new one.
        added = await self._state.add(self._channel, f"mo:{group}:{seg.seq:03d}", {
            "hex": seg.payload.hex(), "dc": seg.data_coding, "src": source, "dst": destination,
            "total": seg.total, "seq": seg.seq, "form": seg.form, "at": time.time()},
            unless=(f"done:{group}", assembled_already))
        if added is None:
            return None  # a resend of a part we already assembled and acknowledged
        rows = await self._state.items(self._channel, f"mo:{group}:")
        if len(rows) < seg.total:
            return None
        return self._finish(group, rows)

    def _finish(self, group: str, rows: list[StateItem]) -> Assembled:
        first = rows[0].value
        parts = {int(r.value["seq"]): bytes.fromhex(r.value["hex"]) for r in rows}
        total = int(first["total"])
        text, missing = assemble(parts, total, int(first["dc"]))
        return Assembled(group, str(first["src"]), str(first["dst"]), text, total, tuple(missing),
                         {str(k): v.hex() for k, v in parts.items()}, int(first["dc"]), str(first["form"]))

    async def forget(self, assembled: Assembled) -> None:
        """After the ingest committed: drop the parts and remember the group as done (one commit)."""
        # References recycle (8 bits): the marker knows each part's bytes, so only a true resend matches.
        marker = {"at": time.time(), "parts": {k: _digest(v) for k, v in assembled.parts_hex.items()}}
        await self._state.change(self._channel, delete_prefixes=[f"mo:{assembled.group}:"],
                                 put={f"done:{assembled.group}": marker})

    async def expired(self) -> list[Assembled]:
        """Groups whose first part is older than the timeout, as incomplete messages; prunes done markers."""
        now = time.time()
        groups: dict[str, list[StateItem]] = {}
        for row in await self._state.items(self._channel, "mo:"):
            groups.setdefault(row.key[3:].rsplit(":", 1)[0], []).append(row)
        out = []
        for group, rows in groups.items():
            if min(float(r.value["at"]) for r in rows) + self.timeout <= now:
                out.append(self._finish(group, rows))
        stale = [r.key for r in await self._state.items(self._channel, "done:")
                 if float(r.value["at"]) + self._done_ttl <= now]
        if stale:
            await self._state.change(self._channel, delete=stale)
        return out
