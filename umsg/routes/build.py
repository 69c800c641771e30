"""From configuration (`RouteSettings`, TOML or JSON) to frozen routes, with keyed problems.

Per-route problems (a bad pattern, an unknown time zone) come from the
pydantic validation of `RouteSettings` and carry keys like `routes.2.hours.mon`.
Table-wide problems are found here: names repeated within a project, a
non-default route named `default`, and routes an earlier route shadows
(umsg.routes.shadow), each reported under `routes.N` with both names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from umsg.routes import clock
from umsg.routes.filters import (
    ChannelFilter,
    ContactFilter,
    Filter,
    HoursFilter,
    KeywordFilter,
    LanguageFilter,
    MenuFilter,
    RecipientFilter,
    SenderFilter,
    TimeFilter,
    language_tag,
    parse_condition,
    parse_keywords,
    parse_names,
)
from umsg.routes.patterns import parse_patterns
from umsg.routes.settings import RouteSettings
from umsg.routes.shadow import shadowed
from umsg.routes.table import DEFAULT_NAME, Route, RouteTable
from umsg.routes.targets import AutoReply, Forward, PreferredAgent, Target

Problem = tuple[str, str]


def _filters(rs: RouteSettings) -> tuple[Filter, ...]:
    out: list[Filter] = []
    if rs.channel is not None:
        out.append(ChannelFilter(parse_names(rs.channel, "channel")))
    if rs.to is not None:
        out.append(RecipientFilter(parse_patterns(rs.to)))
    if rs.sender is not None:
        out.append(SenderFilter(parse_patterns(rs.sender)))
    if rs.time is not None:
        t = rs.time
        days = clock.parse_days(t.days) if t.days is not None else frozenset(range(7))
        window = clock.TimeWindow(t.tz, clock.parse_hhmm(t.start), clock.parse_hhmm(t.end, end=True), days)
        out.append(TimeFilter(window))
    if rs.hours is not None:
        out.append(HoursFilter(rs.hours.calendar(), rs.hours.open))
    if rs.contact is not None:
        items = [rs.contact] if isinstance(rs.contact, str) else rs.contact
        out.append(ContactFilter(tuple(parse_condition(c) for c in items)))
    if rs.language is not None:
        out.append(LanguageFilter(tuple(language_tag(t) for t in parse_names(rs.language, "language"))))
    if rs.menu is not None:
        out.append(MenuFilter(parse_patterns(rs.menu)))
    if rs.keywords is not None:
        out.append(KeywordFilter(parse_keywords(rs.keywords)))
    return tuple(out)


def _target(rs: RouteSettings) -> Target:
    queue = rs.queue if rs.queue is not None or rs.action in ("auto_reply", "forward") else "default"
    pref = None
    if rs.preferred_agent is not None:
        p = rs.preferred_agent
        pref = PreferredAgent(p.rule, p.expiry_minutes, p.login)
    reply = None
    if rs.action == "auto_reply" and rs.template is not None:
        reply = AutoReply(rs.template, rs.reply_subject, rs.reply_once_per_minutes)
    forward = Forward(rs.forward_to, rs.forward_channel) if rs.forward_to is not None else None
    return Target(rs.action, None if rs.action == "drop" else queue, rs.priority,
                  tuple(sorted(rs.skills.items())), rs.sla_minutes, pref, reply, forward)


def build_route(rs: RouteSettings) -> Route:
    """The frozen route for validated settings."""
    return Route(rs.name, _filters(rs), _target(rs))


def build_table(routes: Iterable[RouteSettings]) -> RouteTable:
    """One project's table from validated `RouteSettings`, in order."""
    return RouteTable(build_route(r) for r in routes)


def table_problems(routes: Sequence[RouteSettings], default_project: str,
                   prefix: str = "routes") -> list[Problem]:
    """Problems of the tables `routes` make up, one table per project, keyed by list position."""
    by_project: dict[str, list[int]] = {}
    for i, rs in enumerate(routes):
        by_project.setdefault(rs.project or default_project, []).append(i)
    problems: list[Problem] = []
    for indices in by_project.values():
        problems.extend(_one_table([(i, routes[i]) for i in indices], prefix))
    return sorted(problems, key=lambda p: int(p[0].rsplit(".", 1)[-1]) if p[0][-1:].isdigit() else -1)


def _one_table(entries: Sequence[tuple[int, RouteSettings]], prefix: str) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, rs in entries:
        if rs.name in seen:
            problems.append((f"{prefix}.{i}",
                             f"route name {rs.name!r} is already used by {prefix}.{seen[rs.name]}"))
        seen.setdefault(rs.name, i)
    built = [build_route(rs) for _, rs in entries]
    for pos, (i, rs) in enumerate(entries):
        if rs.name == DEFAULT_NAME and not built[pos].catch_all:
            problems.append((f"{prefix}.{i}", f"the name {DEFAULT_NAME!r} is kept for the catch-all route "
                                              "(a route without filters)"))
    for a, b in shadowed(built):
        (ia, ra), (ib, rb) = entries[a], entries[b]
        problems.append((f"{prefix}.{ib}", f"route {rb.name!r} can never match: the earlier route "
                                           f"{ra.name!r} ({prefix}.{ia}) matches everything it matches"))
    return problems


def tables_by_project(routes: Sequence[RouteSettings], default_project: str) -> dict[str, RouteTable]:
    """One table per project named in `routes` (routes without a project go to the default one)."""
    grouped: dict[str, list[Route]] = {}
    for rs in routes:
        grouped.setdefault(rs.project or default_project, []).append(build_route(rs))
    return {slug: RouteTable(rs_list) for slug, rs_list in grouped.items()}


def parse_table(raw: Sequence[Mapping[str, Any]], project: str, prefix: str = "routes",
                *, named: bool = True) -> tuple[list[RouteSettings], list[Problem]]:
    """Validate a table given as JSON-like data (the API, the store) for one project.

    Keys of problems name the route too when it has a name (`routes[2] (vip).sender`),
    so an API client sees which route is at fault without counting.
    """
    routes: list[RouteSettings] = []
    problems: list[Problem] = []
    for i, entry in enumerate(raw):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        where = f"{prefix}[{i}]" + (f" ({name})" if named and isinstance(name, str) else "")
        if not isinstance(entry, Mapping):
            problems.append((where, "a route must be an object"))
            continue
        if entry.get("project") not in (None, project):
            problems.append((f"{where}.project",
                             f"must be {project!r}, the project of this table, or left out"))
            continue
        try:
            routes.append(RouteSettings.model_validate({**entry, "project": project}))
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                loc = ".".join(str(p) for p in e["loc"])
                problems.append((f"{where}.{loc}" if loc else where, e["msg"]))
    if problems:
        return routes, problems
    for key, reason in table_problems(routes, project, prefix):
        i = int(key.rsplit(".", 1)[-1])
        problems.append((f"{prefix}[{i}] ({routes[i].name})", _bracket(reason, prefix)))
    return routes, problems


def _bracket(reason: str, prefix: str) -> str:
    """`routes.3` → `routes[3]` inside a reason, matching the key style of JSON input."""
    return re.sub(rf"{re.escape(prefix)}\.(\d+)", rf"{prefix}[\1]", reason)


def dump_route(rs: RouteSettings) -> dict[str, Any]:
    """The JSON form of a route as an administrator wrote it (defaults left out, no project)."""
    data: dict[str, Any] = rs.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data.pop("project", None)
    data["name"] = rs.name
    return data
