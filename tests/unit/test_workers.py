"""Worker pools die with the process that started them, even when it is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from umsg.workers import process_pool

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, sys, time
from umsg.workers import process_pool

def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()

if __name__ == "__main__":
    pool = process_pool(2)
    # Two tasks at once: the pool starts a second worker only when the first is busy.
    pids = {f.result() for f in [pool.submit(pid_after, 1.0) for _ in range(2)]}
    print(" ".join(map(str, sorted(pids))), flush=True)
    sys.stdin.read()
"""


def test_pool_runs_work() -> None:
    with process_pool(1) as pool:
        assert pool.submit(pow, 2, 10).result(timeout=60) == 1024


def test_workers_end_when_the_service_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(psutil.pid_exists(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        alive = workers
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            time.sleep(0.05)
        assert alive == [], f"workers {alive} outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
