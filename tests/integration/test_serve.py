"""The service: `umsg serve` as a real process (first start, health, SIGTERM) and its parts."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from serve_proc import ServeProcess

from umsg.app import serve
from umsg.app.serve import KeyValueFormatter, run_service, supervise


async def test_first_start_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    service = ServeProcess(tmp_path / "data")
    try:
        url = await service.start()
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert body["status"] == "ok"
        # The embedded default: SQLite created and migrated inside the data folder.
        assert (tmp_path / "data" / "umsg.db").exists()

        started = time.monotonic()
        status = await service.terminate(seconds=20)
        assert status == 0, service.log_tail()
        assert time.monotonic() - started < 15
        log = service.log_path.read_text()
        assert "umsg listening on http://127.0.0.1:" in log
        assert "msg=stopped" in log
        assert "Traceback" not in log
    finally:
        await service.aclose()


async def test_run_service_in_process_on_each_store(make_settings: Any) -> None:
    settings = make_settings(http={"port": 0})
    stop = asyncio.Event()
    listening = asyncio.Event()
    urls: list[str] = []

    def ready(url: str) -> None:
        urls.append(url)
        listening.set()

    task = asyncio.create_task(run_service(settings, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(listening.wait(), 60)
        async with aiohttp.ClientSession() as http, http.get(f"{urls[0]}/healthz") as resp:
            assert resp.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_crashing_background_task_is_restarted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(serve, "RESTART_MIN_SECONDS", 0.01)
    stop = asyncio.Event()
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("boom")
        stop.set()

    await asyncio.wait_for(supervise("flaky", flaky, stop), 10)
    assert runs == 3
    crashes = [r for r in caplog.records if r.getMessage() == "background task crashed; restarting"]
    assert len(crashes) == 2


def test_log_lines_are_key_value_with_passwords_masked() -> None:
    record = logging.LogRecord("umsg.x", logging.WARNING, __file__, 1,
                               "cannot reach postgresql://umsg:s3cret@db:5432/umsg", None, None)
    record.kv = {"peer": "smpp://esme:pw@smsc:2775", "n": 3}
    line = KeyValueFormatter().format(record)
    assert "s3cret" not in line and ":pw@" not in line
    assert 'msg="cannot reach postgresql://umsg:***@db:5432/umsg"' in line
    assert "peer=smpp://esme:***@smsc:2775 n=3" in line
    assert "level=warning logger=umsg.x" in line
