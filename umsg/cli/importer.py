"""`umsg import [--json] PATH...`: ingest .eml files, mbox files and Maildir folders.

Messages go through the email channel's parser and the same ingest pipeline
as live mail, so importing twice stores nothing new. A progress bar goes to
stderr; `--json` prints one summary object last on stdout:
`{"total", "ingested", "duplicates", "rejected": [{"path", "reason"}]}`.
Messages carry the configured email instance's name as their channel, and its mail
domain tells our own mail apart (`--channel NAME` picks the instance when there are several).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from umsg.cli.common import EXIT_OK, settings_from_args
from umsg.errors import ConfigError

_BAR = 30


def add_import_command(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("import", help="import mail files (.eml, mbox, Maildir)")
    with_config(p)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help=".eml file, mbox file or Maildir folder")
    p.add_argument("--json", action="store_true", help="print a JSON summary last")
    p.add_argument("--channel", metavar="NAME", help="configured email channel to import as")


class _Progress:
    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out = max(total, 1), out

    def __call__(self, summary: Any) -> None:
        done = summary.total
        filled = _BAR * done // self.total
        self.out.write(f"\r[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{self.total} "
                       f"new {summary.ingested} dup {summary.duplicates} rejected {len(summary.rejected)}")
        if done >= self.total:
            self.out.write("\n")
        self.out.flush()


def _email_channel(settings: Any, name: str | None) -> tuple[str, str | None]:
    """(channel instance stamped on messages, our mail domain) from the configuration.

    Without any email instance configured the messages carry the type's name, `email`.
    """
    configured = {n: c for n, c in settings.channels.items() if c.type == "email"}
    if name is not None and name not in configured:
        known = ", ".join(sorted(configured)) or "none"
        raise ConfigError([("channel", f"no email channel named {name!r} is configured (email channels: {known})")])
    if name is None and len(configured) > 1:
        raise ConfigError([("channel", f"several email channels are configured ({', '.join(sorted(configured))}): "
                                       "pick one with --channel NAME")])
    if name is None and configured:
        name = next(iter(configured))
    if name is None:
        return "email", None
    extra = dict(configured[name].model_extra or {})
    return name, (str(extra["domain"]) if extra.get("domain") else None)


async def _run(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    from channels.email.importer import count, import_paths
    from channels.registry import ChannelRegistry
    from umsg.core import Core

    for p in args.paths:
        if not p.exists():
            raise ConfigError([("paths", f"{p} does not exist")])
    channel, domain = _email_channel(settings, args.channel)
    total = await asyncio.to_thread(count, list(args.paths))
    core = await Core.open(settings, channels=ChannelRegistry().instances(settings.channels, settings.project))
    try:
        await core.start()
        summary = await import_paths(list(args.paths), core.ingest.ingest, channel=channel,
                                     project=settings.project, own_domain=domain,
                                     progress=_Progress(total, sys.stderr))
    finally:
        await core.aclose()
    return summary.as_json()


def cmd_import(args: argparse.Namespace) -> int:
    result = asyncio.run(_run(args, settings_from_args(args)))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"{result['total']} messages: {result['ingested']} new, {result['duplicates']} already stored, "
              f"{len(result['rejected'])} rejected")
        for r in result["rejected"]:
            print(f"  rejected {r['path']}: {r['reason']}")
    return EXIT_OK
