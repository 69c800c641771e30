"""Shared fixtures: every store-backed test runs on SQLite and on the local PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from umsg.config import Settings, load_settings

PG_DSN = os.environ.get("UMSG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db", default="both", choices=["both", "sqlite", "postgres"],
                     help="which databases store-backed tests run on (CI: both)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_backend" not in metafunc.fixturenames:
        return
    choice = metafunc.config.getoption("--db")
    backends = ["sqlite", "postgres"] if choice == "both" else [choice]
    if metafunc.definition.get_closest_marker("postgres") is not None:
        # PostgreSQL-only behaviour (several processes on one store, SKIP LOCKED, advisory locks).
        backends = [b for b in backends if b == "postgres"]
    metafunc.parametrize("db_backend", backends, indirect=True)


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _pg_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def db_config(db_backend: str, tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    """The `database` settings for a fresh, empty store on the chosen backend."""
    if db_backend == "sqlite":
        yield {"url": f"sqlite:///{tmp_path / 'umsg.db'}"}
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await _pg_exec(f'CREATE SCHEMA "{schema}"')
    try:
        yield {"url": PG_DSN, "schema": schema}
    finally:
        await _pg_exec(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def make_settings(db_config: dict[str, object], tmp_path: Path) -> Iterator[object]:
    """Factory: settings for the test's store plus any overrides."""

    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {"data_dir": str(tmp_path / "data"), "database": dict(db_config)}
        base.update(overrides)
        return load_settings(None, environ={}, overrides=base)

    yield make


@pytest.fixture
async def core(make_settings):  # type: ignore[no-untyped-def]
    from umsg.core import Core

    c = await Core.open(make_settings())
    await c.start()
    try:
        yield c
    finally:
        await c.aclose()
