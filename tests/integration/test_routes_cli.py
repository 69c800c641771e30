"""`umsg routes test --store`: explains by the table in force in the database."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storage.models import Contact
from umsg.cli import routes as cli_routes
from umsg.cli.main import _parser
from umsg.core import Core
from umsg.model import Address, IdentityKind, Inbound

FILE_ROUTES = '[[routes]]\nname = "from-file"\nchannel = "sms"\nqueue = "file"\n'


def config_file(tmp_path: Path, settings: Any) -> Path:
    lines = [f'data_dir = "{settings.data_dir}"', "", "[database]", f'url = "{settings.database.url}"']
    if settings.database.schema_name:
        lines.append(f'schema = "{settings.database.schema_name}"')
    path = tmp_path / "umsg.toml"
    path.write_text("\n".join(lines) + "\n\n" + FILE_ROUTES, encoding="utf-8")
    return path


async def test_store_table_overrides_the_file_and_contact_attributes_are_looked_up(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    core = await Core.open(make_settings())
    await core.start()
    try:
        res = await core.ingest.ingest(
            Inbound(
                channel="sms",
                sender=Address(IdentityKind.PHONE, "+41446681800"),
                recipients=("80012",),
                dedupe_key="k",
                raw=b"x",
            )
        )
        pid = await core.ensure_project("default")
        async with core.sessions() as s:
            contact = await s.get(Contact, res.contact_id)
            assert contact is not None
            contact.attributes = {"value": 4000}
            await core.routes.save(
                s,
                pid,
                "default",
                [
                    {"name": "rich", "contact": "value >= 1000", "queue": "gold"},
                    {"name": "rest", "queue": "rest"},
                ],
                0,
                "test",
            )
            await s.commit()
    finally:
        await core.aclose()
    path = config_file(tmp_path, core.settings)

    def run(*extra: str) -> str:
        args = _parser().parse_args(
            [
                "routes",
                "test",
                "--config",
                str(path),
                "--channel",
                "sms",
                "--from",
                "+41 44 668 18 00",
                "--to",
                "80012",
                *extra,
            ]
        )
        out = io.StringIO()
        assert cli_routes.run(args, out) == 0
        return out.getvalue()

    from_file = await asyncio.to_thread(run)
    assert "routes: configuration, project 'default'" in from_file
    assert from_file.splitlines()[-1] == "=> route 'from-file': enqueue to 'file' priority 0"
    from_store = await asyncio.to_thread(run, "--store")
    assert "routes: stored table, version 1" in from_store
    assert "+ contact: contact has value >= 1000" in from_store
    assert from_store.splitlines()[-1] == "=> route 'rich': enqueue to 'gold' priority 0"
    overridden = await asyncio.to_thread(run, "--store", "--attr", "value=10")
    assert overridden.splitlines()[-1] == "=> route 'rest': enqueue to 'rest' priority 0"
