"""What every `umsg` command shares: exit statuses and the layered settings of its flags."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from umsg.config import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Layer the configuration file (flag, else $UMSG_CONFIG), the environment and the flags."""
    path: Path | None = args.config
    if path is None and os.environ.get("UMSG_CONFIG"):
        path = Path(os.environ["UMSG_CONFIG"])
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = str(args.data_dir)
    http: dict[str, Any] = {}
    if getattr(args, "http_host", None) is not None:
        http["host"] = args.http_host
    if getattr(args, "http_port", None) is not None:
        http["port"] = args.http_port
    if http:
        overrides["http"] = http
    if getattr(args, "log_level", None) is not None:
        overrides["log_level"] = args.log_level
    return load_settings(path, overrides=overrides)


@contextlib.asynccontextmanager
async def store_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on the configured store, brought up to date first when `auto_migrate` says so
    (the data folder made if missing), disposed on exit: for commands that touch the store."""
    from storage.db import create_engine
    from storage.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url, schema = settings.database_url, settings.database.schema_name
    engine = create_engine(url, schema=schema)
    try:
        if settings.database.auto_migrate:
            await upgrade(engine, url, schema)
        yield engine
    finally:
        await engine.dispose()
