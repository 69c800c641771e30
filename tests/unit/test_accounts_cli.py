"""`umsg token create --expires-in` and `umsg token revoke` against a real (SQLite) store: the expiry
is stored, a revoked token authenticates as nobody, and bad durations are refused."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.db import create_engine, session_factory
from storage.models import ApiToken
from storage.types import utcnow
from umsg.cli.main import main
from umsg.config import load_settings
from umsg.tokens import authenticate, hash_token


async def _row_and_principal(data: Path, token: str) -> tuple[ApiToken | None, bool]:
    settings = load_settings(None, environ={}, overrides={"data_dir": str(data)})
    engine = create_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        async with sessions() as s:
            row = await s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        return row, await authenticate(sessions, token) is not None
    finally:
        await engine.dispose()


def test_token_expiry_and_revocation_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("UMSG_CONFIG", "UMSG_DATABASE__URL", "UMSG_DATABASE__SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    assert main(["token", "create", "--role", "admin", "--expires-in", "12h", "--data-dir", str(data)]) == 0
    token = capsys.readouterr().out.strip()
    row, live = asyncio.run(_row_and_principal(data, token))
    assert row is not None and row.expires_at is not None and live
    assert abs(row.expires_at - (utcnow() + timedelta(hours=12))) < timedelta(minutes=5)

    assert main(["token", "create", "--role", "admin", "--data-dir", str(data)]) == 0
    forever = capsys.readouterr().out.strip()
    row, live = asyncio.run(_row_and_principal(data, forever))
    assert row is not None and row.expires_at is None and live  # no --expires-in: never expires

    assert main(["token", "revoke", token, "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out.strip() == "revoked"
    assert asyncio.run(_row_and_principal(data, token))[1] is False
    assert main(["token", "revoke", token, "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out.strip() == "already revoked"
    assert main(["token", "revoke", "umsg_nonsense", "--data-dir", str(data)]) == 2

    for bad in ("0", "-5m", "soon", "1000000d"):
        with pytest.raises(SystemExit):
            main(["token", "create", "--role", "admin", "--expires-in", bad, "--data-dir", str(data)])
