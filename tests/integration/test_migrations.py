"""Alembic migrations produce exactly the schema the models declare, on both databases."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import create_engine
from storage.migrate import alembic_config, current_revision, upgrade
from storage.models import Base


async def test_upgrade_matches_models_and_downgrade_round_trips(db_config: dict[str, Any]) -> None:
    url, schema = str(db_config["url"]), db_config.get("schema")
    engine = create_engine(url, schema=schema)
    try:
        await upgrade(engine, url, schema)
        assert await current_revision(engine) is not None

        def diff(sync_conn: Any) -> list[Any]:
            ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))

        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []

        cfg = alembic_config(url, schema)

        def down(sync_conn: Any) -> list[str]:
            cfg.attributes["connection"] = sync_conn
            command.downgrade(cfg, "base")
            return [t for t in inspect(sync_conn).get_table_names() if t != "alembic_version"]

        async with engine.begin() as conn:
            assert await conn.run_sync(down) == []
        await upgrade(engine, url, schema)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert set(Base.metadata.tables) <= tables
    finally:
        await engine.dispose()
