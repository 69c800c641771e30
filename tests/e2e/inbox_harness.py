"""Helpers for the inbox browser tests (no fixtures and no tests here).

`InboxServer` is what the `inbox_server` fixture (tests/e2e/conftest.py) yields: a real
`umsg serve` on the test's store and an admin token, with helpers to create agents with
passwords and submit messages through the API. `sign_in` signs an agent in from a
Playwright page; `attachment` builds an attachment body.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Page, expect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from serve_proc import ServeProcess, run_umsg  # noqa: E402

_keys = itertools.count(1)
SHARED = Path(__file__).resolve().parents[3] / "shared"


@dataclass
class InboxServer:
    url: str
    admin: str
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as resp:
            data = await resp.json() if resp.content_type == "application/json" else None
            assert resp.status < 300, (resp.status, data)
            return data

    async def agent(self, login: str, name: str, password: str = "password123", role: str = "agent") -> int:
        made = await self.call("POST", "/api/v1/agents", {"login": login, "display_name": name,
                                                          "projects": ["default"]})
        await self.call("PUT", f"/api/v1/agents/{made['id']}/password", {"password": password, "role": role})
        return int(made["id"])

    async def message(self, text: str, *, sender: str = "carol@example.com", name: str = "Carol",
                      kind: str = "email", attachments: list[dict[str, str]] | None = None,
                      **extra: Any) -> dict[str, Any]:
        body = {"from": {"kind": kind, "value": sender, "name": name}, "to": ["support@acme.test"],
                "subject": extra.pop("subject", "Help"), "text": text, "dedupe_key": f"e2e-{next(_keys)}",
                "attachments": attachments or [], **extra}
        return dict(await self.call("POST", "/api/v1/messages", body))


def attachment(data: bytes, media_type: str, filename: str) -> dict[str, str]:
    return {"media_type": media_type, "filename": filename, "data_base64": base64.b64encode(data).decode()}


async def sign_in(page: Page, url: str, login: str, password: str = "password123") -> None:
    await page.goto(f"{url}/inbox/")
    await page.fill("#login", login)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    # Generous: checking a password is a memory-hard hash (scrypt N=2^17), slow on a busy machine.
    await expect(page.locator("#app")).to_be_visible(timeout=20_000)
    await expect(page.locator("#live")).to_have_attribute("data-status", "live")


@contextlib.asynccontextmanager
async def serving_inbox(data_dir: Path, env: dict[str, str]) -> AsyncIterator[InboxServer]:
    """A real `umsg serve` on `data_dir` with `env`, and an admin token made with the CLI."""
    service = ServeProcess(data_dir, env)
    try:
        url = await service.start()
        status, out, err = await run_umsg(["token", "create", "--role", "admin", "--data-dir", str(data_dir)], env)
        assert status == 0, err
        async with aiohttp.ClientSession() as http:
            yield InboxServer(url, out.strip().splitlines()[-1], http)
        # A clean stop: the service ends its conversion workers, which would otherwise outlive
        # a killed parent holding its stdout open (and the kill's wait would never end).
        await service.terminate()
    finally:
        await service.aclose()
