"""`umsg channels ...`: the configured channel instances and the channel names stored.

    umsg channels list [--config FILE]
    umsg channels rename OLD NEW [--config FILE] [--force]

A channel is a configured instance (`[channels.NAME]`), and stored messages, conversations
and queue items carry its name. `list` shows the instances (type, the identity kind replies
go to) and every name found in the store, marking those no instance has. `rename` moves
everything stored under OLD onto the instance NEW in one transaction (umsg/channel_rename.py),
for what the service cannot decide at start: two instances of one type that both used to
stamp `email`, a removed `channel = "..."` override, an instance renamed in the file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any, TextIO

from sqlalchemy import func, select

from umsg.cli.common import EXIT_OK, settings_from_args, store_engine
from umsg.config import Settings
from umsg.errors import ConfigError


def add_to(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `channels` and its actions on the `umsg` sub-command parser."""
    channels = sub.add_parser("channels", help="channel instances and stored channel names")
    actions = channels.add_subparsers(dest="channels_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="configured instances and the channel names in the store")
    with_config(listing)
    rename = actions.add_parser("rename", help="move everything stored under channel OLD onto instance NEW")
    with_config(rename)
    rename.add_argument("old", metavar="OLD")
    rename.add_argument("new", metavar="NEW")
    rename.add_argument("--force", action="store_true",
                        help="also when NEW is not configured or OLD is")


async def _stored(settings: Settings) -> dict[str, tuple[int, int]]:
    """channel -> (messages, conversations) in the store."""
    from storage.db import read_session_factory
    from storage.models import Conversation, Message

    async with store_engine(settings) as engine, read_session_factory(engine)() as s:
        rows = await s.execute(select(Message.channel, func.count()).group_by(Message.channel))
        messages = {c: n for c, n in rows}
        rows = await s.execute(select(Conversation.channel, func.count()).group_by(Conversation.channel))
        convs = {c: n for c, n in rows}
    return {c: (int(messages.get(c, 0)), int(convs.get(c, 0))) for c in sorted({*messages, *convs})}


def _list(settings: Settings, out: TextIO) -> int:
    from channels.registry import ChannelRegistry

    instances = ChannelRegistry().instances(settings.channels, settings.project)
    print("configured instances:", file=out)
    for name in instances.names():
        i = instances.get(name)
        assert i is not None
        kind = i.identity_kind.value if i.identity_kind is not None else "whoever wrote"
        print(f"  {name}: type {i.type}, replies to {kind}{'' if i.enabled else ' (disabled)'}", file=out)
    if not instances:
        print("  (none)", file=out)
    print("stored channel names:", file=out)
    stored = asyncio.run(_stored(settings))
    for name, (messages, convs) in stored.items():
        note = "" if name in instances else "  <- no instance of this name (umsg channels rename)"
        print(f"  {name}: {messages} message(s), {convs} conversation(s){note}", file=out)
    if not stored:
        print("  (none)", file=out)
    return EXIT_OK


async def _rename(settings: Settings, old: str, new: str) -> Any:
    from storage.db import session_factory
    from umsg.channel_rename import rename_channel

    async with store_engine(settings) as engine:
        return await rename_channel(session_factory(engine), old, new, source="cli")


def _do_rename(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    old, new = args.old, args.new
    if old == new:
        raise ConfigError([("new", "OLD and NEW are the same name")])
    if not args.force:
        if new not in settings.channels:
            known = ", ".join(sorted(settings.channels)) or "none"
            raise ConfigError([("new", f"{new!r} is not a configured channel instance (configured: {known}); "
                                       "--force renames anyway")])
        if old in settings.channels:
            raise ConfigError([("old", f"{old!r} is a configured channel instance: its messages are where they "
                                       "belong; --force renames anyway")])
    result = asyncio.run(_rename(settings, old, new))
    moved = ", ".join(f"{table} {n}" for table, n in result.rows.items()) or "nothing was stored under it"
    print(f"channel {old!r} -> {new!r}: {moved}", file=out)
    if result.skipped:
        left = ", ".join(f"{table} {n}" for table, n in result.skipped.items())
        print(f"left under {old!r} (the same key is stored under {new!r} already): {left}", file=out)
    return EXIT_OK


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = settings_from_args(args)
    if args.channels_command == "list":
        return _list(settings, out)
    return _do_rename(args, settings, out)
