"""Run independent jobs (e.g. one training run per seed) in parallel processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from selrope.training.host_memory import keep_freed_memory

Job = tuple[Callable[..., Any], dict[str, Any]]  # (top-level function, keyword arguments)


def available_cpus() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _init_worker(num_threads: int, parent_pid: int) -> None:
    keep_freed_memory()
    torch.set_num_threads(num_threads)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()


def _exit_when_orphaned(parent_pid: int, poll_s: float = 1.0) -> None:
    """End this worker once the process that started it is gone (killed by a signal that left no
    time to shut the pool down): an orphaned worker would go on training, unseen."""
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)


def run_parallel(jobs: Sequence[Job], max_workers: int | None = None) -> list[Any]:
    """Run `fn(**kwargs)` for every (fn, kwargs) job; return the results in job order.

    With more than one worker, jobs run in `spawn`ed processes (so each `fn` must be a picklable
    top-level function and its kwargs picklable), each limited to cpus // workers torch threads so
    that workers do not oversubscribe the cores. Workers end themselves within a second when this
    process dies (e.g. killed by SIGTERM or SIGKILL). With one worker they run here, one after
    another.

    Args:
        jobs: (function, kwargs) pairs.
        max_workers: at most this many processes; default min(len(jobs), available cores).
    Returns:
        [fn(**kwargs) for fn, kwargs in jobs], in the same order. The first exception raised by
        a job is re-raised.
    """
    if not jobs:
        return []
    cpus = available_cpus()
    workers = min(len(jobs), max_workers or cpus)
    if workers <= 1:
        return [fn(**kwargs) for fn, kwargs in jobs]
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(max(1, cpus // workers), os.getpid()),
    ) as pool:
        futures = [pool.submit(fn, **kwargs) for fn, kwargs in jobs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            # Fail fast: don't run the queued jobs of a grid that is already broken.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
