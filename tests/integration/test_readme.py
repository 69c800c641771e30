"""The README's first command, run as written on a fresh clone, brings up a healthy gateway."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The interpreter behind this venv: a plain Python 3.11, like the fresh machine's.
PYTHON_DIR = str(Path(sys.executable).resolve().parent)
LISTENING = re.compile(r"umsg listening on (http://[\w.:\[\]-]+)")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)


def test_readme_starts_with_exactly_two_setup_commands() -> None:
    commands = readme_commands()
    assert len(commands) >= 2
    first, second = commands[0].strip(), commands[1].strip()
    assert "\n" not in first and "\n" not in second
    assert first.endswith("umsg serve") and "pip install" in first
    assert second == "bash scripts/test-all"
    assert (ROOT / ".ci" / "run").read_text().count("scripts/test-all") == 1


@pytest.mark.slow
async def test_first_command_on_a_fresh_clone_serves_healthz(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    await asyncio.to_thread(subprocess.run, ["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # Nothing of this checkout's environment leaks in: a clean PATH and no UMSG_* except
    # the port, moved off 8080 so the test cannot collide with a running gateway.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
           "UMSG_HTTP__PORT": "0", "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{PYTHON_DIR}:{env['PATH']}"
    command = readme_commands()[0].strip()
    proc = await asyncio.create_subprocess_shell(
        command, cwd=clone, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async def wait_listening() -> str:
            assert proc.stdout is not None
            while True:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("the command ended before listening:\n" + "".join(seen[-40:]))
                seen.append(line)
                if m := LISTENING.search(line):
                    return m.group(1)

        url = await asyncio.wait_for(wait_listening(), 600)
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/healthz", timeout=10).read())
        health = json.loads(body)
        assert health["status"] == "ok" and health["store"]["backend"] == "sqlite"
        assert await asyncio.to_thread((clone / "data" / "umsg.db").exists)  # the embedded default: a local data folder
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
