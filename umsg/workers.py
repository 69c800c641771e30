"""Worker processes for CPU-bound work (conversions, mail parsing): tied to the service's life, bounded per job.

`process_pool` builds a pool of spawned worker processes that ask the kernel to end them when
the service that started them dies (Linux `PR_SET_PDEATHSIG`): without it a SIGKILLed
`umsg serve` leaves its workers behind, still holding the service's stdout and memory.

Every job runs under `JobLimits`: a CPU-time limit the worker sets on itself (`RLIMIT_CPU`,
so the kernel ends it with SIGXCPU) and a wall-clock limit the pool enforces by killing the
worker's process group (with any ghostscript or ffmpeg it started). A job past either limit
raises `JobLimitExceeded`, a permanent error (the same input would do it again), and only
that job's worker is replaced: the other jobs, queued or running, carry on. The stdlib's
`ProcessPoolExecutor` cannot do this: it has no per-job timeout, and a killed worker breaks
the whole pool. A worker that dies on its own raises `WorkerDied` (a `BrokenProcessPool`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import multiprocessing
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, ParamSpec, TypeVar

from umsg.errors import PermanentError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# A spawned interpreter imports the job's modules first: seconds on a busy machine, never minutes.
_START_SECONDS = 120.0
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class JobLimits:
    """What one job may spend: seconds of wall-clock time and of CPU time (None: no CPU limit)."""

    wall_seconds: float = 60.0
    cpu_seconds: float | None = 30.0


class JobLimitExceeded(PermanentError):
    """A job ran past its limit and its worker was killed; the same input would do it again."""

    def __init__(self, limit: str, seconds: float) -> None:
        self.limit = limit  # "wall-clock" or "cpu"
        self.seconds = seconds
        super().__init__(f"killed after {seconds:g} s of {limit} time (the limit)")


class WorkerDied(BrokenProcessPool):
    """A worker process ended during a job without being told to (crash, out of memory, a kill)."""


def _die_with_parent(parent_pid: int) -> None:
    """Worker set-up: SIGTERM this worker when its parent goes away."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.prctl.restype = ctypes.c_int
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl took effect; then we were re-parented already.
    if os.getppid() != parent_pid:
        os._exit(0)


def _serve(conn: Connection, parent_pid: int) -> None:
    """A worker's life: run one job at a time from `conn`, each under its CPU limit."""
    _die_with_parent(parent_pid)
    # Its own process group, so a wall-clock kill takes the programs a job started with it.
    os.setpgid(0, 0)
    _, core_hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, core_hard))  # a CPU-limit kill writes no core file
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    conn.send("ready")  # a job's wall clock starts after the interpreter's start-up, not with it
    while True:
        try:
            fn, args, kwargs, cpu_seconds = conn.recv()
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001 - a job that cannot be unpickled is that job's error
            conn.send((False, RuntimeError(f"job could not be read: {exc!r}")))
            continue
        if cpu_seconds is not None:
            # RLIMIT_CPU counts the process's whole life: the soft limit is this job's share on top.
            times = os.times()
            soft = math.ceil(times.user + times.system + cpu_seconds)
            resource.setrlimit(resource.RLIMIT_CPU, (soft if cpu_hard == resource.RLIM_INFINITY
                                                     else min(soft, cpu_hard), cpu_hard))
        try:
            result: tuple[bool, Any] = (True, fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            result = (False, exc)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_hard, cpu_hard))
        try:
            conn.send(result)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or error still answers
            conn.send((False, RuntimeError(f"result could not be sent back: {exc!r}")))


class _Worker:
    """One spawned process and the parent's end of its pipe."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc: BaseProcess = ctx.Process(target=_serve, args=(child, os.getpid()), daemon=True,
                                             name="umsg-worker")
        self.proc.start()
        child.close()
        if not self.conn.poll(_START_SECONDS):
            self.kill()
            raise WorkerDied(f"worker process did not start within {_START_SECONDS:g} s")
        try:
            self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise WorkerDied(f"worker process ended while starting (exit code {self.proc.exitcode})") from None

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], limits: JobLimits) -> Any:
        try:
            self.conn.send((fn, args, kwargs, limits.cpu_seconds))
        except OSError:  # the worker ended while idle (a kill from outside): the job was not run
            self.kill()
            raise WorkerDied(f"worker process had ended (exit code {self.proc.exitcode})") from None
        if not self.conn.poll(limits.wall_seconds):
            self.kill()
            raise JobLimitExceeded("wall-clock", limits.wall_seconds)
        try:
            ok, value = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.kill()
            if code == -signal.SIGXCPU and limits.cpu_seconds is not None:
                raise JobLimitExceeded("cpu", limits.cpu_seconds) from None
            raise WorkerDied(f"worker process ended with exit code {code} during a job") from None
        if ok:
            return value
        raise value

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def kill(self) -> None:
        pid = self.proc.pid
        if pid is not None and self.proc.exitcode is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        """Let an idle worker end by closing its pipe; kill it if it does not."""
        self.conn.close()
        self.proc.join(5)
        if self.proc.exitcode is None:
            self.kill()


class BoundedPool(Executor):
    """Up to `workers` spawned processes; each job under `limits` unless given its own (`submit_with`)."""

    def __init__(self, workers: int, limits: JobLimits = JobLimits(), warm: int = 0) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self.limits = limits
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        # One thread per running job waits on its worker's pipe; jobs beyond `workers` queue here.
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="umsg-worker")
        self.stats = {"jobs": 0, "killed": 0, "died": 0}
        for _ in range(min(warm, workers)):
            # Started now, in the background: the first job does not wait for an interpreter to boot
            # (seconds on a busy machine), and a job submitted meanwhile queues for this slot.
            self._threads.submit(self._warm)

    def _warm(self) -> None:
        worker = _Worker(self._ctx)
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.stop()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self.submit_with(self.limits, fn, *args, **kwargs)

    def submit_with(self, limits: JobLimits, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run `fn(*args, **kwargs)` in a worker under `limits`."""
        if self._closed:
            raise RuntimeError("cannot schedule new jobs after shutdown")
        return self._threads.submit(self._run, limits, fn, args, kwargs)

    def _run(self, limits: JobLimits, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None or not worker.alive:
            worker = _Worker(self._ctx)  # spawned when needed: a quiet service keeps no idle processes
        self.stats["jobs"] += 1
        try:
            result: T = worker.call(fn, args, kwargs, limits)
        except JobLimitExceeded as exc:
            self.stats["killed"] += 1
            log.warning("worker job %s killed: %s", getattr(fn, "__name__", type(fn).__name__), exc)
            raise
        except WorkerDied:
            self.stats["died"] += 1
            raise
        finally:
            if worker.alive and not self._closed:
                with self._lock:
                    self._idle.append(worker)
            elif worker.alive:
                worker.stop()
        return result

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        self._threads.shutdown(wait, cancel_futures=cancel_futures)
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()


def process_pool(workers: int | None = None, limits: JobLimits = JobLimits(), warm: int = 0) -> BoundedPool:
    """A pool of `workers` spawned processes (default: one per CPU) that die with this process.

    `warm` of them are started at once; the others when work first needs them.
    """
    return BoundedPool(workers or os.cpu_count() or 1, limits, warm)
