"""Two gateway processes on one PostgreSQL schema never hand one queue item out twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from serve_proc import ServeProcess, db_env, run_umsg

pytestmark = pytest.mark.postgres

ITEMS = 300
CLAIMERS_PER_PROCESS = 6
TIMEOUT = aiohttp.ClientTimeout(total=60)


async def ingest(url: str, headers: dict[str, str]) -> set[int]:
    """Submit ITEMS messages from distinct customers; returns the queue item ids they created."""
    item_ids: set[int] = set()
    numbers = iter(range(ITEMS))

    async def client(http: aiohttp.ClientSession) -> None:
        for n in numbers:
            body = {"from": {"kind": "email", "value": f"c{n}@example.com"}, "text": f"help {n}",
                    "dedupe_key": f"two-{n}"}
            async with http.post(f"{url}/api/v1/messages", json=body, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                data = await resp.json()
            assert data["queue_item_id"] is not None, data
            item_ids.add(data["queue_item_id"])

    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        await asyncio.gather(*(client(http) for _ in range(8)))
    return item_ids


async def claim_until_empty(url: str, headers: dict[str, str]) -> list[int]:
    """Several concurrent claimers against one process, each until it answers 204."""
    claimed: list[int] = []

    async def claimer(http: aiohttp.ClientSession) -> None:
        while True:
            # A long lease: no item may come back to the queue while the test runs.
            async with http.post(f"{url}/api/v1/queue/claim", json={"lease_seconds": 3600},
                                 headers=headers) as resp:
                if resp.status == 204:
                    return
                assert resp.status == 200, await resp.text()
                item: dict[str, Any] = await resp.json()
            claimed.append(int(item["id"]))

    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        await asyncio.gather(*(claimer(http) for _ in range(CLAIMERS_PER_PROCESS)))
    return claimed


async def test_two_processes_share_one_queue_without_double_claims(
    db_config: dict[str, object], tmp_path: Path
) -> None:
    env = db_env(db_config)
    one = ServeProcess(tmp_path / "one", env, name="one")
    two = ServeProcess(tmp_path / "two", env, name="two")
    try:
        # One after the other: the first start migrates the empty schema.
        url_one = await one.start()
        url_two = await two.start()
        status, out, err = await run_umsg(["token", "create", "--role", "admin"], env)
        assert status == 0, err
        headers = {"Authorization": f"Bearer {out.strip()}"}

        item_ids = await ingest(url_one, headers)
        assert len(item_ids) == ITEMS

        claimed_one, claimed_two = await asyncio.gather(
            claim_until_empty(url_one, headers), claim_until_empty(url_two, headers)
        )
        assert len(claimed_one) == len(set(claimed_one)), "one process handed an item out twice"
        assert len(claimed_two) == len(set(claimed_two)), "one process handed an item out twice"
        assert set(claimed_one) & set(claimed_two) == set(), "both processes claimed the same items"
        assert set(claimed_one) | set(claimed_two) == item_ids
        # Both really took part (a claim answers in milliseconds; 300 items cannot all go one way).
        assert claimed_one and claimed_two

        assert await one.terminate() == 0, one.log_tail()
        assert await two.terminate() == 0, two.log_tail()
    finally:
        await one.aclose()
        await two.aclose()
