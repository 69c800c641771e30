"""Run the installed `umsg` console script as a real process, for tests that kill and restart it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

LISTENING = "umsg listening on "


def umsg_command() -> list[str]:
    """The console script installed beside this interpreter (else on PATH, else `python -m`)."""
    found = shutil.which("umsg", path=str(Path(sys.executable).parent)) or shutil.which("umsg")
    return [found] if found else [sys.executable, "-m", "umsg.cli"]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any UMSG_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UMSG_")}
    env.update(extra or {})
    return env


def db_env(db_config: Mapping[str, object]) -> dict[str, str]:
    """The `db_config` fixture's store as UMSG_DATABASE__* variables."""
    env = {"UMSG_DATABASE__URL": str(db_config["url"])}
    if db_config.get("schema"):
        env["UMSG_DATABASE__SCHEMA"] = str(db_config["schema"])
    return env


async def run_umsg(args: Sequence[str], env: Mapping[str, str], seconds: float = 60) -> tuple[int, str, str]:
    """Run one `umsg` command to completion; returns (status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *umsg_command(), *args, env=clean_env(env),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), seconds)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class ServeProcess:
    """One `umsg serve --http-port 0` process; its log goes to a file the test can show."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None, name: str = "umsg") -> None:
        self.data_dir = data_dir
        self.env = clean_env(env)
        self.log_path = data_dir.parent / f"{name}.log"
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self, seconds: float = 60) -> str:
        """Start the process and return its base URL once it listens."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *umsg_command(), "serve", "--data-dir", str(self.data_dir), "--http-port", "0",
                env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=log,
            )
        assert self.proc.stdout is not None
        try:
            self.url = await asyncio.wait_for(self._read_url(self.proc.stdout), seconds)
        except BaseException:
            await self.kill()
            raise
        # Keep reading stdout so that the process can never block on a full pipe.
        self._drain = asyncio.create_task(self._discard(self.proc.stdout))
        return self.url

    async def _read_url(self, stdout: asyncio.StreamReader) -> str:
        while True:
            line = (await stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"umsg serve exited before listening; log:\n{self.log_tail()}")
            if line.startswith(LISTENING):
                return line[len(LISTENING):].strip()

    @staticmethod
    async def _discard(stdout: asyncio.StreamReader) -> None:
        while await stdout.read(65536):
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def kill_now(self) -> None:
        """SIGKILL at once: no cleanup of any kind, exactly like a power cut for the process."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def kill(self) -> int:
        self.kill_now()
        return await self.wait(30)

    async def terminate(self, seconds: float = 30) -> int:
        """SIGTERM, then wait for the process to end by itself; returns its exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(seconds)

    async def wait(self, seconds: float) -> int:
        assert self.proc is not None
        status = await asyncio.wait_for(self.proc.wait(), seconds)
        if self._drain is not None:
            await self._drain
            self._drain = None
        return status

    async def aclose(self) -> None:
        """Make sure the process is gone (the end of every test, passed or failed)."""
        if self.proc is not None:
            await self.kill()
