"""`umsg routes ...`: explain which channel route a sample item takes, and why.

    umsg routes test [--config FILE] [--project P] --channel C --from X --to Y [--to Y2]
                     [--subject S] [--text T] [--meta k=v]... [--attr k=v]... [--at ISO-TIME]
                     [--store] [--json]

By default the routes come from the configuration file alone (nothing is
opened, so a file can be tried before it is deployed). `--store` judges by
the table in force in the database instead (a table saved through the API
overrides the file) and takes the contact attributes of the sender's contact
unless `--attr` gives them. Each route up to the matching one is listed with
every filter and its verdict (`+` matched, `-` did not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from umsg.cli.common import EXIT_OK, settings_from_args
from umsg.config import Settings
from umsg.errors import ConfigError
from umsg.routes.build import tables_by_project
from umsg.routes.filters import Sample
from umsg.routes.probe import make_sample
from umsg.routes.table import Explanation, RouteTable


def add_to(sub: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `routes` and its actions on the `umsg` sub-command parser."""
    routes = sub.add_parser("routes", help="channel routes: explain a decision")
    actions = routes.add_subparsers(dest="routes_command", required=True, metavar="ACTION")
    test = actions.add_parser("test", help="explain which route a sample item takes and why")
    with_config(test)
    test.add_argument("--project", metavar="SLUG", help="project (default: the configuration's)")
    test.add_argument("--channel", required=True, metavar="C")
    test.add_argument("--from", dest="sender", required=True, metavar="X", help="sender address or number")
    test.add_argument("--to", action="append", default=[], metavar="Y", help="recipient (repeatable)")
    test.add_argument("--subject", metavar="S")
    test.add_argument("--text", metavar="T")
    test.add_argument("--meta", action="append", default=[], metavar="K=V",
                      help="item facts, e.g. language=de or menu=2 (repeatable)")
    test.add_argument("--attr", action="append", default=[], metavar="K=V",
                      help="contact attribute, e.g. vip=true or value=1500 (repeatable)")
    test.add_argument("--at", metavar="ISO-TIME", help="arrival time (default: now; without offset: UTC)")
    test.add_argument("--store", action="store_true", help="use the table in force in the database")
    test.add_argument("--json", action="store_true", help="print the explanation as JSON")


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([(flag, f"{item!r} is not KEY=VALUE")])
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word is a string
        out[key.strip()] = value
    return out


def _at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError([("at", f"{text!r} is not an ISO time such as 2026-03-30T08:30+02:00")]) from exc


async def _from_store(settings: Settings, slug: str, sample: Sample, attrs_given: bool
                      ) -> tuple[RouteTable, str, Sample]:
    from dataclasses import replace

    from sqlalchemy import select

    from storage.db import create_engine, read_session_factory
    from storage.models import Project
    from umsg.routes.book import RouteBook
    from umsg.routes.probe import contact_attributes

    engine = create_engine(settings.database_url, schema=settings.database.schema_name)
    try:
        async with read_session_factory(engine)() as s:
            pid = await s.scalar(select(Project.id).where(Project.slug == slug))
            if pid is None:
                raise ConfigError([("project", f"no project {slug!r} in the database")])
            eff = await RouteBook.from_settings(settings.routes, settings.project).effective(s, pid, slug)
            if not attrs_given:
                sample = replace(sample, attributes=await contact_attributes(s, pid, sample.sender))
    finally:
        await engine.dispose()
    return eff.table, f"{eff.source} table, version {eff.version}", sample


def render(exp: Explanation, source: str, out: TextIO) -> None:
    s = exp.sample
    print(f"sample: {s.channel} from {s.sender} to {', '.join(s.recipients) or '(none)'} "
          f"at {s.at.isoformat()}", file=out)
    if s.meta or s.attributes:
        print(f"        meta {json.dumps(dict(s.meta))}  contact {json.dumps(dict(s.attributes))}", file=out)
    print(f"routes: {source}", file=out)
    for n, step in enumerate(exp.steps, 1):
        label = f"{step.route} (built-in)" if step.builtin else step.route
        print(f"{n:>3}. {label}: {'MATCHED' if step.matched else 'no match'}", file=out)
        if not step.checks:
            print("       (no filters: matches everything)", file=out)
        for key, check in step.checks:
            print(f"       {'+' if check.ok else '-'} {key}: {check.detail}", file=out)
    print(f"=> route {exp.decision.route!r}: {exp.target.describe()}", file=out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`umsg routes test`: print the explanation; exit status 0."""
    import sys

    out = out or sys.stdout
    settings = settings_from_args(args)
    slug = args.project or settings.project
    attrs = _pairs(args.attr, "attr")
    from channels.registry import ChannelRegistry  # which identity kind each instance answers on

    sample = make_sample(channel=args.channel, sender=args.sender, to=args.to, at=_at(args.at),
                         subject=args.subject, text=args.text, meta=_pairs(args.meta, "meta"),
                         attributes=attrs, default_region=settings.ingest.default_region,
                         channels=ChannelRegistry().instances(settings.channels, settings.project))
    if args.store:
        table, source, sample = asyncio.run(_from_store(settings, slug, sample, bool(args.attr)))
    else:
        table = tables_by_project(settings.routes, settings.project).get(slug) or RouteTable([])
        source = f"configuration, project {slug!r}"
    exp = table.trace(sample)
    if args.json:
        print(json.dumps({**exp.to_dict(), "source": source, "sender": sample.sender}, indent=2), file=out)
    else:
        render(exp, source, out)
    return EXIT_OK
