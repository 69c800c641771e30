"""Worker jobs are bounded: past its wall-clock or CPU limit a job's worker is killed, alone.

Real spawned processes and real signals (SIGXCPU from RLIMIT_CPU, SIGKILL to the process group).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import psutil  # type: ignore[import-untyped]
import pytest

from umsg.workers import BoundedPool, JobLimitExceeded, JobLimits, WorkerDied, process_pool


def spin(seconds: float) -> int:
    """Burn CPU for `seconds` of wall time."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return os.getpid()


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def start_child_and_hang() -> int:
    child = subprocess.Popen(["sleep", "120"])
    with open(os.environ["UMSG_TEST_CHILD_PID_FILE"], "w") as f:
        f.write(str(child.pid))
    time.sleep(120)
    return child.pid


def crash() -> None:
    os._exit(3)


def fail() -> None:
    raise ValueError("bad input")


@pytest.fixture
def pool() -> Iterator[BoundedPool]:
    p = process_pool(2, JobLimits(wall_seconds=60, cpu_seconds=60))
    try:
        yield p
    finally:
        p.shutdown(wait=True, cancel_futures=True)


def test_a_job_past_its_cpu_limit_is_killed_and_the_pool_goes_on(pool: BoundedPool) -> None:
    fut = pool.submit_with(JobLimits(wall_seconds=60, cpu_seconds=1), spin, 30)
    with pytest.raises(JobLimitExceeded) as err:
        fut.result(timeout=60)
    assert err.value.limit == "cpu"
    assert pool.stats["killed"] == 1
    assert pool.submit(pow, 2, 10).result(timeout=60) == 1024


def test_a_job_past_its_wall_clock_limit_is_killed_while_another_finishes(pool: BoundedPool) -> None:
    slow = pool.submit_with(JobLimits(wall_seconds=1.5, cpu_seconds=None), sleep_then_pid, 60)
    fine = pool.submit(sleep_then_pid, 3)
    with pytest.raises(JobLimitExceeded) as err:
        slow.result(timeout=60)
    assert err.value.limit == "wall-clock"
    fine_pid = fine.result(timeout=60)  # the other worker was not touched
    assert psutil.pid_exists(fine_pid)


def test_a_kill_takes_the_programs_the_job_started(pool: BoundedPool, tmp_path: object,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = f"{tmp_path}/child.pid"
    monkeypatch.setenv("UMSG_TEST_CHILD_PID_FILE", pid_file)
    fut = pool.submit_with(JobLimits(wall_seconds=3, cpu_seconds=None), start_child_and_hang)
    with pytest.raises(JobLimitExceeded):
        fut.result(timeout=60)
    child = int(open(pid_file).read())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the job's sleep outlived the kill"
        time.sleep(0.05)


def test_a_worker_that_dies_is_reported_and_replaced(pool: BoundedPool) -> None:
    with pytest.raises(WorkerDied):
        pool.submit(crash).result(timeout=60)
    with pytest.raises(ValueError, match="bad input"):
        pool.submit(fail).result(timeout=60)
    assert pool.submit(pow, 3, 2).result(timeout=60) == 9
    assert pool.stats["died"] == 1
