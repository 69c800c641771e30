"""Worker processes for CPU-bound work (conversions, mail parsing), tied to the service's life.

`process_pool` builds a spawn-context pool whose workers ask the kernel to end them when the
service that started them dies (Linux `PR_SET_PDEATHSIG`). Without it a SIGKILLed
`umsg serve` leaves its workers behind, still holding the service's stdout and memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: SIGTERM this worker when its parent goes away."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.prctl.restype = ctypes.c_int
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl took effect; then we were re-parented already.
    if os.getppid() != parent_pid:
        os._exit(0)


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes (default: one per CPU) that die with this process."""
    return ProcessPoolExecutor(
        max_workers=workers or os.cpu_count() or 1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
