"""Shared Playwright helpers for the browser tests: launch Debian's Chromium, save screenshots.

Chromium is the system one (HANDBOOK §3); Playwright never downloads a browser here.
Screenshots go to the folder named by `UMSG_ARTIFACTS` (default `tests/e2e/artifacts/`),
which CI keeps as artifacts.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DEFAULT_ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def artifacts_dir() -> Path:
    """Where screenshots go (created on first use)."""
    path = Path(os.environ.get("UMSG_ARTIFACTS") or DEFAULT_ARTIFACTS)
    path.mkdir(parents=True, exist_ok=True)
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless system Chromium, closed (with its Playwright driver) on exit."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of `page` as `<artifacts>/<name>.png` (name made filesystem-safe) and return its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "screen"
    path = artifacts_dir() / f"{safe}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path
